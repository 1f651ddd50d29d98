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
# kernel-vm's cache (its default) and build-dm-dust, which sits beside kernel-vm.
KERNEL_VM_CACHE_DIR=${KERNEL_VM_CACHE:-$HOME/.cache/kernel-vm}
BUILD_DM_DUST=${BUILD_DM_DUST:-$(dirname "$KERNEL_VM")/build-dm-dust}
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

# dm_dust_ko: sets DUST_KO to a dm-dust.ko for kernel-vm's guest kernel (Debian's build lacks
# dm-dust). DM_DUST_KO=path uses a given module. Otherwise it is built once per guest kernel by
# build-dm-dust into the kernel-vm cache (KERNEL_VM_CACHE_DIR/dm-dust-<release>/) and reused.
# build-dm-dust needs that cache, which kernel-vm fetches on its first run: on a fresh machine a
# guest that does nothing is booted first.
DUST_KO=
dm_dust_ko() {
  if [ -n "${DM_DUST_KO:-}" ]; then
    [ -f "$DM_DUST_KO" ] || die "DM_DUST_KO=$DM_DUST_KO does not exist"
    DUST_KO=$(readlink -f "$DM_DUST_KO"); return 0
  fi
  [ -x "$BUILD_DM_DUST" ] || die "build-dm-dust not found at $BUILD_DM_DUST (set BUILD_DM_DUST or DM_DUST_KO)"
  if [ ! -f "$KERNEL_VM_CACHE_DIR/ready" ]; then
    log "no kernel-vm cache in $KERNEL_VM_CACHE_DIR yet: a first kernel-vm run fetches it (~1 min)"
    local t; t=$(mktemp /tmp/udm-kvm-warmup.XXXXXX)
    echo true >"$t"
    KERNEL_VM_CACHE=$KERNEL_VM_CACHE_DIR timeout "${KERNEL_VM_TIMEOUT:-900}" "$KERNEL_VM" "$t" \
      </dev/null >"$t.log" 2>&1 || { tail -20 "$t.log" >&2; rm -f "$t" "$t.log"; die "kernel-vm's first run failed"; }
    rm -f "$t" "$t.log"
    [ -f "$KERNEL_VM_CACHE_DIR/ready" ] || die "kernel-vm left no cache in $KERNEL_VM_CACHE_DIR"
  fi
  local d; d=$KERNEL_VM_CACHE_DIR/dm-dust-$(cat "$KERNEL_VM_CACHE_DIR/ready")
  DUST_KO=$d/dm-dust.ko
  [ -f "$DUST_KO" ] && return 0
  log "building dm-dust.ko for the guest kernel into $d (build-dm-dust, ~1 min)"
  if ! KERNEL_VM_CACHE=$KERNEL_VM_CACHE_DIR "$BUILD_DM_DUST" "$d.tmp.$$" >"$d.log" 2>&1; then
    cat "$d.log" >&2; rm -rf "$d.tmp.$$"; die "build-dm-dust failed"
  fi
  mkdir -p "$d" && mv "$d.tmp.$$/dm-dust.ko" "$DUST_KO" && rm -rf "$d.tmp.$$"
}
