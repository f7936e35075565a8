#!/usr/bin/env bash
# The demo: a private bus, portpubd on it, a guest web server on 127.0.0.1, a port published to
# it with busctl, bytes fetched through it over IPv4 and IPv6, its properties, and unpublishing.
# Everything stays on loopback; every process started here is stopped by PID on the way out.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$top/build}
[ -x "$build/src/portpubd/portpubd" ] || "$top/tests/setup.sh"
port=${DEMO_PORT:-8080}
work=$(mktemp -d)
pids=()
cleanup() {
        # Newest first: the daemon leaves before its bus does.
        for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
                kill "${pids[i]}" 2>/dev/null || true
                wait "${pids[i]}" 2>/dev/null || true
        done
        rm -rf "$work"
}
trap cleanup EXIT
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
wait_for() { # command... ; up to 10 s
        for _ in $(seq 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
        echo "timed out waiting for: $*" >&2
        return 1
}

# A private bus, so the demo needs no system bus and no root.
dbus-daemon --session --nofork --print-address=3 3>"$work/address" 2>/dev/null &
pids+=($!)
wait_for test -s "$work/address"
addr=$(head -n1 "$work/address")
bus=(busctl --address="$addr")

"$build/src/portpubd/portpubd" --bus-address="$addr" --state-file= --varlink=no &
pids+=($!)
wait_for "${bus[@]}" status io.portpub.Publisher1

# The "guest": a web server on 127.0.0.1 serving one file.
mkdir "$work/www"
echo "hello from the guest" >"$work/www/index.html"
python3 -m http.server --bind 127.0.0.1 --directory "$work/www" 18000 >/dev/null 2>&1 &
pids+=($!)
wait_for curl -sf http://127.0.0.1:18000/

say "busctl call ... PublishPorts 'sasa(ssqq)a{sv}' web 1 127.0.0.1 1 tcp \"\" $port 18000 0"
"${bus[@]}" call io.portpub.Publisher1 /io/portpub/Publisher1 io.portpub.Publisher1.Manager \
        PublishPorts 'sasa(ssqq)a{sv}' web 1 127.0.0.1 1 tcp "" "$port" 18000 0

say "curl http://127.0.0.1:$port/"
curl -sS --max-time 5 "http://127.0.0.1:$port/"
say "curl http://[::1]:$port/"
curl -sS --max-time 5 "http://[::1]:$port/"

say "busctl call ... ListPorts"
"${bus[@]}" call io.portpub.Publisher1 /io/portpub/Publisher1 io.portpub.Publisher1.Manager ListPorts
path=$("${bus[@]}" call io.portpub.Publisher1 /io/portpub/Publisher1 io.portpub.Publisher1.Manager \
        GetPort ssq tcp "" "$port" | sed 's/^o "\(.*\)"$/\1/')
say "busctl introspect io.portpub.Publisher1 $path io.portpub.Publisher1.Port"
"${bus[@]}" introspect io.portpub.Publisher1 "$path" io.portpub.Publisher1.Port

say "busctl call ... UnpublishPorts 'sa(ssq)' web 1 tcp \"\" $port"
"${bus[@]}" call io.portpub.Publisher1 /io/portpub/Publisher1 io.portpub.Publisher1.Manager \
        UnpublishPorts 'sa(ssq)' web 1 tcp "" "$port"
say "curl http://127.0.0.1:$port/   (now refused)"
if curl -sS --max-time 5 "http://127.0.0.1:$port/"; then
        echo "port $port still answers after unpublishing" >&2
        exit 1
fi
echo
echo "demo finished: published, fetched over IPv4 and IPv6, unpublished"
