#!/usr/bin/env bash
# The whole job, end to end: `gradguard run` of examples/specs/lstm-adding-job.toml (LSTM hidden
# 96 on the adding problem, sequence 60, batch 32, Adam, clip_global_norm, 3000 steps, every
# default detector and report on) against ../shared/peers/torch_adding_job.py (the same loop in
# PyTorch, no monitoring), at the same thread counts, interleaved round by round so both see the
# same machine. Wall time of the whole process for gradguard (startup, data, probe, training,
# reports), the training loop's own figure for PyTorch (its script times only the loop).
#
#   scripts/adding_job_bench.sh [ROUNDS=3] [THREADS="1 2"]
#
# Needs: a release build (cargo build --release --bin gradguard) and a Python with torch
# (TORCH_PYTHON, default `python`; e.g. `. /work/torch-venv/bin/activate` first). PEERS points
# at the peer scripts (default ../shared/peers). Prints one line per measurement and the
# load average before each, then the medians and the ratio gradguard / PyTorch per thread count.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
threads=${2:-"1 2"}
peers=${PEERS:-../shared/peers}
py=${TORCH_PYTHON:-python}
bin=target/release/gradguard
spec=examples/specs/lstm-adding-job.toml
[ -x "$bin" ] || { echo "build first: cargo build --release --bin gradguard" >&2; exit 1; }
[ -f "$peers/torch_adding_job.py" ] || { echo "no $peers/torch_adding_job.py (set PEERS)" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
results="$out/results.txt"
load() { cut -d' ' -f1 /proc/loadavg; }
for r in $(seq 1 "$rounds"); do
  for t in $threads; do
    l=$(load)
    s=$(date +%s.%N)
    "$bin" -q run "$spec" --threads "$t" --no-verify --out "$out/run-$r-$t" >/dev/null
    e=$(date +%s.%N)
    g=$(echo "$e - $s" | bc -l)
    loss=$(grep -o '"final_train_loss":[^,]*' "$out/run-$r-$t/summary.json" | head -1 || true)
    printf 'round %s threads %s gradguard %.2f s (load %s) %s\n' "$r" "$t" "$g" "$l" "$loss"
    echo "gradguard $t $g" >>"$results"
    l=$(load)
    line=$("$py" "$peers/torch_adding_job.py" "$t")
    p=$(echo "$line" | sed -E 's/.*: ([0-9.]+) s for.*/\1/')
    printf 'round %s threads %s pytorch   %.2f s (load %s) %s\n' "$r" "$t" "$p" "$l" "$line"
    echo "pytorch $t $p" >>"$results"
  done
done
echo "medians over $rounds rounds:"
for t in $threads; do
  med() { grep "^$1 $t " "$results" | cut -d' ' -f3 | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
  g=$(med gradguard); p=$(med pytorch)
  printf 'threads %s: gradguard %.2f s, pytorch %.2f s, ratio %.2f\n' "$t" "$g" "$p" "$(echo "$g / $p" | bc -l)"
done
