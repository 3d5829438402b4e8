#!/usr/bin/env bash
# Mutation testing of the formulas: cargo-mutants over the clipping, non-finite policy and
# detector threshold code, and the core statistics pass. Too slow for every CI run (hours on
# 2 cores for the whole crates; about 1-2 h for the scope below), so it is run by hand before a
# change to these files lands, and the scores go into docs/TESTING.md.
#
#   scripts/mutants.sh [remedies|detectors|core|all] [extra cargo-mutants args]
#
# Runs in place (`--in-place`): use a clean checkout or worktree that nothing else builds in,
# e.g. `git worktree add ../gg-mutants && cd ../gg-mutants && scripts/mutants.sh all`.
# Results: target/mutants/<scope>/mutants.out (caught.txt, missed.txt, timeout.txt, unviable.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-mutants >/dev/null || cargo install cargo-mutants --locked

scope=${1:-all}
shift || true

remedies=(clip_global_norm clip_norm clip_value zclip autoclip agc nonfinite skip_nonfinite)
detectors=(grad_norm_above_one weights_change_large loss_unstable grad_spike loss_not_converging
    grad_nonfinite loss_nonfinite weights_nonfinite grad_growth_across_layers)
core=(stats kernels)

run() {
    local crate=$1; shift
    local files=()
    for f in "$@"; do files+=(-f "crates/$crate/src/$f.rs"); done
    local out="target/mutants/${crate#gradguard-}"
    mkdir -p "$out"
    echo "=== cargo mutants -p $crate ${files[*]}"
    # --lib --tests: the crate's unit and integration tests, not its doc tests (the formulas'
    # doc examples are also covered by unit tests; doc tests would double the time per mutant).
    cargo mutants --in-place --no-shuffle -p "$crate" "${files[@]}" -o "$out" "${EXTRA[@]}" \
        -- --lib --tests || true
    local o="$out/mutants.out"
    printf '%s: caught %s, missed %s, timeout %s, unviable %s\n' "$crate" \
        "$(wc -l < "$o/caught.txt")" "$(wc -l < "$o/missed.txt")" \
        "$(wc -l < "$o/timeout.txt")" "$(wc -l < "$o/unviable.txt")"
}

EXTRA=("$@")
case $scope in
    remedies) run gradguard-remedies "${remedies[@]}" ;;
    detectors) run gradguard-detectors "${detectors[@]}" ;;
    core) run gradguard-core "${core[@]}" ;;
    all)
        run gradguard-remedies "${remedies[@]}"
        run gradguard-detectors "${detectors[@]}"
        run gradguard-core "${core[@]}"
        ;;
    *) echo "usage: $0 [remedies|detectors|core|all] [cargo-mutants args]" >&2; exit 2 ;;
esac
