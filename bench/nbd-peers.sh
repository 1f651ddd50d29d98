#!/bin/bash
# Compare udm's NBD server with nbdkit and qemu-nbd: fio's nbd engine against each
# server exporting the same file on tmpfs, over a Unix socket.
#
# Usage: bench/nbd-peers.sh            (from the workspace root)
#
# Environment:
#   SIZE=1G  RUNTIME=10  IODEPTH=16   file size and fio parameters
#   JOBS="1 2"          fio jobs (one NBD connection each) to try; more than 1 only
#                       for servers that advertise multi-conn
#   PEERS="nbdkit qemu" which peers to run
#   QEMU_OPTS           qemu-nbd I/O options (default --aio=io_uring, with --cache=writeback)
#   DIR=/dev/shm/...    scratch directory (file, sockets, logs); removed afterwards
#                       only when left at its default
#   UDM_START           command that starts "our" server in the background, serving
#                       $FILE (the prepared file, under $DIR) on the Unix socket $SOCK
#                       (both exported to it); it must return once the server runs
#                       (setsid/nohup or a daemon mode). E.g. start udmd, create a
#                       linear device over $FILE and export it on $SOCK.
#   UDM_URI             URI of "our" server (default nbd+unix:///?socket=$SOCK); alone,
#                       without UDM_START, an already running server is measured
#   UDM_STOP            command that stops it (default: kill the pid in $DIR/udm.pid)
#   UDM_BIN             the file_export binary (default: built with cargo --release)
set -euo pipefail

SIZE=${SIZE:-1G}
RUNTIME=${RUNTIME:-10}
IODEPTH=${IODEPTH:-16}
JOBS=${JOBS:-1 2}
PEERS=${PEERS:-nbdkit qemu}
DIR=${DIR:-/dev/shm/udm-nbd-bench.$$}
PY=/usr/bin/python3
ROOT=$(cd "$(dirname "$0")/.." && pwd)

for tool in fio nbdinfo; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 2; }
done

mkdir -p "$DIR"
FILE=$DIR/disk.img
export FILE

PIDS=()
cleanup() {
    if [ -n "${UDM_STOP:-}" ]; then sh -c "$UDM_STOP" || true; fi
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for f in "$DIR"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
    sleep 0.3
    case "$DIR" in /dev/shm/udm-nbd-bench.*) rm -rf "$DIR" ;; esac
}
trap cleanup EXIT

wait_socket() {
    for _ in $(seq 100); do
        nbdinfo --size "$1" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "server at $1 did not come up" >&2
    return 1
}

echo "# preparing $SIZE of random data in $FILE" >&2
rm -f "$FILE"
fio --name=fill --filename="$FILE" --rw=write --bs=1M --size="$SIZE" \
    --ioengine=psync --refill_buffers --output=/dev/null

# --- the servers -------------------------------------------------------------------

