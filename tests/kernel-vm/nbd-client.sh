#!/usr/bin/env bash
# nbd-client.sh: the kernel's NBD client (nbd.ko + nbd-client inside kernel-vm) against udmd's
# NBD export of a striped udm device over two regular files. The guest makes an ext4 filesystem
# on /dev/nbd0, writes files and checks them; the host then reads the device back through udmd's
# FUSE mapper file and checks the filesystem and the files' checksums.
# Usage: sudo tests/kernel-vm/nbd-client.sh   (env: KERNEL_VM, UDMD, UDMSETUP, NBD_HOST=127.0.0.1, KEEP=1)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
check_prereqs
command -v debugfs >/dev/null || die "debugfs (e2fsprogs) is required"

W=$(mktemp -d /tmp/udm-kvm-nbd.XXXXXX)
cleanup() {
  set +e
  stop_vm
  stop_udmd "$W"
  if [ -n "${KEEP:-}" ]; then log "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  local p i
  for i in $(seq 50); do
    p=$((20000 + RANDOM % 40000))
    [ -z "$(ss -Htln "sport = :$p" 2>/dev/null)" ] && { echo "$p"; return; }
  done
  die "no free TCP port"
}

# QEMU user networking turns the guest's connections to 10.0.2.2 into connections to the host's
# loopback, so udmd listens on 127.0.0.1 only (NBD_HOST=0.0.0.0 if a setup needs it).
PORT=$(free_port)
NAME=nbdst
SECTORS=262144                      # 128 MiB: 2 stripes of 64 MiB
truncate -s 64M "$W/s0.img" "$W/s1.img"
start_udmd "$W" --nbd "tcp:${NBD_HOST:-127.0.0.1}:$PORT"
DM=("$UDMSETUP" --socket "$W/control")
if "${DM[@]}" create "$NAME" --table "0 $SECTORS striped 2 128 $W/s0.img 0 $W/s1.img 0" &&
   tbl=$("${DM[@]}" table "$NAME") && [ -n "$tbl" ]; then
  pass "host: striped udm device $NAME over two files: $tbl"
else
  fail "host: create $NAME"; summary; exit 1
fi
[ -e "$W/mapper/$NAME" ] || { fail "host: $W/mapper/$NAME missing"; summary; exit 1; }

cat >"$W/guest.sh" <<EOG
set +e
dmesg -n 1 2>/dev/null
(sleep ${GUEST_WATCHDOG:-600}; echo '@@WATCHDOG'; poweroff -f) &
H=10.0.2.2 P=$PORT N=$NAME SECTORS=$SECTORS
EOG
cat >>"$W/guest.sh" <<'EOG'
r() { echo "@@R $1=$2"; }
out=$(/usr/sbin/nbd-client -l $H $P 2>&1); echo "$out" | sed 's/^/list: /'
echo "$out" | grep -Eq "^$N(:|\$)" && r list ok || r list FAIL
/usr/sbin/nbd-client $H $P /dev/nbd0 -N $N 2>&1 | sed 's/^/nbd-client: /'
sz=$(cat /sys/block/nbd0/size)
[ "$sz" = "$SECTORS" ] && r connect ok || { r connect "FAIL size=$sz"; echo "@@END"; exit 0; }
/usr/sbin/mke2fs -t ext4 -q -F /dev/nbd0 && r mkfs ok || r mkfs FAIL
mkdir -p /mnt/t
head -c 20971520 /dev/urandom >/tmp/big
mount -t ext4 /dev/nbd0 /mnt/t && mkdir /mnt/t/dir && cp /tmp/big /mnt/t/big &&
  for i in $(seq 1 64); do echo "udm small file $i $(head -c 16 /dev/urandom | md5sum | cut -c1-32)" >/mnt/t/dir/f$i; done &&
  cat /mnt/t/dir/f* | md5sum | cut -c1-32 >/tmp/small.md5 && sync && umount /mnt/t && r write ok || r write FAIL
r big_md5 "$(md5sum </tmp/big | cut -c1-32)"
r small_md5 "$(cat /tmp/small.md5)"
echo 3 >/proc/sys/vm/drop_caches
mount -t ext4 -o ro /dev/nbd0 /mnt/t && [ "$(md5sum </mnt/t/big | cut -c1-32)" = "$(md5sum </tmp/big | cut -c1-32)" ] &&
  umount /mnt/t && r reread ok || r reread FAIL
/usr/sbin/e2fsck -fn /dev/nbd0 >/tmp/fsck 2>&1; rc=$?; sed 's/^/e2fsck: /' /tmp/fsck
[ $rc = 0 ] && r fsck ok || r fsck "FAIL rc=$rc"
/usr/sbin/nbd-client -d /dev/nbd0 2>&1 | sed 's/^/nbd-client: /'
sleep 1
[ "$(cat /sys/block/nbd0/size)" = 0 ] && r disconnect ok || r disconnect FAIL
echo "@@END"
EOG

log "booting the kernel VM (nbd-client -> udmd on port $PORT)"
vm_rc=0
run_vm_bg "$W/vm.log" --net "$W/guest.sh"; wait "$VM_PID" || vm_rc=$?; VM_PID=
tr -d '\r' <"$W/vm.log" >"$W/vm.txt"
grep -E '^(list|nbd-client|e2fsck|@@)' "$W/vm.txt" || true
grep -q '^@@END' "$W/vm.txt" || { tail -30 "$W/vm.txt"; fail "the VM did not finish (rc=$vm_rc)"; }
res() { sed -n "s/^@@R $1=//p" "$W/vm.txt" | tail -1; }
for t in list connect mkfs write reread fsck disconnect; do
  v=$(res $t); if [ "$v" = ok ]; then pass "guest: $t"; else fail "guest: $t (${v:-no result})"; fi
done

# --- host: the data written by the kernel, read back through udmd -----------------------------
if kill -0 "$UDMD_PID" 2>/dev/null; then pass "host: udmd still running"; else fail "host: udmd died"; fi
dd if="$W/mapper/$NAME" of="$W/copy.img" bs=1M status=none || fail "host: reading $W/mapper/$NAME"
if e2fsck -fn "$W/copy.img" >"$W/fsck" 2>&1; then pass "host: e2fsck -fn on the device's data"
else cat "$W/fsck"; fail "host: e2fsck -fn on the device's data"; fi
big=$(debugfs -R 'cat /big' "$W/copy.img" 2>/dev/null | md5sum | cut -c1-32)
if [ -n "$(res big_md5)" ] && [ "$big" = "$(res big_md5)" ]; then pass "host: /big (20 MiB) has the guest's md5 $big"
else fail "host: /big md5 $big, guest wrote $(res big_md5)"; fi
small=$(for i in $(seq 1 64); do echo "f$i"; done | sort | while read -r f; do debugfs -R "cat /dir/$f" "$W/copy.img" 2>/dev/null; done | md5sum | cut -c1-32)
if [ -n "$(res small_md5)" ] && [ "$small" = "$(res small_md5)" ]; then pass "host: 64 small files match"
else fail "host: small files md5 $small, guest $(res small_md5)"; fi
# The backing files hold the stripes: chunk 0 of the device is chunk 0 of s0.img.
if cmp -s -n 65536 "$W/copy.img" "$W/s0.img" && cmp -s -n 65536 -i 65536:0 "$W/copy.img" "$W/s1.img"; then
  pass "host: the stripes are laid out on s0.img/s1.img as the table says"
else fail "host: stripe layout on the backing files"; fi
summary
