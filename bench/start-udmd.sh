#!/bin/bash
# Start a udmd in the background serving a linear device "bench" over FILE on the NBD
# Unix socket SOCK (control socket SOCK.ctl, log SOCK.log), write its pid to PIDFILE,
# and return once the export answers. Used by udm-vs-peers.sh for udm and for "base".
#
# Usage: FILE=... SOCK=... PIDFILE=... bench/start-udmd.sh UDMD UDMSETUP
set -euo pipefail
udmd=$1 udmsetup=$2
: "${FILE:?} ${SOCK:?} ${PIDFILE:?}"
for b in "$udmd" "$udmsetup"; do
    [ -x "$b" ] || { echo "start-udmd: $b is not an executable" >&2; exit 2; }
done
rm -f "$SOCK" "$SOCK.ctl"
setsid nohup "$udmd" --socket "$SOCK.ctl" --nbd "unix:$SOCK" --log warn >"$SOCK.log" 2>&1 &
echo $! >"$PIDFILE"
for _ in $(seq 200); do
    [ -S "$SOCK.ctl" ] && [ -S "$SOCK" ] && break
    kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break
    sleep 0.05
done
if ! [ -S "$SOCK.ctl" ] || ! [ -S "$SOCK" ]; then
    echo "start-udmd: $udmd did not come up; its log ($SOCK.log):" >&2
    sed 's/^/  /' "$SOCK.log" >&2
    exit 1
fi
sectors=$(($(stat -c %s "$FILE") / 512))
"$udmsetup" --socket "$SOCK.ctl" create bench --table "0 $sectors linear $FILE 0"
