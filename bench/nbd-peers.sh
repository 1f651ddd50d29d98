#!/bin/bash
# Compare udm's NBD server with nbdkit and qemu-nbd: fio's nbd engine against each
# server exporting the same file on tmpfs, over a Unix socket.
#
# The servers run side by side and are measured in alternating rounds: each test runs
# against every server in turn (udm, nbdkit, qemu, udm, nbdkit, ...), the order rotating
# by one server each round, so a change in a shared machine lands in all servers'
# figures alike instead of in one ratio. Prints what it ran on, then per row the median
# over rounds of each server's MiB/s and the median ratio udm/server with its min–max
# over rounds, then the load average at the start and the end.
#
# Usage: bench/nbd-peers.sh            (from the workspace root)
#
# Environment:
#   SIZE=1G  RUNTIME=10  IODEPTH=16   file size and fio parameters
#   ROUNDS=3            rounds; every server runs every test once per round
#   JOBS="1 2"          fio jobs (one NBD connection each) to try; more than 1 only
#                       for servers that advertise multi-conn
#   PEERS="nbdkit qemu" which peers to run
#   NOISE=0.10          a ratio whose min–max over rounds spans more than this fraction
#                       of its median is marked "!" (too noisy to trust)
#   QEMU_OPTS           qemu-nbd I/O options (default --aio=io_uring, with --cache=writeback)
#   DIR=/dev/shm/...    scratch directory (file, sockets, logs); removed afterwards
#                       only when left at its default
#   RAW=FILE            also keep the per-round results (tab-separated) in FILE
#   UDM_START           command that starts "our" server in the background, serving
#                       $FILE (the prepared file, under $DIR) on the Unix socket $SOCK,
#                       its pid written to $PIDFILE (all three exported to it); it must
#                       return once the server runs (setsid/nohup or a daemon mode).
#                       E.g. start udmd, create a linear device over $FILE and export
#                       it on $SOCK (see bench/start-udmd.sh).
#   UDM_URI             URI of "our" server (default nbd+unix:///?socket=$SOCK); alone,
#                       without UDM_START, an already running server is measured
#   UDM_STOP            command that stops it (default: kill the pid in $PIDFILE)
#   UDM_BIN             the file_export binary (default: built with cargo --release)
#   BASE_START          like UDM_START, for another build of "our" server to compare
#                       with (before/after a change): adds the column "base" and the
#                       ratio udm/base ($SOCK=$DIR/base.sock, $PIDFILE=$DIR/base.pid)
#   BASE_URI            its URI (default nbd+unix:///?socket=$DIR/base.sock)
#   NOTES               lines printed after the machine line (which builds were run)
set -euo pipefail
shopt -s inherit_errexit

SIZE=${SIZE:-1G}
RUNTIME=${RUNTIME:-10}
IODEPTH=${IODEPTH:-16}
ROUNDS=${ROUNDS:-3}
JOBS=${JOBS:-1 2}
PEERS=${PEERS:-nbdkit qemu}
NOISE=${NOISE:-0.10}
DIR=${DIR:-/dev/shm/udm-nbd-bench.$$}
PY=/usr/bin/python3
ROOT=$(cd "$(dirname "$0")/.." && pwd)

for tool in fio nbdinfo; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 2; }
done
case $ROUNDS in '' | *[!0-9]* | 0) echo "ROUNDS must be a positive number" >&2; exit 2 ;; esac

# Private to this user: it holds the NBD and control sockets.
[ -d "$DIR" ] || { mkdir -p "$(dirname "$DIR")" && mkdir -m 0700 "$DIR"; }
FILE=$DIR/disk.img
export FILE

