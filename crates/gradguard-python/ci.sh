#!/usr/bin/env bash
# Builds the gradguard Python package the way a user installs it (pip install of this
# directory, maturin from PyPI as the build backend) in a fresh virtual environment, and runs
# its pytest suite. Also formats and lints the crate, which is outside the Cargo workspace
# (so `cargo fmt --all` and `cargo clippy --workspace` at the root do not see it).
# Run from anywhere; needs python3 (>= 3.9), cargo, and PyPI.
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"
crate=crates/gradguard-python
venv="$root/target/python-ci-venv"
# The crate's build artefacts, kept between runs (ignored by git).
export CARGO_TARGET_DIR="$root/target/python"

echo "--- gradguard-python: rustfmt and clippy (-D warnings)"
cargo fmt --manifest-path "$crate/Cargo.toml" -- --check
cargo clippy --manifest-path "$crate/Cargo.toml" --features extension-module -- -D warnings

echo "--- gradguard-python: a fresh virtual environment ($venv)"
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check numpy pytest

echo "--- gradguard-python: pip install ./$crate (maturin from PyPI builds the abi3 wheel)"
"$venv/bin/pip" install -q --disable-pip-version-check "./$crate"
"$venv/bin/python" -c 'import gradguard, sys; print("gradguard", gradguard.__version__, "on Python", sys.version.split()[0])'

echo "--- gradguard-python: pytest"
# From the tests' directory, so that the installed package (not the source tree) is imported.
(cd "$crate/tests" && "$venv/bin/python" -m pytest -q -p no:cacheprovider .)

echo "--- gradguard-python: examples/python (each checks itself)"
for example in examples/python/*.py; do
    "$venv/bin/python" "$example"
    echo "example $example: ok"
done
echo "gradguard-python: ok"
