// consist review: the page. Plain JavaScript, no build step, no network but this server.
// Every element is built from text (textContent / attributes), never from HTML strings,
// so a label or file name can never become markup.
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const PAGE = 50;
const STATUSES = ["flagged", "suspect", "ok", "plausible", "unverifiable", "unreadable"];
const state = { token: null, queue: null, sel: 0, sample: null, labels: [], route: "", drawing: null };

// ------------------------------------------------------------------ plumbing

function readToken() {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem("consist-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search + "#/");
  }
  state.token = sessionStorage.getItem("consist-token");
  document.getElementById("readonly").hidden = !!state.token;
}

function el(tag, attrs, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVGNS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = String(v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "cls") node.setAttribute("class", v);
    else if (k === "style") node.style.cssText = v; // CSSOM: allowed by the page's CSP, unlike style attributes
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
  return node;
}

function toast(msg, error) {
  const t = document.getElementById("toast");
  t.textContent = msg;
  t.className = "show" + (error ? " error" : "");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.className = ""; }, error ? 6000 : 3000);
}

async function api(path, body) {
  const opts = { headers: {} };
  if (body !== undefined) {
    opts.method = "POST";
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  if (state.token) opts.headers["X-Consist-Token"] = state.token;
  const r = await fetch(path, opts);
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (!r.ok) {
    let msg = r.statusText, code = null;
    if (data && data.detail) {
      if (typeof data.detail === "string") msg = data.detail;
      else if (data.detail.message) { msg = data.detail.message; code = data.detail.code; }
      else msg = JSON.stringify(data.detail);
    }
    const err = new Error(msg);
    err.code = code;
    err.status = r.status;
    throw err;
  }
  return data;
}

function imgUrl(id, size) { return "/api/image?id=" + encodeURIComponent(id) + "&size=" + (size || 400); }
function pct(p) { return p === null || p === undefined ? "–" : p.toFixed(2); }
function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") u.set(k, v);
  return u.toString();
}
function routeParams() {
  const i = location.hash.indexOf("?");
  return new URLSearchParams(i >= 0 ? location.hash.slice(i + 1) : "");
}
function go(hash) { if (location.hash !== hash) location.hash = hash; else render(); }
function setMain(...nodes) { const m = document.getElementById("app"); m.replaceChildren(...nodes); }

function describe(entries) {
  if (!entries || !entries.length) return "nothing changed";
  const e = entries[0];
  const after = e.after && e.after.label ? " → " + e.after.label : "";
  return `${e.action} ${e.sample_id}${after} (#${e.seq}${entries.length > 1 ? ` and ${entries.length - 1} more` : ""}) — u undoes`;
}

// What this tab did, newest last: Undo reverts this tab's own last action (a whole
// batch or sentence), never another tab's or another reviewer's.
function mine() { try { return JSON.parse(sessionStorage.getItem("consist-mine") || "[]"); } catch (e) { return []; } }
function pushMine(entries) {
  if (!entries || !entries.length) return;
  const st = mine();
  st.push(entries.map((e) => e.seq));
  sessionStorage.setItem("consist-mine", JSON.stringify(st.slice(-500)));
}

async function doAction(kind, body, opts) {
  if (!state.token) { toast("read-only: open the address consist review printed", true); return null; }
  try {
    const res = await api("/api/actions/" + kind, body);
    if (kind !== "undo") pushMine(res.entries);
    if (!(opts && opts.quiet)) toast(describe(res.entries));
    return res;
  } catch (e) {
    if (e.code === "new_label" && kind === "relabel" && !body.create) {
      if (confirm(`“${body.label}” is not a label of this store yet (nor an alias). Create a new label “${body.label}”?`)) return doAction(kind, { ...body, create: true }, opts);
      return null;
    }
    toast(e.message, true);
    if (e.code === "stale") render();
    return null;
  }
}

async function undoLast() {
  const st = mine();
  if (!st.length) { toast("nothing of yours to undo in this tab (the History page undoes any entry)", true); return; }
  const seqs = st.pop();
  sessionStorage.setItem("consist-mine", JSON.stringify(st));
  const res = await doAction("undo", { seqs }, { quiet: true });
  if (res) { toast("undone: " + describe(res.entries).replace(/ — u undoes$/, "")); render(); }
}

function clearToast() { const t = document.getElementById("toast"); t.className = ""; }

// ------------------------------------------------------------------ overview

function svgBars(items, opts) {
  // items: [{label, value, cls}] horizontal bars
  const w = opts.width || 420, rowH = 18, left = opts.left || 150;
  const max = Math.max(1, ...items.map((i) => i.value));
  const svg = el("svg:svg", { width: w, height: items.length * rowH + 4, viewBox: `0 0 ${w} ${items.length * rowH + 4}`, role: "img", "aria-label": opts.title || "" });
  items.forEach((it, i) => {
    const y = i * rowH + 2, bw = (w - left - 40) * it.value / max;
    const room = Math.floor(left / 6.2);
    const t = el("svg:text", { x: left - 6, y: y + 12, "text-anchor": "end", text: it.label.length > room ? it.label.slice(0, room - 1) + "…" : it.label });
    t.appendChild(el("svg:title", { text: it.label }));
    svg.appendChild(t);
    const rect = el("svg:rect", { x: left, y: y + 2, width: Math.max(1, bw), height: rowH - 5, cls: "bar " + (it.cls || "") });
    rect.appendChild(el("svg:title", { text: `${it.label}: ${it.value}` }));
    svg.appendChild(rect);
    svg.appendChild(el("svg:text", { x: left + bw + 4, y: y + 12, text: String(it.value) }));
  });
  return svg;
}

