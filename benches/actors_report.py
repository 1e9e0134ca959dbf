#!/usr/bin/env python3
"""bench_results/actors.{json,md} from criterion's output plus the Erlang figures.

    python3 benches/actors_report.py [--erlang FILE.jsonl] [--bench-load TEXT]

Runs scripts/bench_report.py's own functions (imported, not copied) on the
actor groups of benches/benches/actors.rs, and adds the results that
benches/erlang/run.sh printed (one JSON line each: group, case, impl,
ns_per_op, reps_ns_per_op) as rows of the same tables. bench_report.py reads
only criterion's directories; an option to merge such lines (e.g.
`--extra FILE.jsonl`) would make this wrapper unnecessary.

An Erlang row's "95% CI" column holds the min-max of its repetitions (there
is no criterion analysis behind it). Anything after the line
`<!-- analysis -->` in an existing bench_results/actors.md is kept: that is
where the hand-written reading of a run goes.

Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import bench_report  # noqa: E402  (found through the path set just above)

GROUPS = ["tell_100", "ping_pong", "spawn_first_msg", "ring_1000", "fan_in"]
MARKER = "<!-- analysis -->"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="actors", help="output name (bench_results/NAME.{json,md})")
    parser.add_argument("--criterion-dir", type=Path, default=ROOT / "target/criterion")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench_results")
    parser.add_argument("--erlang", type=Path, help="run.sh's output (default OUT_DIR/actors.erlang.jsonl)")
    parser.add_argument("--machine", type=Path, help="JSON object describing the machine, when not this one")
    parser.add_argument("--bench-load", help="load average seen while the benchmarks ran, to record")
    parser.add_argument("--preamble", default="", help="a paragraph to put under the title")
    parser.add_argument("--zbmd-rt", help="which zbmd-rt sources the bench binary was built from, to record")
    return parser.parse_args(argv)


def erlang_results(path: Path) -> list[bench_report.Result]:
    if not path.exists():
        print(f"actors_report: {path} missing; no Erlang rows", file=sys.stderr)
        return []
    stamp = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc).isoformat(timespec="seconds")
    results = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        reps = row.get("reps_ns_per_op") or [row["ns_per_op"]]
        ns = float(row["ns_per_op"])
        results.append(
            bench_report.Result(
                group=row["group"],
                type=row.get("case", ""),
                impl=row["impl"],
                median_ns=ns,
                median_ci_ns=(min(reps), max(reps)),
                elements_per_iter=1,
                ns_per_element=ns,
                elements_per_sec=1e9 / ns,
                measured_at=stamp,
            )
        )
    return results


def erlang_version() -> str | None:
    try:
        out = subprocess.run(
            ["erl", "-noshell", "-eval", "io:format(\"~s\", [erlang:system_info(otp_release)]), halt()."],
            capture_output=True, text=True, check=True, timeout=30,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def machine(args: argparse.Namespace) -> dict:
    info = json.loads(args.machine.read_text()) if args.machine else bench_report.machine()
    if not args.machine:
        info["erlang_otp"] = erlang_version()
    if args.bench_load:
        info["loadavg_during_bench"] = args.bench_load
    if args.zbmd_rt:
        info["zbmd_rt"] = args.zbmd_rt
    return info


def kept_analysis(md_path: Path) -> str:
    if not md_path.exists():
        return ""
    text = md_path.read_text()
    return text[text.index(MARKER):] if MARKER in text else ""


def markdown(args: argparse.Namespace, info: dict, results: list, spec: dict) -> str:
    """bench_report's tables, with a preamble on where the figures come from."""
    preamble = [args.preamble] if args.preamble else []
    if any(r.impl == "erlang" for r in results):
        preamble.append(
            f"Erlang/OTP {info.get('erlang_otp') or ''} rows come from `benches/erlang/run.sh` (2 schedulers "
            "bound to the 2 cores, `+S 2:2 +sbt db`), run in the same session right after criterion; their "
            "CI column is the min-max of their 5 repetitions. "
            "Tables and JSON: `python3 benches/actors_report.py`; plot: "
            "`cargo run --release -p zbmd-benches --example actors_plot`."
        )
    if args.bench_load:
        preamble.append(f"Load average while the benchmarks ran: {args.bench_load}.")
    if args.zbmd_rt:
        preamble.append(f"zbmd-rt measured: {args.zbmd_rt}.")
    report_args = bench_report.parse_args([args.name, "--ours", "zbmd", "--preamble", " ".join(preamble)])
    return bench_report.markdown(report_args, info, results, GROUPS, spec)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    spec_path = args.out_dir / "actors.targets.json"
    spec = json.loads(spec_path.read_text()) if spec_path.exists() else {}
    results = [r for g in GROUPS for r in bench_report.load_group(args.criterion_dir, g)]
    if not results:
        sys.exit(f"actors_report: no criterion results in {args.criterion_dir}; run cargo bench first")
    erlang_path = args.erlang or args.out_dir / "actors.erlang.jsonl"
    results += erlang_results(erlang_path)
    info = machine(args)
    if not info.get("erlang_otp") and erlang_path.exists():
        # The version the Erlang run itself reported.
        rows = [json.loads(line) for line in erlang_path.read_text().splitlines() if line.strip()]
        info["erlang_otp"] = next((row["otp"] for row in rows if "otp" in row), None)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for r in results:
        record = asdict(r)
        record["median_ci_ns"] = list(r.median_ci_ns)
        record["ns_per_op"] = r.time_ns
        records.append(record)
    json_path = args.out_dir / f"{args.name}.json"
    json_path.write_text(json.dumps({"machine": info, "results": records}, indent=2) + "\n")
    md_path = args.out_dir / f"{args.name}.md"
    analysis = kept_analysis(md_path)
    text = markdown(args, info, results, spec).rstrip("\n") + "\n"
    md_path.write_text(text + ("\n" + analysis if analysis else ""))
    print(f"actors_report: {len(results)} results -> {json_path}, {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
