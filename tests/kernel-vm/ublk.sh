#!/usr/bin/env bash
# ublk.sh: `udmd --ublk` inside kernel-vm (the host kernel has no ublk). udmd and udmsetup run
# in the guest on /dev/vda and /dev/vdb. A striped udm device must appear as /dev/ublkb<minor>
# and take mkfs.ext4, mount, writes, umount and e2fsck; then, with a file writer on the mounted
# filesystem and a raw O_DIRECT pattern writer on a second (linear) device, both devices are
# suspended, reloaded with equivalent tables of other shapes (one striped target, two striped
# halves, 2048 linear chunks) and resumed several times; I/O issued while suspended must be
# held, not failed; afterwards every file and the pattern must read back intact and e2fsck must
# be clean. Then a reload that shrinks w must show on its ublk device (re-added: 6.12 has no
# UPDATE_SIZE). Then 32 concurrent O_DIRECT reads of a `delay` device (1000 ms) must end in
# about one delay period (not one per request), without a udmd thread each. Last, `remove`
# must delete the ublk device, and SIGTERM the rest.
# Usage: sudo tests/kernel-vm/ublk.sh   (env: KERNEL_VM, UDMD, UDMSETUP, KEEP=1, UDM_NO_BUILD=1)
# udmd must be built with `--features ublk` (needs libclang-dev); this script builds it so
# unless UDMD is given or UDM_NO_BUILD=1.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || die "must run as root (kernel-vm)"
[ -x "$KERNEL_VM" ] || die "kernel-vm not found at $KERNEL_VM (set KERNEL_VM)"
if [ -z "${UDM_NO_BUILD:-}" ] && [ "$UDMD" = "$TARGET_DIR/release/udmd" ]; then
  log "building udmd --features ublk and udmsetup (release, CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1})"
  (cd "$ROOT" && CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1} CARGO_TARGET_DIR="$TARGET_DIR" \
    cargo build --release -q -p udmd -p udmsetup --features udmd/ublk) ||
    die "cargo build failed (the ublk feature needs libclang-dev)"
fi
[ -x "$UDMD" ] && [ -x "$UDMSETUP" ] || die "udmd/udmsetup not found ($UDMD, $UDMSETUP)"

