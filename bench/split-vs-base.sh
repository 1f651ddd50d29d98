#!/bin/bash
# 1 MiB reads through a 4-way striped device, this tree against another commit
# (the "base", e.g. the last one with a sequential split): the same bench source
# (crates/udm-targets/benches/split.rs, which uses only the engine's blocking API)
# is built against both, and the two binaries run in alternating rounds. Prints the
# machine, each round's figures, and the median of base/new (above 1: new is faster).
#
# Usage: bench/split-vs-base.sh REV    (ROUNDS=5; SPLIT_* as for the bench)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
rev=${1:?usage: bench/split-vs-base.sh REV}
ROUNDS=${ROUNDS:-5}
commit=$(git -C "$ROOT" rev-parse --verify "$rev^{commit}")
short=$(git -C "$ROOT" rev-parse --short "$commit")
dir=/tmp/udm-base-$short
mkdir -p "$dir/src"
if [ ! -f "$dir/.udm-base-commit" ] || [ "$(cat "$dir/.udm-base-commit")" != "$commit" ]; then
    rm -rf "$dir/src" && mkdir -p "$dir/src"
    git -C "$ROOT" archive "$commit" | tar -x -C "$dir/src"
    echo "$commit" >"$dir/.udm-base-commit"
fi
benches=$dir/src/crates/udm-targets/benches
mkdir -p "$benches/common"
cp "$ROOT/crates/udm-targets/benches/split.rs" "$benches/split.rs"
cp "$ROOT/crates/udm-targets/benches/common/mod.rs" "$benches/common/mod.rs"
grep -q 'name = "split"' "$dir/src/crates/udm-targets/Cargo.toml" ||
    printf '\n[[bench]]\nname = "split"\nharness = false\n' >>"$dir/src/crates/udm-targets/Cargo.toml"
bin() { # DIR TARGET: build the split bench there, print its path
    local out
    out=$(cd "$1" && CARGO_TARGET_DIR=$2 cargo bench --quiet -p udm-targets --bench split --no-run \
        --message-format=json 2>"$2/split-build.log") || { cat "$2/split-build.log" >&2; return 1; }
    sed -n 's/.*"executable":"\([^"]*split[^"]*\)".*/\1/p' <<<"$out" | tail -1
}
echo "# building the split bench of $short and of this tree" >&2
base=$(bin "$dir/src" "$dir/target")
new=$(bin "$ROOT" "${CARGO_TARGET_DIR:-$ROOT/target}")
[ -x "$base" ] && [ -x "$new" ] || { echo "split-vs-base: build failed" >&2; exit 2; }
bash "$ROOT/bench/machine-info.sh" 2>/dev/null || true
ratios=()
for r in $(seq "$ROUNDS"); do
    b=$("$base" --bench | sed -n 's/^1 MiB read, 4-way.*: \([0-9.]*\) us/\1/p')
    n=$("$new" --bench | sed -n 's/^1 MiB read, 4-way.*: \([0-9.]*\) us/\1/p')
    ratio=$(awk -v b="$b" -v n="$n" 'BEGIN { printf "%.2f", b / n }')
    echo "round $r: base $b us, new $n us, base/new $ratio"
    ratios+=("$ratio")
done
printf '%s\n' "${ratios[@]}" | sort -n | awk '{ v[NR] = $1 } END { printf "median base/new over %d rounds: %s (min %s, max %s)\n", NR, v[int((NR + 1) / 2)], v[1], v[NR] }'
