#!/usr/bin/env bash
# The checks for a machine with a real GPU, in one go (at most about 8 minutes):
#   1. `info`: the adapter, its features and limits;
#   2. `check`: every kernel against its CPU reference on this adapter, then the f16 ones
#      (`check --precision f16`);
#   3. the matmul bench (each GEMM version at the model's shapes);
#   4. the train_step bench on the seed preset, first with the built-in kernels
#      (`--tune off`), then tuned from an empty cache (`--tune full`: the tuner's first-run
#      cost is its build time); each also samples 10,000 digits x 50 steps, in f32 and f16
#      (the matmul bench times every GEMM in f16 too).
# Every figure lands in OUT/device-check.json (null for a step that failed; its log says
# why), the text of each step in OUT/<step>.log.
#
# Usage: scripts/device-check.sh [OUT]      (default: $OUT, else ./device-check)
#        DEVICE_CHECK_PRESET=tiny scripts/device-check.sh OUT   (another preset: a quick try)
# Needs no network and no MNIST files: it runs the binaries already built with
# `cargo build --release --benches` (or builds them offline when cargo can).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-device-check}}
mkdir -p "$out"
export WGPU_DIFFUSION_CACHE_DIR="$out/tune-cache"
rm -rf "$WGPU_DIFFUSION_CACHE_DIR"

# The executable of bench $1: as cargo names it when cargo can build offline; else the
# newest target/release/deps/$1-* that is not a test binary (tests/ has files of the same
# names; libtest's --list counts "N tests, M benchmarks", the benches do not).
bench_bin() {
    if [ -s "$out/build.json" ]; then
        grep -o "\"executable\":\"[^\"]*/$1-[0-9a-f]*\"" "$out/build.json" | tail -n1 | cut -d'"' -f4
        return
    fi
    find target/release/deps -maxdepth 1 -type f -executable -name "$1-*" -printf '%T@ %p\n' \
        2>/dev/null | sort -rn | cut -d' ' -f2 | while read -r f; do
        "$f" --list 2>&1 | grep -q 'tests, ' || { echo "$f"; break; }
    done
}
rm -f "$out/build.json"
if command -v cargo >/dev/null; then
    cargo build --release --offline -q 2>"$out/build.log" &&
        cargo bench --no-run --offline --message-format=json 2>>"$out/build.log" |
        grep '"executable":"' >"$out/build.json" ||
        echo "device-check: offline build failed (see $out/build.log); using what is built" >&2
fi
bin=target/release/wgpu-diffusion
matmul=$(bench_bin matmul)
step=$(bench_bin train_step)
for b in "$bin" "$matmul" "$step"; do
    [ -x "$b" ] || { echo "device-check: missing $b: run cargo build --release --benches" >&2; exit 2; }
done

# run NAME SECONDS CMD...: stdout and stderr to OUT/NAME.log; the last line to OUT/NAME.json
# when it is JSON.
run() {
    local name=$1 secs=$2; shift 2
    echo "== $name: $*" >&2
    local start=$SECONDS
    timeout "$secs" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    echo "   exit $rc after $((SECONDS - start)) s" >&2
    tail -n1 "$out/$name.log" | grep '^{' >"$out/$name.json" || rm -f "$out/$name.json"
    return 0
}
run info 30 "$bin" --tune off info --json
run check 120 "$bin" --tune off check --json
run check_f16 60 "$bin" --tune off check --precision f16 --json
run matmul 90 "$matmul"
preset=${DEVICE_CHECK_PRESET:-seed}
run train_step_builtin 150 "$step" --preset "$preset" --tune off --no-cpu-reference --json
run train_step_tuned 180 "$step" --preset "$preset" --tune full --no-cpu-reference --json

json_or_null() { if [ -s "$out/$1.json" ]; then cat "$out/$1.json"; else echo null; fi; }
{
    echo "{"
    echo "\"info\": $(json_or_null info),"
    echo "\"check\": $(json_or_null check),"
    echo "\"check_f16\": $(json_or_null check_f16),"
    echo "\"train_step_builtin\": $(json_or_null train_step_builtin),"
    echo "\"train_step_tuned\": $(json_or_null train_step_tuned)"
    echo "}"
} >"$out/device-check.json"
echo "wrote $out/device-check.json" >&2
