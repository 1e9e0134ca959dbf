#!/usr/bin/env bash
# Installs what zbmd's build, tests and benchmarks need on a Debian machine,
# and nothing that is already there. Safe to run any number of times.
#
# It never downloads a toolchain: a Rust toolchain (cargo, rustc, rustfmt,
# clippy) must already be installed, as on our machines and CI.
set -euo pipefail

# Debian packages the build and tests use. Each later layer adds its own
# here (hwloc, Vulkan's lavapipe, SLURM, ...), with the reason beside it.
PACKAGES=(
  make            # the Makefile itself
  python3         # scripts/bench_report.py
  # zbmd-rt's `hwloc` feature: hwlocality-sys links hwloc statically through
  # pkg-config, which also pulls -ludev (the link fails without libudev-dev).
  # Debian 12 ships hwloc 2.9.0, matching the crate's hwloc-2_8_0 feature.
  libhwloc-dev
  libudev-dev
  pkg-config
  # `make memcheck`: zbmd-alloc's tests under valgrind memcheck.
  valgrind
  # zbmd-gpu's `vulkan` feature runs its tests for real on Mesa's lavapipe
  # (a CPU Vulkan driver): the loader and the drivers.
  libvulkan1
  mesa-vulkan-drivers
  # zbmd-gpu's `rocm` feature builds against Debian's HIP 5.2 (headers and
  # libamdhip64.so.5, which also holds hiprtc); with no AMD GPU it answers
  # "no device". .cargo/config.toml points HIP_PATH at /usr.
  libamdhip64-dev
)

# `--bench` adds what `make bench` needs beyond the tests: the Erlang/OTP
# peer of the actor benchmarks (benches/erlang/run.sh).
if [ "${1:-}" = "--bench" ]; then
  PACKAGES+=(erlang-base)
fi

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages need root: $*" >&2
    echo "install-deps: run 'sudo apt-get install -y $*' and retry" >&2
    exit 1
  fi
}

missing=()
for pkg in "${PACKAGES[@]}"; do
  # A command on PATH counts as present even when Debian's package is not
  # installed (python3 from pyenv, say).
  if command -v "$pkg" >/dev/null 2>&1; then continue; fi
  if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then continue; fi
  missing+=("$pkg")
done

if [ "${#missing[@]}" -gt 0 ]; then
  need_root "${missing[@]}"
  echo "install-deps: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

for tool in cargo rustc; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "install-deps: '$tool' not found: install a Rust toolchain (rustup) first" >&2
    exit 1
  fi
done
for subcommand in fmt clippy; do
  if ! cargo "$subcommand" --version >/dev/null 2>&1; then
    echo "install-deps: 'cargo $subcommand' not found: rustup component add ${subcommand/fmt/rustfmt}" >&2
    exit 1
  fi
done
echo "install-deps: everything needed is installed"
