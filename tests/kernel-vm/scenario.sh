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

# cmpblk PATH_A SKIP_A PATH_B SKIP_B: read one 4 KiB block from each (skips in 4 KiB blocks) and
# list the bytes that differ as "offset(1-based) octal_a octal_b" (cmp -l, spaces normalised).
cmpblk() {
  printf '$ cmp %s@%s %s@%s\n' "${1#"$TMPD"/}" "$2" "${3#"$TMPD"/}" "$4"   # TMPD differs by side
  # shellcheck disable=SC2086
  dd if="$1" of="$TMPD/c1" bs=4096 skip="$2" count=1 $IFLAG 2>/dev/null || say "READ-FAILED $1"
  # shellcheck disable=SC2086
  dd if="$3" of="$TMPD/c2" bs=4096 skip="$4" count=1 $IFLAG 2>/dev/null || say "READ-FAILED $3"
  if cmp -s "$TMPD/c1" "$TMPD/c2"; then
    say "identical"
  else
    cmp -l "$TMPD/c1" "$TMPD/c2" 2>&1 | awk '{ print "differs:", $1, $2, $3 }'
  fi
  rm -f "$TMPD/c1" "$TMPD/c2"
}

# hold NAME COUNTS CMD...: run CMD (a read or write through delay device NAME) in the background,
# poll `status NAME` until it ends in the held counts COUNTS ("<reads> <writes> <flushes>"; every
# 0.1 s, at most 300 times), then suspend NAME (presuspend releases held I/O at once), show its
# status, resume it and wait for CMD. Only what is seen is printed, not when.
hold() {
  _hn=$1 _hw=$2; shift 2
  printf '$ (background) %s\n' "$*"
  mkdir -p "$TMPD/bg"
  (TMPD=$TMPD/bg; "$@") >"$TMPD/bg.out" 2>&1 &
  _hp=$!
  printf '$ (poll) dmsetup status %s until it ends in "%s"\n' "$_hn" "$_hw"
  _hi=0 _hs=
  while [ $_hi -lt 300 ]; do
    _hs=$($DM status "$_hn" 2>&1)
    case "$_hs" in *" $_hw") break ;; esac
    sleep 0.1; _hi=$((_hi + 1))
  done
  if [ $_hi -lt 300 ]; then say "held: $_hs"; else say "NOT HELD within 300 polls: $_hs"; fi
  _ht=$(date +%s)
  dm suspend "$_hn"
  # The held I/O waits 120 s; a suspend that does not release it takes that long.
  if [ $(($(date +%s) - _ht)) -lt 60 ]; then say "suspend returned within 60 s"; else say "suspend took 60 s or more"; fi
  dm status "$_hn"
  dm resume "$_hn"
  wait $_hp
  cat "$TMPD/bg.out"
}

