"""gradguard on real PyTorch models (CPU): gradients after ``guard.step`` are bit-identical to
``clip_grad_norm_`` / ``clip_grad_value_``, on both roads a tensor can take (read in place as
host float32 arrays, or kept by PyTorch and edited with torch ops, as CUDA tensors are), plus
bfloat16, non-finite gradients, remedies that need the values, and ||dw||.

PyTorch is required in CI (``GRADGUARD_REQUIRE_TORCH=1``, set by ci.sh): there a missing
torch is a failure, not a skip."""

import copy
import json
import math
import os

import pytest

if os.environ.get("GRADGUARD_REQUIRE_TORCH") == "1":
    import torch  # noqa: F401  (a failure here fails the suite, as CI wants)
else:
    torch = pytest.importorskip(
        "torch", reason="PyTorch is not installed (CI installs it; see ci.sh)"
    )

import gradguard

ROADS = [None, True]  # torch_stats: None = CPU float32 read in place; True = torch ops
ROAD_IDS = ["host", "torch-ops"]


def mlp():
    return torch.nn.Sequential(
        torch.nn.Linear(20, 32), torch.nn.Tanh(), torch.nn.Linear(32, 32), torch.nn.Tanh(),
        torch.nn.Linear(32, 1),
    )


class Lstm(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(4, 16, batch_first=True)
        self.head = torch.nn.Linear(16, 1)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def batch(kind, gen, scale):
    if kind == "mlp":
        x = torch.randn(16, 20, generator=gen) * scale
    else:
        x = torch.randn(8, 12, 4, generator=gen) * scale
    return x, torch.randn(x.shape[0], 1, generator=gen) * scale


def make(kind, dtype=torch.float32):
    torch.manual_seed(7)
    m = mlp() if kind == "mlp" else Lstm()
    return m.to(dtype)


def backward(model, x, y):
    model.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x.to(next(model.parameters()).dtype)), y.to(next(model.parameters()).dtype))
    loss.backward()
    return loss


def grads(model):
    return [p.grad.clone() for p in model.parameters()]


def assert_bit_identical(a, b, what):
    for i, (x, y) in enumerate(zip(a, b)):
        assert x.dtype == y.dtype
        same = torch.equal(x.view(torch.int16 if x.dtype in (torch.bfloat16, torch.float16) else torch.int32),
                           y.view(torch.int16 if y.dtype in (torch.bfloat16, torch.float16) else torch.int32))
        assert same, f"{what}: tensor {i} differs (max diff {(x.float() - y.float()).abs().max().item()})"


def run_side_by_side(kind, remedy, reference, road, dtype=torch.float32, steps=12):
    """Trains two identical models with SGD: one guarded, one with the PyTorch reference
    after backward; compares the gradients bit for bit at every step (before the update)."""
    ours, theirs = make(kind, dtype), make(kind, dtype)
    opt_a = torch.optim.SGD(ours.parameters(), lr=0.05)
    opt_b = torch.optim.SGD(theirs.parameters(), lr=0.05)
    guard = gradguard.Guard(remedies=[remedy], quiet=True, torch_stats=road)
    gen = torch.Generator().manual_seed(3)
    clipped = 0
    for step in range(1, steps + 1):
        # Growing inputs: norms from well below to far above the bound.
        x, y = batch(kind, gen, scale=0.2 * step)
        la = backward(ours, x, y)
        lb = backward(theirs, x, y)
        assert torch.equal(la, lb)
        before = grads(ours)
        d = guard.step(ours, la.detach())
        reference(theirs)
        assert_bit_identical(grads(ours), grads(theirs), f"{kind} step {step}")
        clipped += any(not torch.equal(a, b) for a, b in zip(before, grads(ours)))
        assert d.apply, d
        opt_a.step()
        opt_b.step()
        guard.after_update(ours)
    guard.finish()
    return clipped


@pytest.mark.parametrize("road", ROADS, ids=ROAD_IDS)
@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_clip_global_norm_is_bit_identical_to_clip_grad_norm(kind, road):
    max_norm = 0.5
    clipped = run_side_by_side(
        kind,
        {"kind": "clip_global_norm", "max_norm": max_norm},
        lambda m: torch.nn.utils.clip_grad_norm_(m.parameters(), max_norm),
        road,
    )
    assert 3 <= clipped < 12, f"the scales must cover clipped and unclipped steps ({clipped})"


