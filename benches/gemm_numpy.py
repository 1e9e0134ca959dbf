"""Times numpy's f32 matmul (OpenBLAS) at 512, 1024 and 2048, on one thread
and on every core, and writes the medians to the JSON file named on the
command line. Called by benches/gemm_numpy.sh."""

import json
import os
import platform
import statistics
import sys
import time


def median_ns(a, b, repeats):
    import numpy as np

    np.matmul(a, b)  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        np.matmul(a, b)
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times)


def run(threads):
    # OpenBLAS reads its thread count when numpy is first imported: time each
    # setting in its own interpreter.
    import subprocess

    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    code = (
        "import json, numpy as np, sys; sys.path.insert(0, 'benches'); import gemm_numpy as g; "
        "rng = np.random.default_rng(0); out = {}\n"
        "for n in (512, 1024, 2048):\n"
        "    a = rng.random((n, n), dtype=np.float32); b = rng.random((n, n), dtype=np.float32)\n"
        "    out[n] = g.median_ns(a, b, 10 if n < 2048 else 5)\n"
        "print(json.dumps(out))"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    return {int(n): ns for n, ns in json.loads(result.stdout).items()}


def main():
    import numpy as np

    results = []
    for threads in (1, os.cpu_count() or 1):
        for n, ns in run(threads).items():
            results.append({"group": "gemm_cpu", "case": str(n), "impl": f"numpy-openblas-{threads}t", "median_ns": ns})
    machine = {
        "host": platform.node(),
        "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"),
        "cores": os.cpu_count(),
        "numpy": np.__version__,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with open(sys.argv[1], "w") as f:
        json.dump({"machine": machine, "results": results}, f, indent=1)
    for r in results:
        print(f"{r['case']:>5} {r['impl']:<20} {r['median_ns'] / 1e6:9.2f} ms")


if __name__ == "__main__":
    main()
