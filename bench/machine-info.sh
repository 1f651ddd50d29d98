#!/bin/bash
# Print what a benchmark runs on, as its first line: cores, CPU, load average, kernel
# and the filesystem under DIR (the same line as the in-process benches print).
#
# Usage: bench/machine-info.sh [DIR]     e.g. bench/machine-info.sh /dev/shm
#        bench/machine-info.sh --load    only the three load averages
set -euo pipefail
load=$(cut -d' ' -f1-3 /proc/loadavg)
if [ "${1:-}" = --load ]; then
    echo "$load"
    exit 0
fi
cpu=$(sed -n 's/^model name[[:space:]]*: *//p' /proc/cpuinfo | head -n1)
if [ -n "${1:-}" ]; then
    # The last of stacked mounts is the one on top.
    fs=$(findmnt -n -o FSTYPE -T "$1" 2>/dev/null | tail -n1 || stat -f -c %T "$1" 2>/dev/null || echo '?')
    fs="fs $fs ($1)"
else
    fs="fs none (in memory)"
fi
echo "# machine: $(nproc) cores (${cpu:-?}), load $load, kernel $(uname -r), $fs"