@pytest.mark.parametrize("road", ROADS, ids=ROAD_IDS)
@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_clip_value_is_bit_identical_to_clip_grad_value(kind, road):
    v = 0.01
    clipped = run_side_by_side(
        kind,
        {"kind": "clip_value", "clip_value": v},
        lambda m: torch.nn.utils.clip_grad_value_(m.parameters(), v),
        road,
    )
    assert clipped > 0


@pytest.mark.parametrize("road", ROADS, ids=ROAD_IDS)
def test_inf_norm_clip_is_bit_identical(road):
    run_side_by_side(
        "mlp",
        {"kind": "clip_global_norm", "max_norm": 0.05, "norm_type": "inf"},
        lambda m: torch.nn.utils.clip_grad_norm_(m.parameters(), 0.05, norm_type=float("inf")),
        road,
    )


def test_at_the_bound_exactly_both_clip_by_the_same_ulp():
    """max_norm equal to PyTorch's own total: coef = max / (max + 1e-6) < 1 by a hair."""
    model, ref = make("mlp"), make("mlp")
    gen = torch.Generator().manual_seed(5)
    x, y = batch("mlp", gen, 1.0)
    backward(model, x, y)
    backward(ref, x, y)
    total = float(torch.nn.utils.get_total_norm([p.grad for p in ref.parameters()]))
    before = grads(model)
    guard = gradguard.Guard(remedies=[{"kind": "clip_global_norm", "max_norm": total}], quiet=True)
    guard.step(model, torch.tensor(1.0))
    torch.nn.utils.clip_grad_norm_(ref.parameters(), total)
    assert_bit_identical(grads(model), grads(ref), "at the bound")
    assert any(not torch.equal(a, b) for a, b in zip(before, grads(model)))


def test_bfloat16_through_torch_ops_is_bit_identical():
    """bfloat16 has no NumPy dtype: such tensors are kept by PyTorch and clipped in place."""
    run_side_by_side(
        "mlp",
        {"kind": "clip_global_norm", "max_norm": 0.5},
        lambda m: torch.nn.utils.clip_grad_norm_(m.parameters(), 0.5),
        None,
        dtype=torch.bfloat16,
        steps=6,
    )


@pytest.mark.parametrize("road", ROADS, ids=ROAD_IDS)
def test_statistics_agree_between_the_roads(road):
    """The grad norm a Decision reports is the same figure (to float32 rounding) whichever
    road measured it, and equals PyTorch's total."""
    model = make("lstm")
    gen = torch.Generator().manual_seed(11)
    x, y = batch("lstm", gen, 1.0)
    loss = backward(model, x, y)
    total = float(torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]))
    guard = gradguard.Guard(quiet=True, torch_stats=road)
    d = guard.step(model, loss)
    assert math.isclose(d.grad_norm_before, total, rel_tol=1e-6), (d.grad_norm_before, total)
    assert d.grad_norm_after == d.grad_norm_before


@pytest.mark.parametrize("road", ROADS, ids=ROAD_IDS)
def test_a_nan_gradient_is_withheld_and_left_untouched(road):
    model = make("mlp")
    gen = torch.Generator().manual_seed(1)
    x, y = batch("mlp", gen, 1.0)
    loss = backward(model, x, y)
    first = next(model.parameters())
    first.grad[0, 0] = float("nan")
    first.grad[1, 1] = float("inf")
    before = grads(model)
    guard = gradguard.Guard(remedies=[{"kind": "clip_global_norm", "max_norm": 0.1}], quiet=True,
                            torch_stats=road)
    d = guard.step(model, loss)
    assert d.action == "skip_step" and not d.apply, d
    for a, b in zip(before, grads(model)):
        assert torch.equal(a.nan_to_num(), b.nan_to_num())
    signs = {f["sign"] for f in d.findings}
    assert "grad_nonfinite" in signs, d.findings
    nonfinite = [f for f in d.findings if f["sign"] == "grad_nonfinite"][0]
    assert nonfinite["layer"] == "0.weight"


def test_zeroing_nonfinite_through_torch_ops():
    model = make("mlp")
    gen = torch.Generator().manual_seed(1)
    x, y = batch("mlp", gen, 1.0)
    loss = backward(model, x, y)
    g = next(model.parameters()).grad
    g[0, 0] = float("nan")
    guard = gradguard.Guard(
        remedies=[{"kind": "clip_global_norm", "max_norm": 1e9, "on_nonfinite": "zero"}],
        quiet=True, torch_stats=True)
    d = guard.step(model, loss)
    assert d.apply, d
    assert g[0, 0].item() == 0.0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert math.isfinite(d.grad_norm_after)


