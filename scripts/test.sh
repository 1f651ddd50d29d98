#!/usr/bin/env bash
# The whole udm test suite: formatting, lints, unit and end-to-end tests with real
# clients (nbdinfo, nbdcopy, qemu-io, qemu-img, nbdsh, losetup + mkfs.ext4 + e2fsck),
# the differential tests against a real Linux kernel's device-mapper and nbd client
# (inside tests/kernel-vm, under QEMU), and short fuzz runs.
# Run as root on a fresh machine: missing packages are installed first.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
# Tests that need a real client (nbdinfo, qemu-io, ...) fail instead of skipping.
export UDM_REQUIRE_CLIENTS=1

# Passed and failed tests in a `cargo test --no-fail-fast` log, as "P F". Each failing
# test counts once (from its binary's `test result:` line); a test binary that failed
# without a result line (it aborted or was killed) counts as one failure, so does each
# crate that did not compile, and so does a log with no result at all.
count_cargo_test() {
  awk '
    /^test result:/ {
      seen = 1
      if ($3 == "FAILED.") with_result++
      for (i = 1; i < NF; i++) {
        if ($(i + 1) ~ /^passed/) p += $i
        if ($(i + 1) ~ /^failed/) f += $i
      }
    }
    /^error: (doc)?test failed, to rerun pass/ { failed_bins++ }
    /^error: could not compile `/ { split($0, q, "`"); if (!(q[2] in bad)) { bad[q[2]] = 1; f++ } }
    END {
      if (failed_bins > with_result) f += failed_bins - with_result
      if (!seen && f == 0) f = 1
      print p + 0, f + 0
    }' "$1"
}
# `scripts/test.sh --count LOG` only counts LOG (its regression test uses this).
if [ "${1:-}" = --count ]; then count_cargo_test "$2"; exit; fi

passed=0; failed=0
note() { printf '\n== %s\n' "$*"; }
ok() { passed=$((passed + 1)); echo "ok: $*"; }
bad() { failed=$((failed + 1)); echo "FAILED: $*"; }

need_pkgs=()
for p in nbdinfo:libnbd-bin nbdcopy:libnbd-bin nbdkit:nbdkit fio:fio fusermount3:fuse3 qemu-io:qemu-utils \
         mkfs.ext4:e2fsprogs losetup:mount cc:gcc; do
  command -v "${p%%:*}" >/dev/null 2>&1 || need_pkgs+=("${p#*:}")
done
[ -f /usr/include/linux/dm-ioctl.h ] || need_pkgs+=(linux-libc-dev)
dpkg -s libclang-dev >/dev/null 2>&1 || need_pkgs+=(libclang-dev)   # bindgen, for the ublk feature
/usr/bin/python3 -c 'import nbd' 2>/dev/null || need_pkgs+=(python3-libnbd)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    note "installing ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >/dev/null
  else
    echo "missing packages (run as root to install): ${need_pkgs[*]}" >&2
  fi
fi

note "cargo fmt --check"
if cargo fmt --all -- --check; then ok fmt; else bad fmt; fi

note "cargo clippy -D warnings"
if cargo clippy --workspace --all-targets -- -D warnings; then ok clippy; else bad clippy; fi

note "cargo clippy -D warnings, ublk feature"
if cargo clippy -p udm-ublk -p udmd --all-targets --features udmd/ublk,udm-ublk/libublk -- -D warnings; then
  ok "clippy ublk"; else bad "clippy ublk"; fi

note "cargo build --release"
cargo build --release --bins

note "cargo test --release"
log=$(mktemp)
if cargo test --release --workspace --no-fail-fast 2>&1 | tee "$log"; then :; fi
read -r t_pass t_fail < <(count_cargo_test "$log")
passed=$((passed + t_pass)); failed=$((failed + t_fail))
echo "cargo test: $t_pass passed, $t_fail failed"

export KERNEL_VM_CACHE=${KERNEL_VM_CACHE:-$PWD/target/kernel-vm-cache}
# differential.sh compiles dm-dust.ko for the guest kernel (build-dm-dust: apt-get download of
# Debian's linux-source and headers, make, gcc), into the cache above; on a fresh machine it
# first boots kernel-vm once, which fetches that cache. The headers' objtool needs libelf1.
kvm_pkgs=()
command -v make >/dev/null 2>&1 || kvm_pkgs+=(make)
dpkg -s libelf1 >/dev/null 2>&1 || kvm_pkgs+=(libelf1)
if [ ${#kvm_pkgs[@]} -gt 0 ] && [ "$(id -u)" = 0 ]; then
  note "installing ${kvm_pkgs[*]} (for build-dm-dust)"
  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${kvm_pkgs[@]}" >/dev/null
fi
for t in differential nbd-client; do
  note "kernel VM: $t"
  if UDM_NO_BUILD=1 bash "tests/kernel-vm/$t.sh"; then ok "kernel-vm $t"; else bad "kernel-vm $t"; fi
done

note "kernel VM: ublk (udmd built with --features ublk)"
cargo build --release -p udmd --features ublk
if UDM_NO_BUILD=1 bash tests/kernel-vm/ublk.sh; then ok "kernel-vm ublk"; else bad "kernel-vm ublk"; fi

if [ "${UDM_SKIP_FUZZ:-0}" != 1 ]; then
  note "fuzz (short runs)"
  command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked -q
  for f in ioctl_decode table_parse; do
    flog=$(mktemp)
    if (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run "$f" --target-dir ../target/fuzz -- -max_total_time=20) >"$flog" 2>&1; then
      tail -3 "$flog"; ok "fuzz $f"
    else
      # A compile error or a crash: show enough to see which.
      tail -60 "$flog"; bad "fuzz $f"
    fi
  done
fi

echo
echo "udm: $passed passed, $failed failed"
[ "$failed" = 0 ]
