"""The PyTorch side of a step: statistics with torch ops, edits with foreach ops.

gradguard's Rust core drives the step (detectors, remedies, diagnosis, reports). When the
gradients are PyTorch tensors that it cannot read as host float32 slices (CUDA tensors,
bfloat16/float16/float64, or any tensor when ``Guard(torch_stats=True)``), this module is
its hands:

- ``TorchGrads.measure`` computes each tensor's statistics on the tensors' own device:
  ``torch._foreach_norm`` for the gradients' and weights' L2 norms (the very numbers
  ``clip_grad_norm_`` computes), the largest |g| (``torch._foreach_norm(..., inf)`` on CUDA,
  ``torch.aminmax`` per tensor on CPU, where the former is not vectorised), and non-finite
  counts only for tensors whose norm is not finite. One ``tolist`` brings the numbers to the
  host: 5 per tensor, never the tensors.
- the edits (``GradEdit`` in gradguard-core) are applied with foreach ops on the device:
  ``_foreach_mul_`` for scales, ``_foreach_clamp_min_``/``_foreach_clamp_max_`` for value
  clipping (what ``clip_grad_value_`` runs), ``nan_to_num_`` for zeroing.
- ``clip_global_norm`` is ``clip_grad_norm_``'s own arithmetic: per-tensor norms, the norm
  of their stack, ``coef = clamp(max_norm / (total + 1e-6), max=1)``, ``_foreach_mul_`` by
  that float32 tensor. So the gradients after it are bit-identical to ``clip_grad_norm_``'s.
  It is also used for CPU float32 tensors that gradguard reads directly (where everything
  else runs in Rust), because gradguard's own total norm (summed in f64) can differ from
  PyTorch's float32 one by an ulp.

Every built-in remedy runs here: ``agc`` as timm's ``adaptive_clip_grad`` (per-unit norms
with ``torch.linalg.vector_norm``), the ``l1``/``l2`` penalties as ``add_`` of the weights'
sign and of the weights. A user's remedy that edits the values through ``edit_each`` is
refused off the host: the step stops with an error naming it.
"""

import torch

_INF = float("inf")


def _first_device(tensors):
    return tensors[0].device


