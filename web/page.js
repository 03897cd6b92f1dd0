// The page: finds WebGPU, opens the wasm library's Page, draws digits from a model file
// (chosen, or named by ?model=URL) into a grid. `window.wgpuDiffusion` holds what the page
// found and drew, for tests.
import init, { Page } from "./wgpu_diffusion_web.js";

const $ = (id) => document.getElementById(id);
const state = (window.wgpuDiffusion = { ready: false, error: null, adapter: null, digits: null });

function fail(message) {
  state.error = message;
  const s = $("status");
  s.textContent = message;
  s.className = "error";
}

function drawGrid(bytes, count) {
  const side = Math.ceil(Math.sqrt(count));
  const canvas = $("grid");
  canvas.width = canvas.height = side * 28;
  canvas.style.width = canvas.style.height = `${side * 28 * 2}px`;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(side * 28, side * 28);
  for (let d = 0; d < count; d++) {
    const x0 = (d % side) * 28, y0 = Math.floor(d / side) * 28;
    for (let p = 0; p < 784; p++) {
      const v = bytes[d * 784 + p];
      const i = 4 * ((y0 + Math.floor(p / 28)) * side * 28 + x0 + (p % 28));
      img.data[i] = img.data[i + 1] = img.data[i + 2] = v;
      img.data[i + 3] = 255;
    }
  }
  ctx.putImageData(img, 0, 0);
  const link = $("download-png");
  link.href = canvas.toDataURL("image/png");
  link.hidden = false;
}

// The digits as `sample` writes them: an IDX file of unsigned bytes [count, 28, 28].
function idxFile(bytes, count) {
  const header = new DataView(new ArrayBuffer(16));
  [0x00000803, count, 28, 28].forEach((v, i) => header.setUint32(4 * i, v));
  return new Blob([header.buffer, bytes], { type: "application/octet-stream" });
}

async function modelBytes() {
  const file = $("model-file").files[0];
  if (file) return [new Uint8Array(await file.arrayBuffer()), file.name];
  const url = new URLSearchParams(location.search).get("model");
  if (!url) throw new Error("choose a model file (a checkpoint.safetensors from `train`)");
  const r = await fetch(url);
  if (!r.ok) throw new Error(`cannot fetch the model ${url}: HTTP ${r.status}`);
  return [new Uint8Array(await r.arrayBuffer()), url];
}

async function draw(page) {
  const count = Number($("count").value), steps = Number($("steps").value);
  const scale = Number($("scale").value), seed = BigInt($("seed").value);
  $("draw").disabled = true;
  try {
    const [bytes, name] = await modelBytes();
    const start = performance.now();
    const digits = await page.draw(bytes, name, count, steps, scale, seed);
    const secs = (performance.now() - start) / 1000;
    drawGrid(digits, count);
    const idx = $("download-idx");
    if (idx.href) URL.revokeObjectURL(idx.href);
    idx.href = URL.createObjectURL(idxFile(digits, count));
    idx.hidden = false;
    $("rate").textContent = `${count} digits in ${secs.toFixed(2)} s: ${(count / secs).toFixed(1)} digits/s`;
    state.digits = Array.from(digits);
    state.digitsPerSecond = count / secs;
    $("status").textContent = "Drawn.";
    $("status").className = "";
  } catch (e) {
    fail(`Cannot draw: ${e.message ?? e}`);
  } finally {
    $("draw").disabled = false;
    state.drawn = true;
  }
}

// The kernels against their CPU references on this GPU, as a table of OK/FAIL rows.
async function check(page) {
  $("check").disabled = true;
  $("check-summary").textContent = "Checking…";
  try {
    const report = JSON.parse(await page.check());
    const body = $("check-rows");
    body.replaceChildren();
    for (const r of report.rows) {
      const tr = document.createElement("tr");
      const err = r.max_err == null ? "-" : r.max_err.toExponential(2);
      for (const v of [r.kernel, r.shape, err, r.ok ? "OK" : "FAIL"]) {
        const td = document.createElement("td");
        td.textContent = v;
        tr.appendChild(td);
      }
      if (!r.ok) tr.className = "fail";
      body.appendChild(tr);
    }
    const failed = report.rows.filter((r) => !r.ok).length;
    $("check-summary").textContent = `${report.rows.length} comparisons, ${failed} failed` +
      (failed ? `: ${report.failed.join(", ")}` : "") + ` in ${report.secs.toFixed(1)} s`;
    state.check = report;
  } catch (e) {
    $("check-summary").textContent = `The check could not run: ${e.message ?? e}`;
    state.check = { error: String(e.message ?? e) };
  } finally {
    $("check").disabled = false;
  }
}

async function main() {
  if (!navigator.gpu) {
    fail("This browser has no WebGPU. It is in Chrome and Edge 113 and later, Safari 26, " +
      "and Firefox 141 and later on Windows; on Linux, Chrome needs " +
      "--enable-unsafe-webgpu --enable-features=Vulkan.");
    state.ready = true;
    return;
  }
  let page;
  try {
    await init();
    page = await Page.open(new URLSearchParams(location.search).get("perturb") ?? "");
  } catch (e) {
    fail(`WebGPU is here but no adapter could be opened: ${e.message ?? e}`);
    state.ready = true;
    return;
  }
  state.adapter = JSON.parse(page.adapter());
  if (!state.adapter.adapter) {
    // wgpu's web backend leaves the name empty; the browser's GPUAdapterInfo has it.
    const info = (await navigator.gpu.requestAdapter())?.info ?? {};
    state.adapter.adapter = info.description ||
      [info.vendor, info.architecture, info.device].filter(Boolean).join(" ") || "unnamed adapter";
  }
  $("adapter").textContent = `Adapter: ${state.adapter.adapter} (${state.adapter.backend}, ` +
    `${state.adapter.device_type}); limits: WebGPU's defaults.`;
  $("status").textContent = "Ready.";
  $("draw").disabled = false;
  $("controls").addEventListener("submit", (ev) => { ev.preventDefault(); draw(page); });
  $("check").disabled = false;
  $("check").addEventListener("click", () => check(page));
  for (const [k, v] of new URLSearchParams(location.search)) {
    if ($(k) && $(k).type === "number") $(k).value = v;
  }
  state.ready = true;
  if (new URLSearchParams(location.search).has("model")) draw(page);
  if (new URLSearchParams(location.search).has("check")) check(page);
}

main();