@pytest.mark.parametrize("remedy", [
    {"kind": "agc", "clip_factor": 0.01},
    {"kind": "l1_l2", "l1": 0.01, "l2": 0.05},
    {"kind": "clip_norm", "max_norm": 0.05},
], ids=["agc", "l1_l2", "clip_norm"])
@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_every_remedy_agrees_between_the_roads(kind, remedy):
    """AGC (timm's rule with torch ops), the penalties and per-tensor clipping give the same
    gradients on the torch-ops road as gradguard's host kernels, to float32 rounding (the
    host sums unit norms in f64); the penalty's value matches too."""
    gen = torch.Generator().manual_seed(4)
    x, y = batch(kind, gen, 1.0)
    out = {}
    for road in (False, True):
        model = make(kind)
        loss = backward(model, x, y)
        guard = gradguard.Guard(remedies=[remedy], quiet=True, torch_stats=road)
        d = guard.step(model, loss)
        assert d.apply, d
        out[road] = (grads(model), d.grad_norm_after)
    for a, b in zip(out[False][0], out[True][0]):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7), (a - b).abs().max()
    assert math.isclose(out[False][1], out[True][1], rel_tol=1e-5)


def test_agc_on_the_torch_road_changes_the_gradients_as_timm():
    """timm's adaptive_clip_grad, written out: rows of 2-d tensors, whole 1-d tensors."""
    model, ref = make("mlp"), make("mlp")
    gen = torch.Generator().manual_seed(6)
    x, y = batch("mlp", gen, 3.0)
    loss = backward(model, x, y)
    backward(ref, x, y)
    guard = gradguard.Guard(remedies=[{"kind": "agc", "clip_factor": 0.01}], quiet=True,
                            torch_stats=True)
    guard.step(model, loss)
    changed = 0
    with torch.no_grad():
        for p in ref.parameters():
            dims = tuple(range(1, p.ndim)) if p.ndim > 1 else None
            keep = p.ndim > 1
            wn = p.norm(2, dim=dims, keepdim=keep).clamp(min=1e-3)
            gn = p.grad.norm(2, dim=dims, keepdim=keep)
            bound = 0.01 * wn
            clipped = p.grad * (bound / gn.clamp(min=1e-6))
            new = torch.where(gn < bound, p.grad, clipped)
            changed += int(not torch.equal(new, p.grad))
            p.grad.copy_(new)
    assert changed > 0
    assert_bit_identical(grads(model), grads(ref), "agc")


def test_a_user_remedy_that_edits_values_cannot_run_off_the_host():
    """Every built-in remedy runs on the torch road; the refusal is for a user's plugin that
    edits values through edit_each, tested in gradguard-engine's tests/framework.rs. Here:
    the torch road accepts the whole built-in set in one guard."""
    model = make("lstm")
    gen = torch.Generator().manual_seed(1)
    loss = backward(model, *batch("lstm", gen, 1.0))
    remedies = [{"kind": k} for k in ("skip_nonfinite", "l2", "agc")] + [
        {"kind": "clip_value", "clip_value": 1.0}, {"kind": "clip_global_norm", "max_norm": 1.0},
        {"kind": "autoclip"}, {"kind": "zclip"}]
    guard = gradguard.Guard(remedies=remedies, quiet=True, torch_stats=True)
    d = guard.step(model, loss)
    assert d.apply and not d.stop, d


