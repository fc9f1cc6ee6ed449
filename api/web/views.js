// More views of the NADs service page (loaded after app.js, whose helpers it uses: el, api,
// facts, badge, fmtTime, fmtBytes, fmtShape, errorBox, handle, generation, getKey):
// - the NAD gallery of a NAD job's page: any number of its NADs (8, 16, 32, 64, up to k),
//   drawn here from the rows of its nads.npy (fetched with Range requests: only the rows
//   shown), in pixel space and as Fourier energy on signed frequency axes with DC marked;
// - the uploaded architectures: a list and one architecture's page (its validation, its jobs).
// Architecture names: jobs on an uploaded architecture are shown by its user-given name.
"use strict";

// ---------- architecture names ----------

let ARCH_NAMES = {}; // id -> the name its owner gave it (GET /v1/architectures)

async function loadArchitectureNames() {
  try {
    const page = await api("/v1/architectures");
    ARCH_NAMES = Object.fromEntries(page.items.map((a) => [a.id, a.name]));
  } catch (_) {
    ARCH_NAMES = {}; // no key yet, or none: ids are shown shortened
  }
}

// What the page calls a job's architecture: a built-in's name, an uploaded one's name.
function architectureName(arch) {
  if (arch && typeof arch === "object") {
    if (arch.id && ARCH_NAMES[arch.id]) return ARCH_NAMES[arch.id];
    return arch.id ? `uploaded ${arch.id.slice(0, 8)}` : "uploaded";
  }
  return arch || "–";
}

function architectureCell(arch) {
  if (arch && typeof arch === "object" && arch.id) {
    return el("a", { href: `#/architectures/${arch.id}`, "data-arch-id": arch.id,
      text: architectureName(arch) });
  }
  return architectureName(arch);
}

// ---------- colour maps (matplotlib's, 11 stops, linearly interpolated) ----------

const COLOURMAPS = {
  RdBu_r: ["#053061", "#2065ab", "#4393c3", "#90c4dd", "#d1e5f0", "#f7f6f6", "#fddbc7",
    "#f3a481", "#d6604d", "#b1182b", "#67001f"],
  magma: ["#000004", "#140e36", "#3b0f70", "#641a80", "#8c2981", "#b73779", "#de4968",
    "#f7705c", "#fe9f6d", "#fecf92", "#fcfdbf"],
};
const DC_COLOUR = "#00e5ff";

function rgbStops(name) {
  return COLOURMAPS[name].map((hex) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16)));
}
const STOPS = Object.fromEntries(Object.keys(COLOURMAPS).map((n) => [n, rgbStops(n)]));

function colour(name, t) { // t in [0, 1]
  const stops = STOPS[name];
  const x = Math.max(0, Math.min(1, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  return stops[i].map((v, c) => Math.round(v + f * (stops[i + 1][c] - v)));
}

// ---------- .npy rows over HTTP Range ----------

// The header of a .npy artifact: shape, dtype ('<f4' or '<f8'), where the data start.
async function npyHeader(jobId, name) {
  const bytes = await rangeBytes(jobId, name, 0, 4095);
  const magic = String.fromCharCode(...bytes.slice(1, 6));
  if (bytes[0] !== 0x93 || magic !== "NUMPY") throw new Error(`${name}: not a .npy file`);
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  const major = bytes[6];
  const length = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  const text = new TextDecoder().decode(bytes.slice(start, start + length));
  const descr = /'descr':\s*'([^']+)'/.exec(text);
  const fortran = /'fortran_order':\s*(True|False)/.exec(text);
  const shape = /'shape':\s*\(([^)]*)\)/.exec(text);
  if (!descr || !fortran || !shape || fortran[1] === "True" ||
      !["<f4", "<f8"].includes(descr[1])) {
    throw new Error(`${name}: expected a C-ordered little-endian float array`);
  }
  return { dtype: descr[1], shape: shape[1].split(",").filter((s) => s.trim()).map(Number),
    offset: start + length };
}

async function rangeBytes(jobId, name, first, last) {
  const response = await fetch(`/v1/jobs/${encodeURIComponent(jobId)}/artifacts/` +
    encodeURIComponent(name), { headers: { Authorization: `Bearer ${getKey()}`,
    Range: `bytes=${first}-${last}` } });
  if (!response.ok) throw new Error(`${name}: ${response.status} ${response.statusText}`);
  const all = new Uint8Array(await response.arrayBuffer());
  // A server that ignores Range answers 200 with everything: cut what was asked for.
  return response.status === 206 ? all : all.slice(first, last + 1);
}

