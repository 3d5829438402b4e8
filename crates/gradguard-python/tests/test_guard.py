"""The numpy path of the gradguard Python package, and duck-typed (fake torch) parameters."""

import json
import math

import numpy as np
import pytest

import gradguard

CLIP = [{"kind": "clip_global_norm", "max_norm": 1.0}]
SHAPES = [(16, 8), (16,), (4, 16), (4,)]
NAMES = ["l1.weight", "l1.bias", "l2.weight", "l2.bias"]


def model(rng, scale=1.0):
    ws = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    gs = [(rng.standard_normal(s) * scale).astype(np.float32) for s in SHAPES]
    return ws, gs


def params(ws, gs):
    return {n: (w, g) for n, w, g in zip(NAMES, ws, gs)}


def clip_as_documented(gs, max_norm):
    """crates/gradguard-remedies/src/clip_global_norm.rs: the total from the step statistics
    (squares summed in f64), coef = max_norm / (total + 1e-6) in f64, applied only when < 1,
    each float32 gradient multiplied by coef rounded to float32."""
    total = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in gs))
    coef = max_norm / (total + 1e-6)
    return [g * np.float32(coef) for g in gs] if coef < 1.0 else [g.copy() for g in gs]


def clip_as_torch_float32(gs, max_norm):
    """torch.nn.utils.clip_grad_norm_ in float32: per-tensor norms, the norm of those,
    coef = max_norm / (total + 1e-6) clamped to 1, every gradient multiplied by it."""
    norms = np.array([np.linalg.norm(g.ravel()) for g in gs], dtype=np.float32)
    total = np.float32(np.linalg.norm(norms))
    coef = min(np.float32(max_norm) / (total + np.float32(1e-6)), np.float32(1.0))
    return [g * coef for g in gs]


@pytest.mark.parametrize("seed", range(20))
def test_clip_global_norm_in_place_matches_the_formula(seed):
    rng = np.random.default_rng(seed)
    ws, gs = model(rng, scale=rng.uniform(0.05, 20.0))
    ptrs = [g.ctypes.data for g in gs]
    documented = clip_as_documented(gs, 1.0)
    torch_like = clip_as_torch_float32(gs, 1.0)
    guard = gradguard.Guard(remedies=CLIP, quiet=True)
    d = guard.step(params(ws, gs), 0.5)
    assert d.action == "continue" and d.apply and not d.stop
    # Edited in place: the very same buffers, bit-for-bit the documented formula.
    assert [g.ctypes.data for g in gs] == ptrs
    for got, want in zip(gs, documented):
        assert np.array_equal(got, want)
    # NOT bit-for-bit with PyTorch's float32 arithmetic: its float32 total can differ from
    # the f64 total in the last bit, so the coefficient differs by an ulp and each value by up
    # to 2 ulps (about 40% of these seeds). Issue 14's exactness item is still open.
    for got, want in zip(gs, torch_like):
        np.testing.assert_array_max_ulp(got, want, maxulp=2)
    if d.grad_norm_before > 1.0:
        assert d.grad_norm_after <= 1.0 + 1e-6
    guard.after_update(params(ws, gs))


def test_other_float_dtypes_are_converted_and_written_back():
    rng = np.random.default_rng(1)
    ws, gs = model(rng, scale=10.0)
    gs64 = [g.astype(np.float64) for g in gs]
    want = clip_as_documented(gs, 1.0)
    guard = gradguard.Guard(remedies=CLIP, quiet=True)
    guard.step({n: (w.astype(np.float16), g) for n, w, g in zip(NAMES, ws, gs64)}, 1.0)
    for got, w in zip(gs64, want):
        assert got.dtype == np.float64
        assert np.array_equal(got, w.astype(np.float64))


