#!/bin/sh
# The layers of ARCHITECTURE.md hold: nothing under src/core or src/relay includes a systemd
# header, and the core and relay libraries reference no sd_* symbol (sd-bus, sd-daemon...).
# Usage: layers.sh SOURCE_ROOT CORE_LIB RELAY_LIB
set -u
top=$1
core=$2
relay=$3
fail=0

echo "1..3"
hits=$(grep -rnE '#[[:space:]]*include[[:space:]]*[<"]systemd/' "$top/src/core" "$top/src/relay")
if [ -z "$hits" ]; then
        echo "ok 1 no systemd include under src/core and src/relay"
else
        echo "$hits" | sed 's/^/# /'
        echo "not ok 1 no systemd include under src/core and src/relay"
        fail=1
fi
for n in 2 3; do
        if [ $n = 2 ]; then lib=$core; else lib=$relay; fi
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
