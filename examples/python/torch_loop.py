"""The guard in a plain PyTorch training loop: the classic exploding regression, diagnosed
live, then cured.

An MLP 20-25-1 (ReLU) on an unscaled regression target (standard deviation in the hundreds,
as in the Keras exploding-gradients example), SGD with momentum 0.9 and lr 0.01. Without a
remedy the gradients explode: the guard names the signs as they happen (printed live below)
and stops the run at the first non-finite gradient, before it reaches the weights. With
`clip_global_norm` (bit-identical to `torch.nn.utils.clip_grad_norm_`) the same loop learns.
Each run writes events.jsonl, summary.json and report.html under runs/torch_loop/.

    pip install ./crates/gradguard-python torch
    python examples/python/torch_loop.py
"""

import os
import tempfile

import torch

import gradguard


def data(gen, n=512):
    x = torch.randn(n, 20, generator=gen)
    w = torch.rand(20, generator=gen) * 100 * (torch.rand(20, generator=gen) < 0.5)
    y = x @ w + 0.1 * torch.randn(n, generator=gen)
    return x, y[:, None]


def train(remedies, out_dir, steps=300, seed=1, live=False):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y = data(gen)
    model = torch.nn.Sequential(torch.nn.Linear(20, 25), torch.nn.ReLU(), torch.nn.Linear(25, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    guard = gradguard.Guard(remedies=remedies, out_dir=out_dir, quiet=True)
    seen = set()
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(x), (32,), generator=gen)
        loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        d = guard.step(model, loss)          # detectors, then remedies (in place)
        if live:
            for f in d.findings:             # the signs, live, the first time each appears
                if f["sign"] not in seen:
                    seen.add(f["sign"])
                    print(f"  step {step}: {f['sign']}: {f['message']}")
        if d.apply:                          # False when the update is withheld
            for group in opt.param_groups:
                group["lr"] = 0.01 * d.lr_scale
            opt.step()
        guard.after_update(model)            # ||dw|| per tensor
        if d.stop:
            if live:
                print(f"  step {step}: stop: {d.reason}")
            break
    with torch.no_grad():
        final = float(torch.nn.functional.mse_loss(model(x), y))
    baseline = float(y.var(unbiased=False))  # the best constant predictor's loss
    return guard.finish(final_loss=final, baseline_loss=baseline)


if __name__ == "__main__":
    root = os.environ.get("GRADGUARD_EXAMPLE_OUT") or os.path.join(tempfile.gettempdir(), "runs", "torch_loop")
    print("no remedy:")
    plain = train(None, os.path.join(root, "plain"), live=True)
    clipped = train([{"kind": "clip_global_norm", "max_norm": 1.0}], os.path.join(root, "clipped"))
    for name, s in [("no remedy", plain), ("clip_global_norm", clipped)]:
        print(f"{name:>16}: {s['verdict']} after {s['steps']} steps, first non-finite step "
              f"{s['first_nonfinite_step']}, largest gradient norm {s['max_grad_norm']:.3g}")
    print(f"reports: {root}/{{plain,clipped}}/report.html")
    # The example checks itself: CI runs it.
    assert plain["verdict"] == "exploding", plain
    assert clipped["verdict"] == "healthy", clipped
