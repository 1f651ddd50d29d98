# shellcheck shell=sh
# The differential scenario, sourced on both sides by differential.sh: inside the kernel VM
# (busybox ash, kernel dm, DM=/usr/sbin/dmsetup) and on the host (busybox sh if present,
# udmd, DM="udmsetup --socket ..."). POSIX sh only. It prints a transcript on stdout; the
# caller normalises major:minor pairs and diffs the two transcripts step by step.
#
# Inputs: DM       dmsetup command (word-split)
#         DA, DB   the two 64 MiB disks (block device paths)
#         NODEDIR  where a device's data can be read: /dev/mapper or udmd's FUSE mapper dir
#         MKNODES  command run after every change of the device set (guest: dmsetup mknodes)
#         IFLAG, OFLAG  extra dd flags (guest: iflag=direct / oflag=direct: no stale page cache)
#         WITH_TREE 1 to capture `ls --tree`
#         TMPD     scratch directory

say() { printf '%s\n' "$*"; }
step() { say ""; say "### step $1"; }

# dm ARGS...: run "$DM ARGS", print the command, its stdout, its stderr (prefixed) and exit code.
dm() {
  printf '$ dmsetup %s\n' "$*"
  _rc=0
  $DM "$@" >"$TMPD/o" 2>"$TMPD/e" || _rc=$?
  cat "$TMPD/o"
  sed 's/^/stderr: /' "$TMPD/e"
  say "rc=$_rc"
}

# dmq ARGS...: like dm, then refresh the nodes (guest) so that NODEDIR is current.
dmq() { dm "$@"; $MKNODES >/dev/null 2>&1 || true; }

