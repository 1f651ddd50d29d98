#!/usr/bin/env python3
"""The table of nbd-peers.sh: per row the median over rounds of each server's MiB/s,
and the median ratio udm/server (taken round by round) with its min-max over rounds.

Usage: peers_table.py RESULTS.tsv NOISE "JOBS" SERVER...   (udm first)
RESULTS.tsv has the columns round server rw bs jobs mib_s iops ("fail" when fio failed).
A ratio whose min-max spans more than NOISE (a fraction) of its median is marked "!".
"-" is a row not run (more than one connection to a server without multi-conn).
"""

import csv
import statistics
import sys

TESTS = [("read", "128k"), ("write", "128k"), ("randread", "4k"), ("randwrite", "4k")]


def main():
    path, noise, jobs_list, servers = sys.argv[1], float(sys.argv[2]), sys.argv[3].split(), sys.argv[4:]
    # (server, rw, bs, jobs) -> {round: (mib_s, iops)}
    res = {}
    failed = set()
    with open(path, newline="") as f:
        for r in csv.DictReader(f, delimiter="\t"):
            key = (r["server"], r["rw"], r["bs"], r["jobs"])
            if r["mib_s"] == "fail":
                failed.add(key)
                continue
            res.setdefault(key, {})[r["round"]] = (float(r["mib_s"]), float(r["iops"]))
    rounds = {r for v in res.values() for r in v}
    n_rounds = len(rounds)
    others = [s for s in servers if s != "udm"]

    head = ["test", "conns"] + [f"{s} MiB/s" for s in servers] + [f"udm/{s}" for s in others]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    noisy = partial = skipped = False
    for jobs in jobs_list:
        for rw, bs in TESTS:
            cells = [f"{rw} {bs}", jobs]
            for s in servers:
                got = res.get((s, rw, bs, jobs), {})
                if not got:
                    # Not run (jobs > 1 without multi-conn), or fio failed every round.
                    if (s, rw, bs, jobs) in failed:
                        cells.append("fail")
                    else:
                        cells.append("-")
                        skipped = True
                    continue
                bw = statistics.median(v[0] for v in got.values())
                cell = f"{bw:.0f}"
                if bs == "4k":
                    iops = statistics.median(v[1] for v in got.values())
                    cell += f" ({iops / 1000:.0f}k IOPS)"
                if len(got) < n_rounds:
                    cell += f" [{len(got)}/{n_rounds}]"
                    partial = True
                cells.append(cell)
            udm = res.get(("udm", rw, bs, jobs), {})
            for s in others:
                peer = res.get((s, rw, bs, jobs), {})
                ratios = [udm[r][0] / peer[r][0] for r in udm if r in peer and peer[r][0] > 0]
                if not ratios:
                    cells.append("-")
                    continue
                med = statistics.median(ratios)
                cell = f"{med:.2f} ({min(ratios):.2f}–{max(ratios):.2f})"
                if med > 0 and (max(ratios) - min(ratios)) / med > noise:
                    cell += " !"
                    noisy = True
                cells.append(cell)
            print("| " + " | ".join(cells) + " |")
    print(f"(MiB/s: median of {n_rounds} rounds; udm/peer: median of the per-round ratios (min–max))")
    if noisy:
        print(f"! min–max over rounds spans more than {noise:.0%} of the median: too noisy to trust")
    if skipped:
        print("-: not run (more than one connection to a server without multi-conn)")
    if partial:
        print("[k/N]: fio failed in the other rounds (see the log above)")


if __name__ == "__main__":
    main()