function histogram(h) {
  const bins = h.bins, w = 420, hgt = 140, bw = (w - 30) / bins;
  const order = [["flagged", "flag"], ["suspect", "sus"], ["ok", "ok"], ["plausible", ""]];
  const totals = Array(bins).fill(0);
  for (const [s] of order) (h.counts[s] || []).forEach((c, i) => { totals[i] += c; });
  const max = Math.max(1, ...totals);
  const svg = el("svg:svg", { width: w, height: hgt + 24, viewBox: `0 0 ${w} ${hgt + 24}`, role: "img", "aria-label": "confidence histogram" });
  const base = Array(bins).fill(0);
  for (const [s, cls] of order) {
    (h.counts[s] || []).forEach((c, i) => {
      if (!c) return;
      const bh = hgt * c / max;
      const r = el("svg:rect", { x: 24 + i * bw, y: hgt - base[i] - bh, width: bw - 1, height: bh, cls: "bar " + cls });
      r.appendChild(el("svg:title", { text: `${s}: ${c} with P(wrong) in [${(i / bins).toFixed(2)}, ${((i + 1) / bins).toFixed(2)})` }));
      svg.appendChild(r);
      base[i] += bh;
    });
  }
  svg.appendChild(el("svg:text", { x: 24, y: hgt + 16, text: "0" }));
  svg.appendChild(el("svg:text", { x: w - 10, y: hgt + 16, "text-anchor": "end", text: "P(wrong) 1" }));
  svg.appendChild(el("svg:text", { x: 0, y: 10, text: String(max) }));
  return svg;
}

async function renderOverview() {
  const o = await api("/api/overview");
  const cards = el("div", { cls: "cards" },
    ...STATUSES.map((s) => el("a", { cls: "card " + s, href: "#/queue?" + qs({ status: s }) }, el("b", { text: o.status[s] || 0 }), s)),
    ...Object.entries(o.decisions).map(([d, n]) => el("div", { cls: "card" }, el("b", { text: n }), d)));
  const table = el("table", { cls: "data" },
    el("thead", {}, el("tr", {}, ...["label", "kind", "samples", "flagged", "suspect", "verified share", "reviewed", "suggested into", "bulk action"].map((h) => el("th", { text: h })))),
    el("tbody", {}, ...o.labels.map((l) => {
      const wrong = l.flagged + l.suspect;
      const minc = el("input", { type: "number", min: 0, max: 1, step: 0.05, value: 0.9, style: "width:5em", "aria-label": "minimum confidence" });
      const bulk = wrong ? el("span", {}, el("button", {
        type: "button",
        title: l.kind === "generic" ? "relabel this generic label's images by their suggestions, where the suggested label's posterior is at least the number" : "accept every pending suggestion of this label where P(wrong) and the suggestion's posterior are at least the number",
        onclick: async () => {
          const c = parseFloat(minc.value) || 0;
          const sel = { label: l.label, status: "flagged,suspect", min_confidence: c, min_suggestion_confidence: c };
          const dry = await doAction("bulk", { ...sel, dry_run: true }, { quiet: true });
          if (!dry) return;
          if (!dry.would_change) { toast(`nothing to accept in “${l.label}”: no pending suggestion with P(wrong) and posterior ≥ ${c}`); return; }
          if (!confirm(`Accept the suggestion of the ${dry.would_change} pending sample(s) labelled “${l.label}” whose P(wrong) and suggestion posterior are ≥ ${c}? (one batch: Undo reverts it whole)`)) return;
          const res = await doAction("bulk", { ...sel, expect: dry.would_change }, { quiet: true });
          if (res) { toast(`accepted ${res.entries.length} suggestions in “${l.label}” (batch ${res.batch}) — u undoes the batch`); render(); }
        },
        text: l.kind === "generic" ? "Relabel by suggestions ≥" : "Accept flagged ≥",
      }), " ", minc) : "";
      return el("tr", {},
        el("td", {}, el("a", { href: "#/queue?" + qs({ label: l.label }), text: l.label })),
        el("td", {}, l.kind === "generic" ? el("span", { cls: "tag relabelled", text: "generic" }) : l.same_object.length ? el("span", { cls: "tag", text: "same object as " + l.same_object.flat().filter((x) => x !== l.label).join(", ") }) : "specific"),
        el("td", { cls: "num", text: l.samples }), el("td", { cls: "num status-flagged", text: l.flagged }), el("td", { cls: "num status-suspect", text: l.suspect }),
        el("td", { cls: "num", text: (100 * l.verified_share).toFixed(0) + "%" }), el("td", { cls: "num", text: l.reviewed }), el("td", { cls: "num", text: l.suggested_into }), el("td", {}, bulk));
    })));
  const worst = o.labels.filter((l) => l.flagged + l.suspect).sort((a, b) => (b.flagged + b.suspect) / b.samples - (a.flagged + a.suspect) / a.samples).slice(0, 15);
  setMain(
    el("h2", { text: `${o.samples} samples — store ${o.store}` }),
    cards,
    el("div", { cls: "grid2" },
      el("div", { cls: "box" }, el("h2", { text: "Confidence that the given label is wrong" }), histogram(o.histogram),
        el("p", { cls: "muted", text: "red: flagged (verified evidence) · orange: suspect (retrieval only) · green: confirmed by verified views · blue: plausible (retrieval does not contradict it)" })),
      el("div", { cls: "box" }, el("h2", { text: "Given → suggested (what is reported wrong)" }),
        o.confusion.length ? svgBars(o.confusion.slice(0, 15).map((c) => ({ label: `${c.given} → ${c.suggested}`, value: c.count, cls: "flag" })), { left: 300, width: 460, title: "confusion" }) : el("p", { cls: "muted", text: "nothing is reported wrong" })),
      el("div", { cls: "box" }, el("h2", { text: "Labels with the largest share reported wrong" }),
        worst.length ? svgBars(worst.map((l) => ({ label: l.label, value: l.flagged + l.suspect, cls: "sus" })), { title: "per label" }) : el("p", { cls: "muted", text: "none" }))),
    el("h2", { style: "margin-top:16px", text: "Labels" }), table);
}

