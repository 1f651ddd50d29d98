#!/bin/bash
# udmd's NBD export of a linear device against nbdkit's file plugin and qemu-nbd,
# all serving the same file on tmpfs, measured in one run with fio's nbd engine
# (128 KiB sequential read/write, 4 KiB random read/write, queue depth 16).
# Prints MiB/s, IOPS and the ratio udm/peer for each row.
#
# Usage: bench/udm-vs-peers.sh      (SIZE, RUNTIME, IODEPTH, JOBS, PEERS as for nbd-peers.sh;
#                                    JOBS="1 4" adds multi-connection rows)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
(cd "$ROOT" && cargo build --quiet --release -p udmd -p udmsetup)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
export UDMD=$BIN/udmd UDMSETUP=$BIN/udmsetup
# Started by nbd-peers.sh with $FILE (the shared backing file) and $SOCK (our NBD socket).
export UDM_START='
  setsid nohup "$UDMD" --socket "$SOCK.ctl" --nbd "unix:$SOCK" --log warn >"$SOCK.log" 2>&1 &
  echo $! > "$(dirname "$SOCK")/udm.pid"
  for i in $(seq 100); do [ -S "$SOCK.ctl" ] && [ -S "$SOCK" ] && break; sleep 0.05; done
  sectors=$(( $(stat -c %s "$FILE") / 512 ))
  "$UDMSETUP" --socket "$SOCK.ctl" create bench --table "0 $sectors linear $FILE 0"
'
export DIR=${DIR:-/dev/shm/udm-nbd-bench.$$}
export UDM_URI="nbd+unix:///bench?socket=$DIR/udm.sock"
exec "$ROOT/bench/nbd-peers.sh" "$@"
