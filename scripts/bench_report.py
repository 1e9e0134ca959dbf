#!/usr/bin/env python3
"""Turn criterion's output into zbmd's recorded benchmark results.

    python3 scripts/bench_report.py NAME [GROUP ...] [options]

reads target/criterion/<GROUP>/.../new/{benchmark,estimates}.json and writes

* bench_results/NAME.json: {"machine": {...}, "results": [{group, type, impl,
  median_ns, ns_per_element, elements_per_sec, ...}, ...]}
* bench_results/NAME.md: per group and case, a table of every implementation's
  median time per element with the speedup of each of ours over it
  ("speedup" = peer time / our time: above 1 we are faster), then the targets
  with met / missed and by how much.

A benchmark id is <group>/<case...>/<impl>: the last part names the
implementation, the parts between the group and it name the case (element
type, thread shape) within which implementations are compared. Ours are the
implementations whose name starts with --ours (default "zbmd").

GROUPs default to the "groups" of the targets file, else every group
criterion has results for. The targets file (default
bench_results/NAME.targets.json, optional) looks like:

    {"groups": ["spsc_throughput", ...],
     "notes": {"spsc_throughput": "text shown under the group's heading"},
     "targets": [
       {"group": "push_pop_1thread", "impl": "zbmd-*", "max_ns_per_element": 10},
       {"group": "spsc_throughput", "case": "*", "impl": "zbmd-spsc", "vs": "rtrb"}]}

"impl", "case" and "vs" are shell-style patterns (fnmatch); "case" defaults
to "*". A "vs" target is met when our time is no more than the peer's
("min_speedup" overrides the 1.0). A verdict whose two figures' 95%
confidence intervals overlap is marked as within noise.

Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Result:
    """One benchmark's figures."""

    group: str
    type: str
    impl: str
    median_ns: float
    median_ci_ns: tuple[float, float]
    elements_per_iter: int | None
    ns_per_element: float | None
    elements_per_sec: float | None
    measured_at: str

    @property
    def time_ns(self) -> float:
        """Time per element where criterion knows the element count, else per iteration."""
        return self.ns_per_element if self.ns_per_element is not None else self.median_ns

    @property
    def time_ci_ns(self) -> tuple[float, float]:
        scale = self.elements_per_iter or 1
        return (self.median_ci_ns[0] / scale, self.median_ci_ns[1] / scale)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="criterion output -> bench_results/NAME.{json,md}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("name", help="output name, e.g. queues")
    parser.add_argument("groups", nargs="*", help="criterion groups to report (see below)")
    parser.add_argument("--criterion-dir", type=Path, default=Path("target/criterion"))
    parser.add_argument("--out-dir", type=Path, default=Path("bench_results"))
    parser.add_argument("--targets", type=Path, help="targets file (default OUT_DIR/NAME.targets.json)")
    parser.add_argument("--ours", default="zbmd", help="name prefix of our implementations")
    parser.add_argument("--preamble", default="", help="a paragraph to put under the title")
    parser.add_argument(
        "--machine",
        type=Path,
        help="JSON object describing the machine that ran the benchmarks, when it is not this one",
    )
    return parser.parse_args(argv)


def load_targets(args: argparse.Namespace) -> dict:
    path = args.targets or args.out_dir / f"{args.name}.targets.json"
    if not path.exists():
        if args.targets:
            sys.exit(f"bench_report: targets file {path} does not exist")
        return {}
    with path.open() as f:
        return json.load(f)


def load_group(criterion_dir: Path, group: str) -> list[Result]:
    """Every benchmark under criterion_dir/<group> that has a finished run."""
    results = []
    for bench_file in sorted((criterion_dir / group).glob("**/new/benchmark.json")):
        estimates_file = bench_file.with_name("estimates.json")
        if not estimates_file.exists():
            continue
        bench = json.loads(bench_file.read_text())
        estimates = json.loads(estimates_file.read_text())
        # A function id may itself be "case/impl" (BenchmarkGroup::bench_function
        # with a path-like id) rather than a BenchmarkId's (function, value).
        function = (bench.get("function_id") or "").split("/")
        parts = [bench["group_id"], *function, bench.get("value_str")]
        parts = [p for p in parts if p]
        median = estimates["median"]
        interval = median["confidence_interval"]
        throughput = bench.get("throughput") or {}
        elements = throughput.get("Elements")
        per_element = median["point_estimate"] / elements if elements else None
        mtime = dt.datetime.fromtimestamp(estimates_file.stat().st_mtime, dt.timezone.utc)
        results.append(
            Result(
                group=parts[0],
                type="/".join(parts[1:-1]),
                impl=parts[-1],
                median_ns=median["point_estimate"],
                median_ci_ns=(interval["lower_bound"], interval["upper_bound"]),
                elements_per_iter=elements,
                ns_per_element=per_element,
                elements_per_sec=1e9 / per_element if per_element else None,
                measured_at=mtime.isoformat(timespec="seconds"),
            )
        )
    return results


