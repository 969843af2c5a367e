#!/usr/bin/env bash
# The release build of keyward: one optimised binary built with exactly the dependency
# versions of Cargo.lock, copied to OUT_DIR/keyward. The Containerfile's build stage
# runs this script, and so do `make release` and CI, so the image ships what they build.
#
#   hack/release-build.sh OUT_DIR
set -euo pipefail

out=${1:?usage: hack/release-build.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."

cargo build --release --locked --bin keyward
target_dir=${CARGO_TARGET_DIR:-target}
install -m 0755 "$target_dir/release/keyward" "$out/keyward"
echo "release-build: $out/keyward ($("$out/keyward" --version))"