// --------------------------------------------------------------------- queue

function queueFilter() {
  const p = routeParams();
  return { status: p.get("status") || "", label: p.get("label") || "", min_confidence: p.get("min_confidence") || "", review: p.get("review") || "all", q: p.get("q") || "", sort: p.get("sort") || "priority", offset: parseInt(p.get("offset") || "0", 10) };
}

async function renderQueue() {
  const f = queueFilter();
  const data = await api("/api/queue?" + qs({ ...f, limit: PAGE }));
  state.queue = { filter: f, data };
  if (state.selPending) { // entering the queue: start on the first row nobody has decided
    const i = data.items.findIndex((r) => r.decision === "pending");
    state.sel = i >= 0 ? i : 0;
    state.selPending = false;
  }
  if (state.sel >= data.items.length) state.sel = Math.max(0, data.items.length - 1);
  const setF = (patch) => go("#/queue?" + qs({ ...f, offset: 0, ...patch }));
  const statusSel = el("select", { "aria-label": "status", onchange: (e) => setF({ status: e.target.value }) },
    ...[["", "all statuses"], ["flagged,suspect", "flagged + suspect"], ...STATUSES.map((s) => [s, s])].map(([v, t]) => el("option", { value: v, selected: f.status === v, text: t })));
  const labelIn = el("input", { type: "text", list: "label-list", placeholder: "label", value: f.label, "aria-label": "label", onchange: (e) => setF({ label: e.target.value }) });
  const conf = el("input", { type: "number", min: 0, max: 1, step: 0.05, value: f.min_confidence, placeholder: "min P(wrong)", style: "width:9em", "aria-label": "minimum confidence", onchange: (e) => setF({ min_confidence: e.target.value }) });
  const review = el("select", { "aria-label": "review state", onchange: (e) => setF({ review: e.target.value }) }, ...["all", "pending", "reviewed"].map((v) => el("option", { value: v, selected: f.review === v, text: v })));
  const text = el("input", { type: "text", placeholder: "search id or label", value: f.q, "aria-label": "search" });
  text.addEventListener("input", () => { clearTimeout(state.typing); state.typing = setTimeout(() => setF({ q: text.value }), 400); });
  const bulkBtn = el("button", {
    type: "button", title: "accept every pending suggestion this filter selects, as one undoable batch",
    onclick: async () => {
      const sel = { status: f.status || "flagged,suspect", label: f.label || null, min_confidence: f.min_confidence === "" ? null : parseFloat(f.min_confidence) };
      const dry = await doAction("bulk", { ...sel, dry_run: true }, { quiet: true });
      if (!dry) return;
      if (!dry.would_change) { toast("nothing to accept: no pending suggestion in this selection"); return; }
      if (!confirm(`Accept the suggestion of the ${dry.would_change} pending sample(s) this filter selects? (one batch: Undo reverts it whole)`)) return;
      const res = await doAction("bulk", { ...sel, expect: dry.would_change }, { quiet: true });
      if (res) { toast(`accepted ${res.entries.length} suggestions (batch ${res.batch}) — u undoes the batch`); render(); }
    },
    text: "Accept all suggestions shown",
  });
  const first = data.total ? data.offset + 1 : 0, last = data.offset + data.items.length;
  const pager = el("div", { cls: "pager" },
    el("button", { type: "button", disabled: data.offset === 0, onclick: () => go("#/queue?" + qs({ ...f, offset: Math.max(0, data.offset - PAGE) })), text: "‹ previous page" }),
    el("span", { cls: "muted", id: "page-info", text: `${first}–${last} of ${data.total}` }),
    el("button", { type: "button", disabled: last >= data.total, onclick: () => go("#/queue?" + qs({ ...f, offset: data.offset + PAGE })), text: "next page ›" }));
  const rows = data.items.map((r, i) => el("tr", { cls: i === state.sel ? "sel" : "", "data-id": r.sample, onclick: () => { state.sel = i; openSelected(); } },
    el("td", {}, r.provenance === null ? el("span", { cls: "muted", text: "not in the store" }) : el("img", { src: imgUrl(r.sample, 160), alt: "", loading: "lazy" })),
    el("td", { text: r.sample }), el("td", { text: r.given_label }), el("td", { text: r.suggested_label && r.suggested_label !== r.given_label ? r.suggested_label : "" }),
    el("td", { cls: "num", text: pct(r.confidence) }), el("td", { cls: "status-" + r.status, text: r.status }),
    el("td", {}, el("span", { cls: "tag " + r.decision, text: r.decision })), el("td", { text: r.current_label || "" })));
  setMain(
    el("div", { cls: "filters" }, statusSel, labelIn, conf, review, text, bulkBtn, el("span", { cls: "muted", text: "j/k move · a accept · x keep · Enter open · u undo" })),
    pager,
    el("table", { cls: "data", id: "queue" }, el("thead", {}, el("tr", {}, ...["", "sample", "given", "suggested", "P(wrong)", "status", "review", "label now"].map((h) => el("th", { text: h })))), el("tbody", {}, ...rows)),
    pager.cloneNode(true));
}