class TorchGrads:
    """The gradients (and weights) of one step, kept by PyTorch."""

    __slots__ = ("weights", "grads", "_norms", "_device")

    def __init__(self, weights, grads):
        self.weights = weights
        self.grads = grads
        self._norms = None
        self._device = _first_device(grads)

    def measure(self, indices=None):
        """Per tensor (or per tensor of ``indices``): (grad L2 norm, grad max |g|, grad
        non-finite count, weight L2 norm, weight non-finite count), as Python numbers."""
        grads, weights = self.grads, self.weights
        if indices is not None:
            grads = [grads[i] for i in indices]
            weights = [weights[i] for i in indices]
        gn = torch._foreach_norm(grads, 2)
        wn = torch._foreach_norm(weights, 2)
        if self._device.type == "cpu":
            gm = []
            for g in grads:
                lo, hi = torch.aminmax(g)
                gm.append(torch.maximum(hi, -lo))
        else:
            gm = torch._foreach_norm(grads, _INF)
        if indices is None:
            self._norms = gn
        dev = self._device
        table = torch.stack(
            [torch.stack([n.to(dev, torch.float64) for n in col]) for col in (gn, gm, wn)]
        ).tolist()
        out = []
        for i, (g_norm, g_max, w_norm) in enumerate(zip(*table)):
            g_bad = w_bad = 0
            if not (g_norm < _INF and g_max < _INF):  # NaN or inf somewhere (or an overflow)
                g = grads[i]
                g_bad = int((~torch.isfinite(g)).sum())
                if g_max != g_max:  # NaN: the largest |g| ignoring NaN, as gradguard's kernels
                    g_max = float(torch.where(torch.isnan(g), 0, g).abs().max()) if g.numel() else 0.0
            if not (w_norm < _INF):
                w_bad = int((~torch.isfinite(weights[i])).sum())
            out.append((g_norm, g_max, g_bad, w_norm, w_bad))
        return out

    def _coefficient(self, max_norm, norm_type):
        norms = self._norms if (norm_type == 2 and self._norms is not None) else None
        if norms is None:
            norms = torch._foreach_norm(self.grads, norm_type)
        # The norms of one device need no .to() (clip_grad_norm_'s .to(first_device) is a
        # no-op there).
        total = torch.linalg.vector_norm(torch.stack(norms), norm_type)
        return torch.clamp(max_norm / (total + 1e-6), max=1.0)

    def total_norm(self, norm_type):
        """clip_grad_norm_'s total norm (a float32 value), computed as it computes it: the
        per-tensor norms from ``torch._foreach_norm``, the norm of their stack."""
        norms = self._norms if (norm_type == 2 and self._norms is not None) else None
        if norms is None:
            norms = torch._foreach_norm(self.grads, norm_type)
        return float(torch.linalg.vector_norm(torch.stack(norms), norm_type))

    def clip_global_norm(self, max_norm, norm_type):
        """clip_grad_norm_'s arithmetic; returns the clamped coefficient (NaN propagates)."""
        coef = self._coefficient(max_norm, norm_type)
        c = float(coef)
        if not c >= 1.0:  # below 1, or NaN (which clip_grad_norm_ also multiplies by)
            torch._foreach_mul_(self.grads, coef)
            self._norms = None
        return c

    def scale_all(self, factor):
        torch._foreach_mul_(self.grads, factor)
        self._norms = None

    def scale_param(self, index, factor):
        self.grads[index].mul_(factor)
        self._norms = None

    def clamp(self, bound):
        torch._foreach_clamp_min_(self.grads, -bound)
        torch._foreach_clamp_max_(self.grads, bound)
        self._norms = None

    def unit_clip(self, clip_factor, eps, propagate):
        """Adaptive gradient clipping per output unit, timm's ``adaptive_clip_grad``: units
        are rows (dim 0) of tensors of rank >= 2, a tensor of rank <= 1 is one unit. Units
        with non-finite weights are left alone unless ``propagate``."""
        for w, g in zip(self.weights, self.grads):
            if g.numel() == 0:
                continue
            dims = tuple(range(1, g.ndim)) if g.ndim > 1 else None
            keep = g.ndim > 1
            wn = torch.linalg.vector_norm(w, 2, dim=dims, keepdim=keep)
            gn = torch.linalg.vector_norm(g, 2, dim=dims, keepdim=keep)
            bound = clip_factor * wn.clamp(min=eps)
            clip = gn >= bound
            if not propagate:
                clip &= torch.isfinite(wn)
            # On a GPU no host sync: unclipped units are multiplied by exactly 1.
            if self._device.type != "cpu" or bool(clip.any()):
                factor = torch.where(clip, bound / gn.clamp(min=1e-6), torch.ones_like(gn))
                g.mul_(factor.to(g.dtype))
        self._norms = None

    def add_penalty_grad(self, index, l1, l2):
        """``g += l1 * sign(w) + 2 * l2 * w`` on tensor ``index``; returns sum |w|."""
        w, g = self.weights[index], self.grads[index]
        if l1 != 0.0:
            g.add_(torch.sign(w), alpha=l1)
        if l2 != 0.0:
            g.add_(w, alpha=2.0 * l2)
        self._norms = None
        return float(w.abs().sum(dtype=torch.float64)) if l1 != 0.0 else 0.0

    def zero_nonfinite(self):
        for g in self.grads:
            torch.nan_to_num_(g, nan=0.0, posinf=0.0, neginf=0.0)
        self._norms = None


def copy_weights(buffers, weights):
    """Copies the weights into ``buffers`` (allocated once, on the weights' device), or makes
    them; returns the buffers."""
    if buffers is None or len(buffers) != len(weights):
        return [w.detach().clone() for w in weights]
    torch._foreach_copy_(buffers, weights)
    return buffers


def update_norms(buffers, weights):
    """After the update: per tensor (||w_after - w_before||, ||w_before||, non-finite weights
    after), with ``buffers`` holding the weights before (overwritten with the difference).
    Non-finite weights are counted only where the difference is not finite."""
    wn = torch._foreach_norm(buffers, 2)
    torch._foreach_sub_(buffers, weights)
    dn = torch._foreach_norm(buffers, 2)
    dev = _first_device(weights)
    table = torch.stack(
        [torch.stack([n.to(dev, torch.float64) for n in col]) for col in (dn, wn)]
    ).tolist()
    out = []
    for i, (d, w) in enumerate(zip(*table)):
        bad = 0 if d < _INF else int((~torch.isfinite(weights[i])).sum())
        out.append((d, w, bad))
    return out


def is_tensor(obj):
    return isinstance(obj, torch.Tensor)


_F32 = torch.float32


def classify(grads):
    """"none" when no gradient is a torch tensor; "host" when every one is a CPU float32
    contiguous tensor (gradguard reads them in place); "device" otherwise."""
    any_tensor = False
    for g in grads:
        if isinstance(g, torch.Tensor):
            any_tensor = True
            if g.device.type != "cpu" or g.dtype is not _F32 or not g.is_contiguous():
                return "device"
    return "host" if any_tensor else "none"
