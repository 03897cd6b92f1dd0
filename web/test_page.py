#!/usr/bin/env python3
"""The page in a real browser: serves web/dist on 127.0.0.1 and drives headless Chromium
(Debian's, WebGPU on its software Vulkan) through Playwright. It checks that the page finds
an adapter and names it; that its `check` finds every kernel right against the CPU
references (compiled to wasm) and names a kernel perturbed on purpose; that digits drawn
from the bundle `export-web` makes of a small class-conditional checkpoint (as model, guide
and refiner) match the native `sample` of the same stack with the same seed (the RNG is the
same, the shader compilers differ: Tint and Dawn here, naga and wgpu natively), with the
grid shown as the loop runs; that a plain checkpoint and the shipped model draw; and the
page's one-line errors for a browser without WebGPU and for a corrupt model file. Prints one
JSON object of what it measured.

Usage: web/test_page.py BINARY [--screenshot PNG]  (after scripts/build-web.sh; MNIST from
$MNIST_DIR or ./data/mnist).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from playwright.sync_api import sync_playwright

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIST = os.path.join(ROOT, "web", "dist")
CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless=new", "--no-sandbox", "--enable-unsafe-webgpu", "--enable-features=Vulkan",
    "--disable-background-networking", "--no-first-run", "--disable-component-update",
    "--disable-sync",
]
# The draw both sides make: digits 0..COUNT, all asked to be DIGIT with classifier-free
# guidance CFG, STEPS steps from seed SEED, the grid shown every EVERY steps.
COUNT, STEPS, SEED, DIGIT, CFG, EVERY = 16, 20, 3, 7, 2.0, 5
# Largest allowed difference of one pixel (of 255) and of the mean over all pixels.
MAX_DIFF, MEAN_DIFF = 4, 0.05
# The shipped model's draw: the digits 0..9 in turn with its own settings.
SHIPPED_COUNT = 16


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"test_page: {' '.join(cmd)} failed:\n{r.stderr}")
    return r


def native_digits(binary, work):
    """Trains the tiny preset class-conditional for a few steps, exports it as a bundle with
    a guide and a refiner (the checkpoint itself: autoguidance with weight 2, the refiner
    from level 10, plain deterministic steps), and samples the same stack natively."""
    run_dir = os.path.join(work, "run")
    run([binary, "train", "--preset", "tiny", "--classes", "--max-steps", "300",
         "--out", run_dir])
    checkpoint = os.path.join(run_dir, "checkpoint.safetensors")
    stack = ["--guide", checkpoint, "--guidance", "2", "--refiner", f"{checkpoint}@10",
             "--step-scale", "1", "--eta", "0"]
    bundle = os.path.join(work, "bundle.safetensors")
    run([binary, "export-web", checkpoint, bundle, "--storage", "f32", *stack])
    out = os.path.join(work, "native")
    start = time.time()
    run([binary, "sample", "--checkpoint", checkpoint, *stack, "--count", str(COUNT),
         "--steps", str(STEPS), "--seed", str(SEED), "--digit", str(DIGIT),
         "--cfg", str(CFG), "--out", out])
    secs = time.time() - start
    with open(os.path.join(out, "samples-idx3-ubyte"), "rb") as f:
        data = list(f.read())
    return checkpoint, bundle, data[:16], data[16:], secs


def open_page(browser, url, no_webgpu=False):
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    if no_webgpu:
        page.add_init_script(
            "Object.defineProperty(Navigator.prototype, 'gpu', { get: () => undefined });")
    page.goto(url)
    page.wait_for_function("window.wgpuDiffusion && window.wgpuDiffusion.ready", timeout=120_000)
    return page, errors


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary = os.path.abspath(sys.argv[1])
    shot = sys.argv[sys.argv.index("--screenshot") + 1] if "--screenshot" in sys.argv else None
    if not os.path.exists(os.path.join(DIST, "wgpu_diffusion_web_bg.wasm")):
        sys.exit("test_page: web/dist has no wasm: run scripts/build-web.sh first")
    work = tempfile.mkdtemp(prefix="wgpu-diffusion-web-")
    site = os.path.join(work, "site")
    shutil.copytree(DIST, site)
    checkpoint, bundle, header, native, native_secs = native_digits(binary, work)
    shutil.copy(checkpoint, os.path.join(site, "model.safetensors"))
    shutil.copy(bundle, os.path.join(site, "bundle.safetensors"))
    with open(os.path.join(site, "corrupt.safetensors"), "wb") as f:
        f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header....")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
         "--directory", site], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/index.html"
    report = {}
    try:
        time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            report.update(check_draw(browser, base, header, native))
            report["native_digits_per_s"] = COUNT / native_secs
            report.update(check_models(browser, base, shot))
            report.update(check_errors(browser, base))
            report.update(check_kernels(browser, base))
            browser.close()
    finally:
        server.terminate()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report))


def check_draw(browser, base, native_header, native):
    # In f32, as native `sample` draws by default (the shipped model below is drawn in the
    # page's own precision).
    query = (f"?model=bundle.safetensors&count={COUNT}&steps={STEPS}&seed={SEED}"
             f"&digit={DIGIT}&cfg={CFG}&every={EVERY}&precision=f32")
    start = time.time()
    page, errors = open_page(browser, base + query)
    state = page.evaluate("window.wgpuDiffusion")
    assert state["adapter"], f"the page found no adapter: {state['error']} {errors}"
    name = state["adapter"]["adapter"]
    assert name, f"the page does not name its adapter: {state['adapter']}"
    page.wait_for_function("window.wgpuDiffusion.drawn", timeout=300_000)
    last_grid = time.time() - start
    state = page.evaluate("window.wgpuDiffusion")
    assert state["error"] is None, f"the page failed to draw: {state['error']} {errors}"
    digits = state["digits"]
    assert len(digits) == len(native) == COUNT * 784, (len(digits), len(native))
    # The grid was drawn after every EVERY steps, the last time with the finished digits.
    assert state["parts"] == list(range(EVERY, STEPS + 1, EVERY)), state["parts"]
    model = state["model"]
    assert model["classes"] and [p[0] for p in model["parts"]] == ["model", "guide", "refiner0"], model
    diffs = [abs(a - b) for a, b in zip(digits, native)]
    worst, mean = max(diffs), sum(diffs) / len(diffs)
    # Pixels strictly between black and white, where a difference cannot hide in the clamp.
    grey = sum(1 for v in native if 0 < v < 255) / len(native)
    assert grey > 0.05, f"only {grey:.1%} of the native pixels are neither black nor white"
    assert worst <= MAX_DIFF and mean <= MEAN_DIFF, (
        f"page and native digits differ: max {worst}, mean {mean:.3f} (allowed {MAX_DIFF}, "
        f"{MEAN_DIFF})")
    # The IDX download holds the native file's bytes, header included.
    idx = page.evaluate("""async () => {
        const r = await fetch(document.getElementById('download-idx').href);
        return Array.from(new Uint8Array(await r.arrayBuffer()));
    }""")
    assert idx[:16] == native_header and idx[16:] == digits, "the IDX download differs"
    page.close()
    return {"adapter": name, "backend": state["adapter"]["backend"],
            "max_pixel_diff": worst, "mean_pixel_diff": mean, "grey_pixels": grey,
            "page_digits_per_s": state["digitsPerSecond"],
            "first_grid_after_draw_s": state["firstGridSecs"], "load_to_last_grid_s": last_grid}


def check_models(browser, base, shot):
    """A plain checkpoint draws with the article's sampler; the shipped model (f16, model,
    guide and refiner, class-conditional) loads by itself and draws the digits 0..9 in
    turn (the page's screenshot, if asked for)."""
    page, errors = open_page(browser, base + "?model=model.safetensors&count=4&steps=2")
    page.wait_for_function("window.wgpuDiffusion.drawn", timeout=120_000)
    state = page.evaluate("window.wgpuDiffusion")
    assert state["error"] is None and len(state["digits"]) == 4 * 784, (state["error"], errors)
    assert [p[0] for p in state["model"]["parts"]] == ["model"], state["model"]
    page.close()
    start = time.time()
    page, errors = open_page(browser, base + f"?draw=1&count={SHIPPED_COUNT}")
    page.wait_for_function("window.wgpuDiffusion.drawn", timeout=600_000)
    last_grid = time.time() - start
    state = page.evaluate("window.wgpuDiffusion")
    assert state["error"] is None, (state["error"], errors)
    model = state["model"]
    assert model["name"] == "models/digits.safetensors" and model["classes"], model
    assert model["storage"] == "f16", model["storage"]
    # The page computes in f16 where the adapter has shader-f16, else in f32 and says why.
    has_f16 = state["adapter"]["features"]["shader-f16"]
    assert model["precision"] == ("f16" if has_f16 else "f32"), (model["precision"], has_f16)
    assert has_f16 or "no shader-f16" in model["precision_note"], model["precision_note"]
    text = page.inner_text("#model")
    assert f"computed in {model['precision']}" in text, text
    digits = state["digits"]
    assert len(digits) == SHIPPED_COUNT * 784
    assert len(set(digits)) > 10, "the shipped model drew blank digits"
    if shot:
        page.screenshot(path=shot, full_page=True)
    page.close()
    return {"shipped_model_bytes": model["bytes"], "shipped_parts": model["parts"],
            "shipped_sample": model["describe"],
            "shipped_precision": model["precision"],
            "shipped_precision_note": model["precision_note"],
            "shipped_digits_per_s": state["digitsPerSecond"],
            "shipped_first_grid_after_draw_s": state["firstGridSecs"],
            "shipped_load_to_last_grid_s": last_grid}


def check_errors(browser, base):
    page, _ = open_page(browser, base, no_webgpu=True)
    error = page.evaluate("window.wgpuDiffusion.error") or ""
    assert "no WebGPU" in error, f"without WebGPU the page says: {error!r}"
    page.close()
    page, _ = open_page(browser, base + "?model=corrupt.safetensors&count=4&steps=2")
    page.wait_for_function("window.wgpuDiffusion.drawn", timeout=120_000)
    corrupt = page.evaluate("window.wgpuDiffusion.error") or ""
    assert "corrupt or not a safetensors file" in corrupt, f"a corrupt model: {corrupt!r}"
    page.close()
    report = {"no_webgpu_message": error, "corrupt_model_message": corrupt}
    # f16 asked for: drawn where the adapter has shader-f16, else the one line refusing it.
    page, errors = open_page(browser, base + "?model=bundle.safetensors&count=2&steps=2&precision=f16&draw=1")
    page.wait_for_function("window.wgpuDiffusion.drawn || window.wgpuDiffusion.error", timeout=120_000)
    state = page.evaluate("window.wgpuDiffusion")
    if state["adapter"]["features"]["shader-f16"]:
        assert state["error"] is None and state["model"]["precision"] == "f16", (state["error"], errors)
    else:
        assert "no shader-f16" in (state["error"] or ""), f"f16 without shader-f16: {state['error']!r}"
        report["f16_refused_message"] = state["error"]
    page.close()
    return report


def page_check(browser, url):
    page, errors = open_page(browser, url)
    page.wait_for_function("window.wgpuDiffusion.check", timeout=600_000)
    report = page.evaluate("window.wgpuDiffusion.check")
    page.close()
    assert "error" not in report, f"the page's check could not run: {report} {errors}"
    return report


def check_kernels(browser, base):
    """The page's check: every comparison OK; a kernel perturbed on purpose is named FAIL."""
    report = page_check(browser, base + "?check=1")
    rows = report["rows"]
    bad = [f"{r['kernel']} {r['shape']}: {r['note']}" for r in rows if not r["ok"]]
    assert len(rows) >= 100 and not bad, f"{len(rows)} rows; failed {report['failed']}: {bad[:5]}"
    assert any(r["kernel"] == "sample_loop" for r in rows), "the page's check has no sampler"
    perturbed = page_check(browser, base + "?check=1&perturb=attention_backward")
    assert perturbed["failed"] == ["attention_backward dqkv"], perturbed["failed"]
    sampler = page_check(browser, base + "?check=1&perturb=sample_update")
    assert sampler["failed"] == ["sample_step", "sample_step eta clip bg low", "sample_loop"], (
        sampler["failed"])
    return {"check_rows": len(rows), "check_secs": report["secs"],
            "perturbed_check_failed": perturbed["failed"],
            "perturbed_sampler_failed": sampler["failed"]}


if __name__ == "__main__":
    main()
