#!/usr/bin/env bash
# Runs the Erlang/OTP peers of benches/benches/actors.rs and prints one JSON
# line per workload: {"group", "case", "impl": "erlang", "ns_per_op", ...}.
#
#   benches/erlang/run.sh [OUT.jsonl]
#
# Needs erl and erlc (Debian: apt-get install erlang-base). With OUT, the
# lines also go to that file (bench_results/actors.erlang.jsonl is what
# benches/actors_report.py reads).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-}"
# Round trips / hops per repetition (the Rust side measures the same counts
# per iteration), and repetitions whose median is reported.
# Across schedulers every round trip wakes a sleeping scheduler (tens of
# microseconds on a small VM), so that case does fewer.
ops="${ERLANG_OPS:-1000000}"
ops_cross="${ERLANG_OPS_CROSS:-20000}"
reps="${ERLANG_REPS:-5}"

for tool in erl erlc; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "run.sh: $tool not found; install erlang-base (apt-get install erlang-base)" >&2
    exit 1
  fi
done

build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
erlc -o "$build" "$here/actors.erl"

# Two schedulers, one per core, bound to their cores (+sbt db), as zbmd's two
# shards are pinned. ping_pong binds its processes to schedulers itself (see
# actors.erl); the ring's 1,000 processes go where BEAM puts them.
bench() {
  local group="$1" case="$2" n="$3"
  erl +S 2:2 +sbt db -noshell -pa "$build" \
    -eval "actors:run($group, \"$case\", $n, $reps)" -s init stop
}

{
  bench ping_pong same_shard "$ops"
  bench ping_pong two_shards "$ops_cross"
  bench ring_1000 "" "$ops"
} | if [ -n "$out" ]; then tee "$out"; else cat; fi
