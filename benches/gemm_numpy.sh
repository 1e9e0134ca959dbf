#!/usr/bin/env bash
# The reference point of benches/gpu.rs's GEMM: numpy's matmul (OpenBLAS) on
# the same square f32 sizes, single-threaded (as a shard runs GEMM) and with
# every core. Installs numpy into a venv under target/ on first use.
#
#   benches/gemm_numpy.sh OUT.json
set -euo pipefail
out=${1:?usage: gemm_numpy.sh OUT.json}
venv=target/bench-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet numpy
fi
"$venv/bin/python" benches/gemm_numpy.py "$out"
