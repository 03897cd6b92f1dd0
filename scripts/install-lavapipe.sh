#!/usr/bin/env bash
# Installs Mesa's software Vulkan driver (lavapipe) on Debian 12: version 25 from the
# bookworm-backports suite when it can be had, else the stable 22.3. Run as root.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

list=/etc/apt/sources.list.d/bookworm-backports.sources
if [ ! -e "$list" ] && grep -qs "bookworm" /etc/os-release; then
    # The URIs and key of the system's own Debian entry, with the backports suite.
    uris=$(grep -hs '^URIs:' /etc/apt/sources.list.d/debian.sources | grep -v security | head -n1 | cut -d' ' -f2-)
    cat > "$list" <<SRC
Types: deb
URIs: ${uris:-http://deb.debian.org/debian}
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
apt-get update || true
if ! apt-get install -y -t bookworm-backports mesa-vulkan-drivers; then
    echo "install-lavapipe: bookworm-backports is not available; installing the stable Mesa" >&2
    rm -f "$list"
    apt-get update
    apt-get install -y mesa-vulkan-drivers
fi
dpkg-query -W -f='lavapipe: mesa-vulkan-drivers ${Version}\n' mesa-vulkan-drivers