def test_a_nan_gradient_is_skipped_under_skip_step():
    rng = np.random.default_rng(2)
    ws, gs = model(rng)
    gs[1][3] = np.nan
    before = [g.copy() for g in gs]
    guard = gradguard.Guard(remedies=[{"kind": "skip_nonfinite"}], quiet=True)
    d = guard.step(params(ws, gs), 0.5)
    assert d.action == "skip_step" and not d.apply and not d.stop
    assert d.reason
    assert any(f["sign"] == "grad_nonfinite" for f in d.findings), d.findings
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(gs, before))
    end = guard.after_update(params(ws, gs))
    assert end["stop"] is None
    # clip_global_norm's default on_nonfinite is skip_step too.
    guard = gradguard.Guard(remedies=CLIP, quiet=True)
    assert guard.step(params(ws, gs), 0.5).action == "skip_step"


def test_without_a_remedy_nonfinite_gradients_stop_the_run():
    ws, gs = model(np.random.default_rng(3))
    gs[0][0, 0] = np.inf
    guard = gradguard.Guard(quiet=True)
    d = guard.step(params(ws, gs), 0.5)
    assert d.action == "stop" and d.stop and not d.apply


def exploding_run(guard, steps=60):
    """y = 3x by SGD with a learning rate far too large: the weight oscillates and grows."""
    rng = np.random.default_rng(4)
    w = np.zeros((1, 4), np.float32)
    x = rng.standard_normal((32, 4)).astype(np.float32)
    y = x @ np.full((4, 1), 3.0, np.float32)
    last = None
    for step in range(1, steps + 1):
        err = x @ w.T - y
        loss = float(np.mean(err**2) / 2)
        g = ((err.T @ x) / len(x)).astype(np.float32)
        last = guard.step({"fc.weight": (w, g)}, loss, lr=1.5)
        if last.apply:
            w -= np.float32(1.5 * last.lr_scale) * g
        end = guard.after_update({"fc.weight": (w, g)})
        if last.stop or end["stop"]:
            break
    return last


def test_an_exploding_run_is_diagnosed(tmp_path, capfd):
    out = tmp_path / "run"
    guard = gradguard.Guard(out_dir=str(out))
    exploding_run(guard)
    summary = guard.finish()
    for name in ("events.jsonl", "summary.json", "report.html"):
        assert (out / name).is_file(), name
    on_disk = json.loads((out / "summary.json").read_text())
    assert set(summary) == set(on_disk)
    assert summary["verdict"] != "healthy", summary["verdict"]
    events = [json.loads(l) for l in (out / "events.jsonl").read_text().splitlines() if l.strip()]
    signs = {f["sign"] for e in events for f in e.get("findings", [])}
    assert signs & {"weights_change_large", "grad_spike", "loss_nonfinite", "grad_nonfinite",
                    "weights_nonfinite", "loss_unstable"}, signs
    assert "Verdict" in capfd.readouterr().out


def test_the_findings_of_a_step_are_dicts_as_in_events_jsonl():
    guard = gradguard.Guard(quiet=True)
    seen = []
    rng = np.random.default_rng(5)
    w = rng.standard_normal((8, 8)).astype(np.float32)
    for step in range(1, 40):
        g = rng.standard_normal((8, 8)).astype(np.float32) * (1e4 if step == 30 else 1.0)
        d = guard.step({"fc.weight": (w, g)}, 1.0)
        seen += d.findings
        guard.after_update()
    assert seen and all(isinstance(f, dict) and "sign" in f and "step" in f for f in seen)
    assert any(f["sign"] == "grad_spike" for f in seen), seen


def test_finish_quiet_prints_nothing_and_returns_the_summary(capfd):
    guard = gradguard.Guard(remedies=CLIP, quiet=True)
    ws, gs = model(np.random.default_rng(6))
    guard.step(params(ws, gs), 0.5)
    summary = guard.finish()
    assert summary["steps"] == 1 and "verdict" in summary and "signs" in summary
    assert capfd.readouterr() == ("", "")
    with pytest.raises(RuntimeError, match="finished"):
        guard.step(params(ws, gs), 0.5)