function selectRow(i) {
  const items = state.queue ? state.queue.data.items : [];
  if (!items.length) return;
  state.sel = Math.max(0, Math.min(items.length - 1, i));
  document.querySelectorAll("#queue tbody tr").forEach((tr, j) => tr.classList.toggle("sel", j === state.sel));
  const tr = document.querySelectorAll("#queue tbody tr")[state.sel];
  if (tr) tr.scrollIntoView({ block: "nearest" });
}

function openSelected() {
  const items = state.queue ? state.queue.data.items : [];
  if (!items.length) return;
  const f = state.queue.filter;
  go("#/sample?" + qs({ id: items[state.sel].sample, status: f.status, label: f.label, min_confidence: f.min_confidence, review: f.review, q: f.q, sort: f.sort }));
}

async function queueAction(kind) {
  const items = state.queue ? state.queue.data.items : [];
  if (!items.length) return;
  const res = await doAction(kind, { sample: items[state.sel].sample, expect_label: items[state.sel].current_label });
  if (res) { await renderQueue(); selectRow(state.sel + 1); }
}

// -------------------------------------------------------------- sample view

function makeViewer(width, height, src, region, onRegion) {
  const viewer = el("div", { cls: "viewer", tabindex: 0 });
  const stage = el("div", { cls: "stage" });
  const img = el("img", { src, width, height, alt: "photo", draggable: "false" });
  const svg = el("svg:svg", { cls: "overlay", width, height, viewBox: `0 0 ${width} ${height}` });
  const hint = el("div", { cls: "hint", text: "wheel: zoom · drag: pan · double-click: fit · b box · g polygon" });
  stage.append(img, svg);
  viewer.append(stage, hint);
  const v = { s: 1, tx: 0, ty: 0, mode: null, pts: [], start: null, drag: null };
  const apply = () => { stage.style.transform = `translate(${v.tx}px, ${v.ty}px) scale(${v.s})`; };
  const fit = () => {
    const r = viewer.getBoundingClientRect();
    v.s = Math.min(r.width / width, r.height / height) || 1;
    v.tx = (r.width - width * v.s) / 2; v.ty = (r.height - height * v.s) / 2; apply();
  };
  const toImage = (e) => { const r = viewer.getBoundingClientRect(); return [(e.clientX - r.left - v.tx) / v.s, (e.clientY - r.top - v.ty) / v.s]; };
  const clamp = ([x, y]) => [Math.max(0, Math.min(width, x)), Math.max(0, Math.min(height, y))];
  const drawRegion = (reg) => {
    svg.querySelectorAll(".region").forEach((n) => n.remove());
    if (!reg) return;
    const pts = reg.polygon || [[reg.box[0], reg.box[1]], [reg.box[2], reg.box[1]], [reg.box[2], reg.box[3]], [reg.box[0], reg.box[3]]];
    svg.appendChild(el("svg:polygon", { cls: "region", points: pts.map((p) => p.join(",")).join(" ") }));
  };
  let draft = null;
  const setDraft = (pts) => {
    if (draft) draft.remove();
    draft = pts.length ? el("svg:polyline", { cls: "draft", points: pts.map((p) => p.join(",")).join(" ") }) : null;
    if (draft) svg.appendChild(draft);
  };
  const finish = (reg) => { v.mode = null; v.pts = []; setDraft([]); viewer.classList.remove("drawing"); hint.textContent = "wheel: zoom · drag: pan · double-click: fit · b box · g polygon"; if (reg) onRegion(reg); };
  viewer.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = viewer.getBoundingClientRect(), mx = e.clientX - r.left, my = e.clientY - r.top;
    const k = Math.exp(-e.deltaY * 0.0015), s2 = Math.max(0.05, Math.min(40, v.s * k));
    v.tx = mx - (mx - v.tx) * s2 / v.s; v.ty = my - (my - v.ty) * s2 / v.s; v.s = s2; apply();
  }, { passive: false });
  viewer.addEventListener("mousedown", (e) => {
    if (v.mode === "box") { v.start = clamp(toImage(e)); return; }
    if (v.mode === "polygon") return;
    v.drag = [e.clientX - v.tx, e.clientY - v.ty];
  });
  window.addEventListener("mousemove", (e) => {
    if (v.mode === "box" && v.start) { const p = clamp(toImage(e)); const s = v.start; setDraft([s, [p[0], s[1]], p, [s[0], p[1]], s]); }
    else if (v.mode === "polygon" && v.pts.length) setDraft([...v.pts, clamp(toImage(e))]);
    else if (v.drag) { v.tx = e.clientX - v.drag[0]; v.ty = e.clientY - v.drag[1]; apply(); }
  });
  window.addEventListener("mouseup", (e) => {
    if (v.mode === "box" && v.start) {
      const p = clamp(toImage(e)), s = v.start; v.start = null;
      const box = [Math.min(s[0], p[0]), Math.min(s[1], p[1]), Math.max(s[0], p[0]), Math.max(s[1], p[1])].map((x) => Math.round(x * 10) / 10);
      if (box[2] - box[0] < 3 || box[3] - box[1] < 3) { toast("the box is too small: drag across the object", true); setDraft([]); return; }
      finish({ box });
    }
    v.drag = null;
  });
  viewer.addEventListener("click", (e) => { if (v.mode === "polygon") { v.pts.push(clamp(toImage(e)).map((x) => Math.round(x * 10) / 10)); setDraft(v.pts); } });
  viewer.addEventListener("dblclick", (e) => {
    if (v.mode === "polygon") { e.preventDefault(); v.pts.pop(); closePolygon(); return; }
    fit();
  });
  const closePolygon = () => { if (v.pts.length >= 3) finish({ polygon: v.pts.slice() }); else toast("a polygon needs at least 3 points", true); };
  v.startMode = (mode) => {
    v.mode = mode; v.pts = []; v.start = null; viewer.classList.add("drawing");
    hint.textContent = mode === "box" ? "drag a box around the object · Esc cancels" : "click the corners · Enter or double-click closes · Esc cancels";
    viewer.focus();
  };
  v.key = (e) => {
    if (!v.mode) return false;
    if (e.key === "Escape") { finish(null); return true; }
    if (e.key === "Enter" && v.mode === "polygon") { closePolygon(); return true; }
    return false;
  };
  v.fit = fit; v.drawRegion = drawRegion; v.node = viewer;
  img.addEventListener("load", fit);
  requestAnimationFrame(fit);
  drawRegion(region);
  return v;
}

