// The catalog view of the NADs service page (loaded after app.js, whose helpers it uses: el,
// api, facts, badge, fmtTime, fmtShape, errorBox, progressBar, identifiabilityBanner, schedule,
// generation, POLL_MS): one row per architecture of GET /v1/catalog, the ready ones with their
// preview and how to download their arrays (links, and curl and Python snippets to copy).
"use strict";


function catalogProgress(entry) {
  const p = entry.progress;
  const fraction = typeof p === "number" ? p : (p && p.fraction) || 0;
  let message = `building, ${(100 * fraction).toFixed(0)} %`;
  if (entry.networks_done !== undefined && entry.networks_done !== null && entry.max_networks) {
    message += ` (${entry.networks_done} of at most ${entry.max_networks} networks)`;
  }
  return progressBar(fraction, message);
}

function catalogRow(entry) {
  if (entry.status === "absent") return absentRow(entry);
  const ready = entry.status === "ready";
  let stability = null;
  const byK = entry.provenance && entry.provenance.stability;
  if (byK && Object.keys(byK).length) {  // split-half stability at every k measured
    stability = Object.keys(byK).sort((a, b) => Number(a) - Number(b))
      .map((k) => `${Number(byK[k]).toFixed(3)} at k = ${k}`).join(", ");
  } else if (entry.stability !== null && entry.stability !== undefined) {
    stability = Number(entry.stability).toFixed(3) +
      (entry.stability_k ? ` at k = ${entry.stability_k}` : "");
  }
  let networks = entry.networks;
  if (entry.full_build_pending) {
    networks = `${networks} (of the paper's ${entry.paper_networks.toLocaleString("en")}: ` +
      `a ${entry.paper_networks.toLocaleString("en")}-network build is pending)`;
  } else if (networks !== null && networks !== undefined && entry.stopped_early !== undefined &&
      entry.stopped_early !== null) {
    networks = `${networks} (${entry.stopped_early ? "stability target reached"
      : "network budget used"})`;
  }
  const info = el("div", { class: "catalog-info" },
    el("h2", { text: entry.name }), badge(entry.status),
    facts([["Input", fmtShape(entry.input_shape)],
      ["Method", entry.method && (entry.method.replace("_", " ") +
        (entry.scale ? `, scale ${entry.scale}` : ""))],
      ["Networks", networks], ["Stability", stability],
      ["Identifiable", entry.identifiability && entry.identifiability.identifiable !== null
        ? (entry.identifiability.identifiable
          ? `yes, up to k = ${entry.identifiability.up_to_k}` : "no") : null],
      ["Built", entry.built_at ? fmtTime(entry.built_at) : null],
      ["Origin", entry.origin === "shipped"
        ? `shipped with the repository${entry.provenance && entry.provenance.device_name
          ? ` (computed on ${entry.provenance.device_name})` : ""}`
        : (entry.origin ? "built by this service" : null)],
      ["Precision", entry.precision || null],
      ["sha256", entry.sha256 ? el("span", { class: "mono", title: entry.sha256,
        text: entry.sha256.slice(0, 12) }) : null]]),
    entry.error ? errorBox(entry.error) : "",
    identifiabilityBanner(entry.identifiability, `not-identifiable-${entry.name}`));
  let figure;
  if (ready) {
    const img = el("img", { "data-arch": entry.name, alt: `first NADs of ${entry.name}`,
      src: `/v1/catalog/${encodeURIComponent(entry.name)}/preview.png` });
    img.addEventListener("error", () => img.replaceWith(
      el("p", { class: "muted", text: "preview.png is not available." })));
    figure = img;
  } else if (entry.status === "building") {
    figure = el("div", { class: "placeholder" }, catalogProgress(entry),
      el("p", { class: "muted", text: "Its NADs appear here when the build finishes." }));
  } else {
    figure = el("p", { class: "muted", text: `No NADs: the build is ${entry.status}.` });
  }
  return el("article", { class: `catalog-row${ready ? " with-downloads" : ""}`,
    "data-arch": entry.name, "data-status": entry.status, "data-origin": entry.origin || "built",
    "data-pending": String(Boolean(entry.full_build_pending)) }, info,
    el("div", { class: "catalog-figure" }, figure), ready ? downloads(entry) : "");
}

// ---------- downloads ----------

const SNIPPET_K = 64; // the ?k= form shows the first 64 NADs (or all, when there are fewer)

// A catalog file's URL on this server (public: no key), optionally cut to its first k rows.
function catalogUrl(name, file, k) {
  const url = `${location.origin}/v1/catalog/${encodeURIComponent(name)}/${file}`;
  return k ? `${url}?k=${k}` : url;
}

