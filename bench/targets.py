#!/usr/bin/env python3
"""Checks one relaybench run against the performance targets of issue 3.

usage: bench/targets.py RUN_DIR/results.json [CUSTOM_PEER]

Each ratio is the median over the rounds of value / direct's value in the same round, the way
relaybench's report computes its "(0.71x)" figures; a target is met when portpub's ratio is at
least the named peer's (twice nginx's for UDP one-way).
"""
import json
import statistics
import sys


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__.strip().splitlines()[2])
    run = json.load(open(sys.argv[1]))
    me = sys.argv[2] if len(sys.argv) == 3 else "portpub"
    tests = {p["peer"]: p["tests"] for p in run["results"]}

    def ratio(peer, test, key):
        ref, got = tests["direct"][test], tests[peer][test]
        return statistics.median(g[key] / r[key] for r, g in zip(ref, got))

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
    mem = tests[me]["mem"]
    for name, key, limit in (("RSS per idle conn", "kib_per_conn_rss", 1),
                             ("kernel slab per conn", "kernel_slab_kib_per_conn", 16)):
        ok = mem[key] <= limit
        missed += not ok
        print(f"{name:22s} {mem[key]:.1f} KiB (target <= {limit})  {'met' if ok else 'MISSED'}")
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