function pairView(query, qsize, n) {
  const H = 240;
  if (!qsize || !n.size) return el("img", { src: imgUrl(n.id, 400), alt: n.id, style: "max-height:240px" });
  const sq = H / qsize[1], sn = H / n.size[1], wq = qsize[0] * sq, wn = n.size[0] * sn;
  const svg = el("svg:svg", { viewBox: `0 0 ${wq + wn + 6} ${H}`, width: wq + wn + 6, height: H, role: "img", "aria-label": `${query} matched with ${n.id}` });
  svg.appendChild(el("svg:image", { href: imgUrl(query, 400), x: 0, y: 0, width: wq, height: H }));
  svg.appendChild(el("svg:image", { href: imgUrl(n.id, 400), x: wq + 6, y: 0, width: wn, height: H }));
  const p = n.pair;
  if (p) {
    const qp = p.query_points || [], np = p.neighbour_points || [];
    const step = Math.max(1, Math.ceil(qp.length / 40));
    for (let i = 0; i < qp.length && i < np.length; i += step) {
      svg.appendChild(el("svg:line", { cls: "match", x1: qp[i][0] * sq, y1: qp[i][1] * sq, x2: wq + 6 + np[i][0] * sn, y2: np[i][1] * sn }));
    }
    if (p.neighbour_polygon) svg.appendChild(el("svg:polygon", { cls: "outline", points: p.neighbour_polygon.map((q) => `${wq + 6 + q[0] * sn},${q[1] * sn}`).join(" ") }));
    if (p.query_polygon) svg.appendChild(el("svg:polygon", { cls: "outline", points: p.query_polygon.map((q) => `${q[0] * sq},${q[1] * sq}`).join(" ") }));
  }
  return svg;
}