# ntargets: the versions of the targets added after the first four (delay, flakey, dust), sorted:
# the guest lists loaded modules only, newest first; udm lists every target it has.
ntargets() {
  printf '$ dmsetup targets | (delay|flakey|dust), sorted\n'
  $DM targets 2>&1 | grep -E '^(delay|flakey|dust) ' | sort || say "(no targets)"
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

  # The steps below use disk areas that no earlier step writes: delay DA/DB from sector 32768,
  # flakey DA from 49152, dust DA from 65536.
  step delay
  dmq create dl3 --table "0 8192 delay $DA 32768 0"
  dmq create dl6 --table "0 8192 delay $DA 32768 0 $DB 32768 0"
  dmq create dl9 --table "0 8192 delay $DB 36864 0 $DA 36864 0 $DB 40960 0"
  capture dl3 dl6 dl9
  rdn dl3 65536
  rd "$DA" 4096 4096 1024
  rdn dl6 65536
  rdn dl9 65536
  rd "$DB" 4096 4608 1024
  # dl6 reads DA and writes DB; dl9 reads DB and writes DA.
  wr dl6 8 2
  rd "$DB" 4096 4104 2
  rdn dl6 4096 8 2
  rd "$DA" 4096 4104 2
  wr dl9 16 2
  rd "$DA" 4096 4624 2
  rdn dl9 4096 16 2
  dm status dl9
  dm create dlbad1 --table "0 8192 delay $DA 0"
  dm create dlbad2 --table "0 8192 delay $DA 0 0 $DB"
  dm create dlbad3 --table "0 8192 delay $DA 0 0 $DB 0 0 $DB 0"
  dm create dlbad4 --table "0 8192 delay $DA 0 0 $DB 0 0 $DB 0 0 0"
  dm create dlbad5 --table "0 8192 delay $DA x 0"
  dm create dlbad6 --table "0 8192 delay $DA 0 1.5"
  dm create dlbad7 --table "0 8192 delay $DA 0 -5"
  dm create dlbad8 --table "0 8192 delay $DA 0 0 /dev/nosuch 0 0"
  dm create dlbad9 --table "0 8192 delay $DA 0 0 $DB 131000 0"
  dm create dlbad10 --table "0 8192 delay $DA 0 0 $DB 0 0 $DB 0 z"
  $MKNODES >/dev/null 2>&1 || true
  capture
  dmq remove dl3
  dmq remove dl6
  dmq remove dl9

  step delay-held
  # reads from DA, writes to DB, flushes to DB: 120 s for reads and writes, flushes not delayed
  dmq create dlh --table "0 8192 delay $DA 32768 120000 $DB 32768 120000 $DB 32768 0"
  dmq create dlf --table "0 8192 delay $DA 32768 0 $DB 32768 0 $DB 32768 120000"
  capture dlh dlf
  hold dlh "1 0 0" rdn dlh 4096 2 1
  hold dlh "0 1 0" wr dlh 20 1
  rd "$DB" 4096 4116 1
  hold dlf "0 0 1" wr dlf 21 1
  rd "$DB" 4096 4117 1
  dm status dlh
  dm status dlf
  dmq remove dlh
  dmq remove dlf

  step flakey-tables
  dmq create fl4 --table "0 8192 flakey $DA 49152 1 0"
  dmq create fl0 --table "0 8192 flakey $DA 49152 4294967295 0 0"
  # features print in a fixed order, in lower case
  dmq create flall --table "0 8192 flakey $DA 49152 0 1 8 RANDOM_WRITE_CORRUPT 9 corrupt_bio_byte 32 W 255 0 Error_Reads"
  dmq create flall2 --table "0 8192 flakey $DA 49152 0 1 6 corrupt_bio_byte 32 R 255 0 DROP_WRITES"
  dmq create flrnd --table "0 8192 flakey $DA 49152 3 5 4 random_write_corrupt 0 random_read_corrupt 1000000000"
  dmq create flrnd0 --table "0 8192 flakey $DA 49152 0 1 2 random_read_corrupt 0"
  dmq create flcw --table "0 8192 flakey $DA 49152 0 1 8 error_reads corrupt_bio_byte 1 w 0 16 random_write_corrupt 7"
  dmq create flbyte --table "0 8192 flakey $DA 49152 0 1 5 corrupt_bio_byte 4294967295 r 1 0"
  # 6.12 ignores words after the feature group
  dmq create flextra --table "0 8192 flakey $DA 49152 0 1 1 error_writes junk"
  # 6.12 refuses only drop_writes/error_writes with corrupt_bio_byte ... w; these combinations load
  dmq create flercr --table "0 8192 flakey $DA 49152 0 1 6 error_reads corrupt_bio_byte 1 r 1 0"
  dmq create flerrr --table "0 8192 flakey $DA 49152 0 1 3 error_reads random_read_corrupt 5"
  dmq create fldwrw --table "0 8192 flakey $DA 49152 0 1 3 drop_writes random_write_corrupt 5"
  dmq create flewrw --table "0 8192 flakey $DA 49152 0 1 3 random_write_corrupt 5 error_writes"
  capture fl4 fl0 flall flall2 flrnd flrnd0 flcw flbyte flextra flercr flerrr fldwrw flewrw
  dm create flbad1 --table "0 8192 flakey $DA 0 1"
  dm create flbad2 --table "0 8192 flakey $DA 0 0 0"
  dm create flbad3 --table "0 8192 flakey $DA 0 4294967295 1"
  dm create flbad4 --table "0 8192 flakey $DA 0 x 1"
  dm create flbad5 --table "0 8192 flakey $DA 0 1 -1"
  dm create flbad6 --table "0 8192 flakey $DA y 1 0"
  dm create flbad7 --table "0 8192 flakey $DA 0 1 0 1"
  dm create flbad8 --table "0 8192 flakey $DA 0 1 0 2 error_reads"
  dm create flbad9 --table "0 8192 flakey $DA 0 1 0 12 error_reads"
  dm create flbad10 --table "0 8192 flakey $DA 0 1 0 1 bogus"
  dm create flbad11 --table "0 8192 flakey $DA 0 1 0 2 drop_writes error_writes"
  dm create flbad12 --table "0 8192 flakey $DA 0 1 0 2 error_writes drop_writes"
  dm create flbad13 --table "0 8192 flakey $DA 0 1 0 2 error_reads error_reads"
  dm create flbad14 --table "0 8192 flakey $DA 0 1 0 5 corrupt_bio_byte 0 r 1 0"
  dm create flbad15 --table "0 8192 flakey $DA 0 1 0 5 corrupt_bio_byte 1 x 1 0"
  dm create flbad16 --table "0 8192 flakey $DA 0 1 0 5 corrupt_bio_byte 1 r 256 0"
  dm create flbad17 --table "0 8192 flakey $DA 0 1 0 4 corrupt_bio_byte 1 r 1"
  dm create flbad18 --table "0 8192 flakey $DA 0 1 0 6 drop_writes corrupt_bio_byte 1 w 1 0"
  dm create flbad19 --table "0 8192 flakey $DA 0 1 0 6 corrupt_bio_byte 1 w 1 0 error_writes"
  dm create flbad20 --table "0 8192 flakey $DA 0 1 0 2 random_read_corrupt 1000000001"
  dm create flbad21 --table "0 8192 flakey $DA 0 1 0 1 random_write_corrupt"
  dm create flbad22 --table "0 8192 flakey /dev/nosuch 0 1 0"
  dm create flbad23 --table "0 8192 flakey $DA 0 1 0 x"
  $MKNODES >/dev/null 2>&1 || true
  capture
  dmq remove_all

  step flakey-down
  # up 0, down 1: always down. DA block 6144 is block 0 of these devices.
  dmq create fler --table "0 8192 flakey $DA 49152 0 1 1 error_reads"
  dmq create fldw --table "0 8192 flakey $DA 49152 0 1 1 drop_writes"
  dmq create flew --table "0 8192 flakey $DA 49152 0 1 1 error_writes"
  dmq create flcr --table "0 8192 flakey $DA 49152 0 1 5 corrupt_bio_byte 32 r 65 0"
  dmq create flcr2 --table "0 8192 flakey $DA 49152 0 1 5 corrupt_bio_byte 5000 r 65 0"
  dmq create flcw --table "0 8192 flakey $DA 49152 0 1 5 corrupt_bio_byte 1 w 66 0"
  dmq create flnf --table "0 8192 flakey $DA 49152 0 1"
  capture fler fldw flew flcr flcr2 flcw flnf
  rdn fler 4096 0 1
  rdn fler 65536
  wr fler 1 1
  rd "$DA" 4096 6145 1
  rdn fldw 4096 2 1
  wr fldw 2 1
  rd "$DA" 4096 6146 1
  cmpblk "$DA" 6146 "$NODEDIR/fldw" 2
  rdn flew 4096 3 1
  wr flew 3 1
  rd "$DA" 4096 6147 1
  rdn flcr 4096 4 1
  rd "$DA" 4096 6148 1
  cmpblk "$DA" 6148 "$NODEDIR/flcr" 4
  cmpblk "$DA" 6150 "$NODEDIR/flcr2" 6
  wr flcw 5 1
  cmpblk "$TMPD/w" 0 "$DA" 6149   # the pattern wr wrote
  rdn flcw 4096 5 1
  rdn flnf 4096 0 1
  wr flnf 7 1
  rd "$DA" 4096 6151 1
  dmq remove_all

  step flakey-up
  # up N, down 0: always up, whatever the features.
  dmq create flu1 --table "0 8192 flakey $DA 49152 1 0"
  dmq create flu2 --table "0 8192 flakey $DA 49152 3600 0 5 corrupt_bio_byte 1 r 0 0"
  dmq create flu3 --table "0 8192 flakey $DA 49152 4294967295 0 1 drop_writes"
  capture flu1 flu2 flu3
  rdn flu1 65536
  rd "$DA" 4096 6144 16
  rdn flu2 4096 0 1
  rd "$DA" 4096 6144 1
  wr flu1 8 1
  rd "$DA" 4096 6152 1
  wr flu3 9 1
  rd "$DA" 4096 6153 1
  dmq remove_all

  step dust-tables
  dmq create du --table "0 8192 dust $DA 65536 4096"
  dmq create du512 --table "0 8192 dust $DA 65536 512"
  dmq create du12 --table "0 12 dust $DB 0 4096"
  dmq create dubig --table "0 2097152 zero"
  dmq create dugib --table "0 2097152 dust /dev/mapper/dubig 0 1073741824"
  capture du du512 du12 dugib
  dm create dubad1 --table "0 8192 dust $DA 0"
  dm create dubad2 --table "0 8192 dust $DA 0 512 1"
  dm create dubad3 --table "0 8192 dust $DA 0 0"
  dm create dubad4 --table "0 8192 dust $DA 0 256"
  dm create dubad5 --table "0 8192 dust $DA 0 1536"
  dm create dubad6 --table "0 8192 dust $DA 0 4k"
  dm create dubad7 --table "0 8 dust $DA 0 8192"
  dm create dubad8 --table "0 8192 dust $DA 0 2147483648"
  dm create dubad9 --table "0 8192 dust $DA 0 4294967296"
  dm create dubad10 --table "0 8192 dust $DA x 4096"
  dm create dubad11 --table "0 8192 dust /dev/nosuch 0 4096"
  dm create dubad12 --table "0 8192 dust $DA 0 -4096"
  dm create dubad13 --table "0 2097152 dust /dev/mapper/dubig 0 2147483648"
  $MKNODES >/dev/null 2>&1 || true
  capture
  dmq remove_all

  step dust-messages
  # blksz 4096 at sector 65536: block b of the device is block 8192+b of DA (64 MiB = 16384 blocks).
  dmq create du --table "0 8192 dust $DA 65536 4096"
  dm status du
  dm message du 0 countbadblocks
  dm message du 0 listbadblocks
  dm message du 0 clearbadblocks
  dm message du 0 queryblock 8196
  dm message du 0 addbadblock 8196
  dm message du 0 addbadblock 8196
  dm message du 0 AddBadBlock 8200 2
  dm message du 0 addbadblock 8194 0
  dm message du 0 queryblock 8196
  dm message du 0 QUERYBLOCK 8197
  dm message du 0 countbadblocks
  dm message du 0 listbadblocks
  dm message du 0 addbadblock 16384
  dm message du 0 addbadblock 16385
  dm message du 0 queryblock 16385
  dm message du 0 removebadblock 16384
  dm message du 0 removebadblock 16384
  dm message du 0 addbadblock 8201 255
  dm message du 0 removebadblock 8201
  dm message du 0 addbadblock 8202 256
  dm message du 0 addbadblock
  dm message du 0 addbadblock x
  dm message du 0 removebadblock 8202 1
  dm message du 0 queryblock 1 2
  dm message du 0 countbadblocks now
  dm message du 0 bogus
  dm message du 0 bogus 1
  dm message du 0 addbadblock 1 2 3
  dm message du 0 enable
  dm status du
  dm message du 0 enable
  dm message du 0 Disable
  dm status du
  dm message du 0 quiet
  dm status du
  dm message du 0 quiet
  dm status du
  dm message du 0 countbadblocks
  dm message du 0 listbadblocks
  dm message du 0 clearbadblocks
  dm message du 0 countbadblocks
  dm message du 0 listbadblocks
  dm message du 0 clearbadblocks
  capture du
  dmq remove du

  step dust-io
  dmq create du --table "0 8192 dust $DA 65536 4096"
  dm message du 0 addbadblock 8196
  dm message du 0 addbadblock 8200 2
  dm message du 0 addbadblock 8194
  rdn du 65536
  rdn du 4096 4 1
  dm message du 0 enable
  rdn du 4096 4 1
  rdn du 4096 3 1
  rdn du 4096 5 1
  rdn du 65536
  rdn du 4096 16 16
  wr du 4 1
  rdn du 4096 4 1
  dm message du 0 queryblock 8196
  wr du 8 1
  dm message du 0 queryblock 8200
  rdn du 4096 8 1
  wr du 8 1
  wr du 8 1
  dm message du 0 queryblock 8200
  rdn du 4096 8 1
  dm message du 0 disable
  rdn du 4096 2 1
  wr du 2 1
  dm message du 0 listbadblocks
  dm message du 0 enable
  rdn du 4096 2 1
  dm message du 0 countbadblocks
  rd "$DA" 4096 8192 16
  capture du
  dmq remove du

  step dust-offset
  # An offset that is not a multiple of the block: bad blocks still count on DA, and a bio is
  # checked by the block of its first sector only (dm splits bios at blksz from the target start).
  dmq create duo --table "0 8192 dust $DA 65540 4096"
  dm message duo 0 addbadblock 8193
  dm message duo 0 enable
  rdn duo 4096 0 1
  rdn duo 4096 1 1
  rdn duo 4096 2 1
  dm message duo 0 listbadblocks
  dmq create duo512 --table "0 8192 dust $DA 65536 512"
  dm message duo512 0 addbadblock 65545
  dm message duo512 0 enable
  rdn duo512 4096 0 1
  rdn duo512 4096 1 1
  rdn duo512 4096 2 1
  wr duo512 1 1
  dm message duo512 0 listbadblocks
  # A write-fail count on one 512-byte block of a 4 KiB write: that sector's bio fails, the
  # other seven are written.
  dm message duo512 0 addbadblock 65554 1
  wr duo512 2 1
  dm message duo512 0 disable
  rdn duo512 4096 2 1
  rd "$DA" 4096 8194 1
  dm message duo512 0 listbadblocks
  capture duo duo512
  dmq remove_all

  step dynamic-targets
  ntargets
  capture
}