// The first `count` rows of a 2-D float .npy artifact, as Float64Arrays.
async function npyRows(jobId, name, header, count) {
  const [, d] = header.shape;
  const size = header.dtype === "<f4" ? 4 : 8;
  const bytes = await rangeBytes(jobId, name, header.offset,
    header.offset + count * d * size - 1);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const rows = [];
  for (let r = 0; r < count; r++) {
    const row = new Float64Array(d);
    for (let i = 0; i < d; i++) {
      const at = (r * d + i) * size;
      row[i] = size === 4 ? view.getFloat32(at, true) : view.getFloat64(at, true);
    }
    rows.push(row);
  }
  return rows;
}

// ---------- Fourier energy ----------

// |DFT|^2 of a (C, H, W) row summed over channels, fft-shifted: frequency (ky, kx) at
// [(ky + H//2) mod H][(kx + W//2) mod W], as nadcore/nads/figures.py fourier_energy.
function fourierEnergy(row, c, h, w) {
  const energy = new Float64Array(h * w);
  const cosY = new Float64Array(h * h); const sinY = new Float64Array(h * h);
  const cosX = new Float64Array(w * w); const sinX = new Float64Array(w * w);
  for (let k = 0; k < h; k++) for (let y = 0; y < h; y++) {
    cosY[k * h + y] = Math.cos(2 * Math.PI * k * y / h);
    sinY[k * h + y] = Math.sin(2 * Math.PI * k * y / h);
  }
  for (let k = 0; k < w; k++) for (let x = 0; x < w; x++) {
    cosX[k * w + x] = Math.cos(2 * Math.PI * k * x / w);
    sinX[k * w + x] = Math.sin(2 * Math.PI * k * x / w);
  }
  const re = new Float64Array(h * w); const im = new Float64Array(h * w);
  for (let ch = 0; ch < c; ch++) {
    const base = ch * h * w;
    for (let y = 0; y < h; y++) { // rows: DFT along x
      for (let kx = 0; kx < w; kx++) {
        let a = 0; let b = 0;
        for (let x = 0; x < w; x++) {
          const v = row[base + y * w + x];
          a += v * cosX[kx * w + x];
          b -= v * sinX[kx * w + x];
        }
        re[y * w + kx] = a; im[y * w + kx] = b;
      }
    }
    for (let kx = 0; kx < w; kx++) { // columns: DFT along y
      for (let ky = 0; ky < h; ky++) {
        let a = 0; let b = 0;
        for (let y = 0; y < h; y++) {
          const cr = cosY[ky * h + y]; const si = sinY[ky * h + y];
          a += re[y * w + kx] * cr + im[y * w + kx] * si;
          b += im[y * w + kx] * cr - re[y * w + kx] * si;
        }
        const sy = (ky + Math.floor(h / 2)) % h; const sx = (kx + Math.floor(w / 2)) % w;
        energy[sy * w + sx] += a * a + b * b;
      }
    }
  }
  return energy;
}

// ---------- drawing ----------

// An (h, w) array drawn into a canvas of `scale` pixels per cell; `flipY` puts row 0 at the
// bottom (frequency plots: ky up).
function drawArray(values, h, w, map, lo, hi, scale, flipY) {
  const canvas = el("canvas", { width: w * scale, height: h * scale });
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(w * scale, h * scale);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const [r, g, b] = colour(map, (values[y * w + x] - lo) / (hi - lo));
      const top = (flipY ? h - 1 - y : y) * scale;
      for (let dy = 0; dy < scale; dy++) {
        for (let dx = 0; dx < scale; dx++) {
          const at = 4 * ((top + dy) * w * scale + x * scale + dx);
          image.data[at] = r; image.data[at + 1] = g; image.data[at + 2] = b;
          image.data[at + 3] = 255;
        }
      }
    }
  }
  ctx.putImageData(image, 0, 0);
  return canvas;
}

// Stubs from the frame at kx = 0 and ky = 0: DC where they would meet (not covering it).
function markDC(canvas, h, w, scale) {
  const ctx = canvas.getContext("2d");
  const cx = (Math.floor(w / 2) + 0.5) * scale;
  const cy = (h - 1 - Math.floor(h / 2) + 0.5) * scale;
  const stub = 0.12 * w * scale;
  ctx.strokeStyle = DC_COLOUR;
  ctx.lineWidth = Math.max(1, scale / 2);
  ctx.beginPath();
  ctx.moveTo(cx, 0); ctx.lineTo(cx, stub);
  ctx.moveTo(cx, h * scale); ctx.lineTo(cx, h * scale - stub);
  ctx.moveTo(0, cy); ctx.lineTo(stub, cy);
  ctx.moveTo(w * scale, cy); ctx.lineTo(w * scale - stub, cy);
  ctx.stroke();
}

