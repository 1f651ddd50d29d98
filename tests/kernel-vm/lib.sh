# shellcheck shell=bash
# Shared helpers for the kernel-VM scripts (sourced; bash).

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shared/ sits beside the repository (as in CI); /work/shared is the developers' copy.
if [ -z "${KERNEL_VM:-}" ]; then
  for c in "$ROOT/../shared/tools/kernel-vm" /work/shared/tools/kernel-vm; do
    if [ -x "$c" ]; then KERNEL_VM=$c; break; fi
  done
  KERNEL_VM=${KERNEL_VM:-$ROOT/../shared/tools/kernel-vm}
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
UDMD=${UDMD:-$TARGET_DIR/release/udmd}
UDMSETUP=${UDMSETUP:-$TARGET_DIR/release/udmsetup}
export LC_ALL=C

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "ERROR: $*"; echo "0 passed, 1 failed"; exit 1; }

PASSED=0 FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "PASS: $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL: $*"; }
summary() { echo "$PASSED passed, $FAILED failed"; [ "$FAILED" -eq 0 ]; }

check_prereqs() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (losetup, FUSE, loop devices)"
  [ -x "$KERNEL_VM" ] || die "kernel-vm not found at $KERNEL_VM (set KERNEL_VM)"
  [ -e /dev/fuse ] || die "/dev/fuse is missing"
  # Build (incrementally) unless the binaries were given explicitly or UDM_NO_BUILD=1.
  if [ -z "${UDM_NO_BUILD:-}" ] && [ "$UDMD" = "$TARGET_DIR/release/udmd" ] &&
     [ "$UDMSETUP" = "$TARGET_DIR/release/udmsetup" ]; then
    log "building udmd and udmsetup (release, CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1})"
    (cd "$ROOT" && CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1} CARGO_TARGET_DIR="$TARGET_DIR" \
      cargo build --release -q -p udmd -p udmsetup) || die "cargo build failed"
  fi
  [ -x "$UDMD" ] && [ -x "$UDMSETUP" ] || die "udmd/udmsetup not found ($UDMD, $UDMSETUP)"
}

# start_udmd DIR ARGS...: udmd with its control socket DIR/control and mapper dir DIR/mapper.
UDMD_PID=
start_udmd() {
  local d=$1; shift
  mkdir -p "$d/mapper"
  "$UDMD" --socket "$d/control" --mapper-dir "$d/mapper" --major 253 "$@" \
    </dev/null >"$d/udmd.log" 2>&1 &
  UDMD_PID=$!
  local i
  for i in $(seq 100); do
    if [ -S "$d/control" ] && mountpoint -q "$d/mapper"; then return 0; fi
    kill -0 "$UDMD_PID" 2>/dev/null || { cat "$d/udmd.log" >&2; die "udmd exited"; }
    sleep 0.1
  done
  cat "$d/udmd.log" >&2; die "udmd did not come up"
}

stop_udmd() { # DIR
  local d=$1
  if [ -n "$UDMD_PID" ]; then
    kill -TERM "$UDMD_PID" 2>/dev/null || true
    wait "$UDMD_PID" 2>/dev/null || true
    UDMD_PID=
  fi
  if mountpoint -q "$d/mapper" 2>/dev/null; then
    fusermount3 -u "$d/mapper" 2>/dev/null || umount -l "$d/mapper" 2>/dev/null || true
  fi
}

# run_vm LOG ARGS...: kernel-vm in its own process group (so that cleanup can stop it), in the
# background; VM_PID is set. A timeout bounds a hung guest.
VM_PID=
run_vm_bg() {
  local out=$1; shift
  setsid -w timeout "${KERNEL_VM_TIMEOUT:-900}" "$KERNEL_VM" "$@" </dev/null >"$out" 2>&1 &
  VM_PID=$!
}
stop_vm() {
  if [ -n "$VM_PID" ] && kill -0 "$VM_PID" 2>/dev/null; then
    kill -TERM -- "-$VM_PID" 2>/dev/null || true
    wait "$VM_PID" 2>/dev/null || true
  fi
  VM_PID=
}
