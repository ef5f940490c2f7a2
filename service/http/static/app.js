// runwatch dashboard: plain JavaScript over the server's /api, charts by the vendored uPlot.
// Every page is this script reading location.pathname; links are ordinary page loads.
"use strict";

const COLORS = ["#2e5bff", "#e8590c", "#12805c", "#9c36b5", "#c2255c", "#0b7285", "#5c940d", "#a61e4d",
  "#364fc7", "#d9480f", "#087f5b", "#862e9c"];
const SEVERITY_CLASS = { INFO: "info", WARNING: "warning", ERROR: "error", CRITICAL: "critical" };

// ---------------------------------------------------------------------------------------------
// small helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value == null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child == null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function qs(params) {
  const p = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value == null || value === "") continue;
    if (Array.isArray(value)) value.forEach((v) => p.append(key, v));
    else p.append(key, value);
  }
  const s = p.toString();
  return s ? "?" + s : "";
}

async function api(path, params = {}) {
  const response = await fetch(path + qs(params), { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (response.status === 401) {
    location.href = "/login" + qs({ next: location.pathname + location.search });
    throw new Error("sign in needed");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

const num = (v) => (typeof v === "string" ? Number(v) : v);
function fmt(v) {
  v = num(v);
  if (v == null) return "";
  if (!Number.isFinite(v)) return String(v);
  if (Number.isInteger(v) && Math.abs(v) < 1e15) return v.toLocaleString("en-US");
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(3) : v.toPrecision(4);
}
// A run's last step: null (no step logged yet) shows as "-".
const stepText = (step) => (step == null ? "-" : fmt(step));
function tick(v) {
  // Axis labels: short, so they fit the axis.
  if (v == null) return "";
  const a = Math.abs(v);
  if (a === 0) return "0";
  if (a < 1e-3 || a >= 1e6) return v.toExponential(1).replace("e+", "e");
  return String(Number(v.toPrecision(3)));
}
function ago(t) {
  t = num(t);
  if (!t) return "";
  const s = Date.now() / 1000 - t;
  if (s < 60) return `${Math.max(0, Math.round(s))} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return new Date(t * 1000).toISOString().slice(0, 16).replace("T", " ");
}
const runLink = (id) => "/runs/" + encodeURIComponent(id);
const projectLink = (p) => "/projects/" + encodeURIComponent(p);
const badge = (text, cls) => el("span", { class: `badge ${cls || text}`, text });
const severityBadge = (s) => badge(s, SEVERITY_CLASS[s] || "");

function setMain(...children) {
  const main = document.getElementById("main");
  main.replaceChildren(...children);
  return main;
}
function showError(where, error) {
  where.replaceChildren(el("div", { class: "error-box", text: String(error.message || error) }));
}
function markLive(on) {
  const dot = document.getElementById("live");
  if (dot) dot.classList.toggle("on", on);
}
function stream(params, handlers) {
  const source = new EventSource("/api/stream" + qs(params));
  source.onopen = () => markLive(true);
  source.onerror = () => markLive(false);
  for (const [name, fn] of Object.entries(handlers)) {
    source.addEventListener(name, (e) => fn(JSON.parse(e.data)));
  }
  window.addEventListener("pagehide", () => source.close());
  return source;
}
function rendered(extra) {
  // Read by the browser tests and bench/dashboard_render.py: stamped at the next frame, once the charts are painted.
  requestAnimationFrame(() => {
    window.__runwatch = Object.assign({ renderedAt: performance.now() }, extra || {});
    document.body.dataset.rendered = "1";
  });
}

// ---------------------------------------------------------------------------------------------
// projects

async function projectsPage() {
  document.title = "runwatch: projects";
  const body = el("div", {}, el("p", { class: "muted", text: "Loading…" }));
  setMain(el("h1", { text: "Projects" }), body);
  async function load() {
    try {
      const { projects } = await api("/api/projects");
      if (!projects.length) {
        body.replaceChildren(el("p", { class: "muted", text: "No runs yet. Stream one with the SDK (runwatch.client) or `runwatch replay`." }));
        return;
      }
      body.replaceChildren(el("table", { class: "grid", id: "projects" },
        el("thead", {}, el("tr", {}, ["Project", "Runs", "Running", "Last activity"].map((h) => el("th", { text: h })))),
        el("tbody", {}, projects.map((p) => el("tr", {},
          el("td", {}, el("a", { href: projectLink(p.name), text: p.name })),
          el("td", { class: "num", text: fmt(p.runs) }),
          el("td", { class: "num", text: fmt(p.running) }),
          el("td", { text: ago(p.last_activity) }))))));
    } catch (e) { showError(body, e); }
    rendered();
  }
  await load();
  setInterval(load, 10000);
}

// ---------------------------------------------------------------------------------------------
// a project's runs: sortable, filterable, pick runs to compare

const RUN_COLUMNS = [
  ["run_id", "Run"], ["status", "Status"], ["health", "Health"], ["open", "Open incidents"],
  ["last_step", "Last step"], ["event_count", "Events"], ["start_time", "Started"],
];
const BADGE_ORDER = { healthy: 0, info: 1, warning: 2, error: 3, critical: 4 };

async function runsPage(project) {
  document.title = `runwatch: ${project}`;
  const url = new URL(location.href);
  const state = {
    sort: url.searchParams.get("sort") || "start_time",
    desc: url.searchParams.get("desc") !== "0",
    q: url.searchParams.get("q") || "",
    status: url.searchParams.get("status") || "",
    runs: [],
    picked: new Set(),
  };
  const search = el("input", { type: "search", placeholder: "filter: run, status, kind…", value: state.q, id: "filter" });
  const status = el("select", { id: "status-filter" },
    ["", "RUNNING", "FINISHED", "FAILED", "KILLED"].map((s) => el("option", { value: s, text: s || "any status", selected: s === state.status })));
  const compare = el("button", { class: "primary", id: "compare", disabled: true, text: "Compare selected" });
  const table = el("div", {}, el("p", { class: "muted", text: "Loading…" }));
  setMain(
    el("div", { class: "crumbs" }, el("a", { href: "/", text: "Projects" }), " / "),
    el("h1", { text: project }),
    el("div", { class: "toolbar" }, search, status, compare, el("a", { href: "/anomalies" + qs({ project }), text: "anomalies of this project" })),
    table);

  function keep() {
    const u = new URL(location.href);
    for (const [k, v] of [["sort", state.sort], ["desc", state.desc ? "" : "0"], ["q", state.q], ["status", state.status]]) {
      if (v) u.searchParams.set(k, v); else u.searchParams.delete(k);
    }
    history.replaceState(null, "", u);
  }
  function value(r, key) {
    if (key === "health") return BADGE_ORDER[r.health.badge];
    if (key === "open") return r.health.incidents;
    if (key === "last_step") return r.last_step ?? -1;  // no step yet: before step 0
    return num(r[key]);
  }
  function draw() {
    const q = state.q.toLowerCase();
    let rows = state.runs.filter((r) => (!state.status || r.status === state.status) && (!q
      || r.run_id.toLowerCase().includes(q) || r.status.toLowerCase().includes(q) || r.health.badge.includes(q)
      || Object.keys(r.health.open).some((k) => k.toLowerCase().includes(q))));
    rows.sort((a, b) => {
      const x = value(a, state.sort), y = value(b, state.sort);
      const c = typeof x === "string" ? x.localeCompare(y) : x - y;
      return state.desc ? -c : c;
    });
    const head = el("tr", {}, el("th", {}), RUN_COLUMNS.map(([key, label]) => el("th", {
      class: "sortable" + (state.sort === key ? (state.desc ? " sorted-desc" : " sorted-asc") : ""),
      dataset: { key }, text: label,
      onclick: () => { state.desc = state.sort === key ? !state.desc : true; state.sort = key; keep(); draw(); },
    })));
    const body = rows.map((r) => el("tr", { dataset: { run: r.run_id } },
      el("td", {}, el("input", { type: "checkbox", checked: state.picked.has(r.run_id), onchange: (e) => {
        if (e.target.checked) state.picked.add(r.run_id); else state.picked.delete(r.run_id);
        compare.disabled = state.picked.size < 2;
      } })),
      el("td", {}, el("a", { href: runLink(r.run_id), text: r.run_id })),
      el("td", {}, badge(r.status)),
      el("td", {}, badge(r.health.badge)),
      el("td", {}, Object.entries(r.health.open).map(([k, n]) => el("span", { class: "chip", text: `${k} ${n}` }))),
      el("td", { class: "num", text: stepText(r.last_step) }),
      el("td", { class: "num", text: fmt(r.event_count) }),
      el("td", { text: ago(r.start_time) })));
    table.replaceChildren(el("table", { class: "grid", id: "runs" }, el("thead", {}, head), el("tbody", {}, body)),
      el("p", { class: "muted", text: `${rows.length} of ${state.runs.length} runs` }));
  }
  search.addEventListener("input", () => { state.q = search.value; keep(); draw(); });
  status.addEventListener("change", () => { state.status = status.value; keep(); draw(); });
  compare.addEventListener("click", () => { location.href = "/compare" + qs({ runs: [...state.picked].join(",") }); });
  let pending = null;
  async function load() {
    try {
      state.runs = (await api("/api/runs", { project })).runs;
      draw();
    } catch (e) { showError(table, e); }
  }
  await load();
  rendered();
  setInterval(load, 5000);
  stream({ project }, { anomaly: () => { clearTimeout(pending); pending = setTimeout(load, 300); } });
}

// ---------------------------------------------------------------------------------------------
// charts: group metrics, draw with uPlot, place anomaly markers over them

function chartGroup(name) {
  if (/(^|[/_])loss$|^loss([/_]|$)/.test(name)) return ["Loss", 0];
  if (/^(val|eval|valid|test)[/_]/.test(name)) return ["Validation metrics", 1];
  if (/(^|[/_])(lr|learning_rate)$/.test(name)) return ["Learning rate", 2];
  if (/^grad_norm/.test(name)) return ["Gradient norms (per layer)", 3];
  if (/^update_ratio\//.test(name)) return ["Update / weight ratio (per layer)", 4];
  if (/^weight_norm\//.test(name)) return ["Weight norms (per layer)", 5];
  const act = /^act\/([^/]+)\//.exec(name);
  if (act) return [`Activations: ${act[1]} (per layer)`, 6];
  if (/(^|[/_])(step_time|data_time)$|_time$|^time\//.test(name)) return ["System: time per step (s)", 7];
  if (/mem/.test(name)) return ["System: memory", 8];
  if (/^(sys|system|gpu|cpu)[/_]/.test(name)) return ["System", 9];
  const prefix = name.includes("/") ? name.split("/")[0] + "/*" : "Other metrics";
  return [prefix, 10];
}

function groupMetrics(names, maxSeries = 12) {
  const groups = new Map();
  for (const name of names) {
    const [title, order] = chartGroup(name);
    if (!groups.has(title)) groups.set(title, { title, order, names: [] });
    groups.get(title).names.push(name);
  }
  const out = [];
  for (const g of [...groups.values()].sort((a, b) => a.order - b.order || a.title.localeCompare(b.title))) {
    for (let i = 0; i < g.names.length; i += maxSeries) {
      const part = g.names.length > maxSeries ? ` (${i / maxSeries + 1})` : "";
      out.push({ title: g.title + part, names: g.names.slice(i, i + maxSeries) });
    }
  }
  return out;
}

function joinSeries(names, series) {
  const tables = names.map((n) => {
    const s = series[n] || { x: [], y: [] };
    return [s.x, s.y];
  });
  if (!tables.length) return [[]];
  return uPlot.join(tables);
}

class Chart {
  constructor(container, title, labels, opts) {
    this.labels = labels;
    this.opts = opts;
    this.markers = [];
    this.box = el("div", { class: "chart", dataset: { title } });
    container.append(this.box);
    const width = Math.max(300, Math.floor(this.box.clientWidth - 12) || 520);
    this.plot = new uPlot({
      title, width, height: 230,
      scales: { x: { time: false } },
      legend: { live: true },
      // Zoom is ours (setSelect below): the range goes into the URL and the server resamples it.
      cursor: { sync: { key: opts.syncKey || "rw" }, drag: { x: true, y: false, setScale: false } },
      series: [{ label: "step", value: (u, v) => (v == null ? "" : fmt(v)) },
        ...labels.map((label, i) => ({ label, stroke: COLORS[i % COLORS.length], width: 1.4, points: { show: false },
          value: (u, v) => (v == null ? "–" : fmt(v)) }))],
      axes: [{ values: (u, vals) => vals.map(tick) }, { size: 58, values: (u, vals) => vals.map(tick) }],
      hooks: {
        setSelect: [(u) => {
          if (u.select.width < 3) return;
          const min = u.posToVal(u.select.left, "x"), max = u.posToVal(u.select.left + u.select.width, "x");
          u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
          if (opts.onZoom) opts.onZoom([min, max]);
        }],
        draw: [() => this.placeMarkers()],
      },
    }, [[], ...labels.map(() => [])], this.box);
    this.plot.over.addEventListener("dblclick", () => { if (opts.onZoom) opts.onZoom(null); });
  }
  setData(data, range) {
    if (range) {
      this.plot.setData(data, false);
      this.plot.setScale("x", { min: range[0], max: range[1] });
    } else {
      this.plot.setData(data, true);
    }
  }
  setMarkers(anomalies, onPick, selectedId) {
    this.markerData = anomalies;
    this.onPick = onPick;
    this.selectedId = selectedId;
    this.placeMarkers();
  }
  placeMarkers() {
    const u = this.plot;
    const over = u.over;
    for (const m of this.markers) m.remove();
    this.markers = [];
    const { min, max } = u.scales.x;
    const lanes = [];  // markers closer than a marker's width stack downwards, so each stays clickable
    const shown = (this.markerData || []).filter((a) => min != null && a.step >= min && a.step <= max)
      .sort((a, b) => a.step - b.step);
    for (const a of shown) {
      const left = u.valToPos(a.step, "x");
      let lane = lanes.findIndex((x) => left - x >= 18);
      if (lane < 0) { lane = lanes.length; lanes.push(left); } else lanes[lane] = left;
      const button = el("button", {
        style: `top:${lane * 19 - 2}px`,
        title: `${a.kind} (${a.severity}) at step ${a.step}`, "aria-label": `${a.kind} at step ${a.step}`,
        onclick: (e) => { e.stopPropagation(); this.onPick(a); },
        onmousedown: (e) => e.stopPropagation(),
      });
      const marker = el("div", {
        class: `marker ${SEVERITY_CLASS[a.severity] || ""}${a.id === this.selectedId ? " selected" : ""}`,
        style: `left:${left}px`, dataset: { id: a.id, kind: a.kind, step: a.step },
      }, button);
      over.append(marker);
      this.markers.push(marker);
    }
  }
  destroy() { this.plot.destroy(); this.box.remove(); }
}

// ---------------------------------------------------------------------------------------------
// a run: live curves, markers, incident detail, logs, advisor

async function runPage(runId) {
  document.title = `runwatch: ${runId}`;
  const url = new URL(location.href);
  const S = {
    runId,
    zoom: url.searchParams.has("from") ? [Number(url.searchParams.get("from")), Number(url.searchParams.get("to"))] : null,
    series: {},   // metric -> {x, y}, the points the charts show
    anomalies: new Map(),
    charts: [],
    metrics: [],
    selected: url.searchParams.get("anomaly"),
    logs: [],
    width: 1000,
  };
  const head = el("div", {});
  const charts = el("div", { class: "charts", id: "charts" });
  const detail = el("div", { class: "card", id: "detail" }, el("p", { class: "muted", text: "Click a marker (◆) or an incident to see its explanation and evidence." }));
  const incidents = el("div", { class: "card" }, el("h2", { text: "Incidents" }), el("div", { class: "incidents", id: "incidents" }));
  const logs = el("div", { class: "card" }, el("h2", { text: "Log lines" }), el("div", { class: "logs", id: "logs" }, el("span", { class: "muted", text: "none" })));
  const advisor = el("div", { class: "card", id: "advisor" }, el("h2", { text: "Advisor" }),
    el("p", { class: "muted", text: "Ranked architecture changes for this run, with their predicted effect." }),
    el("button", { id: "ask-advisor", text: "Ask the advisor", onclick: () => askAdvisor() }), el("div", { id: "suggestions" }));
  const zoomInfo = el("span", { class: "muted", id: "zoom-info" });
  const resetZoom = el("button", { text: "Reset zoom", onclick: () => setZoom(null) });
  setMain(head, el("div", { class: "toolbar" }, resetZoom, zoomInfo,
    el("a", { href: "/compare" + qs({ runs: runId }), text: "compare with other runs" })),
  el("div", { class: "layout" }, el("div", {}, charts), el("div", { class: "side" }, detail, incidents, logs, advisor)));

  let info;
  try {
    info = await api("/api/run", { run: runId });
  } catch (e) { showError(charts, e); rendered(); return; }
  for (const a of info.anomalies) S.anomalies.set(a.id, a);
  S.metrics = info.metrics;
  drawHead(info.run, info.health);

  function drawHead(run, health) {
    S.run = run;
    head.replaceChildren(
      el("div", { class: "crumbs" }, el("a", { href: "/", text: "Projects" }), " / ", el("a", { href: projectLink(run.project), text: run.project }), " /"),
      el("div", { class: "run-head" }, el("h1", { text: run.run_id }), badge(run.status), badge(health.badge),
        el("span", { class: "facts", id: "run-facts", text: `last step ${stepText(run.last_step)} · ${fmt(run.event_count)} events · started ${ago(run.start_time)}${run.end_reason ? " · " + run.end_reason : ""}` })));
  }
  function currentHealth() {
    const open = [...S.anomalies.values()].filter((a) => a.state !== "RESOLVED");
    const worst = Math.max(0, ...open.map((a) => a.level));
    return { badge: ["healthy", "info", "warning", "error", "critical"][worst] || "critical" };
  }

  function chartOf(a) {
    const hit = S.charts.find((c) => a.metrics.some((m) => c.labels.includes(m)));
    return hit || S.charts[0];
  }
  function drawMarkers() {
    const per = new Map(S.charts.map((c) => [c, []]));
    for (const a of S.anomalies.values()) {
      const c = chartOf(a);
      if (c) per.get(c).push(a);
    }
    for (const [c, list] of per) c.setMarkers(list, pick, S.selected);
  }
  // INFO findings the fusion attributed to another incident (its other layers, its symptoms; `part_of` names it):
  // listed under one fold, so that a vanishing gradient across 20 layers reads as one incident, not 40 rows.
  // Anomalies stored before `part_of` existed are recognised by their fold note.
  const FOLDED = /\[INFO: (part|symptom) of the \w+ incident at step -?\d+/;
  function drawIncidents() {
    const list = [...S.anomalies.values()].sort((a, b) => a.first_step - b.first_step);
    const box = document.getElementById("incidents");
    const row = (a) => el("div", { dataset: { id: a.id }, onclick: () => pick(a) },
      severityBadge(a.severity), " ", el("b", { text: a.kind }), ` step ${fmt(a.first_step)}`,
      a.last_step > a.first_step ? `–${fmt(a.last_step)}` : "", el("div", { class: "muted", text: a.explanation }));
    const folded = list.filter((a) => a.severity === "INFO" && (a.part_of || FOLDED.test(a.explanation)));
    const rows = list.filter((a) => !folded.includes(a)).map(row);
    if (folded.length) {
      rows.push(el("details", { class: "folded", open: folded.some((a) => a.id === S.selected) },
        el("summary", { text: `+ ${folded.length} INFO finding(s) of the incidents above (other layers, symptoms)` }),
        ...folded.map(row)));
    }
    box.replaceChildren(...(list.length ? rows : [el("span", { class: "muted", text: "none: no anomaly so far" })]));
  }
  function pick(a) {
    S.selected = a.id;
    const u = new URL(location.href);
    u.searchParams.set("anomaly", a.id);
    history.replaceState(null, "", u);
    detail.replaceChildren(
      el("h3", {}, severityBadge(a.severity), " ", a.kind),
      el("div", { class: "muted", text: `step ${fmt(a.first_step)}${a.last_step > a.first_step ? "–" + fmt(a.last_step) : ""} · ${a.detector} ${a.detector_version} · score ${fmt(a.score)} · ${a.occurrences} occurrence(s), revision ${a.revision}${a.layer ? " · layer " + a.layer : ""}` }),
      el("p", { class: "explanation", id: "explanation", text: a.explanation }),
      a.evidence.length ? el("div", { class: "evidence" }, el("table", { id: "evidence" }, el("thead", {}, el("tr", {}, el("th", { text: "metric" }), el("th", { text: "step" }), el("th", { text: "value" }))),
        el("tbody", {}, a.evidence.map((e) => el("tr", {}, el("td", { class: "mono", text: e.metric }), el("td", { text: fmt(e.step) }), el("td", { text: fmt(e.value) }))))))
        : el("p", { class: "muted", text: "no evidence points" }),
      el("p", {}, el("button", { text: "Zoom to incident", onclick: () => {
        const span = Math.max(20, (a.last_step - a.first_step) * 4);
        setZoom([Math.max(0, a.first_step - span), a.last_step + span]);
      } })));
    drawMarkers();
    drawLogs();
  }

  function buildCharts() {
    for (const c of S.charts) c.destroy();
    S.charts = groupMetrics(S.metrics).map((g) => new Chart(charts, g.title, g.names, { onZoom }));
    S.width = Math.max(200, Math.round((S.charts[0] && S.charts[0].plot.bbox.width / devicePixelRatio) || 800));
  }
  function redraw() {
    for (const c of S.charts) c.setData(joinSeries(c.labels, S.series), S.zoom);
    drawMarkers();
  }
  async function loadSeries() {
    const params = { run: runId, width: S.width };
    if (S.zoom) { params.from = Math.floor(S.zoom[0]); params.to = Math.ceil(S.zoom[1]); }
    const data = await api("/api/series", params);
    S.series = data.series;
    S.lastStep = data.last_step;
    const names = Object.keys(S.series).sort();
    if (names.join("\n") !== [...S.metrics].sort().join("\n")) {
      S.metrics = names;
      buildCharts();
    }
    redraw();
    zoomInfo.textContent = S.zoom ? `steps ${fmt(Math.floor(S.zoom[0]))}–${fmt(Math.ceil(S.zoom[1]))}` : "all steps";
  }
  function onZoom(range) {
    setZoom(range && [Math.max(0, range[0]), range[1]]);
  }
  function setZoom(range) {
    S.zoom = range;
    const u = new URL(location.href);
    if (range) { u.searchParams.set("from", Math.floor(range[0])); u.searchParams.set("to", Math.ceil(range[1])); }
    else { u.searchParams.delete("from"); u.searchParams.delete("to"); }
    history.replaceState(null, "", u);
    loadSeries().catch((e) => console.error(e));
    drawLogs();
  }

  function appendPoints(series) {
    let added = false, fresh = false;
    for (const [name, s] of Object.entries(series)) {
      let mine = S.series[name];
      if (!mine) { mine = S.series[name] = { x: [], y: [] }; fresh = true; }
      const last = mine.x.length ? mine.x[mine.x.length - 1] : -Infinity;
      for (let i = 0; i < s.x.length; i++) {
        if (s.x[i] > last) { mine.x.push(s.x[i]); mine.y.push(s.y[i]); added = true; }
        S.lastStep = Math.max(S.lastStep ?? -1, s.x[i]);
      }
    }
    if (fresh) { S.metrics = Object.keys(S.series).sort(); buildCharts(); }
    const biggest = Math.max(0, ...Object.values(S.series).map((s) => s.x.length));
    if (biggest > 4 * S.width + 1000 && Date.now() >= (S.nextThin || 0)) {
      S.nextThin = Date.now() + 2000;  // a fast run is thinned on the server at most every 2 s
      return loadSeries();
    }
    if ((added || fresh) && !S.zoom) redraw();
  }

  async function loadLogs() {
    try {
      S.logs = (await api("/api/logs", { run: runId })).logs;
      drawLogs();
    } catch (e) { /* a run without logs, or no access: the panel says "none" */ }
  }
  function drawLogs() {
    const box = document.getElementById("logs");
    const a = S.selected && S.anomalies.get(S.selected);
    let lines = S.logs;
    if (S.zoom) lines = lines.filter((l) => l.step >= S.zoom[0] && l.step <= S.zoom[1]);
    box.replaceChildren(...(lines.length ? lines.slice(-500).map((l) => el("div", {
      class: `${l.level}${a && Math.abs(l.step - a.first_step) <= 2 ? " near" : ""}`,
      text: `${String(l.step).padStart(6)}  ${l.level.padEnd(7)} ${l.text}`,
    })) : [el("span", { class: "muted", text: "none" })]));
  }

  async function askAdvisor() {
    const box = document.getElementById("suggestions");
    const button = document.getElementById("ask-advisor");
    button.disabled = true;
    box.replaceChildren(el("p", { class: "muted", text: "Fitting the advisor on this project's runs…" }));
    try {
      const { suggestions } = await api("/api/suggest", { run: runId });
      box.replaceChildren(...(suggestions.length ? suggestions.map((s) => el("div", { class: "suggestion" },
        el("b", { text: `#${s.rank}` }), " ",
        el("span", { class: "effect", text: Number.isFinite(num(s.effect.predicted))
          ? `${s.effect.metric}: ${fmt(s.effect.predicted)} (Δ ${fmt(s.effect.delta)} ± ${fmt(s.effect.stddev)})`
          : `${s.effect.metric}: no predicted value (see the evidence)` }),
        el("div", { class: "diff" }, s.changes.map((c) => el("div", {},
          el("div", { class: "del", text: `- ${c.layer ? c.layer + "." : ""}${c.attribute}: ${c.before}` }),
          el("div", { class: "add", text: `+ ${c.layer ? c.layer + "." : ""}${c.attribute}: ${c.after}` }),
          c.description ? el("div", { class: "muted", text: c.description }) : null))),
        el("div", { class: "muted", text: `params ${s.cost.params >= 0 ? "+" : ""}${fmt(s.cost.params)}, FLOPs ${s.cost.flops >= 0 ? "+" : ""}${fmt(s.cost.flops)}` }),
        s.evidence.length ? el("ul", {}, s.evidence.map((e) => el("li", { text: e }))) : null))
        : [el("p", { class: "muted", text: "no suggestion within the constraints" })]));
    } catch (e) { showError(box, e); }
    button.disabled = false;
  }

  buildCharts();
  try { await loadSeries(); } catch (e) { showError(charts, e); }
  drawIncidents();
  if (S.selected && S.anomalies.has(S.selected)) pick(S.anomalies.get(S.selected));
  rendered({ charts: S.charts.length, points: Object.values(S.series).reduce((n, s) => n + s.x.length, 0) });
  loadLogs();

  let logTimer = null;
  stream({ run: runId, since: S.lastStep ?? 0 }, {
    anomaly: (a) => {
      const had = S.anomalies.get(a.id);
      if (had && had.revision > a.revision) return;
      S.anomalies.set(a.id, a);
      drawMarkers();
      drawIncidents();
      drawHead(S.run, currentHealth());
      if (S.selected === a.id) pick(a);
    },
    points: (p) => {
      appendPoints(p.series);
      clearTimeout(logTimer);
      logTimer = setTimeout(loadLogs, 1000);
    },
    run: (run) => drawHead(run, currentHealth()),
    reload: () => loadSeries(),
  });
  window.addEventListener("resize", () => { for (const c of S.charts) c.plot.setSize({ width: Math.max(300, c.box.clientWidth - 12), height: 230 }); });
}

