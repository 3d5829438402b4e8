#!/usr/bin/env bash
# The speed-up of `gradguard compare` on 2 MPI ranks against 1 process (issue 15; BENCHMARKS.md,
# "Compare on MPI ranks"). Needs a release build with the feature:
#   cargo build --release --features mpi
# Usage: scripts/bench-mpi-compare.sh [REPEATS]   (default 3; alternates the two, one after the other)
# Prints one line per repeat: 1 process (--jobs 1), 2 ranks (mpirun -np 2), 2 threads (--jobs 2),
# each with the 1-minute load average before it; checks that compare.json is the same.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/gradguard
repeats=${1:-3}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
args=(compare examples/specs/lstm-adding-clipped.json --with clip_value,clip_norm,l2
      --seeds 5 --steps 1500 -q)
root=()
[ "$(id -u)" = 0 ] && root=(--allow-run-as-root)
secs() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
for i in $(seq 1 "$repeats"); do
    load=$(cut -d' ' -f1 /proc/loadavg)
    t1=$(secs "$bin" "${args[@]}" --jobs 1 --out "$out/one-$i")
    load2=$(cut -d' ' -f1 /proc/loadavg)
    t2=$(secs mpirun -np 2 "${root[@]}" "$bin" "${args[@]}" --out "$out/mpi-$i")
    load3=$(cut -d' ' -f1 /proc/loadavg)
    t3=$(secs "$bin" "${args[@]}" --jobs 2 --out "$out/threads-$i")
    for d in mpi threads; do
        cmp -s "$out/one-$i/compare.json" "$out/$d-$i/compare.json" || { echo "$d: compare.json differs"; exit 1; }
    done
    printf 'run %d: 1 process %.2f s (load %s) | 2 ranks %.2f s (load %s): %.2fx | 2 threads %.2f s (load %s): %.2fx\n' \
        "$i" "$t1" "$load" "$t2" "$load2" "$(echo "$t1 / $t2" | bc -l)" "$t3" "$load3" "$(echo "$t1 / $t3" | bc -l)"
done
