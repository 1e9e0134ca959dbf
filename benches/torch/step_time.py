"""PyTorch's training step on the model, data and optimizer of
benches/benches/train_step.rs, timed on 1 and 2 intra-op threads.

    python benches/torch/step_time.py OUT.json [--steps N] [--warmup N]

The step is what a PyTorch training loop writes: zero_grad (set_to_none, the
default), forward of nn.Sequential(Linear(64, 128), ReLU, Linear(128, 10)),
F.cross_entropy (mean), backward, SGD(lr=0.1, momentum=0.9).step(). The
batches are the 28 full batches of 64 of one unshuffled epoch over the UCI
digits (ml/data/digits.csv.gz, the file zbmd embeds) divided by 16, as
tensors made before timing, cycled. Each step is timed on its own
(perf_counter_ns, about 0.1 us of overhead against ~100 us steps) after a
warm-up; the JSON holds the median and the spread per thread count.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "ml/data/digits.csv.gz"
BATCH = 64


def digits_batches():
    """The full batches of one unshuffled epoch: [(features [64, 64], labels [64])]."""
    import torch

    rows = [line.split(",") for line in gzip.open(DIGITS, "rt").read().split()]
    if not rows or any(len(r) != 65 for r in rows):
        sys.exit(f"step_time: {DIGITS}: expected rows of 64 features and a label")
    features = torch.tensor([[float(v) for v in r[:64]] for r in rows], dtype=torch.float32) / 16.0
    labels = torch.tensor([int(r[64]) for r in rows], dtype=torch.int64)
    full = len(rows) // BATCH
    return [(features[i * BATCH : (i + 1) * BATCH].contiguous(), labels[i * BATCH : (i + 1) * BATCH].contiguous()) for i in range(full)]


def time_steps(threads: int, batches, warmup: int, steps: int) -> dict:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(7)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    first = step(*batches[0]).item()
    for i in range(warmup):
        step(*batches[i % len(batches)])
    times = []
    for i in range(steps):
        x, y = batches[i % len(batches)]
        start = time.perf_counter_ns()
        step(x, y)
        times.append(time.perf_counter_ns() - start)
    last = step(*batches[0]).item()
    if not last < first:
        sys.exit(f"step_time: training diverged ({threads} threads): loss on batch 0 went from {first} to {last}")
    times.sort()
    return {
        "group": "train_step",
        "impl": f"pytorch-{threads}t",
        "threads": threads,
        "steps": steps,
        "warmup": warmup,
        "median_ns": statistics.median(times),
        "p10_ns": times[len(times) // 10],
        "p90_ns": times[len(times) * 9 // 10],
        "mean_ns": statistics.fmean(times),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=500)
    args = parser.parse_args()

    import torch

    batches = digits_batches()
    results = [time_steps(t, batches, args.warmup, args.steps) for t in (1, 2)]
    machine = {
        "host": platform.node(),
        "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), None),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_parallel_info": torch.__config__.parallel_info().splitlines()[:6],
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "loadavg_1_5_15": list(os.getloadavg()),
    }
    args.out.write_text(json.dumps({"machine": machine, "results": results}, indent=1) + "\n")
    for r in results:
        print(f"{r['impl']:<12} median {r['median_ns'] / 1e3:8.1f} us  (p10 {r['p10_ns'] / 1e3:.1f}, p90 {r['p90_ns'] / 1e3:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
