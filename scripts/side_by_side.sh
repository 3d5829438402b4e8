#!/usr/bin/env bash
# gradguard's training-step benches and PyTorch's (../shared/peers/torch_train_bench.py) at the
# same thread counts, in one session, round by round, for the four reference shapes (MLP
# 784-256-256-10 batch 64; LSTM, tanh RNN, GRU with I=32 H=128 T=50 B=32).
#
#   scripts/side_by_side.sh [ROUNDS=3] [THREADS="1 2"]
#
# gradguard: criterion medians (wall clock, the step inside a ThreadPool of N threads);
# PyTorch: median of 50 steps after 10 warm-up steps. Prints the load average before each part
# and one line per model and thread count: gradguard ms, PyTorch ms, ratio.
# Needs: TORCH_PYTHON (default `python`) with torch; PEERS (default ../shared/peers).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
threads=${2:-"1 2"}
peers=${PEERS:-../shared/peers}
py=${TORCH_PYTHON:-python}
tlist=$(echo "$threads" | tr ' ' ',')
cargo bench -p gradguard-models --bench recurrent_step --bench mlp_step --no-run >/dev/null 2>&1
ms() { # criterion "time: [lo mid hi]" middle value in ms
  awk '{for (i=1;i<=NF;i++) if ($i ~ /^\[/) {v=substr($(i+2),1); u=$(i+3); if (u=="µs"||u=="us") v/=1000; if (u=="s") v*=1000; print v; exit}}'
}
for r in $(seq 1 "$rounds"); do
  echo "== round $r, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%H:%M:%S) UTC"
  tj=$(mktemp)
  "$py" "$peers/torch_train_bench.py" --threads $threads --steps 50 --warmup 10 --clip-reps 20 --json "$tj" >/dev/null
  gl=$(mktemp)
  GRADGUARD_BENCH_THREADS=$tlist cargo bench -p gradguard-models --bench recurrent_step -- \
    --warm-up-time 1 --measurement-time 3 wall 2>/dev/null | grep -E "^recurrent|time:" >"$gl" || true
  GRADGUARD_BENCH_THREADS=$tlist cargo bench -p gradguard-models --bench mlp_step -- \
    --warm-up-time 1 --measurement-time 3 wall 2>/dev/null | grep -E "^mlp|time:" >>"$gl" || true
  echo "   (load after: $(cut -d' ' -f1 /proc/loadavg))"
  for t in $threads; do
    for m in mlp lstm rnn gru; do
      case $m in
        mlp) if [ "$t" = 1 ]; then pat="mlp_784_256_256_10_b64_step/wall\$"; else pat="mlp_784_256_256_10_b64_step/wall_${t}threads"; fi ;;
        lstm) pat="_${t}thread_wall/lstm" ;;
        rnn) pat="_${t}thread_wall/rnn_tanh" ;;
        gru) pat="_${t}thread_wall/gru" ;;
      esac
      g=$(grep -A1 -E "$pat" "$gl" | grep "time:" | head -1 | ms || true)
      p=$("$py" -c "import json,sys; d=json.load(open('$tj')); print([x['step_median_ms'] for x in d['results'] if x['model']=='$m' and x['threads']==$t][0])")
      printf '   %-4s %s thread(s): gradguard %6.3f ms  pytorch %6.3f ms  ratio %.2f\n' "$m" "$t" "${g:-nan}" "$p" "$(echo "${g:-0} / $p" | bc -l)"
    done
  done
  rm -f "$tj" "$gl"
done
