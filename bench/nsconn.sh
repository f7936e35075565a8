#!/bin/bash
# nsconn.sh: one tcp_connrate run through a relay inside a fresh network namespace, so that the
# kernel's TIME_WAIT state at the start is set by the run, not by whatever ran before.
#
# usage: bench/nsconn.sh [-t empty|none|SECONDS] [-d SECONDS] BIN_DIR RELAY_COMMAND...
#   -t empty    start with no TIME_WAIT entries (the default)
#   -t none     no TIME_WAIT entries at all: tcp_max_tw_buckets=0 inside the namespace
#   -t SECONDS  first put that many seconds of direct tcp_connrate load on another port, so
#               that its TIME_WAIT entries fill part of the table
#   -d SECONDS  length of the measured run (default 5)
#   BIN_DIR     holds relaybench's tcp_echo and tcp_connrate (built from its src/*.c)
#   RELAY_COMMAND is run with {laddr} and {taddr} replaced by 127.0.0.1:26002 (where the load
#   connects) and 127.0.0.1:26001 (the echo server).
# Needs root (unshare -n). Everything runs on the namespace's own loopback; the relay is pinned
# to CPU 1, the echo server and the load to CPU 0, as relaybench does.
# Prints: conn/s, p99 latency in us, and the TIME_WAIT count at the end.
set -euo pipefail

tw=empty dur=5
while getopts t:d: o; do
        case $o in
        t) tw=$OPTARG ;;
        d) dur=$OPTARG ;;
        *) exit 2 ;;
        esac
done
shift $((OPTIND - 1))
[ $# -ge 2 ] || { sed -n 4,13p "$0" >&2; exit 2; }
bin=$1
shift
relay=()
for a in "$@"; do
        a=${a//\{laddr\}/127.0.0.1:26002}
        relay+=("${a//\{taddr\}/127.0.0.1:26001}")
done

export NSCONN_BIN=$bin NSCONN_TW=$tw NSCONN_DUR=$dur
# shellcheck disable=SC2016 # the script below expands in the namespace
exec unshare -n bash -euo pipefail -c '
ip link set lo up
[ "$NSCONN_TW" = none ] && sysctl -qw net.ipv4.tcp_max_tw_buckets=0
tw_count() { awk "/^TCP:/ { print \$7 }" /proc/net/sockstat; }
taskset -c 0 "$NSCONN_BIN/tcp_echo" 127.0.0.1 26001 >/dev/null &
echo_pid=$!
if [[ "$NSCONN_TW" =~ ^[0-9.]+$ ]]; then
        taskset -c 0 "$NSCONN_BIN/tcp_echo" 127.0.0.1 26011 >/dev/null &
        fill_pid=$!
        sleep 0.2
        taskset -c 0 "$NSCONN_BIN/tcp_connrate" -h 127.0.0.1 -p 26011 -c 32 -d "$NSCONN_TW" >/dev/null
        kill "$fill_pid"
        echo "TIME_WAIT before: $(tw_count)"
fi
taskset -c 1 "$@" >/dev/null 2>&1 &
relay_pid=$!
for _ in $(seq 100); do   # until the relay accepts, at most 10 s
        (exec 3<>/dev/tcp/127.0.0.1/26002) 2>/dev/null && break
        sleep 0.1
done
taskset -c 0 "$NSCONN_BIN/tcp_connrate" -h 127.0.0.1 -p 26002 -c 32 -d "$NSCONN_DUR" |
        python3 -c "import json, sys; d = json.load(sys.stdin); print(\"conn/s %d p99 %d us\" % (d[\"rate\"], d[\"p99_us\"]), end=\" \")"
echo "TIME_WAIT after: $(tw_count)"
kill "$relay_pid" "$echo_pid"
wait 2>/dev/null || true
' nsconn "${relay[@]}"
