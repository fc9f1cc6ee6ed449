// The NADs service page: job list with live status, job pages with the worker's figures, the
// catalog. Vanilla JS, no build step. The API key is asked for once, kept in localStorage and
// sent only as `Authorization: Bearer`; artifact images are fetched with it and shown as blob:
// URLs, so the key never appears in a URL. Untrusted text is set with textContent only.
"use strict";

const KEY_STORAGE = "nads.apiKey";
const POLL_MS = 2000;
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
// The job kinds (GET /v1/kinds, the server's registry): names for the filter, each kind's
// label, its figures with their captions, in the order shown (any other PNG artifact is shown
// after them), and the views of VIEWS (below) it declares (`web_views`).
let KINDS = [];
let FIGURES = {};

async function loadKinds() {
  try {
    KINDS = await api("/v1/kinds", { auth: false });
  } catch (_) {
    KINDS = []; // the page still works: figures are then shown under their file names
  }
  FIGURES = Object.fromEntries(KINDS.map((k) => [k.name, k.figures.map((f) => [f.name, f.caption])]));
}


class AuthError extends Error {}

// Everything a view started (timers, blob: URLs) is dropped when the route changes.
let generation = 0;
let timers = [];
let blobUrls = [];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const getKey = () => localStorage.getItem(KEY_STORAGE);

async function api(path, { auth = true, raw = false, method = "GET" } = {}) {
  const headers = {};
  if (auth) {
    const key = getKey();
    if (!key) throw new AuthError("no API key yet");
    headers.Authorization = `Bearer ${key}`;
  }
  const response = await fetch(path, { headers, method });
  if (response.status === 401) throw new AuthError("the server refused the key");
  if (!response.ok) {
    let detail = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body.detail) detail = typeof body.detail === "string" ? body.detail
        : JSON.stringify(body.detail);
    } catch (_) { /* not JSON */ }
    const error = new Error(detail);
    error.status = response.status;
    throw error;
  }
  return raw ? response : response.json();
}

function schedule(fn, ms) {
  const mine = generation;
  timers.push(setTimeout(() => { if (mine === generation) fn(); }, ms));
}

function blobUrl(blob) {
  const url = URL.createObjectURL(blob);
  blobUrls.push(url);
  return url;
}

// ---------- formatting ----------

function fmtTime(iso) {
  if (!iso) return "–";
  return new Date(iso).toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

function fmtSeconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

function ordinal(n) {
  const suffix = n % 100 >= 10 && n % 100 <= 20 ? "th" : ({ 1: "st", 2: "nd", 3: "rd" })[n % 10] || "th";
  return `${n}${suffix}`;
}

// jobs/queue_wait.py: where a queued job stands among the users' jobs, and its wait
function fmtQueue(q) {
  if (!q) return null;
  const parts = [q.position
    ? `${ordinal(q.position)} in line, ${q.shards_ahead} shard${q.shards_ahead === 1 ? "" : "s"} ahead`
    : "sent to a worker"];
  parts.push(q.wait_s == null ? "start unknown" : `starts in ${fmtSeconds(q.wait_s)}`);
  return parts.join(", ");
}

function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

const fmtShape = (shape) => (Array.isArray(shape) ? shape.join("×") : "–");

function badge(status) {
  return el("span", { class: `badge status-${status}`, "data-status": status, text: status });
}

function progressBar(fraction, message) {
  const pct = Math.max(0, Math.min(100, 100 * (fraction || 0)));
  const bar = el("div", { class: "bar" });
  bar.style.width = `${pct.toFixed(1)}%`; // CSSOM, not a style attribute: the CSP forbids those
  return el("div", { class: "progress", title: message || `${pct.toFixed(0)} %` }, bar,
    el("span", { class: "label", text: message || `${pct.toFixed(0)} %` }));
}

function facts(pairs) {
  const dl = el("dl", { class: "facts" });
  for (const [name, value] of pairs) {
    if (value === null || value === undefined || value === "") continue;
    dl.append(el("dt", { text: name }), el("dd", {}, value));
  }
  return dl;
}

// A failure (red): a job's or a build's error, a request the server refused. Findings and
// warnings about a result are banners of their severity (learningBanner).
function errorBox(message) {
  return el("p", { class: "error", role: "alert", "data-severity": "error", text: message });
}

// ---------- key ----------

function showKeyForm(message) {
  const view = document.getElementById("view");
  const input = el("input", { id: "api-key", type: "password", autocomplete: "off",
    placeholder: "nads_…", required: true, "aria-label": "API key" });
  const status = el("p", { class: "error", role: "alert", hidden: !message, text: message || "" });
  const form = el("form", { id: "key-form", class: "card narrow" },
    el("h1", { text: "API key" }),
    el("p", {}, "Your jobs are private: enter your key (from ",
      el("code", { text: "nads admin create-key" }),
      "). It stays in this browser and is sent only in the Authorization header."),
    input, el("button", { type: "submit", text: "Use key" }), status,
    el("p", { class: "muted" }, "The ", el("a", { href: "#/catalog", text: "catalog" }),
      " is public and needs no key."));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    let response;
    try {
      response = await fetch("/v1/jobs?limit=1", { headers: { Authorization: `Bearer ${key}` } });
    } catch (error) {
      status.hidden = false;
      status.textContent = `Could not reach the server: ${error.message}`;
      return;
    }
    if (!response.ok) {
      status.hidden = false;
      status.textContent = response.status === 401 ? "The server does not know this key."
        : `The server answered ${response.status}.`;
      return;
    }
    localStorage.setItem(KEY_STORAGE, key);
    render();
  });
  view.replaceChildren(form);
  input.focus();
}