// Text to copy, with a Copy button (the clipboard API needs a secure context: elsewhere, or
// when it is refused, the button selects the text for Ctrl+C).
function snippet(name, language, text) {
  const code = el("code", { text });
  const button = el("button", { type: "button", class: "copy", text: "Copy",
    "aria-label": `copy the ${language} snippet for ${name}` });
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "Copied";
    } catch (_) {
      const range = document.createRange();
      range.selectNodeContents(code);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      button.textContent = "Selected: Ctrl+C";
    }
  });
  return el("div", { class: "snippet", "data-snippet": language },
    el("div", { class: "snippet-head" }, el("span", { class: "muted", text: language }), button),
    el("pre", {}, code));
}

// A ready entry's arrays: links to the whole files, and curl and Python snippets (the first k
// rows with ?k=, GET /v1/catalog/{arch}/{name}; docs/service.md).
function downloads(entry) {
  const name = entry.name;
  const dim = Array.isArray(entry.input_shape) ? entry.input_shape.reduce((a, b) => a * b, 1)
    : null;
  const rows = entry.num_nads || null;
  const k = rows ? Math.min(SNIPPET_K, rows) : SNIPPET_K;
  const shape = (n) => (n && dim ? ` (${n} × ${dim} float32)` : "");
  const link = (file, what) => el("li", {},
    el("a", { href: catalogUrl(name, file), download: `${name}-${file}`, "data-file": file,
      text: file }), ` ${what}`);
  const curl = [
    `# all of them${rows ? `: ${rows} NADs` : ""}, one per row, and their eigenvalues`,
    `curl -fO ${catalogUrl(name, "nads.npy")}`,
    `curl -fO ${catalogUrl(name, "eigenvalues.npy")}`,
    `# only the first ${k} (?k=)`,
    `curl -f -o ${name}-nads-k${k}.npy "${catalogUrl(name, "nads.npy", k)}"`,
    `curl -f -o ${name}-eigenvalues-k${k}.npy "${catalogUrl(name, "eigenvalues.npy", k)}"`,
  ].join("\n");
  const python = [
    "from nads.client import Client",
    "",
    `client = Client("${location.origin}")  # the catalog needs no key`,
    `nads = client.catalog("${name}", k=${k})  # the first ${k} NADs, one per row${
      dim ? ` (${k} x ${dim})` : ""}`,
    `eigenvalues = client.catalog("${name}", k=${k}, what="eigenvalues")`,
  ].join("\n");
  return el("section", { class: "catalog-downloads", "data-arch": name },
    el("h3", { text: "Download" }),
    el("ul", { class: "files" },
      link("nads.npy", `the NADs${shape(rows)}, in descending eigenvalue order`),
      link("eigenvalues.npy", "their eigenvalues")),
    snippet(name, "curl", curl), snippet(name, "Python", python));
}

// An architecture the server has not started: the API says how to build it and what that
// needs (a GPU worker for VGG-11, ResNet-18 and DenseNet-121 at the paper's settings).
function absentRow(entry) {
  return el("article", { class: "catalog-row", "data-arch": entry.name,
    "data-status": "absent", "data-needs-gpu": String(Boolean(entry.needs_gpu)) },
    el("div", { class: "catalog-info" }, el("h2", { text: entry.name }), badge("not built"),
      entry.needs_gpu ? el("span", { class: "badge", text: "needs a GPU worker" }) : ""),
    el("div", { class: "catalog-figure" }, el("p", { class: "muted", text: entry.message })));
}

function viewCatalog() {
  const view = document.getElementById("view");
  const list = el("div", { id: "catalog", class: "catalog" });
  view.replaceChildren(
    el("div", { class: "toolbar" }, el("h1", { text: "Catalog" })),
    el("p", { class: "muted" }, "Precomputed NADs of the paper's architectures (public). " +
      "Each row shows the first NADs in pixel space and their Fourier energy, aligned by index."),
    list);
  const mine = generation;
  async function poll() {
    let entries;
    try {
      entries = await api("/v1/catalog", { auth: false });
    } catch (error) {
      if (mine !== generation) return;
      list.dataset.loaded = "true";
      list.replaceChildren(errorBox(error.status === 404
        ? "This server has no catalog." : `Could not load the catalog: ${error.message}`));
      return;
    }
    if (mine !== generation) return;
    // The API lists every architecture of the paper, absent ones too (as the CLI does).
    list.replaceChildren(...entries.map(catalogRow));
    if (entries.every((e) => e.status === "absent")) {
      list.prepend(el("p", { class: "muted", id: "catalog-empty",
        text: "The catalog is empty: its builds have not started yet." }));
    }
    list.dataset.loaded = "true";
    if (entries.some((e) => e.status === "building")) schedule(poll, 5 * POLL_MS);
  }
  poll();
}