def test_from_file_reads_the_plugin_tables(tmp_path):
    spec = tmp_path / "guard.toml"
    spec.write_text(
        'name = "x"\n[model]\nkind = "whatever: ignored"\n'
        '[[remedies]]\nkind = "clip_grad_norm"\nmax_norm = 0.5\n'
    )
    guard = gradguard.Guard.from_file(str(spec), quiet=True)
    ws, gs = model(np.random.default_rng(7), scale=10.0)
    d = guard.step(params(ws, gs), 0.5)
    assert abs(d.grad_norm_after - 0.5) < 1e-5
    (tmp_path / "bad.json").write_text('{"remedies": [{"kind": "clip_global_norm", "max_nrm": 1}]}')
    with pytest.raises(ValueError, match="max_nrm"):
        gradguard.Guard.from_file(str(tmp_path / "bad.json"))


# --- duck typing: objects shaped like torch parameters and modules -------------------------


class FakeTensor:
    """What gradguard uses of a CPU torch.Tensor: .numpy() sharing memory, .detach()."""

    def __init__(self, array, is_cuda=False):
        self.array = array
        self.is_cuda = is_cuda

    def detach(self):
        return self

    def numpy(self):
        if self.is_cuda:
            raise TypeError("can't convert cuda:0 device type tensor to numpy")
        return self.array


class FakeParameter:
    def __init__(self, w, g):
        self.data = FakeTensor(w)
        self.grad = None if g is None else FakeTensor(g)


class FakeModule:
    def __init__(self, named):
        self.named = named

    def named_parameters(self):
        return iter(self.named)


def test_duck_typed_module_and_pairs_are_clipped_in_place():
    rng = np.random.default_rng(8)
    ws, gs = model(rng, scale=10.0)
    want = clip_as_documented(gs, 1.0)
    frozen = FakeParameter(np.ones(3, np.float32), None)  # no gradient: not watched
    module = FakeModule([(n, FakeParameter(w, g)) for n, w, g in zip(NAMES, ws, gs)]
                        + [("frozen.weight", frozen)])
    guard = gradguard.Guard(remedies=CLIP, quiet=True)
    d = guard.step(module, FakeTensor(np.float32(0.5)).numpy())
    assert d.apply
    for got, w in zip(gs, want):
        assert np.array_equal(got, w)
    for w, g in zip(ws, gs):
        w -= 0.1 * g
    guard.after_update(module)
    # An iterable of (name, parameter) pairs works the same.
    ws2, gs2 = model(rng, scale=10.0)
    want2 = clip_as_documented(gs2, 1.0)
    guard.step([(n, FakeParameter(w, g)) for n, w, g in zip(NAMES, ws2, gs2)], 0.5)
    for got, w in zip(gs2, want2):
        assert np.array_equal(got, w)
    assert guard.finish()["steps"] == 2


def test_weights_change_large_is_measured_from_after_update():
    rng = np.random.default_rng(9)
    w = rng.standard_normal((8, 8)).astype(np.float32)
    guard = gradguard.Guard(quiet=True)
    seen = set()
    for step in range(1, 12):
        g = rng.standard_normal((8, 8)).astype(np.float32)
        d = guard.step({"fc.weight": (w, g)}, 1.0)
        seen |= {f["sign"] for f in d.findings}
        w += 10.0 * g  # an update as large as the weights, every step
        guard.after_update({"fc.weight": (w, g)})
    assert "weights_change_large" in seen, seen


def test_cuda_tensors_are_refused_clearly():
    p = FakeParameter(np.ones(2, np.float32), np.ones(2, np.float32))
    p.grad = FakeTensor(np.ones(2, np.float32), is_cuda=True)
    with pytest.raises(TypeError, match="CUDA"):
        gradguard.Guard(quiet=True).step({"w": p}, 1.0)


# --- clear errors for bad input -----------------------------------------------------------