function handle(error) {
  if (error instanceof AuthError) {
    if (getKey()) localStorage.removeItem(KEY_STORAGE);
    showKeyForm(error.message === "no API key yet" ? "" : "The server refused the stored key; " +
      "enter a valid one.");
    return;
  }
  document.getElementById("view").replaceChildren(errorBox(error.message));
}

// ---------- job list ----------

// An uploaded architecture by the name its owner gave it (views.js), not its id.
function architectureOf(job) {
  return architectureName(job.spec.architecture || (job.summary && job.summary.architecture));
}

// The kind of a job as GET /v1/kinds describes it (a kind the page does not know: its name).
function kindOf(job) {
  return KINDS.find((k) => k.name === job.kind) || { name: job.kind, label: job.kind,
    web_views: [] };
}

// The views of the page a kind may declare (`web_views` in GET /v1/kinds): an `outcome` (its
// line in the job list), `facts` (pairs added to the job page's facts) or a `gallery` (drawn
// above the figures). A kind that declares none gets the generic ones.
const VIEWS = {
  "nad-outcome": { outcome: nadOutcome },
  "nad-facts": { facts: nadFacts },
  "nad-gallery": { gallery: (job) => job.status === "succeeded" ? nadGallery(job) : "" },
  "probe-facts": { facts: probeFacts },
  "poison-facts": { facts: poisonFacts },
};

function kindViews(job, role) {
  return kindOf(job).web_views.map((name) => (VIEWS[name] || {})[role]).filter(Boolean);
}

function nadOutcome(job) {
  const s = job.summary || {};
  return s.num_nads !== undefined ? `${s.num_networks} networks, ${s.num_nads} NADs` : null;
}

function outcome(job) {
  if (job.error) return job.error.length > 80 ? `${job.error.slice(0, 79)}…` : job.error;
  if (job.status !== "succeeded") return job.progress.message || job.status;
  for (const view of kindViews(job, "outcome")) {
    const line = view(job);
    if (line) return line;
  }
  const figures = job.artifacts.filter((a) => a.media_type === "image/png").length;
  return `${job.artifacts.length} artifacts, ${figures} figure${figures === 1 ? "" : "s"}`;
}

function jobRow(job) {
  const run = job.timings.run_s;
  const arch = job.spec.architecture || (job.summary && job.summary.architecture);
  return el("tr", { "data-job": job.id, "data-kind": job.kind },
    el("td", {}, el("a", { href: `#/jobs/${job.id}`, class: "mono", text: job.id.slice(0, 12) })),
    el("td", { text: job.kind }),
    el("td", {}, architectureCell(arch)),
    el("td", {}, badge(job.status)),
    el("td", {}, TERMINAL.has(job.status) ? el("span", { class: "muted", title: job.error || "",
      text: outcome(job) }) : progressBar(job.progress.fraction, job.progress.message)),
    el("td", { class: "nowrap", text: fmtTime(job.timings.created_at) }),
    el("td", { class: "nowrap", text: fmtSeconds(run) }));
}