# Not under /tmp: the guest mounts a tmpfs there, which would hide the copied binaries.
W=$(mktemp -d /var/tmp/udm-kvm-ublk.XXXXXX)
cleanup() {
  set +e
  stop_vm
  if [ -n "${KEEP:-}" ]; then log "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A udmd without the feature says so at once; one with it fails here only for want of ublk.
probe=$(timeout 5 "$UDMD" --ublk --socket "$W/probe/control" 2>&1 </dev/null) || true
if grep -q 'built without ublk support' <<<"$probe"; then
  die "$UDMD was built without ublk support: cargo build --release -p udmd --features ublk"
fi

# Stripped copies keep the initramfs small; kernel-vm puts them at the same paths in the guest.
mkdir -p "$W/bin"
for b in "$UDMD" "$UDMSETUP"; do
  strip -o "$W/bin/$(basename "$b")" "$b" 2>/dev/null || cp "$b" "$W/bin/"
done
truncate -s 96M "$W/a.img" "$W/b.img"

cat >"$W/guest.sh" <<EOG
set +e
dmesg -n 1 2>/dev/null
(sleep ${GUEST_WATCHDOG:-300}; echo '@@WATCHDOG'; poweroff -f) &
UDMD=$W/bin/udmd UDMSETUP=$W/bin/udmsetup
EOG
cat >>"$W/guest.sh" <<'EOG'
r() { echo "@@R $1=$2"; }
D=/tmp/udm; mkdir -p $D /mnt/t
DM="$UDMSETUP --socket $D/control"
[ -e /dev/ublk-control ] && r control ok || r control FAIL

# v: 128 MiB striped over the first 64 MiB of vda and vdb, in three equivalent shapes.
S=262144
echo "0 $S striped 2 128 /dev/vda 0 /dev/vdb 0" >/tmp/v1
printf '0 131072 striped 2 128 /dev/vda 0 /dev/vdb 0\n131072 131072 striped 2 128 /dev/vda 65536 /dev/vdb 65536\n' >/tmp/v2
awk 'BEGIN { for (c = 0; c < 2048; c++) printf "%d 128 linear /dev/vd%s %d\n", c * 128, (c % 2 ? "b" : "a"), int(c / 2) * 128 }' >/tmp/v3
# w: 64 MiB linear over the last 32 MiB of vda and vdb, in two shapes.
printf '0 65536 linear /dev/vda 131072\n65536 65536 linear /dev/vdb 131072\n' >/tmp/w1
printf '0 32768 linear /dev/vda 131072\n32768 32768 linear /dev/vda 163840\n65536 32768 linear /dev/vdb 131072\n98304 32768 linear /dev/vdb 163840\n' >/tmp/w2

$UDMD --socket $D/control --ublk --log info >$D/udmd.log 2>&1 &
UPID=$!
for i in $(seq 100); do [ -S $D/control ] && break; sleep 0.1; done
[ -S $D/control ] && r udmd ok || r udmd FAIL

# ublk_of NAME: the ublk id of a device, from udmd's map (waits for its block device).
ublk_of() {
  for i in $(seq 150); do
    id=$(awk -v n="$1" '$3 == n { print $1 }' $D/ublk-map 2>/dev/null)
    if [ -n "$id" ] && [ -b /dev/ublkb$id ]; then echo "$id"; return 0; fi
    sleep 0.1
  done
  return 1
}
$DM create v /tmp/v1 && $DM create w /tmp/w1 && r create ok || r create FAIL
VID=$(ublk_of v); WID=$(ublk_of w)
echo "map: $(tr '\n' ';' <$D/ublk-map)"
[ -n "$VID" ] && [ -n "$WID" ] && r bdev "ok /dev/ublkb$VID /dev/ublkb$WID" || r bdev FAIL
B=/dev/ublkb$VID BW=/dev/ublkb$WID
vmin=$(awk '$3 == "v" { print $2 }' $D/ublk-map); wmin=$(awk '$3 == "w" { print $2 }' $D/ublk-map)
[ "$VID" = "$vmin" ] && [ "$WID" = "$wmin" ] && r id_is_minor ok || r id_is_minor "FAIL v=$VID/$vmin w=$WID/$wmin"
sz=$(cat /sys/block/ublkb$VID/size 2>/dev/null); szw=$(cat /sys/block/ublkb$WID/size 2>/dev/null)
[ "$sz" = $S ] && [ "$szw" = 131072 ] && r size ok || r size "FAIL $sz $szw"

# --- an ext4 filesystem on the striped device ----------------------------------------------
/usr/sbin/mke2fs -t ext4 -q -F $B && r mkfs ok || r mkfs FAIL
head -c 16777216 /dev/urandom >/tmp/big
small() { for i in $(seq 1 32); do head -c $((i * 1000)) /dev/urandom >/mnt/t/small/f$i || return 1; done; }
if mount -t ext4 $B /mnt/t && cp /tmp/big /mnt/t/big && mkdir /mnt/t/small && small; then
  (cd /mnt/t && md5sum big small/*) >/tmp/phase1.md5
  sync; umount /mnt/t && r write ok || r write "FAIL umount"
else
  r write FAIL
fi
/usr/sbin/e2fsck -fn $B >/tmp/fsck 2>&1; rc=$?; sed 's/^/e2fsck1: /' /tmp/fsck
[ $rc = 0 ] && r fsck ok || r fsck "FAIL rc=$rc"
echo 3 >/proc/sys/vm/drop_caches
mount -t ext4 -o ro $B /mnt/t && (cd /mnt/t && md5sum -c -s /tmp/phase1.md5) && umount /mnt/t && r reread ok || r reread FAIL

# --- suspend / reload / resume under two writers ----------------------------------------------
mount -t ext4 $B /mnt/t && mkdir -p /mnt/t/w || r remount FAIL
rm -f /tmp/stop /tmp/writer.md5 /tmp/writer.fail
( i=0
  while [ ! -e /tmp/stop ]; do
    i=$((i + 1))
    head -c 262144 /dev/urandom >/tmp/src.$i
    if [ $((i % 2)) = 0 ]; then dd if=/tmp/src.$i of=/mnt/t/w/f$i bs=64k oflag=direct 2>/dev/null
    else cp /tmp/src.$i /mnt/t/w/f$i; fi &&
      echo "$(md5sum </tmp/src.$i | cut -c1-32)  w/f$i" >>/tmp/writer.md5 || echo "f$i" >>/tmp/writer.fail
    rm -f /tmp/src.$i
    sync
  done ) &
FPID=$!
head -c 16777216 /dev/urandom >/tmp/pat
# The pattern goes to the four 16 MiB quarters of w in turn, until told to stop.
( n=0
  while [ ! -e /tmp/stop ] || [ $n -lt 4 ]; do
    p=$((n % 4)); n=$((n + 1))
    dd if=/tmp/pat of=$BW bs=64k seek=$((p * 256)) oflag=direct conv=notrunc 2>/dev/null || echo "pass $n" >>/tmp/raw.fail
  done
  echo $n >/tmp/raw.passes ) &
RPID=$!
cycles=0 held=none
for k in 1 2 3 4 5 6; do
  case $((k % 3)) in 1) tv=/tmp/v2 tw=/tmp/w2 ;; 2) tv=/tmp/v3 tw=/tmp/w1 ;; *) tv=/tmp/v1 tw=/tmp/w2 ;; esac
  $DM suspend v && $DM suspend w && $DM load v $tv && $DM load w $tw || { r cycle$k FAIL; continue; }
  if [ $k = 2 ]; then
    # A read issued while suspended waits for resume, and then succeeds.
    dd if=$B of=/tmp/held bs=4096 count=1 iflag=direct 2>/dev/null &
    HPID=$!
    sleep 2
    if kill -0 $HPID 2>/dev/null; then held=waited; else held=not-held; fi
  fi
  $DM resume v && $DM resume w || { r cycle$k "FAIL resume"; continue; }
  if [ $k = 2 ]; then
    wait $HPID && [ "$held" = waited ] && held=ok || held="FAIL ($held)"
  fi
  cycles=$((cycles + 1))
  sleep 1
done
touch /tmp/stop; wait $FPID; wait $RPID
r cycles "$([ $cycles = 6 ] && echo ok || echo "FAIL $cycles/6")"
r held_io "$held"
nfiles=$(wc -l </tmp/writer.md5 2>/dev/null)
[ ! -e /tmp/writer.fail ] && [ "${nfiles:-0}" -gt 0 ] && r file_writes "ok $nfiles files" || r file_writes "FAIL $(cat /tmp/writer.fail 2>/dev/null | tr '\n' ' ') ($nfiles ok)"
[ ! -e /tmp/raw.fail ] && r raw_writes "ok $(cat /tmp/raw.passes) passes" || r raw_writes "FAIL $(cat /tmp/raw.fail | tr '\n' ' ')"
[ "$($DM table v | wc -l)" = 1 ] && [ "$($DM table w | wc -l)" = 4 ] && r swapped ok || r swapped "FAIL $($DM table v | wc -l) $($DM table w | wc -l)"
$DM info v | grep -q 'State: *ACTIVE' && $DM info w | grep -q 'State: *ACTIVE' && r active ok || r active FAIL
[ "$(cat /sys/block/ublkb$VID/size)" = $S ] && r size_kept ok || r size_kept FAIL
umount /mnt/t && r umount2 ok || r umount2 FAIL
echo 3 >/proc/sys/vm/drop_caches
/usr/sbin/e2fsck -fn $B >/tmp/fsck 2>&1; rc=$?; sed 's/^/e2fsck2: /' /tmp/fsck
[ $rc = 0 ] && r fsck2 ok || r fsck2 "FAIL rc=$rc"
mount -t ext4 -o ro $B /mnt/t && (cd /mnt/t && md5sum -c -s /tmp/phase1.md5 && md5sum -c -s /tmp/writer.md5) && r files_intact ok || r files_intact FAIL
umount /mnt/t 2>/dev/null
want=$(md5sum </tmp/pat | cut -c1-32); bad=
for p in 0 1 2 3; do
  got=$(dd if=$BW bs=64k skip=$((p * 256)) count=256 iflag=direct 2>/dev/null | md5sum | cut -c1-32)
  [ "$got" = "$want" ] || bad="$bad $p"
done
[ -z "$bad" ] && r pattern_intact ok || r pattern_intact "FAIL passes$bad"

# --- a reload that changes the size: the 6.12 kernel has no UPDATE_SIZE, so udmd re-adds the
# (unused) ublk device with the new size; the data stays.
echo "0 65536 linear /dev/vda 131072" >/tmp/w3
$DM suspend w && $DM load w /tmp/w3 && $DM resume w || r resize "FAIL reload"
for i in $(seq 100); do
  WID=$(awk '$3 == "w" { print $1 }' $D/ublk-map 2>/dev/null); BW=/dev/ublkb$WID
  [ -b "$BW" ] && [ "$(cat /sys/block/ublkb$WID/size 2>/dev/null)" = 65536 ] && break; sleep 0.1
done
got=$(dd if=$BW bs=64k count=256 iflag=direct 2>/dev/null | md5sum | cut -c1-32)
[ "$(cat /sys/block/ublkb$WID/size 2>/dev/null)" = 65536 ] && [ "$got" = "$want" ] && r resize "ok $BW" ||
  r resize "FAIL $BW size $(cat /sys/block/ublkb$WID/size 2>/dev/null)"

# --- a delay device: many O_DIRECT reads in flight at once are held by the target, not by
# threads of udmd: they end together, in about one delay period (one period per request
# would be $NR s), and udmd's thread count does not grow with them.
NR=32 DLY=1000
echo "0 8192 delay /dev/vda 0 0" >/tmp/d0
echo "0 8192 delay /dev/vda 0 $DLY" >/tmp/d1
# Exported without a delay (the kernel reads the partition table), then delayed.
if $DM create d /tmp/d0 && DID=$(ublk_of d) && $DM suspend d && $DM load d /tmp/d1 && $DM resume d; then
  BD=/dev/ublkb$DID
  ms() { echo $(($(cut -d' ' -f1 /proc/uptime | tr -d .) * 10)); }
  nthreads() { ls /proc/$UPID/task | wc -l; }
  th0=$(nthreads) t0=$(ms) pids=
  for i in $(seq 0 $((NR - 1))); do
    dd if=$BD of=/tmp/dr.$i bs=4096 count=1 skip=$i iflag=direct 2>/dev/null &
    pids="$pids $!"
  done
  sleep 0.5
  th1=$(nthreads)
  failed=0
  for p in $pids; do wait $p || failed=$((failed + 1)); done
  el=$(($(ms) - t0))
  bad=0
  for i in $(seq 0 $((NR - 1))); do
    dd if=/dev/vda bs=4096 count=1 skip=$i iflag=direct 2>/dev/null | cmp -s - /tmp/dr.$i || bad=$((bad + 1))
  done
  echo "delay: $NR reads of a ${DLY} ms delay device in $el ms; udmd threads $th0 before, $th1 meanwhile"
  if [ $failed = 0 ] && [ $bad = 0 ] && [ $el -ge $DLY ] && [ $el -lt $((4 * DLY)) ] && [ $th1 -lt $((th0 + NR / 4)) ]; then
    r delay_concurrent "ok $NR reads in $el ms, threads $th0 -> $th1"
  else
    r delay_concurrent "FAIL $failed failed, $bad wrong, $el ms, threads $th0 -> $th1"
  fi
  $DM remove d || r delay_concurrent "FAIL remove"
else
  r delay_concurrent "FAIL setup"
fi

# --- removal and shutdown -----------------------------------------------------------------------
$DM remove v && r remove ok || r remove FAIL
for i in $(seq 50); do [ -e $B ] || grep -q ' v$' $D/ublk-map || break; sleep 0.1; done
[ ! -e $B ] && ! grep -q ' v$' $D/ublk-map && [ -b $BW ] && r ublk_deleted ok || r ublk_deleted "FAIL $(ls /dev/ublkb* | tr '\n' ' ')"
kill -TERM $UPID
for i in $(seq 100); do kill -0 $UPID 2>/dev/null || break; sleep 0.1; done
! kill -0 $UPID 2>/dev/null && [ ! -e $BW ] && r shutdown ok || r shutdown "FAIL $(ls /dev/ublkb* 2>/dev/null | tr '\n' ' ')"
errs=$(dmesg | grep -iE 'I/O error|EXT4-fs error|buffer_io_error|blk_update_request' | head -5)
[ -z "$errs" ] && r kernel_log ok || { echo "$errs" | sed 's/^/dmesg: /'; r kernel_log "FAIL I/O errors in dmesg"; }
sed 's/^/udmd: /' $D/udmd.log | tail -60
echo "@@END"
EOG

log "booting the kernel VM (udmd --ublk in the guest)"
t0=$(date +%s)
vm_rc=0
run_vm_bg "$W/vm.log" --copy "$W/bin/udmd" --copy "$W/bin/udmsetup" --disk "$W/a.img" --disk "$W/b.img" "$W/guest.sh"
wait "$VM_PID" || vm_rc=$?; VM_PID=
log "VM done in $(($(date +%s) - t0)) s"
tr -d '\r' <"$W/vm.log" >"$W/vm.txt"
grep -E '^(map|delay|e2fsck[12]|dmesg|udmd|@@)' "$W/vm.txt" || true
grep -q '^@@END' "$W/vm.txt" || { tail -30 "$W/vm.txt"; fail "the VM did not finish (rc=$vm_rc)"; }
res() { sed -n "s/^@@R $1=//p" "$W/vm.txt" | tail -1; }
for t in control udmd create bdev id_is_minor size mkfs write fsck reread cycles held_io file_writes \
         raw_writes swapped active size_kept umount2 fsck2 files_intact pattern_intact resize \
         delay_concurrent remove ublk_deleted shutdown kernel_log; do
  v=$(res "$t")
  case $v in ok*) pass "guest: $t${v#ok}" ;; *) fail "guest: $t (${v:-no result})" ;; esac
done
# Steps that report only when they fail (remount, cycleN).
while read -r line; do fail "guest: ${line#@@R }"; done < <(grep -E '^@@R (remount|cycle[0-9])=' "$W/vm.txt" || true)
summary
