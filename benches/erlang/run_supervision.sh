#!/usr/bin/env bash
# Runs the Erlang/OTP peer of benches/benches/supervision.rs (restart
# latency under OTP's supervisor) and prints one JSON line per case, in
# run.sh's format: {"group": "restart", "case", "impl": "erlang",
# "ns_per_op", ...}.
#
#   benches/erlang/run_supervision.sh [OUT.jsonl]
#
# Needs erl and erlc (Debian: apt-get install erlang-base). With OUT, the
# lines also go to that file (bench_results/supervision.erlang.jsonl is what
# benches/supervision_report.py reads).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-}"
# Restart cycles per repetition (a fresh tree every 100, as on the Rust
# side), and repetitions whose median is reported.
cycles="${ERLANG_CYCLES:-20000}"
reps="${ERLANG_REPS:-5}"

for tool in erl erlc; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "run_supervision.sh: $tool not found; install erlang-base (apt-get install erlang-base)" >&2
    exit 1
  fi
done

build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
erlc -o "$build" "$here/supervision.erl"

# Two schedulers, one per core, bound to their cores (+sbt db), as zbmd's two
# shards are pinned; the driver binds itself to scheduler 1 (supervision.erl).
bench() {
  local strategy="$1" case="$2"
  erl +S 2:2 +sbt db -noshell -pa "$build" \
    -eval "supervision:run($strategy, \"$case\", $cycles, $reps)" -s init stop
}

{
  bench one_for_one one_for_one_10
  bench one_for_all one_for_all_10
} | if [ -n "$out" ]; then tee "$out"; else cat; fi