async function renderSample() {
  const p = routeParams();
  const id = p.get("id");
  const filter = { status: p.get("status") || "", label: p.get("label") || "", min_confidence: p.get("min_confidence") || "", review: p.get("review") || "all", q: p.get("q") || "", sort: p.get("sort") || "priority" };
  const s = await api("/api/sample?" + qs({ id, ...filter }));
  state.sample = s;
  const size = s.size || [1000, 1000];
  const setRegion = async (reg) => { const res = await doAction("region", { sample: s.sample, ...reg }); if (res) render(); };
  const viewer = makeViewer(size[0], size[1], imgUrl(s.sample, 1600), s.region, setRegion);
  state.viewer = viewer;
  const nav = (target) => target && go("#/sample?" + qs({ id: target, ...filter }));
  state.sampleNav = { prev: () => nav(s.queue.previous), next: () => nav(s.queue.next), filter };
  const relabelIn = el("input", { type: "text", list: "label-list", id: "relabel-input", placeholder: "label or alias", "aria-label": "new label" });
  const relabel = async () => { const v = relabelIn.value.trim(); if (!v) return; const res = await doAction("relabel", { sample: s.sample, label: v, expect_label: s.current_label }); if (res) render(); };
  relabelIn.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); relabel(); } e.stopPropagation(); });
  const sentence = el("input", { type: "text", id: "tell-input", placeholder: "say what it is: \"that's the Pantheon, not the Louvre\"", style: "flex:1; min-width:260px", "aria-label": "sentence" });
  const tellMsg = el("div", { cls: "tell-msg", id: "tell-msg" });
  const tell = async () => {
    const v = sentence.value.trim();
    if (!v) return;
    // first what it means, then (after the person agrees) the change: as consist tell asks "apply?"
    let plan;
    try { plan = await api("/api/actions/tell", { sample: s.sample, sentence: v, apply: false }); } catch (e) { tellMsg.replaceChildren(el("span", { cls: "status-flagged", text: e.message })); return; }
    if (!plan.actions.length) { tellMsg.replaceChildren(el("span", { text: "understood nothing to change" })); return; }
    tellMsg.replaceChildren(
      el("div", { text: `understood (${plan.parser}):` }),
      el("ul", {}, ...plan.actions.map((a) => el("li", { text: a }))),
      ...plan.warnings.map((w) => el("div", { cls: "status-suspect", text: "warning: " + w })),
      el("button", { type: "button", cls: "primary", id: "tell-apply", onclick: async () => {
        const res = await doAction("tell", { sample: s.sample, sentence: v, apply: true }, { quiet: true });
        if (res) { toast(res.entries.length ? describe(res.entries) : "nothing changed: it was already so"); render(); }
      }, text: "Apply" }), " ",
      el("button", { type: "button", onclick: () => tellMsg.replaceChildren(), text: "Cancel" }));
  };
  sentence.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); tell(); } e.stopPropagation(); });
  const hasSuggestion = s.suggested_label && s.suggested_label !== s.given_label;
  const actions = el("div", { cls: "actions" },
    hasSuggestion ? el("button", { type: "button", cls: "primary", id: "accept-btn", onclick: async () => { if (await doAction("accept", { sample: s.sample, expect_label: s.current_label })) render(); }, text: `Accept “${s.suggested_label}” (a)` }) : el("span", { cls: "muted", text: "the audit suggests no other label" }),
    el("button", { type: "button", id: "keep-btn", onclick: async () => { if (await doAction("keep", { sample: s.sample, expect_label: s.current_label })) render(); }, text: `Keep “${s.given_label}” (x)` }),
    relabelIn, el("button", { type: "button", id: "relabel-btn", onclick: relabel, text: "Relabel (e)" }));
  const draw = el("div", { cls: "actions" },
    el("button", { type: "button", id: "box-btn", onclick: () => viewer.startMode("box"), text: "Draw box (b)" }),
    el("button", { type: "button", id: "polygon-btn", onclick: () => viewer.startMode("polygon"), text: "Draw polygon (g)" }),
    el("button", { type: "button", disabled: !s.region, onclick: () => setRegion({}), text: "Clear region" }),
    el("span", { cls: "muted", text: s.region ? "the object's region is set (yellow)" : "no region: verification uses the whole photo" }));
  const sayRow = el("div", {}, el("div", { cls: "actions" }, sentence, el("button", { type: "button", id: "tell-btn", onclick: tell, text: "Say (t)" })), tellMsg);
  const verdict = el("div", { cls: "verdict box" },
    el("div", { cls: "big" }, el("span", { cls: "status-" + s.status, text: s.status }), ` · given “${s.given_label}”`, hasSuggestion ? ` → suggested “${s.suggested_label}”` : "", ` · P(wrong) ${pct(s.confidence)}`),
    el("div", {}, "label now: ", el("b", { id: "current-label", text: s.current_label || "–" }), ` (${s.provenance || "?"}) `, el("span", { cls: "tag " + s.decision, id: "decision", text: s.decision })),
    el("p", { text: s.reason }),
    el("div", { cls: "muted", text: `basis: ${s.basis} · group of ${s.group_size} verified views · ${s.witnesses} witnesses · ${s.queue.position >= 0 ? `${s.queue.position + 1} of ${s.queue.total} in the queue` : "not in the current queue"}` }));
  const votes = el("table", { cls: "data" }, el("thead", {}, el("tr", {}, ...["checker", "label", "support", "confidence", "neighbour"].map((h) => el("th", { text: h })))),
    el("tbody", {}, ...s.votes.slice(0, 30).map((v) => el("tr", {}, el("td", { text: v.checker }), el("td", { text: v.label }), el("td", { cls: "num", text: v.support }), el("td", { cls: "num", text: v.confidence }), el("td", { text: v.neighbour || "" })))));
  const hist = el("table", { cls: "data" }, el("tbody", {}, ...s.history.map((e) => el("tr", {},
    el("td", { text: "#" + e.seq }), el("td", { text: e.action }), el("td", { text: e.reason }), el("td", { text: e.provenance }),
    el("td", {}, e.undone_by ? el("span", { cls: "muted", text: "undone by #" + e.undone_by }) : e.action === "undo" ? "" : el("button", { type: "button", onclick: async () => { if (await doAction("undo", { seq: e.seq })) render(); }, text: "Undo" }))))));
  const pairs = el("div", { cls: "pairs" }, ...s.neighbours.slice(0, 6).map((n) => el("div", { cls: "pair" },
    pairView(s.sample, s.size, n),
    el("div", { cls: "cap" }, el("a", { href: "#/sample?" + qs({ id: n.id }), text: n.id }), ` · ${n.current_label || n.label || "?"}`,
      n.pair ? ` · ${n.pair.verified ? "verified" : "not verified"}, ${n.pair.inliers} inliers${n.pair.model ? " (" + n.pair.model + ")" : ""}` : " · not verified (retrieved only)"))));
  setMain(
    el("div", { cls: "actions" },
      el("a", { cls: "button", href: "#/queue?" + qs(filter), text: "‹ queue (q)" }),
      el("button", { type: "button", disabled: !s.queue.previous, onclick: state.sampleNav.prev, text: "previous (p)" }),
      el("button", { type: "button", disabled: !s.queue.next, onclick: state.sampleNav.next, text: "next (n)" }),
      el("h2", { style: "margin:0 0 0 8px", text: s.sample })),
    el("div", { cls: "sample" },
      el("div", {}, viewer.node, actions, draw, sayRow),
      el("div", {}, verdict, el("h2", { style: "margin-top:12px", text: "Neighbours (verified first)" }), s.neighbours.length ? pairs : el("p", { cls: "muted", text: "no neighbours" }),
        el("h2", { style: "margin-top:12px", text: "Votes" }), votes, el("h2", { style: "margin-top:12px", text: "History of this sample" }), hist)));
}