start_udm() {
    SOCK=$DIR/udm.sock
    export SOCK
    if [ -n "${UDM_URI:-}" ] && [ -z "${UDM_START:-}" ]; then
        echo "$UDM_URI"
        return
    fi
    if [ -n "${UDM_START:-}" ]; then
        sh -c "$UDM_START" >&2
    else
        local bin=${UDM_BIN:-}
        if [ -z "$bin" ]; then
            (cd "$ROOT" && cargo build --quiet --release -p udm-nbd --example file_export) >&2
            bin=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/file_export
        fi
        setsid nohup "$bin" "$FILE" "$SOCK" >"$DIR/udm.log" 2>&1 &
        echo $! >"$DIR/udm.pid"
    fi
    local uri=${UDM_URI:-nbd+unix:///?socket=$SOCK}
    wait_socket "$uri"
    echo "$uri"
}

start_nbdkit() {
    local sock=$DIR/nbdkit.sock
    nbdkit -U "$sock" -P "$DIR/nbdkit.pid" --threads 16 file "$FILE" >&2
    wait_socket "nbd+unix:///?socket=$sock"
    echo "nbd+unix:///?socket=$sock"
}

start_qemu() {
    local sock=$DIR/qemu.sock
    # The fastest qemu-nbd setup measured on tmpfs: page cache (cache=none means
    # O_DIRECT, several times slower here) and io_uring (a little ahead of threads).
    setsid nohup qemu-nbd -t -f raw -k "$sock" --shared=16 --cache=writeback \
        ${QEMU_OPTS:---aio=io_uring} --discard=unmap "$FILE" >"$DIR/qemu.log" 2>&1 &
    echo $! >"$DIR/qemu.pid"
    wait_socket "nbd+unix:///?socket=$sock"
    echo "nbd+unix:///?socket=$sock"
}

stop() {
    local pidfile=$DIR/$1.pid
    if [ "$1" = udm ] && [ -n "${UDM_STOP:-}" ]; then
        sh -c "$UDM_STOP" || true
        UDM_STOP=
        return
    fi
    if [ -f "$pidfile" ]; then
        kill "$(cat "$pidfile")" 2>/dev/null || true
        rm -f "$pidfile"
        sleep 0.5
    fi
}

# --- the measurements --------------------------------------------------------------

TESTS=("read 128k" "write 128k" "randread 4k" "randwrite 4k")
declare -A RES

run_fio() { # server uri rw bs jobs
    local out=$DIR/fio-$1-$3-$4-$5.json
    fio --name="$1" --ioengine=nbd --uri="$2" --rw="$3" --bs="$4" \
        --iodepth="$IODEPTH" --numjobs="$5" --group_reporting \
        --time_based --runtime="$RUNTIME" \
        --output-format=json --output="$out" >/dev/null 2>&1 || {
        echo "fio failed against $1 ($3 $4)" >&2
        RES[$1,$3,$5]="0 0"
        return
    }
    RES[$1,$3,$5]=$($PY -c '
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
r = j["read"] if j["read"]["io_bytes"] else j["write"]
print("%.0f %.0f" % (r["bw"] / 1024, r["iops"]))' "$out")
}

multi_conn() {
    nbdinfo --json "$1" 2>/dev/null | $PY -c '
import json, sys
print("yes" if json.load(sys.stdin)["exports"][0].get("can_multi_conn") else "no")'
}

SERVERS=(udm $PEERS)
declare -A MC
for s in "${SERVERS[@]}"; do
    echo "# $s" >&2
    case $s in
        udm) uri=$(start_udm) ;;
        nbdkit) uri=$(start_nbdkit) ;;
        qemu) uri=$(start_qemu) ;;
        *) echo "unknown peer $s" >&2; exit 2 ;;
    esac
    MC[$s]=$(multi_conn "$uri")
    for jobs in $JOBS; do
        if [ "$jobs" -gt 1 ] && [ "${MC[$s]}" != yes ]; then
            for t in "${TESTS[@]}"; do set -- $t; RES[$s,$1,$jobs]="- -"; done
            continue
        fi
        for t in "${TESTS[@]}"; do
            set -- $t
            run_fio "$s" "$uri" "$1" "$2" "$jobs"
            echo "#   $1 $2 x$jobs: ${RES[$s,$1,$jobs]}" >&2
        done
    done
    stop "$s"
done

# --- the table ---------------------------------------------------------------------

printf '\n%-14s %4s' test jobs
for s in "${SERVERS[@]}"; do printf ' | %20s' "$s MiB/s IOPS"; done
for s in $PEERS; do printf ' | %10s' "udm/$s"; done
printf '\n'
for jobs in $JOBS; do
    for t in "${TESTS[@]}"; do
        set -- $t
        printf '%-14s %4s' "$1 $2" "$jobs"
        for s in "${SERVERS[@]}"; do
            read -r bw iops <<<"${RES[$s,$1,$jobs]}"
            printf ' | %9s %10s' "$bw" "$iops"
        done
        read -r ubw _ <<<"${RES[udm,$1,$jobs]}"
        for s in $PEERS; do
            read -r pbw _ <<<"${RES[$s,$1,$jobs]}"
            if [ "$pbw" = - ] || [ "$pbw" = 0 ] || [ "$ubw" = - ]; then
                printf ' | %10s' -
            else
                printf ' | %10s' "$($PY -c "print(f'{$ubw / $pbw:.2f}')")"
            fi
        done
        printf '\n'
    done
done
printf '(multi-conn:'
for s in "${SERVERS[@]}"; do printf ' %s=%s' "$s" "${MC[$s]}"; done
printf ')\n'