@pytest.mark.parametrize("road", ROADS, ids=ROAD_IDS)
def test_after_update_measures_the_weight_change(road, tmp_path):
    model = make("mlp")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(2)
    guard = gradguard.Guard(out_dir=str(tmp_path / "run"), quiet=True, torch_stats=road)
    expected = {}
    for step in range(1, 3):
        loss = backward(model, *batch("mlp", gen, 1.0))
        w_before = {n: p.detach().clone() for n, p in model.named_parameters()}
        guard.step(model, loss, lr=0.1)
        opt.step()
        expected = {n: float((p.detach() - w_before[n]).norm() / w_before[n].norm())
                    for n, p in model.named_parameters()}
        guard.after_update(model)
    # The last step's ||dw|| / ||w|| appears in the next step's record: run one more.
    loss = backward(model, *batch("mlp", gen, 1.0))
    guard.step(model, loss)
    guard.finish()
    events = [json.loads(l) for l in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    layers = {l["name"]: l for l in events[-1]["layers"]}
    for name, ratio in expected.items():
        assert math.isclose(layers[name]["update_ratio"], ratio, rel_tol=1e-4), (name, layers[name], ratio)


def test_mixing_tensors_and_arrays_is_a_clear_error():
    model = make("mlp")
    gen = torch.Generator().manual_seed(1)
    loss = backward(model, *batch("mlp", gen, 1.0))
    params = {n: (p.detach(), p.grad) for n, p in model.named_parameters()}
    first = next(iter(params))
    params[first] = (params[first][0].numpy(), params[first][1].numpy())
    guard = gradguard.Guard(quiet=True, torch_stats=True)
    with pytest.raises(TypeError, match="mixes PyTorch tensors"):
        guard.step(params, loss)


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="no CUDA device on this machine: the CUDA road is the torch-ops road, "
                           "tested above on CPU tensors with torch_stats=True")
@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_cuda_clip_global_norm_is_bit_identical(kind):
    ours, theirs = make(kind).cuda(), make(kind).cuda()
    gen = torch.Generator().manual_seed(3)
    guard = gradguard.Guard(remedies=[{"kind": "clip_global_norm", "max_norm": 0.5}], quiet=True)
    for step in range(1, 6):
        x, y = batch(kind, gen, 0.5 * step)
        x, y = x.cuda(), y.cuda()
        la = backward(ours, x, y)
        backward(theirs, x, y)
        d = guard.step(ours, la)
        torch.nn.utils.clip_grad_norm_(theirs.parameters(), 0.5)
        assert_bit_identical(grads(ours), grads(theirs), f"cuda {kind} step {step}")
        guard.after_update(ours)
        assert d.apply


def test_model_parameters_without_names_are_accepted_as_clip_grad_norm_takes_them():
    model, ref = make("mlp"), make("mlp")
    gen = torch.Generator().manual_seed(9)
    x, y = batch("mlp", gen, 2.0)
    loss = backward(model, x, y)
    backward(ref, x, y)
    guard = gradguard.Guard(remedies=[{"kind": "clip_global_norm", "max_norm": 0.2}], quiet=True)
    d = guard.step(model.parameters(), loss)
    torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.2)
    assert_bit_identical(grads(model), grads(ref), "model.parameters()")
    guard.after_update(model.parameters())
    summary = guard.finish()
    assert d.apply and summary["steps"] == 1


@pytest.mark.parametrize("road", ROADS, ids=ROAD_IDS)
def test_clip_is_bit_identical_over_many_random_cases(road):
    """300 random gradient sets (6 tensors, magnitudes over 12 decades) against random bounds,
    half of them within 1e-6 relative of PyTorch's own total (where an ulp decides)."""
    gen = torch.Generator().manual_seed(12)
    shapes = [(31, 17), (31,), (64, 31), (64,), (3, 64), (3,)]
    differing = 0
    for case in range(300):
        scale = 10.0 ** float(torch.empty(1).uniform_(-6, 6, generator=gen))
        gs = [torch.randn(s, generator=gen) * scale for s in shapes]
        total = float(torch.nn.utils.get_total_norm(gs))
        if case % 2:
            max_norm = total * (1 + float(torch.empty(1).uniform_(-1e-6, 1e-6, generator=gen)))
        else:
            max_norm = total * float(torch.empty(1).uniform_(0.01, 2.0, generator=gen))
        ours = [g.clone() for g in gs]
        ref = [g.clone() for g in gs]
        params = {f"t{i}": (torch.zeros_like(g), g) for i, g in enumerate(ours)}
        guard = gradguard.Guard(remedies=[{"kind": "clip_global_norm", "max_norm": max_norm}],
                                quiet=True, torch_stats=road, detectors=[], measure_updates=False)
        guard.step(params, 1.0)
        ps = [torch.nn.Parameter(torch.zeros_like(g)) for g in ref]
        for p, g in zip(ps, ref):
            p.grad = g
        torch.nn.utils.clip_grad_norm_(ps, max_norm)
        assert_bit_identical(ours, [p.grad for p in ps], f"case {case} (scale {scale:.3g})")
        differing += any(not torch.equal(a, b) for a, b in zip(ours, gs))
    assert differing > 100, differing