function viewJobs() {
  const kind = el("select", { id: "filter-kind", "aria-label": "kind" },
    ...["", ...KINDS.map((k) => k.name)].map((k) => el("option", { value: k, text: k || "all kinds" })));
  const state = el("select", { id: "filter-status", "aria-label": "status" },
    ...["", "queued", "running", "succeeded", "failed", "cancelled"]
      .map((s) => el("option", { value: s, text: s || "all states" })));
  const body = el("tbody");
  const note = el("p", { class: "muted", id: "jobs-note" });
  const table = el("table", { id: "jobs", class: "jobs" },
    el("thead", {}, el("tr", {}, ...["Job", "Kind", "Architecture", "Status", "Progress or result",
      "Created", "Run time"].map((h) => el("th", { text: h })))), body);
  document.getElementById("view").replaceChildren(
    el("div", { class: "toolbar" }, el("h1", { text: "Your jobs" }), kind, state,
      el("span", { class: "live", title: `refreshed every ${POLL_MS / 1000} s`, text: "live" })),
    table, note);

  const mine = generation;
  let token = 0; // a filter change starts a new polling loop; the old one stops
  async function poll() {
    const current = ++token;
    const query = new URLSearchParams({ limit: "100" });
    if (kind.value) query.set("kind", kind.value);
    if (state.value) query.set("status", state.value);
    try {
      const page = await api(`/v1/jobs?${query}`);
      if (mine !== generation || current !== token) return;
      body.replaceChildren(...page.items.map(jobRow));
      note.textContent = page.items.length === 0 ? "No jobs yet: submit one with POST " +
        "/v1/jobs/nads (see /docs) or `nads submit`."
        : page.next_cursor ? "Showing the newest 100 jobs." : "";
      table.dataset.loaded = "true";
    } catch (error) {
      if (mine !== generation || current !== token) return;
      if (error instanceof AuthError) { handle(error); return; }
      note.textContent = `Could not refresh: ${error.message}`;
    }
    schedule(() => { if (current === token) poll(); }, POLL_MS);
  }
  for (const select of [kind, state]) {
    select.addEventListener("change", () => { body.replaceChildren(); poll(); });
  }
  poll();
}

// ---------- job page ----------

async function showImage(img, jobId, name) {
  try {
    const response = await api(`/v1/jobs/${jobId}/artifacts/${encodeURIComponent(name)}`,
      { raw: true });
    img.src = blobUrl(await response.blob());
  } catch (error) {
    img.replaceWith(errorBox(`${name}: ${error.message}`));
  }
}

function figures(job) {
  const pngs = job.artifacts.filter((a) => a.media_type === "image/png").map((a) => a.name);
  const known = (FIGURES[job.kind] || []).filter(([name]) => pngs.includes(name));
  const others = pngs.filter((name) => !known.some(([k]) => k === name)).map((n) => [n, n]);
  const section = el("section", { class: "figures", id: "figures" });
  if (known.length + others.length === 0) {
    section.append(el("p", { class: "muted", text: "This job has no figures." }));
  }
  for (const [name, caption] of [...known, ...others]) {
    const img = el("img", { "data-artifact": name, alt: caption });
    section.append(el("figure", {}, img, el("figcaption", {}, el("code", { text: name }),
      " ", caption)));
    showImage(img, job.id, name);
  }
  return section;
}

async function download(jobId, name, button) {
  button.disabled = true;
  try {
    const response = await api(`/v1/jobs/${jobId}/artifacts/${encodeURIComponent(name)}`,
      { raw: true });
    const link = el("a", { href: blobUrl(await response.blob()), download: name });
    document.body.append(link);
    link.click();
    link.remove();
  } catch (error) {
    button.after(errorBox(error.message));
  } finally {
    button.disabled = false;
  }
}

function artifactTable(job) {
  if (job.artifacts.length === 0) return el("p", { class: "muted", text: "No artifacts." });
  return el("table", { class: "artifacts" },
    el("thead", {}, el("tr", {}, ...["Artifact", "Size", "Type", "sha256", ""]
      .map((h) => el("th", { text: h })))),
    el("tbody", {}, ...job.artifacts.map((a) => {
      const button = el("button", { type: "button", text: "Download" });
      button.addEventListener("click", () => download(job.id, a.name, button));
      return el("tr", {}, el("td", {}, el("code", { text: a.name })),
        el("td", { text: fmtBytes(a.size) }), el("td", { text: a.media_type }),
        el("td", { class: "mono", title: a.sha256, text: a.sha256.slice(0, 12) }),
        el("td", {}, button));
    })));
}

