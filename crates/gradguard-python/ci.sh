#!/usr/bin/env bash
# Builds the gradguard Python package the way a user installs it (pip install of this
# directory, maturin from PyPI as the build backend) in a fresh virtual environment, and runs
# its pytest suite. Also formats and lints the crate, which is outside the Cargo workspace
# (so `cargo fmt --all` and `cargo clippy --workspace` at the root do not see it).
# Also installs PyTorch (CPU use of the PyPI wheel) and Lightning into the venv for the torch
# tests and examples. Run from anywhere; needs python3 (>= 3.9), cargo, and PyPI.
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"
crate=crates/gradguard-python
venv="$root/target/python-ci-venv"
# The crate's build artefacts, kept between runs (ignored by git).
export CARGO_TARGET_DIR="$root/target/python"

echo "--- gradguard-python: rustfmt, clippy and rustdoc (-D warnings)"
cargo fmt --manifest-path "$crate/Cargo.toml" -- --check
cargo clippy --manifest-path "$crate/Cargo.toml" --features extension-module -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --manifest-path "$crate/Cargo.toml" --features extension-module

echo "--- gradguard-python: a fresh virtual environment ($venv)"
rm -rf "$venv"
python3 -m venv "$venv"
pip_q() { "$venv/bin/pip" install -q --disable-pip-version-check "$@"; }
pip_q numpy pytest

echo "--- gradguard-python: PyTorch 2.15 for CPU, and Lightning (for the torch tests and examples)"
# PyPI's Linux torch wheel is the CUDA build and needs the CUDA runtime libraries to import,
# even on a CPU: the wheel without its resolver-pinned extras, then the libraries it loads
# (../shared/peers/README.md). About 4 GB; pip's cache makes a second run quick.
wheels="$root/target/python-ci-wheels"
"$venv/bin/pip" download -q --disable-pip-version-check --no-deps torch==2.15.0 -d "$wheels"
pip_q --no-deps "$wheels"/torch-2.15.0-*.whl
pip_q filelock typing-extensions sympy networkx jinja2 fsspec
pip_q --no-deps 'cuda-toolkit[cublas,cudart,cufft,cufile,cupti,cusparse,nvjitlink,nvrtc]==13.2.2' \
    nvidia-cublas==13.4.1.3 nvidia-cuda-runtime==13.2.86 nvidia-cufft==12.2.0.57 nvidia-cufile==1.17.1.22 \
    nvidia-cuda-cupti==13.2.86 nvidia-cusparse==12.7.10.12 nvidia-nvjitlink==13.5.37 nvidia-cuda-nvrtc==13.2.86 \
    nvidia-cudnn-cu13==9.26.0.51 nvidia-cusparselt-cu13==0.8.1 nvidia-nccl-cu13==2.30.7 nvidia-nvshmem-cu13==3.7.2
pip_q lightning
"$venv/bin/python" -c 'import torch, lightning; print("torch", torch.__version__, "lightning", lightning.__version__)'

echo "--- gradguard-python: pip install ./$crate (maturin from PyPI builds the abi3 wheel)"
"$venv/bin/pip" install -q --disable-pip-version-check "./$crate"
"$venv/bin/python" -c 'import gradguard, sys; print("gradguard", gradguard.__version__, "on Python", sys.version.split()[0])'

echo "--- gradguard-python: pytest"
# From the tests' directory, so that the installed package (not the source tree) is imported.
# GRADGUARD_REQUIRE_TORCH: a missing torch fails the PyTorch tests instead of skipping them.
(cd "$crate/tests" && GRADGUARD_REQUIRE_TORCH=1 "$venv/bin/python" -m pytest -q -rs -p no:cacheprovider .)

echo "--- gradguard-python: examples/python (each checks itself)"
for example in examples/python/*.py; do
    GRADGUARD_EXAMPLE_OUT="$root/target/python-examples/$(basename "$example" .py)" "$venv/bin/python" "$example"
    echo "example $example: ok"
done
echo "gradguard-python: ok"