// ---------------------------------------------------------------------------------------------
// compare runs: one chart per metric, one series per run, aligned by step

async function comparePage() {
  document.title = "runwatch: compare";
  const url = new URL(location.href);
  let runs = (url.searchParams.get("runs") || "").split(",").filter(Boolean);
  let chosen = url.searchParams.getAll("m");
  const input = el("input", { type: "text", placeholder: "add a run id", id: "add-run", size: 28 });
  const picker = el("div", { class: "toolbar", id: "metric-picker" });
  const legend = el("div", { class: "toolbar", id: "compare-runs" });
  const leftOut = el("div", { id: "compare-left-out" });
  const charts = el("div", { class: "charts", id: "charts" });
  setMain(el("h1", { text: "Compare runs" }),
    el("div", { class: "toolbar" }, input, el("button", { text: "Add", onclick: () => {
      const id = input.value.trim();
      if (id && !runs.includes(id)) { runs.push(id); go(); }
    } })),
    legend, leftOut, picker, charts);
  function go() {
    location.href = "/compare" + qs({ runs: runs.join(","), m: chosen });
  }
  if (!runs.length) {
    charts.replaceChildren(el("p", { class: "muted", text: "Pick runs on a project's page (the checkboxes) or add run ids here." }));
    rendered();
    return;
  }
  // A run that cannot be shown (another project's, or no such run) is left out, saying why; the others are compared.
  const settled = await Promise.allSettled(runs.map((run) => api("/api/run", { run })));
  const shown = [], infos = [], failed = [];
  settled.forEach((r, i) => {
    if (r.status === "fulfilled") { shown.push(runs[i]); infos.push(r.value); } else failed.push([runs[i], r.reason]);
  });
  if (failed.length) {
    leftOut.replaceChildren(el("div", { class: "error-box" }, `Not shown (${failed.length} of ${runs.length}): `,
      failed.map(([run, e]) => el("span", { class: "chip" }, el("b", { text: run }), ` ${e.message || e} `,
        el("button", { text: "×", title: "remove", onclick: () => { runs = runs.filter((r) => r !== run); go(); } })))));
  }
  if (!infos.length) { rendered({ charts: 0, runs: 0, series: [] }); return; }
  legend.replaceChildren(...infos.map((info, i) => el("span", { class: "chip" },
    el("span", { class: "swatch", style: `background:${COLORS[i % COLORS.length]}` }),
    el("a", { href: runLink(info.run.run_id), text: info.run.run_id }), " ", badge(info.health.badge),
    el("button", { text: "×", title: "remove", onclick: () => { runs = runs.filter((r) => r !== info.run.run_id); go(); } }))));
  const all = [...new Set(infos.flatMap((i) => i.metrics))].sort();
  const common = all.filter((m) => infos.every((i) => i.metrics.includes(m)));
  if (!chosen.length) {
    const order = (m) => chartGroup(m)[1];
    chosen = (common.length ? common : all).slice().sort((a, b) => order(a) - order(b) || a.localeCompare(b)).slice(0, 6);
  }
  picker.replaceChildren(el("span", { class: "muted", text: "metrics:" }), ...all.map((m) => el("label", { class: "chip" },
    el("input", { type: "checkbox", checked: chosen.includes(m), onchange: (e) => {
      chosen = e.target.checked ? [...chosen, m] : chosen.filter((x) => x !== m);
      go();
    } }), " ", m)));
  const data = await Promise.all(shown.map((run) => api("/api/series", { run, m: chosen, width: 900 })));
  const made = [];
  for (const metric of chosen) {
    const tables = data.map((d) => {
      const s = d.series[metric] || { x: [], y: [] };
      return [s.x, s.y];
    });
    const chart = new Chart(charts, metric, shown, { syncKey: "compare", onZoom: (range) => {
      for (const c of made) {
        if (range) c.plot.setScale("x", { min: range[0], max: range[1] });
        else c.plot.setData(c.plot.data, true);
      }
    } });
    chart.setData(uPlot.join(tables));
    const anomalies = infos.flatMap((info) => info.anomalies.filter((a) => a.metrics.includes(metric)));
    chart.setMarkers(anomalies, (a) => { location.href = runLink(a.run_id) + qs({ anomaly: a.id }); }, null);
    made.push(chart);
  }
  rendered({
    charts: made.length, runs: shown.length,
    series: made.map((c) => ({ title: c.box.dataset.title, series: c.plot.series.slice(1).map((ser, i) => ({
      label: ser.label, points: c.plot.data[i + 1].filter((v) => v != null).length })) })),
  });
}