def command_output(command: list[str]) -> str | None:
    try:
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def machine() -> dict:
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": cpu_model or platform.processor() or None,
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "kernel": f"{platform.system()} {platform.release()}",
        "rustc": command_output(["rustc", "--version"]),
        "git": command_output(["git", "describe", "--always", "--dirty"]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        # Other work on the machine skews every figure; the 5- and 15-minute
        # averages at report time cover a run that just finished.
        "loadavg_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


# ---------------------------------------------------------------------------
# Markdown.


def fmt_ns(ns: float | None) -> str:
    if ns is None:
        return "-"
    if ns >= 100:
        return f"{ns:,.0f}"
    return f"{ns:.2f}" if ns < 10 else f"{ns:.1f}"


def fmt_load(load: list[float] | None) -> str:
    return "-" if load is None else ", ".join(f"{x:.2f}" for x in load)


def fmt_rate(per_sec: float | None) -> str:
    return "-" if per_sec is None else f"{per_sec / 1e6:,.1f}"


def overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def group_table(results: list[Result], ours_prefix: str) -> list[str]:
    """One table per case: every implementation, with the speedup of each of ours."""
    lines = []
    cases = sorted({r.type for r in results})
    for case in cases:
        rows = sorted((r for r in results if r.type == case), key=lambda r: r.time_ns)
        ours = [r for r in rows if r.impl.startswith(ours_prefix)]
        unit = "ns/element" if all(r.ns_per_element is not None for r in rows) else "ns/iter"
        if case:
            lines.append(f"### {rows[0].group}/{case}\n")
        head = ["impl", f"{unit} (median)", "95% CI", "Melem/s"]
        head += [f"speedup of {o.impl}" for o in ours]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for r in rows:
            lo, hi = r.time_ci_ns
            name = f"**{r.impl}**" if r in ours else r.impl
            cells = [name, fmt_ns(r.time_ns), f"{fmt_ns(lo)}-{fmt_ns(hi)}", fmt_rate(r.elements_per_sec)]
            cells += ["-" if o is r else f"{r.time_ns / o.time_ns:.2f}x" for o in ours]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def evaluate_targets(targets: list[dict], results: list[Result]) -> list[str]:
    lines = [
        "| group/case | ours | target | figure | verdict |",
        "|---|---|---|---|---|",
    ]
    for target in targets:
        group, case_pat = target["group"], target.get("case", "*")
        mine = [
            r
            for r in results
            if r.group == group
            and fnmatch.fnmatch(r.type, case_pat)
            and fnmatch.fnmatch(r.impl, target["impl"])
        ]
        if not mine:
            lines.append(f"| {group} | {target['impl']} | {describe(target)} | no results | not measured |")
        for r in sorted(mine, key=lambda r: (r.type, r.impl)):
            where = f"{group}/{r.type}" if r.type else group
            lines.extend(verdict_rows(target, r, results, where))
    lines.append("")
    return lines


def describe(target: dict) -> str:
    if "max_ns_per_element" in target:
        return f"<= {target['max_ns_per_element']} ns/element"
    return f">= {target.get('min_speedup', 1.0)}x {target['vs']}"


def verdict_rows(target: dict, ours: Result, results: list[Result], where: str) -> list[str]:
    if "max_ns_per_element" in target:
        limit = float(target["max_ns_per_element"])
        ratio = ours.time_ns / limit
        if ratio <= 1:
            verdict = f"met, {(1 - ratio) * 100:.0f}% under"
        else:
            verdict = f"**missed**, {(ratio - 1) * 100:.0f}% over ({ratio:.2f}x the limit)"
        if ours.time_ci_ns[0] <= limit <= ours.time_ci_ns[1]:
            verdict += "; the limit is inside the 95% CI"
        return [f"| {where} | {ours.impl} | {describe(target)} | {fmt_ns(ours.time_ns)} ns | {verdict} |"]
    rows = []
    peers = [
        r
        for r in results
        if r.group == ours.group and r.type == ours.type and fnmatch.fnmatch(r.impl, target["vs"])
    ]
    if not peers:
        return [f"| {where} | {ours.impl} | {describe(target)} | no peer result | not measured |"]
    need = float(target.get("min_speedup", 1.0))
    for peer in peers:
        speedup = peer.time_ns / ours.time_ns
        if speedup >= need:
            verdict = f"met, {speedup:.2f}x"
        else:
            verdict = f"**missed**, {speedup:.2f}x ({(1 - speedup / need) * 100:.0f}% short)"
        if overlaps(ours.time_ci_ns, peer.time_ci_ns):
            verdict += "; within noise (95% CIs overlap)"
        figure = f"{fmt_ns(ours.time_ns)} vs {fmt_ns(peer.time_ns)} ns ({peer.impl})"
        rows.append(f"| {where} | {ours.impl} | {describe(target)} | {figure} | {verdict} |")
    return rows


def markdown(args: argparse.Namespace, info: dict, results: list[Result], groups: list[str], spec: dict) -> str:
    name, ours = args.name, args.ours
    stamps = sorted(r.measured_at for r in results)
    lines = [
        f"# Benchmark results: {name}",
        "",
        f"Generated by `scripts/bench_report.py {name}` from criterion's output.",
        "",
        *([args.preamble, ""] if args.preamble else []),
        "| machine | |",
        "|---|---|",
        *([f"| host | {info['host']} |"] if info.get("host") else []),
        f"| CPU | {info['cpu_model']} |",
        f"| nproc | {info['nproc']} |",
        f"| kernel | {info['kernel']} |",
        f"| rustc | {info['rustc']} |",
        *([f"| source (git describe --dirty) | {info['git']} |"] if info.get("git") else []),
        f"| report date | {info['date']} |",
        f"| load average (1, 5, 15 min) at report time | {fmt_load(info.get('loadavg_1_5_15'))} |",
        f"| measured | {stamps[0]} to {stamps[-1]} |" if stamps else "| measured | - |",
        "",
        "Figures are criterion medians per element (per iteration where a benchmark has no",
        "element count), with the 95% confidence interval of the median. Speedup of X over a",
        "row = row's time / X's time: above 1.00x, X is faster. Compare only within one run:",
        "on a small VM absolute timings swing 2-10x between runs.",
        "",
    ]
    notes = spec.get("notes", {})
    for group in groups:
        mine = [r for r in results if r.group == group]
        lines.append(f"## {group}\n")
        if group in notes:
            lines.append(f"{notes[group]}\n")
        if not mine:
            lines.append("No results.\n")
            continue
        lines.extend(group_table(mine, ours))
    if spec.get("targets"):
        lines.append("## Targets\n")
        lines.extend(evaluate_targets(spec["targets"], results))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    spec = load_targets(args)
    groups = args.groups or spec.get("groups")
    if not groups:
        if not args.criterion_dir.is_dir():
            sys.exit(f"bench_report: {args.criterion_dir} does not exist; run cargo bench first")
        groups = sorted(
            p.name for p in args.criterion_dir.iterdir() if p.is_dir() and p.name != "report"
        )
    results = [r for g in groups for r in load_group(args.criterion_dir, g)]
    if not results:
        sys.exit(f"bench_report: no criterion results for {', '.join(groups)} in {args.criterion_dir}")
    info = json.loads(args.machine.read_text()) if args.machine else machine()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for r in results:
        record = asdict(r)
        record["median_ci_ns"] = list(r.median_ci_ns)
        records.append(record)
    json_path = args.out_dir / f"{args.name}.json"
    json_path.write_text(json.dumps({"machine": info, "results": records}, indent=2) + "\n")
    md_path = args.out_dir / f"{args.name}.md"
    md_path.write_text(markdown(args, info, results, groups, spec))
    print(f"bench_report: {len(results)} results -> {json_path}, {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
