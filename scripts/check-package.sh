#!/usr/bin/env bash
# Packages zbmd's library crates as `cargo publish` would, in dependency
# order, and builds each package on its own: proof that their manifests
# (path dependencies with versions, metadata, included files) would publish.
#
# The workspace says `publish = false` until we decide to publish, and
# cargo then refuses to stand the crates being packaged in for a registry
# (each needs the one before it). So the check runs on a copy of the
# tracked and new files with publishing switched on there; nothing here
# changes and nothing is uploaded. Needs the crates.io index (as any build).
set -euo pipefail
cd "$(dirname "$0")/.."

CRATES=(zbmd-alloc zbmd-rt)
copy="$(mktemp -d)"
target="$copy/.package-target"
# Verifying zbmd-rt, cargo unpacks the zbmd-alloc it just packaged into a
# registry source directory named after the temporary registry's path, and
# reuses whatever it finds there on a later run from the same path: a stale
# zbmd-alloc from an older commit. The build lives in the fresh `$copy`, so
# the path (and the directory) is new each run; remove what this run added.
registry_src="${CARGO_HOME:-$HOME/.cargo}/registry/src"
before="$(ls -1 "$registry_src" 2>/dev/null || true)"
cleanup() {
  rm -rf "$copy"
  local dir
  for dir in "$registry_src"/-*; do
    [ -d "$dir" ] || continue
    grep -qxF -- "$(basename "$dir")" <<<"$before" || rm -rf "$dir"
  done
}
trap cleanup EXIT

git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$copy"
sed -i 's/^publish = false$/publish = true/' "$copy/Cargo.toml"
grep -q '^publish = true$' "$copy/Cargo.toml" || {
  echo "check-package: no 'publish = false' line in Cargo.toml's [workspace.package]" >&2
  exit 1
}
args=()
for crate in "${CRATES[@]}"; do args+=(-p "$crate"); done
(cd "$copy" && CARGO_TARGET_DIR="$target" cargo package --locked --allow-dirty "${args[@]}")
echo "check-package: ${CRATES[*]} package and build on their own"