// ---------------------------------------------------------------------------------------------
// anomaly feed across projects

async function feedPage() {
  document.title = "runwatch: anomalies";
  const url = new URL(location.href);
  const project = url.searchParams.get("project") || "";
  const minSeverity = url.searchParams.get("min_severity") || "";
  const severity = el("select", { id: "min-severity", onchange: () => {
    location.href = "/anomalies" + qs({ project, min_severity: severity.value });
  } }, ["", "INFO", "WARNING", "ERROR", "CRITICAL"].map((s) => el("option", { value: s, text: s ? `${s} and above` : "any severity", selected: s === minSeverity })));
  const rows = el("tbody", {});
  setMain(el("h1", { text: project ? `Anomalies of ${project}` : "Anomaly feed" }),
    el("div", { class: "toolbar" }, severity, project ? el("a", { href: "/anomalies", text: "all projects" }) : null),
    el("table", { class: "grid", id: "feed" }, el("thead", {}, el("tr", {},
      ["When", "Project", "Run", "Step", "Severity", "Kind", "Explanation"].map((h) => el("th", { text: h })))), rows));
  const seen = new Map();
  function row(a) {
    return el("tr", { dataset: { id: a.id } },
      el("td", { text: ago(a.detected_time) }),
      el("td", {}, el("a", { href: projectLink(a.project), text: a.project })),
      el("td", {}, el("a", { href: runLink(a.run_id) + qs({ anomaly: a.id }), text: a.run_id })),
      el("td", { class: "num", text: fmt(a.step) }),
      el("td", {}, severityBadge(a.severity)),
      el("td", { text: a.kind }),
      el("td", { text: a.explanation }));
  }
  function add(a, top) {
    const old = seen.get(a.id);
    const tr = row(a);
    if (old) old.replaceWith(tr);
    else if (top) rows.prepend(tr);
    else rows.append(tr);
    seen.set(a.id, tr);
  }
  try {
    const { anomalies } = await api("/api/anomalies", { project, min_severity: minSeverity, limit: 300 });
    anomalies.forEach((a) => add(a, false));
    if (!anomalies.length) rows.append(el("tr", { class: "empty" }, el("td", { colspan: 7, class: "muted", text: "No anomaly yet." })));
  } catch (e) { showError(rows, e); }
  rendered();
  stream({ project, min_severity: minSeverity }, {
    anomaly: (a) => { rows.querySelector("tr.empty")?.remove(); add(a, true); },
  });
}

// ---------------------------------------------------------------------------------------------

function route() {
  const path = location.pathname;
  if (path.startsWith("/projects/")) return runsPage(decodeURIComponent(path.slice("/projects/".length)));
  if (path.startsWith("/runs/")) return runPage(decodeURIComponent(path.slice("/runs/".length)));
  if (path === "/compare") return comparePage();
  if (path === "/anomalies") return feedPage();
  return projectsPage();
}

document.addEventListener("DOMContentLoaded", () => {
  route().catch((e) => { showError(document.getElementById("main"), e); rendered({ error: String(e) }); });
});
