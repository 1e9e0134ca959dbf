#!/usr/bin/env bash
# zbmd against PyTorch on the CPU: numerics (100 SGD steps from the same
# weights, losses within 1e-4 relative) and the time of one training step.
# Creates target/torch-venv with torch, numpy and safetensors from PyPI on
# first use (about 5.4 GB: the torch wheel brings its CUDA libraries).
#
#   benches/torch/run.sh [all|parity|step]     (from the repository root)
#
# Writes bench_results/torch_parity.{json,md} and
# bench_results/train_step.{torch.json,json,md,svg}. Exits non-zero if the
# numerics check fails (after writing its results).
set -euo pipefail
cd "$(dirname "$0")/../.."
what=${1:-all}
case $what in all|parity|step) ;; *) echo "usage: $0 [all|parity|step]" >&2; exit 2 ;; esac

venv=target/torch-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import torch, numpy, safetensors' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet torch numpy safetensors
fi
py="$venv/bin/python"
target_dir=${CARGO_TARGET_DIR:-target}
status=0

if [ "$what" != step ]; then
  work="$target_dir/torch-parity"
  mkdir -p "$work"
  cargo run --quiet --release -p zbmd-ml --example torch_parity -- --seed 7 --steps 100 --out "$work" \
    > "$work/zbmd.json"
  "$py" benches/torch/parity.py "$work" bench_results/torch_parity.json bench_results/torch_parity.md \
    || status=$?
fi

if [ "$what" != parity ]; then
  cargo bench -p zbmd-benches --bench train_step
  "$py" benches/torch/step_time.py bench_results/train_step.torch.json
  python3 benches/torch/report.py "$target_dir/criterion" bench_results/train_step.torch.json \
    bench_results/train_step
fi
exit $status