cleanup() {
    if [ -n "${UDM_STOP:-}" ]; then sh -c "$UDM_STOP" || true; fi
    for f in "$DIR"/*.pid; do
        if [ -f "$f" ]; then kill "$(cat "$f")" 2>/dev/null || true; fi
    done
    sleep 0.3
    case "$DIR" in /dev/shm/udm-nbd-bench.*) rm -rf "$DIR" ;; esac
}
trap cleanup EXIT

"$ROOT/bench/machine-info.sh" "$DIR"
[ -n "${NOTES:-}" ] && printf '%s\n' "$NOTES"
LOAD_START=$("$ROOT/bench/machine-info.sh" --load)

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

# --- the servers (each prints its URI) ---------------------------------------------

start_udm() {
    SOCK=$DIR/udm.sock PIDFILE=$DIR/udm.pid
    export SOCK PIDFILE
    if [ -n "${UDM_URI:-}" ] && [ -z "${UDM_START:-}" ]; then
        echo "$UDM_URI"
        return
    fi
    if [ -n "${UDM_START:-}" ]; then
        sh -c "$UDM_START" >&2 || { echo "UDM_START failed" >&2; return 1; }
    else
        local bin=${UDM_BIN:-}
        if [ -z "$bin" ]; then
            (cd "$ROOT" && cargo build --quiet --release -p udm-nbd --example file_export) >&2
            bin=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/file_export
        fi
        setsid nohup "$bin" "$FILE" "$SOCK" >"$DIR/udm.log" 2>&1 &
        echo $! >"$PIDFILE"
    fi
    local uri=${UDM_URI:-nbd+unix:///?socket=$SOCK}
    wait_socket "$uri"
    echo "$uri"
}

start_base() {
    SOCK=$DIR/base.sock PIDFILE=$DIR/base.pid
    export SOCK PIDFILE
    sh -c "$BASE_START" >&2 || { echo "BASE_START failed" >&2; return 1; }
    local uri=${BASE_URI:-nbd+unix:///?socket=$SOCK}
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
    # shellcheck disable=SC2086 # QEMU_OPTS is a list of options
    setsid nohup qemu-nbd -t -f raw -k "$sock" --shared=16 --cache=writeback \
        ${QEMU_OPTS:---aio=io_uring} --discard=unmap "$FILE" >"$DIR/qemu.log" 2>&1 &
    echo $! >"$DIR/qemu.pid"
    wait_socket "nbd+unix:///?socket=$sock"
    echo "nbd+unix:///?socket=$sock"
}

multi_conn() {
    nbdinfo --json "$1" 2>/dev/null | $PY -c '
import json, sys
print("yes" if json.load(sys.stdin)["exports"][0].get("can_multi_conn") else "no")'
}

SERVERS=(udm)
[ -n "${BASE_START:-}" ] && SERVERS+=(base)
# shellcheck disable=SC2206 # PEERS is a list of names
SERVERS+=($PEERS)
declare -A URI MC
for s in "${SERVERS[@]}"; do
    echo "# starting $s" >&2
    case $s in
        udm) URI[$s]=$(start_udm) ;;
        base) URI[$s]=$(start_base) ;;
        nbdkit) URI[$s]=$(start_nbdkit) ;;
        qemu) URI[$s]=$(start_qemu) ;;
        *) echo "unknown peer $s" >&2; exit 2 ;;
    esac
    MC[$s]=$(multi_conn "${URI[$s]}")
done

# --- the measurements: every test against every server in turn, ROUNDS times ------

TESTS=("read 128k" "write 128k" "randread 4k" "randwrite 4k")
RESULTS=$DIR/results.tsv
printf 'round\tserver\trw\tbs\tjobs\tmib_s\tiops\n' >"$RESULTS"

run_fio() { # round server rw bs jobs
    local out=$DIR/fio.json res
    if fio --name="$2" --ioengine=nbd --uri="${URI[$2]}" --rw="$3" --bs="$4" \
        --iodepth="$IODEPTH" --numjobs="$5" --group_reporting \
        --time_based --runtime="$RUNTIME" \
        --output-format=json --output="$out" >/dev/null 2>&1; then
        res=$($PY -c '
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
r = j["read"] if j["read"]["io_bytes"] else j["write"]
print("%.0f\t%.0f" % (r["bw"] / 1024, r["iops"]))' "$out")
    else
        echo "fio failed against $2 ($3 $4 x$5)" >&2
        res=$(printf 'fail\tfail')
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$res" >>"$RESULTS"
    echo "#   round $1 $2 $3 $4 x$5: ${res/$'\t'/ MiB/s } IOPS" >&2
}

n=${#SERVERS[@]}
runs=0
for jobs in $JOBS; do
    for s in "${SERVERS[@]}"; do
        if [ "$jobs" -le 1 ] || [ "${MC[$s]}" = yes ]; then runs=$((runs + ${#TESTS[@]})); fi
    done
done
echo "# $((runs * ROUNDS)) fio runs of ${RUNTIME}s: about $((runs * ROUNDS * (RUNTIME + 1) / 60 + 1)) min" >&2
for round in $(seq "$ROUNDS"); do
    for jobs in $JOBS; do
        for t in "${TESTS[@]}"; do
            # shellcheck disable=SC2086 # "rw bs"
            set -- $t
            for i in $(seq 0 $((n - 1))); do
                s=${SERVERS[$(((i + round - 1) % n))]}
                if [ "$jobs" -gt 1 ] && [ "${MC[$s]}" != yes ]; then continue; fi
                run_fio "$round" "$s" "$1" "$2" "$jobs"
            done
        done
    done
done
[ -n "${RAW:-}" ] && cp "$RESULTS" "$RAW"

# --- the table ---------------------------------------------------------------------

mc=""
for s in "${SERVERS[@]}"; do mc="$mc $s=${MC[$s]}"; done
echo "# nbd-peers: SIZE=$SIZE RUNTIME=${RUNTIME}s IODEPTH=$IODEPTH JOBS=\"$JOBS\" ROUNDS=$ROUNDS;" \
    "fio nbd engine over Unix sockets; servers ${SERVERS[*]} side by side, each test" \
    "alternating between them (order rotating each round); multi-conn:$mc"
$PY "$ROOT/bench/peers_table.py" "$RESULTS" "$NOISE" "$JOBS" "${SERVERS[@]}"
LOAD_END=$("$ROOT/bench/machine-info.sh" --load)
echo "# load average: start $LOAD_START, end $LOAD_END ($(nproc) cores)"
if awk -v a="${LOAD_START%% *}" -v b="${LOAD_END%% *}" -v n="$(nproc)" \
    'BEGIN { exit !(a > n || b > n) }'; then
    echo "# note: the 1-minute load exceeded the cores: not a quiet machine, compare with care"
fi