function summaryFacts(job) {
  const s = job.summary || {};
  const spec = job.spec || {};
  const pairs = [
    ["Kind", job.kind], ["Execution", job.mode], ["Architecture", architectureOf(job)],
    ["Input shape", fmtShape(spec.input_shape || s.input_shape)],
    ["Created", fmtTime(job.timings.created_at)], ["Queued", fmtSeconds(job.timings.queued_s)],
    ["Run time", fmtSeconds(job.timings.run_s)],
    // jobs/fleet.py: the estimate at submission on the workers connected, then the live ETA
    ["Estimated run", job.estimate && job.estimate.run ? job.estimate.run.basis : null],
    ["Queue", job.status === "queued" ? fmtQueue(job.queue) : null],
    ["Time left", TERMINAL.has(job.status) || job.progress.eta_s == null ? null
      : fmtSeconds(job.progress.eta_s)],
  ];
  for (const view of kindViews(job, "facts")) pairs.push(...view(job, s, spec));
  return facts(pairs);
}

// The facts of each kind's views (VIEWS): [label, value] pairs, null values left out.
function nadFacts(job, s, spec) {
  const pairs = [];
  const method = s.method || spec.method;
  pairs.push(["Method", method && (method.replace("_", " ") +
    (s.scale ? `, scale ${s.scale}` : ""))],
    ["Networks", s.num_networks ?? spec.num_networks], ["NADs", s.num_nads],
    ["Decomposition", s.decomposition]);
  const ident = s.identifiability;
  if (ident && ident.ks && ident.ks.length) {
    pairs.push(["Split-half stability", ident.ks.map((r) =>
      `${fmtOverlap(r.stability)} at k = ${r.k} (chance ${fmtOverlap(r.chance)})`).join(", ")],
    ["Identifiable", ident.identifiable ? `yes, up to k = ${ident.up_to_k}`
      : "no: within the noise of chance at every k"]);
  } else if (s.stability) {
    pairs.push(["Split-half stability", Object.entries(s.stability)
      .map(([k, v]) => `${Number(v).toFixed(3)} at k = ${k}`).join(", ")]);
  }
  if (job.status === "succeeded" && "catalog" in s) {
    const c = s.catalog;
    pairs.push(["Overlap with the catalog", c ? `${c.entry} (${c.networks} networks): ` +
      c.ks.map((r) => `${fmtOverlap(r.overlap)} at k = ${r.k} (chance ` +
        `${fmtOverlap(r.chance)})`).join(", ") +
      (c.shared_networks ? `; the first ${c.shared_networks} networks are the same ones ` +
        "(same seed): not an independent check" : "")
      : "no ready catalog entry of this architecture, input shape and method"]);
  }
  return pairs;
}

function probeFacts(job, s, spec) {
  const pairs = [];
  if (!spec.directions) return pairs;
  pairs.push(["Directions", spec.directions.kind +
    (s.fourier ? ` (${s.num_directions}, ${s.fourier.note})` : "")],
  ["Replicates", spec.replicates], ["Epochs", spec.training && spec.training.epochs],
  ["Intervals", s.interval ? s.interval.method : null]);
  return pairs;
}

function poisonFacts(job, s, spec) {
  const pairs = [];
  const data = spec.dataset || {};
  pairs.push(["Dataset", data.name || (data.upload && `upload ${data.upload}`)],
    ["Poison mode", spec.mode], ["eps", spec.mode === "flip" ? null : spec.eps],
    ["Indices", Array.isArray(spec.indices) ? spec.indices.join(", ") : null],
    ["Epochs", spec.training && spec.training.epochs],
    ["Clean run", typeof s.clean_accuracy === "number" ? `${s.clean_accuracy.toFixed(1)} % ` +
      "clean-test accuracy, trained without poison (same seed and recipe): the baseline"
      : null]);
  return pairs;
}

function fmtOverlap(value) {
  return Number(value) >= 0.01 ? Number(value).toFixed(3) : Number(value).toPrecision(2);
}

// nadcore.nads.identifiability's verdict: NADs whose split-half stability is chance, and why. A
// result to read with care, not a failure: amber (red is kept for failures, errorBox).
function identifiabilityBanner(identifiability, id) {
  if (!identifiability || identifiability.identifiable !== false) return "";
  return el("p", { class: "banner severity-warning not-identifiable", id, role: "status",
    "data-severity": "warning", title: identifiability.rule,
    text: `NADs not identifiable: ${identifiability.reason}` });
}

