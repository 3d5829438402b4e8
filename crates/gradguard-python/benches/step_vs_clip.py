"""guard.step against torch.nn.utils.clip_grad_norm_ alone, side by side in one process.

The MLP 784-256-256-10 (batch 64) of ../../../BENCHMARKS.md, one CPU thread by default: the
gradients of one real backward pass are saved once, and before every timed call they are
restored with one ``torch._foreach_copy_`` (so every call sees the same, unclipped
gradients); the copy is timed alone too and subtracted. Timed:

- ``clip_grad_norm_(model.parameters(), max_norm)``;
- ``guard.step(model, loss)`` with every default detector and ``clip_global_norm``, on both
  roads: CPU float32 tensors read in place (the default) and ``torch_stats=True`` (torch ops,
  the road CUDA tensors take);
- ``guard.after_update(model)`` (||dw|| per tensor), reported apart: it is not in the target.

Usage: python step_vs_clip.py [--threads N] [--reps N] [--max-norm X] [--clock cpu|wall]
       [--json out.json]
"""

import argparse
import json
import platform
import statistics
import time

import torch

import gradguard


CLOCK = time.process_time


def timed(fn, restore, reps, rounds=7):
    """Median over rounds of the mean time per call (microseconds) of restore(); fn(), on
    CLOCK: the process's CPU time by default (one thread: what other processes on a busy
    machine do not inflate), or wall time with --clock wall."""
    for _ in range(50):
        restore()
        fn()
    per_round = []
    for _ in range(rounds):
        t0 = CLOCK()
        for _ in range(reps):
            restore()
            fn()
        per_round.append((CLOCK() - t0) / reps * 1e6)
    return statistics.median(per_round), min(per_round), max(per_round)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=400)
    ap.add_argument("--max-norm", type=float, default=0.1)
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    ap.add_argument("--json")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 10),
    )
    x, y = torch.randn(64, 784), torch.randint(0, 10, (64,))
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    loss = loss.detach()
    params = list(model.parameters())
    grads = [p.grad for p in params]
    saved = [g.clone() for g in grads]
    total = float(torch.nn.utils.get_total_norm(saved))

    def restore():
        torch._foreach_copy_(grads, saved)

    def nothing():
        pass

    results = {}
    results["restore (subtracted)"] = timed(nothing, restore, args.reps)
    results["clip_grad_norm_"] = timed(
        lambda: torch.nn.utils.clip_grad_norm_(params, args.max_norm), restore, args.reps)
    remedies = [{"kind": "clip_global_norm", "max_norm": args.max_norm}]
    for label, road in [("guard.step (CPU tensors in place)", None),
                        ("guard.step (torch ops, torch_stats=True)", True)]:
        guard = gradguard.Guard(remedies=remedies, quiet=True, torch_stats=road)

        def one_step(guard=guard):
            guard.step(model, loss)
        results[label] = timed(one_step, restore, args.reps)
        guard_u = gradguard.Guard(remedies=remedies, quiet=True, torch_stats=road)

        def step_and_update(guard=guard_u):
            guard.step(model, loss)
            guard.after_update(model)
        both = timed(step_and_update, restore, args.reps)
        results[label.replace("guard.step", "step + after_update")] = both

    base = results["restore (subtracted)"][0]
    clip = results["clip_grad_norm_"][0] - base
    print(f"# MLP 784-256-256-10, batch 64, {sum(p.numel() for p in params)} parameters, "
          f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), "
          f"{args.threads} thread(s), {args.clock} time, {platform.processor() or platform.machine()}; "
          f"global norm {total:.3f}, max_norm {args.max_norm} (every call clips)")
    print(f"{'what':45s} {'median us':>10s} {'min-max us':>14s} {'x clip_grad_norm_':>18s}")
    rows = {}
    for k, (med, lo, hi) in results.items():
        net = med - (0 if k.startswith("restore") else base)
        ratio = "" if k.startswith("restore") else f"{net / clip:.2f}"
        print(f"{k:45s} {net:10.1f} {lo - base if not k.startswith('restore') else lo:7.1f}-"
              f"{hi - base if not k.startswith('restore') else hi:<7.1f}{ratio:>16s}")
        rows[k] = {"median_us": net, "ratio_to_clip_grad_norm": None if k.startswith("restore") else net / clip}
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "torch": torch.__version__, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