// -------------------------------------------------------------------- search

async function renderSearch() {
  const p = routeParams();
  let query = p.get("id") ? { sample: p.get("id") } : state.searchUpload || null;
  const box = el("div", {});
  const results = el("div", { cls: "results", id: "search-results" });
  const pick = el("input", { type: "text", placeholder: "a sample id", value: query && query.sample ? query.sample : "", "aria-label": "sample id" });
  pick.addEventListener("change", () => go("#/search?" + qs({ id: pick.value.trim() })));
  const file = el("input", { type: "file", accept: "image/*", "aria-label": "image file" });
  const drop = el("div", { cls: "drop", text: "…or drop an image here" });
  const takeFile = (f) => {
    if (!f) return;
    const reader = new FileReader();
    reader.onload = () => {
      const b64 = String(reader.result).split(",")[1];
      const im = new Image();
      im.onload = () => { state.searchUpload = { image: b64, size: [im.naturalWidth, im.naturalHeight], url: String(reader.result) }; go("#/search?upload=1"); render(); };
      im.src = String(reader.result);
    };
    reader.readAsDataURL(f);
  };
  file.addEventListener("change", () => takeFile(file.files[0]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); takeFile(e.dataTransfer.files[0]); });
  let region = null;
  let viewer = null;
  if (query) {
    let size = query.size, src = query.url;
    if (query.sample) {
      try {
        const s = await api("/api/sample?" + qs({ id: query.sample }));
        size = s.size; src = imgUrl(query.sample, 1600);
      } catch (e) { toast(e.message, true); query = null; }
    }
    if (query && size) {
      viewer = makeViewer(size[0], size[1], src, null, (reg) => { region = reg; viewer.drawRegion(reg); });
      viewer.node.classList.add("small");
      state.viewer = viewer;
    }
  }
  const run = async () => {
    if (!query) { toast("pick a sample or drop an image first", true); return; }
    results.replaceChildren(el("p", { cls: "muted", text: "searching…" }));
    try {
      const res = await api("/api/search", { ...(query.sample ? { sample: query.sample } : { image: query.image }), ...(region || {}) });
      results.replaceChildren(...res.results.map((r) => {
        const card = el("div", { cls: "result" });
        if (r.size) {
          const svg = el("svg:svg", { viewBox: `0 0 ${r.size[0]} ${r.size[1]}` });
          svg.appendChild(el("svg:image", { href: imgUrl(r.id, 400), x: 0, y: 0, width: r.size[0], height: r.size[1] }));
          if (r.pair && r.pair.verified && r.pair.neighbour_polygon) svg.appendChild(el("svg:polygon", { cls: "outline", style: `stroke-width:${Math.max(2, r.size[0] / 150)}`, points: r.pair.neighbour_polygon.map((q) => q.join(",")).join(" ") }));
          card.appendChild(svg);
        } else card.appendChild(el("img", { src: imgUrl(r.id, 400), alt: r.id, style: "width:100%" }));
        card.appendChild(el("div", {}, el("b", { text: `${r.rank + 1}. ${r.label || "?"}` }), " ", el("a", { href: "#/sample?" + qs({ id: r.id }), text: r.id })));
        card.appendChild(el("div", { cls: "muted", text: r.pair ? `${r.pair.verified ? "verified" : "not verified"} · ${r.pair.inliers} inliers` : `similarity ${r.similarity}` }));
        return card;
      }));
      if (!res.results.length) results.replaceChildren(el("p", { cls: "muted", text: "no results" }));
    } catch (e) { results.replaceChildren(); toast(e.message, true); }
  };
  box.append(
    el("div", { cls: "filters" }, el("b", { text: "Search the store by image" }), pick, file,
      el("button", { type: "button", disabled: !viewer, onclick: () => viewer && viewer.startMode("box"), text: "Draw box (b)" }),
      el("button", { type: "button", disabled: !viewer, onclick: () => viewer && viewer.startMode("polygon"), text: "Draw polygon (g)" }),
      el("button", { type: "button", cls: "primary", id: "search-btn", onclick: run, text: "Search" })),
    drop);
  setMain(box, viewer ? viewer.node : el("p", { cls: "muted", text: "Pick a sample or drop an image, draw the object you mean (optional), then Search: the ranked samples with the object localised in each." }), el("h2", { style: "margin-top:12px", text: "Results" }), results);
}