# rd PATH BS [SKIP COUNT]: md5 and size of the data read, or the fact that the read failed.
rd() {
  _p=$1 _bs=$2; shift 2
  _a=; [ $# -ge 2 ] && _a="skip=$1 count=$2"
  printf '$ read %s bs=%s %s\n' "$_p" "$_bs" "$_a"
  # shellcheck disable=SC2086
  if dd if="$_p" of="$TMPD/data" bs="$_bs" $_a $IFLAG 2>"$TMPD/e"; then
    say "md5 $(md5sum <"$TMPD/data" | cut -c1-32) bytes $(wc -c <"$TMPD/data")"
  else
    say "READ-FAILED"
  fi
  rm -f "$TMPD/data"
}
rdn() { _n=$1; shift; rd "$NODEDIR/$_n" "$@"; }

# wr NAME SEEK_4K COUNT_4K: write a deterministic pattern through a device.
wr() {
  printf '$ write %s seek=%s count=%s\n' "$1" "$2" "$3"
  yes "udm differential write $1 $2" | head -c $(($3 * 4096)) >"$TMPD/w"
  # shellcheck disable=SC2086
  if dd if="$TMPD/w" of="$NODEDIR/$1" bs=4096 seek="$2" count="$3" conv=notrunc,fsync $OFLAG 2>"$TMPD/e"; then
    say "write ok"
  else
    say "WRITE-FAILED"
  fi
}

# capture [DEV...]: the state after a step. The long `info` covers only the step's devices (all
# when none are given) so that one difference there does not fail every later step; the other
# reports always cover every device.
capture() {
  say "--- capture"
  dm table
  dm status
  dm info "$@"
  dm info -c
  dm ls
  if [ "$WITH_TREE" = 1 ]; then dm ls --tree; fi
  dm deps
  printf '$ dmsetup targets | (linear|striped|error|zero)\n'
  $DM targets 2>&1 | grep -E '^(linear|striped|error|zero) ' || say "(no targets)"
}

scenario() {
  step empty
  capture
  dm version

  step linear-offset
  dmq create lin --table "0 65536 linear $DA 2048"
  capture lin
  rdn lin 65536
  rd "$DA" 4096 256 8192
  rdn lin 4096 100 50

  step striped-chunk128
  dmq create st128 --table "0 131072 striped 2 128 $DA 0 $DB 0"
  capture st128
  rdn st128 65536
  rdn st128 4096 7 33

  step striped-chunk24
  # 2 stripes x 24 sectors: the length must be a multiple of 48 sectors.
  dmq create st24 --table "0 96000 striped 2 24 $DA 8 $DB 16"
  capture st24
  rdn st24 65536
  rdn st24 4096 5 11

  step zero
  dmq create z --table "0 20480 zero"
  capture z
  rdn z 65536

  step error
  dmq create err --table "0 20480 error"
  capture err
  rdn err 65536
  rdn err 4096 3 1

  step mixed
  dmq create mix --table "0 8192 linear $DA 0
8192 4096 zero
12288 2048 error
14336 9600 striped 2 24 $DA 4096 $DB 8192"
  capture mix
  rdn mix 4096 0 1536
  rdn mix 4096 1000 100
  rdn mix 4096 1500 40
  rdn mix 4096 1600 8
  rdn mix 4096 1790 4
  rdn mix 4096 1792 1200
  rdn mix 65536

  step reload
  dm load lin --table "0 32768 linear $DB 4096
32768 16384 zero"
  dm table --inactive lin
  dm status --inactive lin
  dm info lin
  dm info -c lin
  dm table lin
  rdn lin 65536
  dmq resume lin
  capture lin
  rdn lin 65536
  dm load lin --table "0 8 zero"
  dm clear lin
  dm info lin

  step rename
  dmq rename lin lin2
  dm rename lin2 --setuuid UDM-DIFF-UUID-LIN2
  dm info -u UDM-DIFF-UUID-LIN2
  dmq create withuuid -u UDM-DIFF-UUID-W --table "0 4096 linear $DB 0"
  dmq rename withuuid renamed
  capture lin2 renamed
  rdn lin2 65536
  rdn renamed 65536

  step suspend-resume
  dm suspend st128
  dm info st128
  dm info -c st128
  dm info --noheadings -c -o name,suspended,readonly,tables_loaded st128
  dm status st128
  dm table st128
  dm resume st128
  dm info st128
  rdn st128 4096 100 10

  step readonly
  dmq create ro --readonly --table "0 8192 linear $DB 2048"
  capture ro
  rdn ro 65536
  wr ro 0 1

  step write-through
  wr st24 10 40
  wr mix 100 10
  wr mix 1530 10
  rdn st24 65536
  rd "$DA" 65536
  rd "$DB" 65536

  step stacked
  dmq create base --table "0 65536 linear $DB 1024"
  dmq create top --table "0 32768 linear /dev/mapper/base 2048
32768 8192 striped 2 128 /dev/mapper/base 40960 $DA 512"
  capture base top
  dm deps top
  dm deps -o devname top
  dm ls --target striped
  dm table --target linear
  rdn top 65536
  rdn top 4096 4090 12

  step errors
  dm create base --table "0 8 zero"
  dm info nosuch
  dm table nosuch
  dm remove nosuch
  dm remove base
  dm load nosuch --table "0 8 zero"
  dm message lin2 0 hello
  dm create nt --notable   # no mknodes: libdm would then try BLKRAGET on the node of a disk-less device
  dm info nt
  dm table nt
  dm suspend nt
  dm info nt
  dm resume nt
  dm info nt
  dmq remove nt
  dm create bad1 --table "0 100 nosuchtarget"
  dm create bad2 --table "0 abc linear $DA 0"
  dm create bad3 --table "0 100 linear $DA"
  dm create bad4 --table "0 200000 linear $DA 0"
  dm create bad5 --table "0 100 zero
200 100 zero"
  dm create bad6 --table "0 1000 striped 2 24 $DA 0 $DB 0"
  $MKNODES >/dev/null 2>&1 || true
  capture

  step remove
  dm wipe_table st24
  dm table st24
  rdn st24 4096 0 1
  dmq remove top
  dmq remove base
  dmq remove mix
  capture
  dmq remove_all
  capture
}
