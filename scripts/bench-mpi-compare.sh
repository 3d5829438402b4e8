#!/usr/bin/env bash
# The speed-up of `gradguard compare` on 2 MPI ranks against 1 process (issue 15; BENCHMARKS.md,
# "Compare on MPI ranks"). Needs a release build with the feature:
#   cargo build --release --features mpi
# Usage: scripts/bench-mpi-compare.sh [REPEATS]   (default 3; alternates the two, one after the other)
# Prints one line per repeat: 1 process (--jobs 1), 2 ranks (mpirun -np 2), 2 threads (--jobs 2),
# each with its wall and CPU (user + system) seconds and the 1-minute load average before it;
# checks that compare.json is the same.
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
# Wall seconds, then the CPU seconds (user + system) of the command and everything it waited for.
secs() { /usr/bin/time -f '%e %U %S' -o "$out/time" "$@" >/dev/null; awk '{printf "%s %.2f", $1, $2 + $3}' "$out/time"; }
for i in $(seq 1 "$repeats"); do
    load=$(cut -d' ' -f1 /proc/loadavg)
    read -r t1 c1 <<<"$(secs "$bin" "${args[@]}" --jobs 1 --out "$out/one-$i")"
    load2=$(cut -d' ' -f1 /proc/loadavg)
    read -r t2 c2 <<<"$(secs mpirun -np 2 "${root[@]}" "$bin" "${args[@]}" --out "$out/mpi-$i")"
    load3=$(cut -d' ' -f1 /proc/loadavg)
    read -r t3 c3 <<<"$(secs "$bin" "${args[@]}" --jobs 2 --out "$out/threads-$i")"
    for d in mpi threads; do
        cmp -s "$out/one-$i/compare.json" "$out/$d-$i/compare.json" || { echo "$d: compare.json differs"; exit 1; }
    done
    printf 'run %d: 1 process %.2f s, cpu %.1f s (load %s) | 2 ranks %.2f s, cpu %.1f s (load %s): %.2fx | 2 threads %.2f s, cpu %.1f s (load %s): %.2fx\n' \
        "$i" "$t1" "$c1" "$load" "$t2" "$c2" "$load2" "$(echo "$t1 / $t2" | bc -l)" "$t3" "$c3" "$load3" "$(echo "$t1 / $t3" | bc -l)"
done