// ------------------------------------------------------------------- history

async function renderHistory() {
  const h = await api("/api/history?limit=200");
  setMain(el("h2", { text: "Store history (newest first)" }),
    el("p", { cls: "muted", text: "Every change, with who made it; the same as consist history. Undo here equals consist undo SEQ." }),
    el("table", { cls: "data", id: "history" },
      el("thead", {}, el("tr", {}, ...["#", "time", "action", "sample", "provenance", "reason", ""].map((x) => el("th", { text: x })))),
      el("tbody", {}, ...h.entries.map((e) => el("tr", {},
        el("td", { text: e.seq }), el("td", { text: new Date(e.ts * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC" }), el("td", { text: e.action }),
        el("td", {}, el("a", { href: "#/sample?" + qs({ id: e.sample_id }), text: e.sample_id })), el("td", { text: e.provenance }), el("td", { text: e.reason }),
        el("td", {}, e.undone_by ? el("span", { cls: "muted", text: "undone by #" + e.undone_by }) : e.action === "undo" || e.action === "conflict" ? "" : el("button", { type: "button", onclick: async () => { if (await doAction("undo", { seq: e.seq })) render(); }, text: "Undo" })))))));
}

// -------------------------------------------------------------------- router

async function render() {
  const hash = location.hash || "#/";
  const name = hash.startsWith("#/queue") ? "queue" : hash.startsWith("#/sample") ? "sample" : hash.startsWith("#/search") ? "search" : hash.startsWith("#/history") ? "history" : "overview";
  if (name !== state.route && name === "queue") state.selPending = true;
  state.route = name;
  state.viewer = null;
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.nav === name || (name === "sample" && a.dataset.nav === "queue")));
  try {
    if (name === "queue") await renderQueue();
    else if (name === "sample") await renderSample();
    else if (name === "search") await renderSearch();
    else if (name === "history") await renderHistory();
    else await renderOverview();
    document.body.dataset.ready = name;
  } catch (e) {
    setMain(el("p", { cls: "status-flagged", text: "error: " + e.message }));
  }
}

async function loadLabels() {
  try {
    const l = await api("/api/labels");
    const list = el("datalist", { id: "label-list" }, ...l.labels.map((x) => el("option", { value: x })), ...Object.entries(l.aliases).map(([a, lab]) => el("option", { value: a, label: `${a} → ${lab}` })));
    const old = document.getElementById("label-list");
    if (old) old.remove();
    document.body.appendChild(list);
  } catch (e) { /* completion is a convenience */ }
}

function onKey(e) {
  if (e.target && (e.target.tagName === "INPUT" || e.target.tagName === "SELECT" || e.target.tagName === "TEXTAREA")) return;
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  if (state.viewer && state.viewer.key && state.viewer.key(e)) { e.preventDefault(); return; }
  const help = document.getElementById("help");
  if (e.key === "?") { help.hidden = !help.hidden; return; }
  if (e.key === "Escape") { help.hidden = true; return; }
  if (e.key === "u") { e.preventDefault(); undoLast(); return; }
  if (state.route === "queue") {
    if (e.key === "j" || e.key === "ArrowDown") { e.preventDefault(); selectRow(state.sel + 1); }
    else if (e.key === "k" || e.key === "ArrowUp") { e.preventDefault(); selectRow(state.sel - 1); }
    else if (e.key === "Enter" || e.key === "o") { e.preventDefault(); openSelected(); }
    else if (e.key === "a") { e.preventDefault(); queueAction("accept"); }
    else if (e.key === "x") { e.preventDefault(); queueAction("keep"); }
  } else if (state.route === "sample" && state.sample) {
    const s = state.sample;
    if (e.key === "a") { e.preventDefault(); const b = document.getElementById("accept-btn"); if (b) b.click(); else toast("the audit suggests no other label for this sample", true); }
    else if (e.key === "x") { e.preventDefault(); document.getElementById("keep-btn").click(); }
    else if (e.key === "e") { e.preventDefault(); document.getElementById("relabel-input").focus(); }
    else if (e.key === "t") { e.preventDefault(); document.getElementById("tell-input").focus(); }
    else if (e.key === "b") { e.preventDefault(); state.viewer.startMode("box"); }
    else if (e.key === "g") { e.preventDefault(); state.viewer.startMode("polygon"); }
    else if (e.key === "n" || e.key === "j") { e.preventDefault(); state.sampleNav.next(); }
    else if (e.key === "p" || e.key === "k") { e.preventDefault(); state.sampleNav.prev(); }
    else if (e.key === "q") { e.preventDefault(); go("#/queue?" + qs(state.sampleNav.filter)); }
    void s;
  } else if (state.route === "search" && state.viewer) {
    if (e.key === "b") { e.preventDefault(); state.viewer.startMode("box"); }
    else if (e.key === "g") { e.preventDefault(); state.viewer.startMode("polygon"); }
  }
}

function init() {
  readToken();
  document.getElementById("undo-btn").addEventListener("click", undoLast);
  document.getElementById("help-btn").addEventListener("click", () => { document.getElementById("help").hidden = false; });
  document.getElementById("help-close").addEventListener("click", () => { document.getElementById("help").hidden = true; });
  window.addEventListener("hashchange", () => { clearToast(); render(); });
  document.addEventListener("keydown", onKey);
  loadLabels();
  render();
}

init();
