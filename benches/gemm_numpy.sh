#!/usr/bin/env bash
# The reference point of benches/gpu.rs's GEMM: numpy's matmul (OpenBLAS) on
# the same square f32 sizes, single-threaded (as a shard runs GEMM) and with
# every core. Installs numpy into a venv under target/ on first use.
#
#   benches/gemm_numpy.sh OUT.json
set -euo pipefail
out=${1:?usage: gemm_numpy.sh OUT.json}
venv=target/bench-venv
if ! "$venv/bin/python" -c 'import numpy' 2>/dev/null; then
  python3 -m venv "$venv"
  if ! "$venv/bin/pip" install --quiet numpy; then
    # GPU machines may have no route to PyPI: the reference point is then
    # missing, not the benchmarks.
    echo "gemm_numpy: numpy could not be installed: numpy reference skipped" >&2
    exit 0
  fi
fi
"$venv/bin/python" benches/gemm_numpy.py "$out"
