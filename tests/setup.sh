#!/usr/bin/env bash
# Installs portpub's build and test dependencies (Debian 12) and builds into ./build.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
deps=$(sed -n 's/^apt-get install -y //p' tests/deps.txt)
missing=""
for p in $deps; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
        $sudo apt-get update -q
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends $missing
fi
[ -d build ] || meson setup build
meson compile -C build