function colourBar(map, lo, hi, label) {
  const canvas = el("canvas", { width: 160, height: 10, class: "colour-bar" });
  const ctx = canvas.getContext("2d");
  for (let x = 0; x < 160; x++) {
    const [r, g, b] = colour(map, x / 159);
    ctx.fillStyle = `rgb(${r},${g},${b})`;
    ctx.fillRect(x, 0, 1, 10);
  }
  return el("div", { class: "legend-item", "data-colour-bar": map },
    el("span", { class: "legend-label", text: label }),
    el("span", { class: "legend-scale" }, el("span", { text: lo }), canvas,
      el("span", { text: hi })));
}

function argmax(values) {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

// One NAD: its pixel view (channel 0, divided by max |u|) and its Fourier energy (divided by
// its max), with the signed frequency of the energy's peak in data-peak ("ky,kx").
function nadCell(row, index, c, h, w) {
  const scale = Math.max(2, Math.floor(96 / Math.max(h, w)));
  const pixels = row.subarray(0, h * w);
  let bound = 0;
  for (const v of pixels) bound = Math.max(bound, Math.abs(v));
  bound = bound || 1;
  const top = drawArray(pixels, h, w, "RdBu_r", -bound, bound, scale, false);
  top.dataset.view = "pixels";
  const energy = fourierEnergy(row, c, h, w);
  const peak = argmax(energy);
  const bottom = drawArray(energy, h, w, "magma", 0, energy[peak] || 1, scale, true);
  markDC(bottom, h, w, scale);
  bottom.dataset.view = "fourier";
  bottom.dataset.peak = `${Math.floor(peak / w) - Math.floor(h / 2)},` +
    `${(peak % w) - Math.floor(w / 2)}`;
  return el("div", { class: "nad-cell", "data-nad": index },
    el("div", { class: "nad-title", text: `u${index}` }), top, bottom);
}

// The gallery section of a succeeded NAD job: a selector (8, 16, 32, 64, up to k) and the
// NADs drawn from nads.npy.
function nadGallery(job) {
  const shape = (job.summary && job.summary.input_shape) || job.spec.input_shape;
  const k = job.summary && job.summary.num_nads;
  if (!Array.isArray(shape) || !k || !job.artifacts.some((a) => a.name === "nads.npy")) {
    return "";
  }
  const [c, h, w] = shape;
  const counts = [8, 16, 32, 64].filter((n) => n < k);
  if (k <= 64) counts.push(k);
  const select = el("select", { id: "nad-count", "aria-label": "NADs shown" },
    ...counts.map((n) => el("option", { value: String(n), text: `${n} NADs` })));
  const grid = el("div", { class: "nad-grid", id: "nad-grid" });
  const status = el("p", { class: "muted", id: "nad-status" });
  const half = (n) => `${-Math.floor(n / 2)} … ${Math.floor((n - 1) / 2)}`;
  const legend = el("div", { class: "nad-legend" },
    colourBar("RdBu_r", "−1", "1", c === 1 ? "top: pixels, u / max|u|"
      : "top: pixels of channel 0, u / max|u|"),
    colourBar("magma", "0", "1", "bottom: Fourier energy |F|² / max" +
      (c === 1 ? "" : " (channels summed)")),
    el("span", { class: "muted", text: `bottom axes: kx ${half(w)} (→), ky ${half(h)} (↑); ` +
      "DC where the cyan marks meet" }));
  const section = el("section", { class: "nad-gallery", id: "nad-gallery" },
    el("div", { class: "toolbar" }, el("h2", { text: "NADs" }), select,
      el("span", { class: "muted", text: `of ${k}, drawn from nads.npy` })),
    legend, status, grid);
  let header = null;
  const mine = generation;
  async function show() {
    const count = Number(select.value);
    status.textContent = `Loading ${count} NADs…`;
    grid.dataset.loaded = "false";
    try {
      header = header || await npyHeader(job.id, "nads.npy");
      if (header.shape.length !== 2 || header.shape[1] !== c * h * w) {
        throw new Error(`nads.npy has shape (${header.shape}), not (k, ${c * h * w})`);
      }
      const rows = await npyRows(job.id, "nads.npy", header, Math.min(count, header.shape[0]));
      if (mine !== generation || Number(select.value) !== count) return;
      grid.replaceChildren(...rows.map((row, i) => nadCell(row, i, c, h, w)));
      status.textContent = "";
      grid.dataset.loaded = "true";
      grid.dataset.count = String(rows.length);
    } catch (error) {
      if (mine !== generation) return;
      status.replaceWith(errorBox(`NADs: ${error.message}`));
    }
  }
  select.addEventListener("change", show);
  show();
  return section;
}

// ---------- uploaded architectures ----------

function archRow(a) {
  return el("tr", { "data-arch-id": a.id },
    el("td", {}, el("a", { href: `#/architectures/${a.id}`, text: a.name })),
    el("td", { text: fmtShape(a.input_shape) }), el("td", {}, badge(a.status)),
    el("td", { text: a.format || "–" }), el("td", { text: fmtBytes(a.size) }),
    el("td", { class: "nowrap", text: fmtTime(a.created_at) }));
}

async function viewArchitectures() {
  const view = document.getElementById("view");
  const body = el("tbody");
  const table = el("table", { id: "architectures", class: "jobs" },
    el("thead", {}, el("tr", {}, ...["Name", "Input shape", "Status", "Format", "Size",
      "Uploaded"].map((h) => el("th", { text: h })))), body);
  const note = el("p", { class: "muted", id: "architectures-note" });
  view.replaceChildren(el("div", { class: "toolbar" }, el("h1", { text: "Your architectures" })),
    el("p", { class: "muted" }, "Models you uploaded (TorchScript .pt or torch.export .pt2) " +
      "with POST /v1/architectures or ", el("code", { text: "nads arch upload" }),
    "; a job uses one as {\"architecture\": {\"id\": …}} once it is ready."), table, note);
  const mine = generation;
  try {
    const page = await api("/v1/architectures");
    if (mine !== generation) return;
    ARCH_NAMES = Object.fromEntries(page.items.map((a) => [a.id, a.name]));
    body.replaceChildren(...page.items.map(archRow));
    note.textContent = page.items.length ? "" : "No architectures uploaded yet.";
    table.dataset.loaded = "true";
  } catch (error) {
    if (mine === generation) handle(error);
  }
}

function validationFacts(a) {
  const info = a.info || {};
  const types = info.module_types && Object.entries(info.module_types)
    .map(([t, n]) => `${t} × ${n}`).join(", ");
  return facts([
    ["Result", a.status === "ready" ? "valid: usable by every job kind"
      : a.status === "rejected" ? "rejected" : "validating…"],
    ["Reason", a.reason ? errorBox(a.reason) : null],
    ["Outputs", info.num_outputs], ["Parameters", info.num_params?.toLocaleString()],
    ["FLOPs per input", info.flops ? Number(info.flops).toLocaleString() : null],
    ["Modules", types || null],
  ]);
}

// The caller's jobs on architecture `id`, among their newest 1,000 (the API lists jobs
// newest first, 100 a page).
async function jobsOf(id) {
  const found = [];
  let cursor = null;
  for (let page = 0; page < 10; page++) {
    const query = new URLSearchParams({ limit: "100" });
    if (cursor) query.set("cursor", cursor);
    const result = await api(`/v1/jobs?${query}`);
    for (const job of result.items) {
      const arch = job.spec && job.spec.architecture;
      if (arch && typeof arch === "object" && arch.id === id) found.push(job);
    }
    cursor = result.next_cursor;
    if (!cursor) break;
  }
  return found;
}

async function viewArchitecture(id) {
  const view = document.getElementById("view");
  view.replaceChildren(el("p", { class: "muted", text: "Loading architecture…" }));
  const mine = generation;
  let a;
  try {
    a = await api(`/v1/architectures/${encodeURIComponent(id)}`);
  } catch (error) {
    if (mine === generation) handle(error);
    return;
  }
  if (mine !== generation) return;
  const jobs = el("tbody");
  const jobTable = el("table", { id: "architecture-jobs", class: "jobs" },
    el("thead", {}, el("tr", {}, ...["Job", "Kind", "Status", "Created"]
      .map((h) => el("th", { text: h })))), jobs);
  view.replaceChildren(
    el("p", {}, el("a", { href: "#/architectures", text: "← all architectures" })),
    el("div", { class: "job-head" }, el("h1", { id: "architecture-name", text: a.name }),
      badge(a.status)),
    facts([["Id", el("span", { class: "mono", text: a.id })],
      ["Input shape", fmtShape(a.input_shape)], ["File", a.filename],
      ["Format", a.format || "–"], ["Size", fmtBytes(a.size)],
      ["Re-initialization", a.init], ["Uploaded", fmtTime(a.created_at)],
      ["sha256", el("span", { class: "mono", title: a.sha256, text: a.sha256.slice(0, 12) })]]),
    el("h2", { text: "Validation" }), el("div", { id: "architecture-validation" },
      validationFacts(a)),
    el("h2", { text: "Jobs" }), jobTable);
  try {
    const found = await jobsOf(a.id);
    if (mine !== generation) return;
    jobs.replaceChildren(...found.map((job) => el("tr", { "data-job": job.id },
      el("td", {}, el("a", { href: `#/jobs/${job.id}`, class: "mono", text: job.id.slice(0, 12) })),
      el("td", { text: job.kind }), el("td", {}, badge(job.status)),
      el("td", { class: "nowrap", text: fmtTime(job.timings.created_at) }))));
    if (found.length === 0) {
      jobTable.after(el("p", { class: "muted", text: "No jobs on this architecture yet." }));
    }
    jobTable.dataset.loaded = "true";
  } catch (error) {
    if (mine === generation) jobTable.after(errorBox(`jobs: ${error.message}`));
  }
}
