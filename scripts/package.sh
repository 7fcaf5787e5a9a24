#!/usr/bin/env bash
# `make package`: `sam build` of the five functions for arm64 (template.yaml, samconfig.toml),
# then checks that every bootstrap under .aws-sam/build is an aarch64 executable. Needs what
# `make tools` puts in .venv (the SAM CLI, cargo-lambda and the zig it cross-links with) and
# rustup's aarch64-unknown-linux-gnu standard library, which it adds when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
target=aarch64-unknown-linux-gnu

missing() {
  echo "make package: $1" >&2
  exit 2
}

command -v sam >/dev/null || missing "no sam in .venv/bin: run \`make tools\` (pip install aws-sam-cli)"
command -v cargo-lambda >/dev/null \
  || missing "no cargo-lambda in .venv/bin: run \`make tools\` (pip install cargo-lambda)"
# cargo-lambda links with zig; the PyPI wheel of cargo-lambda depends on ziglang, which puts
# zig inside the venv's Python rather than on PATH.
if ! command -v zig >/dev/null && ! python3 -c 'import ziglang' 2>/dev/null; then
  missing "no zig (cargo-lambda cross-links with it): run \`make tools\`, or \`pip install ziglang\` in .venv"
fi
command -v file >/dev/null || missing "no \`file\` to check the bootstraps with: apt-get install file"
if ! rustc --print sysroot >/dev/null 2>&1; then
  missing "no rustc on PATH: install Rust with rustup (https://rustup.rs)"
fi
if [ ! -d "$(rustc --print sysroot)/lib/rustlib/$target" ]; then
  command -v rustup >/dev/null \
    || missing "the Rust standard library for $target is missing and there is no rustup to add it: install Rust with rustup, or the rust-std-$target component of your distribution"
  echo "make package: adding the $target standard library (rustup target add $target)" >&2
  rustup target add "$target" \
    || missing "\`rustup target add $target\` failed (above): it downloads from static.rust-lang.org; run it where that is reachable, then \`make package\` again"
fi

sam build "$@"

status=0
count=0
for bootstrap in .aws-sam/build/*Function/bootstrap; do
  [ -e "$bootstrap" ] || continue
  count=$((count + 1))
  description="$(file -b "$bootstrap")"
  echo "$bootstrap: $description"
  case "$description" in
    *ELF*aarch64*) ;;
    *) echo "make package: $bootstrap is not an aarch64 executable" >&2; status=1 ;;
  esac
done
if [ "$count" -ne 5 ]; then
  echo "make package: expected 5 bootstraps under .aws-sam/build, found $count" >&2
  status=1
fi
exit "$status"
