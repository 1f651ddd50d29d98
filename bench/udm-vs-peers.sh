#!/bin/bash
# udmd's NBD export of a linear device against nbdkit's file plugin and qemu-nbd,
# all serving the same file on tmpfs, measured with fio's nbd engine (128 KiB
# sequential read/write, 4 KiB random read/write, queue depth 16) in alternating
# rounds (udm, nbdkit, qemu, udm, nbdkit, ...; see nbd-peers.sh). Prints the machine,
# then per row the median MiB/s of each server and the median ratio udm/peer with its
# min–max over rounds, and the load average at the start and the end.
#
# Usage: bench/udm-vs-peers.sh      (ROUNDS=3, SIZE, RUNTIME, IODEPTH, JOBS, PEERS, NOISE,
#                                    RAW as for nbd-peers.sh; JOBS="1 4" adds
#                                    multi-connection rows)
#
# Before/after a change of udm itself: UDMD_BASE=/path/to/old/udmd (and UDMSETUP_BASE,
# default the udmsetup beside it) adds the column "base", run in the same alternation,
# and the ratio udm/base per row. E.g. to compare with the previous commit:
#   eval "$(bench/build-base.sh HEAD~1)" && bench/udm-vs-peers.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
(cd "$ROOT" && cargo build --quiet --release -p udmd -p udmsetup)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
export UDMD=$BIN/udmd UDMSETUP=$BIN/udmsetup START=$ROOT/bench/start-udmd.sh
# Run by nbd-peers.sh with $FILE, $SOCK and $PIDFILE exported; expanded there.
# shellcheck disable=SC2016
export UDM_START='"$START" "$UDMD" "$UDMSETUP"'
export DIR=${DIR:-/dev/shm/udm-nbd-bench.$$}
export UDM_URI="nbd+unix:///bench?socket=$DIR/udm.sock"
if [ -n "${UDMD_BASE:-}" ]; then
    UDMSETUP_BASE=${UDMSETUP_BASE:-$(dirname "$UDMD_BASE")/udmsetup}
    for b in "$UDMD_BASE" "$UDMSETUP_BASE"; do
        [ -x "$b" ] || { echo "udm-vs-peers: $b is not an executable" >&2; exit 2; }
    done
    if [ "$UDMD_BASE" -ef "$UDMD" ]; then
        echo "# note: UDMD_BASE is the udmd under test itself" >&2
    fi
    UDMD_BASE=$(readlink -f "$UDMD_BASE") UDMSETUP_BASE=$(readlink -f "$UDMSETUP_BASE")
    export UDMD_BASE UDMSETUP_BASE
    # shellcheck disable=SC2016
    export BASE_START='"$START" "$UDMD_BASE" "$UDMSETUP_BASE"'
    export BASE_URI="nbd+unix:///bench?socket=$DIR/base.sock"
fi
# Printed by nbd-peers.sh after the machine line: which builds were measured.
built() { echo "$1 (built $(stat -c %y "$1" | cut -d. -f1))"; }
NOTES="# udm: $(built "$UDMD"), source $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')"
[ -n "${UDMD_BASE:-}" ] && NOTES="$NOTES"$'\n'"# base: $(built "$UDMD_BASE")"
export NOTES
exec "$ROOT/bench/nbd-peers.sh" "$@"
