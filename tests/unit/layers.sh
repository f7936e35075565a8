#!/bin/sh
# The layers of ARCHITECTURE.md hold: nothing under src/core, src/relay or src/varlink includes a
# systemd header, and the core, relay and varlink libraries reference no sd_* symbol (sd-bus,
# sd-daemon, sd-varlink...).
# Usage: layers.sh SOURCE_ROOT CORE_LIB RELAY_LIB VARLINK_LIB
set -u
top=$1
shift
fail=0

echo "1..$(($# + 1))"
hits=$(grep -rnE '#[[:space:]]*include[[:space:]]*[<"]systemd/' "$top/src/core" "$top/src/relay" \
        "$top/src/varlink")
if [ -z "$hits" ]; then
        echo "ok 1 no systemd include under src/core, src/relay and src/varlink"
else
        echo "$hits" | sed 's/^/# /'
        echo "not ok 1 no systemd include under src/core, src/relay and src/varlink"
        fail=1
fi
n=1
for lib in "$@"; do
        n=$((n + 1))
        if ! syms=$(nm -u "$lib"); then
                echo "not ok $n nm -u $(basename "$lib") failed"
                fail=1
                continue
        fi
        bad=$(echo "$syms" | grep -E '(^|[[:space:]])sd_' || true)
        if [ -z "$bad" ]; then
                echo "ok $n $(basename "$lib") references no sd_ symbol"
        else
                echo "$bad" | sed 's/^/# /'
                echo "not ok $n $(basename "$lib") references no sd_ symbol"
                fail=1
        fi
done
exit $fail
