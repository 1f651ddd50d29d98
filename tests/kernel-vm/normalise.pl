#!/usr/bin/perl
# normalise.pl DA=maj:min DB=maj:min DMMAJ=n PATH=SYMBOL... < transcript > normalised
# (PATH=SYMBOL: the last '=' separates them)
# Normalises one side's transcript of scenario.sh so that kernel and udm transcripts compare:
#  * major:minor pairs (forms "M:m", "M, m" and the Maj/Min columns of `info -c`) whose major
#    is the disks' or device-mapper's become symbols: DA, DB for the disks, DM1, DM2, ... for
#    dm devices in order of first appearance (kernel dm major 254, udm 253; virtio 252 vs loop 7);
#  * the host paths of the disks and of NODEDIR become DA, DB, NODE (they only occur in the
#    echoed commands);
#  * kernel log lines ("[   12.345] ...") are dropped.
# Every other rule is a known, intended difference and is commented where it is applied.
use strict; use warnings;
my (%sym, %maj, @paths);
my $next = 0;
for (@ARGV) {
  if (/^(DA|DB)=(\d+:\d+)$/) { $sym{$2} = $1; $maj{(split /:/, $2)[0]} = 1; }
  elsif (/^DMMAJ=(\d+)$/) { $maj{$1} = 2; }
  elsif (/^(.+)=([^=]+)$/) { push @paths, [$2, $1]; }     # PATH=SYMBOL
  else { die "normalise.pl: bad argument $_\n"; }
}
@paths = sort { length($b->[1]) <=> length($a->[1]) } @paths;
sub s_ { my ($M, $m) = @_;
  return undef unless $maj{$M};
  my $k = "$M:$m";
  $sym{$k} //= ($maj{$M} == 2 ? 'DM' . ++$next : "DEV($k)");
  return $sym{$k};
}
my $infoc = 0;
while (my $l = <STDIN>) {
  $l =~ s/\r//g;
  next if $l =~ /^\[\s*\d+\.\d+\]/;                       # kernel log line
  for my $p (@paths) { my ($s, $v) = @$p; $l =~ s/\Q$v\E/$s/g; }
  # Intended: the library version is that of libdevmapper vs udmsetup's own.
  $l =~ s/^(Library version:\s+).*/$1<normalised>/;
  # Intended: udmsetup may add error-detail lines prefixed "udm: " (the kernel logs them to dmesg).
  next if $l =~ /^stderr: udm: /;
  # Intended: for a device without a table the kernel has not registered the disk, so libdm's
  # read-ahead fallback (BLKRAGET on the /dev/mapper node) fails and says so on stderr; udmsetup
  # has no node to open. (Whether the "Read Ahead:" line itself appears is still compared.)
  next if $l =~ m{^stderr: NODE/\S+: open failed: };
  $infoc = 0 if $l =~ /^(\$ |rc=)/;
  if ($infoc && $l =~ /^(\S+\s+)(\d+)(\s+)(\d+)(?=\s)/) {
    my ($pre, $M, $sp, $m) = ($1, $2, $3, $4);
    my $s = s_($M, $m);
    if (defined $s) {
      my $w = length("$M$sp$m");
      $l = $pre . sprintf("%${w}s", $s) . substr($l, length($pre) + $w);
    }
  }
  $infoc = 1 if $l =~ /^Name\s+Maj\s+Min\b/;
  $l =~ s/(?<![\d.:])(\d+):(\d+)(?![\d:])/my $s = s_($1, $2); defined $s ? $s : "$1:$2"/ge;
  $l =~ s/(?<![\d.])(\d+), (\d+)(?!\d)/my $s = s_($1, $2); defined $s ? $s : "$1, $2"/ge;
  print $l;
}
