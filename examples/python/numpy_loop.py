"""The guard in a plain NumPy training loop (the JAX recipe is the same: hand the gradients
over as NumPy arrays, e.g. `np.asarray(g)` of each leaf, and take the clipped ones back).

An MLP 20-25-1 (ReLU) on an unscaled regression target (standard deviation in the hundreds,
as the Keras exploding-gradients example), trained with SGD and momentum: without a remedy the
gradients explode and the guard stops the run at the first non-finite gradient; with
`clip_global_norm` the same loop learns. Run after `pip install ./crates/gradguard-python`:

    python examples/python/numpy_loop.py
"""

import numpy as np

import gradguard


def data(rng, n=512):
    x = rng.standard_normal((n, 20)).astype(np.float32)
    w = rng.uniform(0, 100, 20).astype(np.float32) * (rng.random(20) < 0.5)
    y = (x @ w + rng.normal(0, 0.1, n)).astype(np.float32)
    return x, y


def train(remedies, steps=300, seed=1):
    rng = np.random.default_rng(seed)
    x, y = data(rng)
    lim1, lim2 = np.sqrt(6 / 20), np.sqrt(6 / 26)
    params = {
        "l1.weight": rng.uniform(-lim1, lim1, (25, 20)).astype(np.float32),
        "l1.bias": np.zeros(25, np.float32),
        "l2.weight": rng.uniform(-lim2, lim2, (1, 25)).astype(np.float32),
        "l2.bias": np.zeros(1, np.float32),
    }
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    velocity = {k: np.zeros_like(v) for k, v in params.items()}
    lr, momentum = 0.01, 0.9
    guard = gradguard.Guard(remedies=remedies, quiet=True)
    with np.errstate(all="ignore"):
        for step in range(1, steps + 1):
            idx = rng.integers(0, len(x), 32)
            xb, yb = x[idx], y[idx]
            h_pre = xb @ params["l1.weight"].T + params["l1.bias"]
            h = np.maximum(h_pre, 0)
            out = (h @ params["l2.weight"].T + params["l2.bias"])[:, 0]
            err = out - yb
            loss = float(np.mean(err**2))
            d_out = (2 * err / len(yb))[:, None]
            grads["l2.weight"][...] = d_out.T @ h
            grads["l2.bias"][...] = d_out.sum(0)
            d_h = (d_out @ params["l2.weight"]) * (h_pre > 0)
            grads["l1.weight"][...] = d_h.T @ xb
            grads["l1.bias"][...] = d_h.sum(0)
            d = guard.step({k: (params[k], grads[k]) for k in params}, loss)
            if d.apply:  # the gradients are the ones the remedies left (clipped in place)
                for k in params:
                    velocity[k] = momentum * velocity[k] - lr * d.lr_scale * grads[k]
                    params[k] += velocity[k]
            guard.after_update({k: (params[k], grads[k]) for k in params})
            if d.stop:
                break
        h = np.maximum(x @ params["l1.weight"].T + params["l1.bias"], 0)
        final = float(np.mean(((h @ params["l2.weight"].T + params["l2.bias"])[:, 0] - y) ** 2))
    baseline = float(np.var(y))  # the best constant predictor's loss
    return guard.finish(final_loss=final, baseline_loss=baseline)


if __name__ == "__main__":
    plain = train(remedies=None)
    clipped = train(remedies=[{"kind": "clip_global_norm", "max_norm": 1.0}])
    for name, s in [("no remedy", plain), ("clip_global_norm", clipped)]:
        print(f"{name:>16}: {s['verdict']} after {s['steps']} steps, first non-finite step "
              f"{s['first_nonfinite_step']}, largest gradient norm {s['max_grad_norm']:.3g}")
    # The example checks itself: CI runs it.
    assert plain["verdict"] == "exploding", plain
    assert clipped["verdict"] == "healthy", clipped