// nadcore.training.learning_check's verdict: what did not learn, and what to change, shown at the
// severity the verdict carries (`learning.severity`): "info" for a probe whose directions
// partly learned (a NAD probe's "8 of 12 at chance" is its expected finding), "warning" when
// the result says nothing. A summary from before severities: warning.
function learningBanner(job) {
  const l = job.summary && job.summary.learning;
  if (!l || !l.not_learned) return "";
  const severity = l.severity === "info" ? "info" : "warning";
  const what = l.did_not_learn ? "Nothing learned"
    : `${l.not_learned} of ${l.of} ${l.outcome || "at chance"}`;
  return el("p", { class: `banner severity-${severity}`, id: "did-not-learn", role: "status",
    "data-severity": severity, title: l.rule, text: `${what}: ${l.hint}` });
}

function cancelButton(job) {
  const button = el("button", { type: "button", id: "cancel-job", text: "Cancel job" });
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await api(`/v1/jobs/${encodeURIComponent(job.id)}/cancel`, { method: "POST" });
      button.textContent = "Cancelling…";  // the next poll shows the job cancelled
    } catch (error) {
      button.after(errorBox(error.message));  // e.g. 409: it finished in the meantime
    }
  });
  return el("p", {}, button);
}

function viewJob(jobId) {
  const view = document.getElementById("view");
  view.replaceChildren(el("p", { class: "muted", text: "Loading job…" }));
  const mine = generation;
  let head = null;
  let live = null;
  async function poll() {
    let job;
    try {
      job = await api(`/v1/jobs/${encodeURIComponent(jobId)}`);
    } catch (error) {
      if (mine === generation) handle(error);
      return;
    }
    if (mine !== generation) return;
    if (!head) {
      head = el("div", { class: "job-head" },
        el("h1", {}, `${kindOf(job).label} job `,
          el("span", { class: "mono", text: job.id })),
        el("span", { id: "job-status" }));
      live = el("div", { id: "job-live" });
      view.replaceChildren(el("p", {}, el("a", { href: "#/jobs", text: "← all jobs" })), head,
        live);
    }
    document.getElementById("job-status").replaceChildren(badge(job.status));
    if (!TERMINAL.has(job.status)) {
      live.replaceChildren(progressBar(job.progress.fraction, job.progress.message),
        cancelButton(job), summaryFacts(job));
      schedule(poll, POLL_MS);
      return;
    }
    // Terminal: draw the rest once (figures are fetched once, not at every poll).
    live.replaceChildren(
      job.error ? errorBox(job.error) : "",
      learningBanner(job),
      identifiabilityBanner(job.summary && job.summary.identifiability, "not-identifiable"),
      summaryFacts(job),
      ...kindViews(job, "gallery").map((view) => view(job)),
      job.status === "succeeded" ? figures(job) : "",
      el("h2", { text: "Artifacts" }), artifactTable(job),
      el("details", {}, el("summary", { text: "Spec" }),
        el("pre", { text: JSON.stringify(job.spec, null, 2) })),
      job.summary ? el("details", {}, el("summary", { text: "Summary" }),
        el("pre", { text: JSON.stringify(job.summary, null, 2) })) : "");
  }
  poll();
}

// ---------- routing ----------

async function render() {
  generation++;
  timers.forEach(clearTimeout);
  timers = [];
  blobUrls.forEach((url) => URL.revokeObjectURL(url));
  blobUrls = [];
  const hash = location.hash || "#/jobs";
  const parts = hash.replace(/^#\/?/, "").split("/");
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === parts[0]);
  }
  document.getElementById("forget-key").hidden = !getKey();
  if (parts[0] === "catalog") { viewCatalog(); return; }
  if (!getKey()) { showKeyForm(""); return; }
  const mine = generation;
  await loadArchitectureNames(); // jobs on an uploaded architecture show its name
  if (mine !== generation) return;
  if (parts[0] === "architectures" && parts[1]) {
    viewArchitecture(decodeURIComponent(parts[1]));
    return;
  }
  if (parts[0] === "architectures") { viewArchitectures(); return; }
  if (parts[0] === "jobs" && parts[1]) { viewJob(decodeURIComponent(parts[1])); return; }
  viewJobs();
}

window.addEventListener("hashchange", render);
window.addEventListener("DOMContentLoaded", () => {
  document.getElementById("forget-key").addEventListener("click", () => {
    localStorage.removeItem(KEY_STORAGE);
    render();
  });
  loadKinds().then(render);
});
