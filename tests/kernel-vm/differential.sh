#!/usr/bin/env bash
# differential.sh: the same dmsetup scenario (scenario.sh) against the kernel's device-mapper
# (inside kernel-vm, /usr/sbin/dmsetup) and against udm (udmd + udmsetup on the host), then a
# step-by-step diff of the normalised transcripts. One test per scenario step.
# Usage: sudo tests/kernel-vm/differential.sh   (env: KERNEL_VM, UDMD, UDMSETUP, KEEP=1,
#        DM_DUST_KO, KERNEL_ONLY=FILE: only run the guest and write its normalised transcript)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
if [ -n "${KERNEL_ONLY:-}" ]; then
  [ "$(id -u)" -eq 0 ] || die "must run as root"
  [ -x "$KERNEL_VM" ] || die "kernel-vm not found at $KERNEL_VM (set KERNEL_VM)"
else
  check_prereqs
fi

W=$(mktemp -d /tmp/udm-kvm-diff.XXXXXX)
LOOPS=()
cleanup() {
  set +e
  stop_vm
  stop_udmd "$W"
  for l in "${LOOPS[@]}"; do losetup -d "$l"; done
  if [ -n "${KEEP:-}" ]; then log "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Two 64 MiB disks; every 4 KiB block is stamped with its disk letter and block number.
mkimg() { awk -v d="$1" 'BEGIN { for (i = 0; i < 16384; i++) printf "%-4095s\n", sprintf("udm-diff disk %s block %06d", d, i) }' >"$2"; }
# Before anything else (it may boot a first VM to fetch kernel-vm's cache, then build).
dm_dust_ko
mkimg A "$W/a.img"; mkimg B "$W/b.img"
[ "$(stat -c %s "$W/a.img")" -eq 67108864 ] || die "bad image size"
cp "$W/a.img" "$W/ha.img"; cp "$W/b.img" "$W/hb.img"

# --- host side: loop devices over copies of the images, udmd on them ---------------------------
WITH_TREE=1
if [ -z "${KERNEL_ONLY:-}" ]; then
  LA=$(losetup -f --show "$W/ha.img"); LOOPS+=("$LA")
  LB=$(losetup -f --show "$W/hb.img"); LOOPS+=("$LB")
  start_udmd "$W"
  DMH="$UDMSETUP --socket $W/control"
  WITH_TREE=0
  if $DMH ls --tree >/dev/null 2>&1; then WITH_TREE=1; else log "udmsetup has no 'ls --tree': skipped"; fi
fi

# --- guest side: the same scenario on /dev/vda, /dev/vdb --------------------------------------
KO_COPY=(--copy "$DUST_KO") KO_EMBED=
case $(readlink -f "$DUST_KO") in /tmp/* | /run/*) KO_COPY=() KO_EMBED=1 ;; esac
{
  cat <<EOG
set +e
export LC_ALL=C
dmesg -n 1 2>/dev/null
(sleep ${GUEST_WATCHDOG:-600}; echo '@@WATCHDOG'; poweroff -f) &
DM=/usr/sbin/dmsetup DA=/dev/vda DB=/dev/vdb NODEDIR=/dev/mapper TMPD=/tmp/sc
MKNODES="/usr/sbin/dmsetup mknodes" IFLAG=iflag=direct OFLAG=oflag=direct WITH_TREE=$WITH_TREE
mkdir -p "\$TMPD"
EOG
  # dm-dust first: Debian's kernel lacks it (see dm_dust_ko in lib.sh). --copy puts it at the same
  # path in the guest, but the guest mounts tmpfs over /tmp and /run: a module there (a clone or
  # KERNEL_VM_CACHE under /tmp) travels inside this script instead.
  if [ -n "$KO_EMBED" ]; then
    echo "base64 -d >/tmp/dm-dust.ko <<'EOKO'"; base64 "$DUST_KO"; echo "EOKO"
    echo 'insmod /tmp/dm-dust.ko >/tmp/insmod.out 2>&1 || { echo "@@INSMOD dm-dust failed:"; cat /tmp/insmod.out; }'
  else
    echo "insmod $DUST_KO >/tmp/insmod.out 2>&1 || { echo \"@@INSMOD dm-dust failed:\"; cat /tmp/insmod.out; }"
  fi
  cat "$HERE/scenario.sh"
  cat <<'EOG'
echo "@@DEVS DA=$(cat /sys/class/block/vda/dev) DB=$(cat /sys/class/block/vdb/dev) DMMAJ=$(awk '$2=="device-mapper"{print $1}' /proc/devices)"
scenario >/tmp/transcript 2>&1
sed 's/^/T|/' /tmp/transcript
echo "@@DONE"
EOG
} >"$W/guest.sh"
log "booting the kernel VM (kernel dm side) in the background"
run_vm_bg "$W/vm.log" --disk "$W/a.img" --disk "$W/b.img" "${KO_COPY[@]}" "$W/guest.sh"

insmod_failed() {
  if tr -d '\r' <"$W/vm.log" | grep -A3 '^@@INSMOD'; then log "dm-dust.ko ($DUST_KO) did not load in the guest"; return 0; fi
  return 1
}
if [ -n "${KERNEL_ONLY:-}" ]; then
  vm_rc=0; wait "$VM_PID" || vm_rc=$?; VM_PID=
  grep -q '^@@DONE' <(tr -d '\r' <"$W/vm.log") || { tail -40 "$W/vm.log"; die "the VM did not finish the scenario (rc=$vm_rc)"; }
  devs=$(tr -d '\r' <"$W/vm.log" | sed -n 's/^@@DEVS //p' | tail -1)
  # shellcheck disable=SC2086
  tr -d '\r' <"$W/vm.log" | sed -n 's/^T|//p' | perl "$HERE/normalise.pl" $devs /dev/mapper=NODE \
    /dev/vda=DA /dev/vdb=DB "(vda)=(DA)" "(vdb)=(DB)" >"$KERNEL_ONLY"
  log "kernel transcript (normalised) in $KERNEL_ONLY"
  if insmod_failed >&2; then exit 1; fi
  exit 0
fi

log "running the scenario against udm"
SH=bash; command -v busybox >/dev/null && SH="busybox sh"   # same applets (dd, md5sum) as the guest
mkdir -p "$W/tmp"
DM=$DMH DA=$LA DB=$LB NODEDIR=$W/mapper TMPD=$W/tmp MKNODES=true IFLAG= OFLAG= WITH_TREE=$WITH_TREE \
  $SH -c ". '$HERE/scenario.sh'; scenario" </dev/null >"$W/udm.raw" 2>&1 || true
kill -0 "$UDMD_PID" 2>/dev/null || { fail "udmd died during the scenario"; tail -20 "$W/udmd.log"; }

log "waiting for the VM"
vm_rc=0; wait "$VM_PID" || vm_rc=$?; VM_PID=
tr -d '\r' <"$W/vm.log" | sed -n 's/^T|//p' >"$W/kernel.raw"
if ! grep -q '^@@DONE' <(tr -d '\r' <"$W/vm.log"); then
  tail -40 "$W/vm.log"; die "the VM did not finish the scenario (rc=$vm_rc)"
fi
devs=$(tr -d '\r' <"$W/vm.log" | sed -n 's/^@@DEVS //p' | tail -1)
if insmod_failed; then fail "dm-dust.ko did not load in the guest (the dust steps fail)"; fi

# --- normalise and compare --------------------------------------------------------------------
# shellcheck disable=SC2086
perl "$HERE/normalise.pl" $devs /dev/mapper=NODE /dev/vda=DA /dev/vdb=DB "(vda)=(DA)" "(vdb)=(DB)" <"$W/kernel.raw" >"$W/kernel.txt"
perl "$HERE/normalise.pl" "DA=$(cat "/sys/class/block/${LA#/dev/}/dev")" "DB=$(cat "/sys/class/block/${LB#/dev/}/dev")" \
  DMMAJ=253 "$W/mapper=NODE" /dev/mapper=NODE "$LA=DA" "$LB=DB" \
  "(${LA#/dev/})=(DA)" "(${LB#/dev/})=(DB)" <"$W/udm.raw" >"$W/udm.txt"

split_steps() { # FILE DIR
  mkdir -p "$2"
  awk -v d="$2" '/^### step /{ n++; f = sprintf("%s/%02d-%s", d, n, $3) } f { print > f }' "$1"
}
split_steps "$W/kernel.txt" "$W/k"; split_steps "$W/udm.txt" "$W/u"
for f in "$W"/k/*; do
  s=$(basename "$f")
  if [ ! -f "$W/u/$s" ]; then fail "step ${s#*-}: missing from the udm transcript"; continue; fi
  if diff -u --label "kernel/$s" --label "udm/$s" "$f" "$W/u/$s" >"$W/diff"; then
    pass "step ${s#*-}"
  else
    fail "step ${s#*-}"; cat "$W/diff"
  fi
done
[ "$(ls "$W/k" | wc -l)" -ge 10 ] || fail "the kernel transcript has too few steps"
summary
