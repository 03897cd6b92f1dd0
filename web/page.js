// The page: finds WebGPU, opens the wasm library's Page, loads a model (the shipped one,
// one named by ?model=URL, or a file the user chooses) and draws digits from it into a grid
// that fills in as the loop runs. `window.wgpuDiffusion` holds what the page found and drew,
// for tests.
import init, { Page } from "./wgpu_diffusion_web.js";

const $ = (id) => document.getElementById(id);
const query = new URLSearchParams(location.search);
const state = (window.wgpuDiffusion = {
  ready: false, error: null, adapter: null, model: null, digits: null, parts: [],
});
// The model a page built by scripts/build-web.sh ships (export-web of the digits preset).
const SHIPPED = "models/digits.safetensors";
// The page's own query keys; any other is one of `sample`'s flags (e.g. step-scale=1).
const PAGE_KEYS = ["model", "check", "perturb", "count", "digit", "every", "draw", "precision"];

function fail(message) {
  state.error = message;
  const s = $("status");
  s.textContent = message;
  s.className = "error";
}

function say(message) {
  $("status").textContent = message;
  $("status").className = "";
}

function drawGrid(bytes, count) {
  const side = Math.ceil(Math.sqrt(count));
  const canvas = $("grid");
  if (canvas.width !== side * 28) {
    canvas.width = canvas.height = side * 28;
    canvas.style.width = canvas.style.height = `${side * 28 * 2}px`;
  }
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
}

// The digits as `sample` writes them: an IDX file of unsigned bytes [count, 28, 28].
function idxFile(bytes, count) {
  const header = new DataView(new ArrayBuffer(16));
  [0x00000803, count, 28, 28].forEach((v, i) => header.setUint32(4 * i, v));
  return new Blob([header.buffer, bytes], { type: "application/octet-stream" });
}

async function fetchModel(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`cannot fetch the model ${url}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

// Reads the model into the GPU and sets the form from its settings.
function load(page, bytes, name) {
  const about = JSON.parse(page.load(bytes, name, query.get("precision") ?? "auto"));
  state.model = about;
  const s = about.sample;
  $("steps").value = s.steps;
  $("seed").value = s.seed;
  $("cfg").value = s.cfg ?? "";
  $("cfg").placeholder = about.classes ? "1.5" : "-";
  $("cfg").disabled = $("digit").disabled = !about.classes;
  const parts = about.parts.map(([n, w]) => `${n} (${(w / 1e6).toFixed(2)} M weights)`);
  $("model").textContent = `Model: ${name} (${(about.bytes / 2 ** 20).toFixed(1)} MiB, ` +
    `${about.storage}): ${about.classes ? "class-conditional" : "unlabelled digits"}; ` +
    `${parts.join(", ")}; sampled with ${about.describe}; computed in ${about.precision}` +
    (about.precision_note ? ` (${about.precision_note})` : "") + ".";
  $("draw").disabled = false;
}

// `sample`'s flags of the form, with any the query names over them.
function flags() {
  const f = { steps: Number($("steps").value), seed: Number($("seed").value) };
  if (!$("cfg").disabled && $("cfg").value !== "") f.cfg = Number($("cfg").value);
  for (const [k, v] of query) {
    if (PAGE_KEYS.includes(k) || $(k)) continue;
    f[k] = v === "true" || v === "false" || !isNaN(Number(v)) ? JSON.parse(v) : v;
  }
  return f;
}

async function draw(page) {
  const count = Number($("count").value);
  const digit = $("digit").disabled ? -1 : Number($("digit").value);
  const f = flags();
  const every = Number(query.get("every") ?? Math.max(1, Math.round(f.steps / 10)));
  $("draw").disabled = true;
  state.parts = [];
  try {
    const start = performance.now();
    let first = null;
    const onPart = (k, bytes) => {
      first ??= (performance.now() - start) / 1000;
      state.parts.push(k);
      drawGrid(bytes, count);
      $("rate").textContent = `step ${k} of ${f.steps}…`;
    };
    const digits = await page.draw(JSON.stringify(f), count, digit, every, onPart);
    const secs = (performance.now() - start) / 1000;
    drawGrid(digits, count);
    $("download-png").href = $("grid").toDataURL("image/png");
    $("download-png").hidden = false;
    const idx = $("download-idx");
    if (idx.href) URL.revokeObjectURL(idx.href);
    idx.href = URL.createObjectURL(idxFile(digits, count));
    idx.hidden = false;
    $("rate").textContent = `${count} digits, ${f.steps} steps in ${secs.toFixed(2)} s: ` +
      `${(count / secs).toFixed(1)} digits/s (first grid after ${first.toFixed(2)} s)`;
    state.digits = Array.from(digits);
    state.digitsPerSecond = count / secs;
    state.firstGridSecs = first;
    say("Drawn.");
  } catch (e) {
    fail(`Cannot draw: ${e.message ?? e}`);
  } finally {
    $("draw").disabled = !state.model;
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

async function openAdapter() {
  await init();
  const page = await Page.open(query.get("perturb") ?? "");
  state.adapter = JSON.parse(page.adapter());
  if (!state.adapter.adapter) {
    // wgpu's web backend leaves the name empty; the browser's GPUAdapterInfo has it.
    const info = (await navigator.gpu.requestAdapter())?.info ?? {};
    state.adapter.adapter = info.description ||
      [info.vendor, info.architecture, info.device].filter(Boolean).join(" ") || "unnamed adapter";
  }
  $("adapter").textContent = `Adapter: ${state.adapter.adapter} (${state.adapter.backend}, ` +
    `${state.adapter.device_type}); limits: WebGPU's defaults.`;
  return page;
}

// The model the query names, else the shipped one (absent: the user chooses a file).
async function firstModel(page) {
  const url = query.get("model") ?? SHIPPED;
  try {
    load(page, await fetchModel(url), url);
    say("Ready.");
  } catch (e) {
    if (query.has("model")) fail(`Cannot load the model: ${e.message ?? e}`);
    else say("Ready: this page ships no model; choose a model file (export-web or train's).");
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
    page = await openAdapter();
  } catch (e) {
    fail(`WebGPU is here but no adapter could be opened: ${e.message ?? e}`);
    state.ready = true;
    return;
  }
  for (const k of ["count", "digit"]) if (query.has(k)) $(k).value = query.get(k);
  await firstModel(page);
  for (const k of ["steps", "seed", "cfg"]) if (query.has(k)) $(k).value = query.get(k);
  $("model-file").addEventListener("change", async () => {
    const file = $("model-file").files[0];
    try {
      load(page, new Uint8Array(await file.arrayBuffer()), file.name);
      say("Ready.");
    } catch (e) {
      fail(`Cannot load the model: ${e.message ?? e}`);
    }
  });
  $("controls").addEventListener("submit", (ev) => { ev.preventDefault(); draw(page); });
  $("check").disabled = false;
  $("check").addEventListener("click", () => check(page));
  state.ready = true;
  if (query.has("model") || query.has("draw")) {
    if (state.model) await draw(page);
    else state.drawn = true;
  }
  if (query.has("check")) check(page);
}

main();
