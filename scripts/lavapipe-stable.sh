#!/usr/bin/env bash
# Unpacks Debian 12's stable lavapipe (Mesa 22.3) into DIR beside the installed driver, without
# installing it, and prints the Vulkan loader setting that selects it for one command:
#
#   scripts/lavapipe-stable.sh /tmp/mesa22
#   VK_ICD_FILENAMES=/tmp/mesa22/lvp_icd.json cargo bench --bench train_step -- --quick
#
# So the two Mesa versions can be compared in one run on one machine. Needs apt's package
# lists (not root) and libLLVM-15 (installed with either Mesa on Debian 12).
set -euo pipefail
dir=${1:?usage: scripts/lavapipe-stable.sh DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
version=$(apt-cache madison mesa-vulkan-drivers | awk -F'|' '$3 ~ /bookworm\/main/ {gsub(/ /, "", $2); print $2; exit}')
if [ -z "$version" ]; then
    echo "lavapipe-stable: no stable mesa-vulkan-drivers in apt's lists (run apt-get update)" >&2
    exit 1
fi
(cd "$dir" && apt-get download "mesa-vulkan-drivers=$version" 2>/dev/null)
dpkg -x "$dir"/mesa-vulkan-drivers_*.deb "$dir/root"
lib="$dir/root/usr/lib/x86_64-linux-gnu/libvulkan_lvp.so"
if [ ! -e "$lib" ]; then
    echo "lavapipe-stable: the package holds no $lib" >&2
    exit 1
fi
sed "s#\"library_path\": *\"[^\"]*\"#\"library_path\": \"$lib\"#" \
    "$dir/root/usr/share/vulkan/icd.d/lvp_icd.x86_64.json" > "$dir/lvp_icd.json"
echo "mesa-vulkan-drivers $version unpacked; select it with:"
echo "VK_ICD_FILENAMES=$dir/lvp_icd.json"