def test_bad_input_gives_clear_errors():
    guard = gradguard.Guard(quiet=True)
    w = np.ones((4, 3), np.float32)
    with pytest.raises(TypeError, match="dtype is int32"):
        guard.step({"fc.weight": (w, np.ones((4, 3), np.int32))}, 1.0)
    with pytest.raises(ValueError, match="not C-contiguous"):
        guard.step({"fc.weight": (w.T.copy(), np.ones((4, 3), np.float32).T)}, 1.0)
    with pytest.raises(ValueError, match=r"shape \[4, 3\].*\[3, 4\]"):
        guard.step({"fc.weight": (w, np.ones((3, 4), np.float32))}, 1.0)
    with pytest.raises(ValueError, match="borrowed"):
        guard.step({"fc.weight": (w, w)}, 1.0)
    with pytest.raises(TypeError, match="expected a NumPy array"):
        guard.step({"fc.weight": (w, "not an array")}, 1.0)
    with pytest.raises(TypeError, match="loss"):
        guard.step({"fc.weight": (w, w.copy())}, "high")
    with pytest.raises(TypeError, match="params"):
        guard.step(42, 1.0)
    with pytest.raises(RuntimeError, match="without a step"):
        guard.after_update()
    # Still usable after the errors.
    assert guard.step({"fc.weight": (w, w.copy())}, 1.0).action == "continue"


def test_bad_plugin_dicts_name_the_key():
    with pytest.raises(ValueError, match=r"remedies\[0\]\.max_nrm.*did you mean `max_norm`"):
        gradguard.Guard(remedies=[{"kind": "clip_global_norm", "max_nrm": 1.0}])
    with pytest.raises(ValueError, match=r"remedies\[1\]\.kind.*clip_global_norm"):
        gradguard.Guard(remedies=[{"kind": "skip_nonfinite"}, {"kind": "clip_gloal_norm"}])
    with pytest.raises(ValueError, match=r"remedies\[0\].*max_norm"):
        gradguard.Guard(remedies=[{"kind": "clip_global_norm", "max_norm": -1.0}])
    with pytest.raises(ValueError, match=r"detectors\[0\]"):
        gradguard.Guard(detectors=[{"kind": "no_such_detector"}])
    with pytest.raises(TypeError, match=r"remedies\[0\]"):
        gradguard.Guard(remedies=["clip_global_norm"])
    # Aliases from other frameworks are read as in specs.
    gradguard.Guard(remedies=[{"kind": "clip_grad_norm", "max_norm": 1.0}], quiet=True)


def test_finish_checks_that_the_model_learned():
    # No sign of explosion, but a final loss no better than the constant predictor's:
    # not_learning, as `gradguard run` says; with a low final loss: healthy.
    def run(final_loss):
        rng = np.random.default_rng(3)
        guard = gradguard.Guard(remedies=CLIP, quiet=True)
        for step in range(1, 6):
            ws, gs = model(rng, scale=0.01)
            d = guard.step(params(ws, gs), 1.0 / step)
            assert d.apply
            guard.after_update(params(ws, gs))
        return guard.finish(final_loss=final_loss, baseline_loss=1.0)

    assert run(0.9)["verdict"] == "not_learning"
    summary = run(0.01)
    assert summary["verdict"] == "healthy"
    assert summary["final_train_loss"] == 0.01 and summary["baseline_loss"] == 1.0
    guard = gradguard.Guard(remedies=CLIP, quiet=True)
    rng = np.random.default_rng(4)
    ws, gs = model(rng)
    guard.step(params(ws, gs), 0.5)
    with pytest.raises(ValueError, match="together"):
        guard.finish(final_loss=0.1)
    # The Guard is still usable after that refusal.
    assert guard.finish()["steps"] == 1


def test_scale_lr_reaches_the_caller():
    # lr_backoff halves the learning rate after any finding: a non-finite loss is one.
    rng = np.random.default_rng(5)
    guard = gradguard.Guard(remedies=[{"kind": "lr_backoff", "factor": 0.5}], quiet=True)
    ws, gs = model(rng, scale=0.1)
    d = guard.step(params(ws, gs), 1.0, lr=0.1)
    assert d.action == "continue" and d.lr_scale == 1.0
    guard.after_update(params(ws, gs))
    d = guard.step(params(ws, gs), float("nan"), lr=0.1)
    assert d.action == "scale_lr", d.action
    assert d.apply and d.lr_scale == 0.5
    assert any(f["sign"] == "loss_nonfinite" for f in d.findings)
