#!/bin/bash
# Build udmd and udmsetup of another commit (the "base" of a before/after comparison)
# in a directory of its own, and print the variables udm-vs-peers.sh takes:
#   eval "$(bench/build-base.sh HEAD~1)" && bench/udm-vs-peers.sh
#
# Usage: bench/build-base.sh REV [DIR]   (DIR default /tmp/udm-base-<short rev>)
# The source is REV's tree (git archive; the repository is not changed); its target/
# is seeded from this worktree's release build so only udm's own crates compile.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
rev=${1:?usage: bench/build-base.sh REV [DIR]}
commit=$(git -C "$ROOT" rev-parse --verify "$rev^{commit}")
short=$(git -C "$ROOT" rev-parse --short "$commit")
dir=${2:-/tmp/udm-base-$short}
if [ ! -f "$dir/.udm-base-commit" ] || [ "$(cat "$dir/.udm-base-commit")" != "$commit" ]; then
    rm -rf "$dir/src"
    mkdir -p "$dir/src"
    git -C "$ROOT" archive "$commit" | tar -x -C "$dir/src"
    echo "$commit" >"$dir/.udm-base-commit"
fi
target=$dir/target
seed=${CARGO_TARGET_DIR:-$ROOT/target}/release
if [ ! -d "$target/release" ] && [ -d "$seed" ]; then
    echo "# seeding $target from $seed" >&2
    mkdir -p "$target"
    cp -a --reflink=auto "$seed" "$target/release"
fi
echo "# building udmd and udmsetup of $short ($(git -C "$ROOT" log -1 --format=%s "$commit"))" >&2
(cd "$dir/src" && CARGO_TARGET_DIR=$target cargo build --quiet --release -p udmd -p udmsetup) >&2
echo "export UDMD_BASE=$target/release/udmd UDMSETUP_BASE=$target/release/udmsetup"
