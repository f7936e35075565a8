#!/usr/bin/env python3
"""Checks relaybench runs against the performance targets of issue 3.

usage: bench/targets.py RUN_DIR/results.json [MORE/results.json ...] [CUSTOM_PEER]

Each ratio is the median over the rounds of value / direct's value in the same round, the way
relaybench's report computes its "(0.71x)" figures; a target is met when portpub's ratio is at
least the named peer's (twice nginx's for UDP one-way). Given several runs (say, the same peers
in different orders), the rounds of all of them are pooled, and the memory figures are the
worst of the runs.
"""
import json
import statistics
import sys


def main():
    files = [a for a in sys.argv[1:] if a.endswith(".json")]
    names = [a for a in sys.argv[1:] if not a.endswith(".json")]
    if not files or len(names) > 1:
        sys.exit(__doc__.strip().splitlines()[2])
    me = names[0] if names else "portpub"
    runs = [{p["peer"]: p["tests"] for p in json.load(open(f))["results"]} for f in files]

    def ratio(peer, test, key):
        return statistics.median(g[key] / r[key] for tests in runs
                                 for r, g in zip(tests["direct"][test], tests[peer][test]))

    missed = 0
    for name, test, key, peer, factor in (
        ("TCP 1-stream", "tput1", "gbps", "systemd-socket-proxyd", 1),
        ("TCP connection rate", "conn", "rate", "nginx", 1),
        ("UDP request/response", "udprr", "rate", "docker-proxy", 1),
        ("UDP one-way delivered", "udpow", "delivered_pps", "nginx", 2),
    ):
        mine, theirs = ratio(me, test, key), ratio(peer, test, key)
        ok = mine >= factor * theirs
        missed += not ok
        print(f"{name:22s} {me} {mine:.3f}x  {peer} {theirs:.3f}x  "
              f"{mine / theirs:.2f} of {peer} (target {factor})  {'met' if ok else 'MISSED'}")
    for name, key, limit in (("RSS per idle conn", "kib_per_conn_rss", 1),
                             ("kernel slab per conn", "kernel_slab_kib_per_conn", 16)):
        worst = max(tests[me]["mem"][key] for tests in runs)
        ok = worst <= limit
        missed += not ok
        print(f"{name:22s} {worst:.1f} KiB (target <= {limit})  {'met' if ok else 'MISSED'}")
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
