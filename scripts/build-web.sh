#!/usr/bin/env bash
# Builds the browser page into web/dist/: the wasm library (web/), its JS bindings, the page
# and the shipped model (web/models/). Installs what it needs on Debian 12 (run as root): rustc-web, cargo-web and
# rust-web-src build the standard library for wasm32-unknown-unknown; rustup's rust-lld links;
# wasm-bindgen-cli at the version web/Cargo.toml pins writes the bindings.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

if [ ! -x /usr/bin/rustc ] || [ ! -d /usr/lib/rustlib/src ]; then
    apt-get update || true
    apt-get install -y rustc-web cargo-web rust-web-src
fi
bindgen_version=$(sed -n 's/^wasm-bindgen = "=\(.*\)"/\1/p' web/Cargo.toml)
if [ "$(wasm-bindgen --version 2>/dev/null | cut -d' ' -f2)" != "$bindgen_version" ]; then
    cargo install wasm-bindgen-cli --version "$bindgen_version"
fi
lld=$(find "$(rustc --print sysroot)" -name rust-lld -type f | head -n1)

export RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=target/web
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$lld"
/usr/bin/cargo build -p wgpu-diffusion-web --release --target wasm32-unknown-unknown \
    -Zbuild-std=std,panic_abort
rm -rf web/dist
mkdir -p web/dist
wasm-bindgen --target web --no-typescript --out-dir web/dist \
    target/web/wasm32-unknown-unknown/release/wgpu_diffusion_web.wasm
cp web/index.html web/page.js web/dist/
# The shipped model (export-web of the digits preset), which the page loads by default.
if [ -d web/models ]; then
    cp -r web/models web/dist/
fi
echo "build-web: web/dist ($(du -k web/dist/wgpu_diffusion_web_bg.wasm | cut -f1) KiB of wasm)"
