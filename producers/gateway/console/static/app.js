// LargeForge console: renders the page named by location.pathname from the
// console's JSON endpoints (/console/api/...) and polls them, so live views
// update without reloading. Hand-written, no dependencies.
"use strict";

const POLL_MS = 2000;
const KEY = "largeforge_api_key";
const main = () => document.getElementById("main");
let timer = null;
let notice = ""; // the outcome of the last cancel, kept across refreshes

function esc(v) {
  return String(v ?? "").replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
const enc = encodeURIComponent;

class APIError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, opts = {}) {
  const headers = { "Accept": "application/json" };
  const key = sessionStorage.getItem(KEY);
  if (key) headers["Authorization"] = "Bearer " + key;
  const resp = await fetch("/console/api/" + path, { method: opts.method || "GET", headers });
  let body = null;
  try { body = await resp.json(); } catch (e) { body = null; }
  if (!resp.ok) {
    const msg = body && body.error ? body.error.message : resp.status + " " + resp.statusText;
    throw new APIError(resp.status, msg);
  }
  return body;
}

function fmtTime(unix) {
  if (!unix) return "";
  return new Date(unix * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}
function fmtAge(unix, now) {
  if (!unix) return "";
  const s = Math.max(0, Math.round((now || Date.now() / 1000) - unix));
  return s + "s ago";
}
function fmtBytes(n) {
  if (n < 1024) return n + " B";
  const u = ["KiB", "MiB", "GiB", "TiB"];
  let i = -1;
  do { n /= 1024; i++; } while (n >= 1024 && i < u.length - 1);
  return n.toFixed(1) + " " + u[i];
}
function fmtNum(x, d = 4) {
  if (x === null || x === undefined || x === "") return "";
  return Number(x).toPrecision(d);
}
const status = s => `<span class="status ${esc(s)}">${esc(s)}</span>`;

// progress of a job: done and total (requests, or steps of a training run).
function progress(j) {
  if (j.kind === "training") {
    const t = j.training || {};
    return { done: t.global_step || 0, total: t.max_steps || 0, unit: "steps" };
  }
  const c = j.request_counts || {};
  return { done: (c.completed || 0) + (c.failed || 0), total: c.total || 0, unit: "requests" };
}
function bar(p) {
  return `<progress max="${p.total || 1}" value="${p.done}"></progress> <span class="prog">${p.done} / ${p.total} ${p.unit}</span>`;
}

function notFound(msg) {
  return `<div class="notfound" id="notfound"><h1>Not found</h1><p>${esc(msg)}</p></div>`;
}

function loginForm(msg) {
  return `<form class="login" id="login"><h1>API key</h1>
  <p class="muted">${esc(msg || "The console reads the bus through the gateway and takes its API key.")}</p>
  <input type="password" id="apikey" autocomplete="current-password" placeholder="API key">
  <button type="submit" id="login-submit">Sign in</button></form>`;
}

// views: name → async function(params) returning HTML; live views poll.
const views = {
  async jobs() {
    const { data } = await api("jobs");
    const rows = data.map(j => {
      const c = j.request_counts || {};
      const link = j.kind === "training" ? `/console/training/${enc(j.id)}` : `/console/jobs/${enc(j.id)}`;
      return `<tr data-id="${esc(j.id)}"><td><a href="/console/jobs/${enc(j.id)}" class="mono">${esc(j.id)}</a></td>
        <td class="kind">${esc(j.kind)}</td><td>${esc(j.model)}</td><td class="st">${status(j.status)}</td>
        <td class="progress">${bar(progress(j))}</td>
        <td class="num c-completed">${c.completed || 0}</td><td class="num c-failed">${c.failed || 0}</td><td class="num c-total">${c.total || 0}</td>
        <td>${fmtTime(j.created_at)}</td><td><a href="${link}">details</a></td></tr>`;
    }).join("");
    return `<h1>Jobs</h1><table id="jobs"><thead><tr><th>ID</th><th>Kind</th><th>Model</th><th>Status</th><th>Progress</th>
      <th class="num">Completed</th><th class="num">Failed</th><th class="num">Total</th><th>Created</th><th></th></tr></thead>
      <tbody>${rows || `<tr><td colspan="10" class="muted">No jobs.</td></tr>`}</tbody></table>`;
  },

  async job(id) {
    const j = await api("jobs/" + enc(id));
    const re = j.kind === "training" ? { data: [], final: false } : await api("jobs/" + enc(id) + "/errors");
    const reqErrs = re.data.map(e => `<tr><td class="mono">${esc(e.custom_id)}</td><td class="num">${e.status_code || ""}</td><td class="mono">${esc(e.code)}</td><td>${esc(e.message)}</td></tr>`).join("");
    const c = j.request_counts || {};
    const errs = (j.errors || []).map(e => `<tr><td class="mono">${esc(e.code)}</td><td>${esc(e.message)}</td><td class="num">${e.line || ""}</td></tr>`).join("");
    const o = j.outputs || {};
    const terminal = ["completed", "failed", "cancelled", "expired"].includes(j.status);
    return `<h1>Job <span class="mono" id="job-id">${esc(j.id)}</span></h1>
      <dl class="kv" id="job">
        <dt>Status</dt><dd id="job-status">${status(j.status)}</dd>
        <dt>Kind</dt><dd>${esc(j.kind)}</dd><dt>Model</dt><dd>${esc(j.model)}</dd>
        <dt>Progress</dt><dd id="job-progress">${bar(progress(j))}</dd>
        <dt>Requests</dt><dd id="job-counts">${c.completed || 0} completed, ${c.failed || 0} failed, ${c.total || 0} total</dd>
        <dt>Input</dt><dd class="mono">${esc(j.input_file)}</dd>
        <dt>Created</dt><dd>${fmtTime(j.created_at)}</dd>
        ${j.completed_at ? `<dt>Completed</dt><dd>${fmtTime(j.completed_at)}</dd>` : ""}
        ${o.output_file ? `<dt>Outputs</dt><dd class="mono">${esc(o.output_file)}<br>${esc(o.error_file)}<br>${esc(o.results_file)}</dd>` : ""}
        ${j.kind === "training" ? `<dt>Training</dt><dd><a href="/console/training/${enc(j.id)}">curves and progress</a></dd>` : ""}
      </dl>
      <p>${terminal ? "" : `<button class="danger" id="cancel" data-id="${esc(j.id)}">Cancel job</button>`} <span id="cancel-result">${esc(notice)}</span></p>
      <h2>Errors</h2>
      <table id="errors"><thead><tr><th>Code</th><th>Message</th><th class="num">Line</th></tr></thead>
      <tbody>${errs || `<tr><td colspan="3" class="muted">No errors.</td></tr>`}</tbody></table>
      ${j.kind === "training" ? "" : `<h2>Failed requests</h2>
      <table id="request-errors"><thead><tr><th>custom_id</th><th class="num">Status</th><th>Code</th><th>Message</th></tr></thead>
      <tbody>${reqErrs || `<tr><td colspan="4" class="muted">${re.final ? "No failed requests." : "Shown once the job is final (errors.jsonl)."}</td></tr>`}</tbody></table>
      ${re.truncated ? `<p class="muted">First ${re.data.length} shown.</p>` : ""}`}`;
  },

  async datasets() {
    const { data } = await api("datasets");
    const rows = data.map(m => `<tr data-name="${esc(m.name)}"><td><a href="/console/datasets/${enc(m.name)}">${esc(m.name)}</a></td>
      <td>${esc(m.format)}</td><td class="num rows">${m.counts.rows}</td><td class="num">${m.counts.duplicates}</td>
      <td class="num rejected">${m.counts.rejected}</td><td class="num">${(m.parts || []).length}</td><td>${esc(m.updated_at)}</td></tr>`).join("");
    return `<h1>Datasets</h1><table id="datasets"><thead><tr><th>Name</th><th>Format</th><th class="num">Rows</th><th class="num">Duplicates</th>
      <th class="num">Rejected</th><th class="num">Parts</th><th>Updated</th></tr></thead>
      <tbody>${rows || `<tr><td colspan="7" class="muted">No datasets.</td></tr>`}</tbody></table>`;
  },

  async dataset(name) {
    const { manifest: m, rejects } = await api("datasets/" + enc(name));
    const parts = (m.parts || []).map(p => `<tr><td class="mono">${esc(p.file)}</td><td class="num">${p.rows}</td><td class="num">${fmtBytes(p.bytes)}</td><td class="mono">${esc(p.sha256)}</td></tr>`).join("");
    const sources = (m.sources || []).map(s => `<tr><td>${esc(s.source)}</td><td class="mono">${esc(s.run)}</td><td class="num">${s.shards}</td><td class="num">${s.rows}</td><td class="num">${s.duplicates}</td><td class="num">${s.rejected}</td></tr>`).join("");
    const schema = (m.schema || []).map(f => `<tr><td>${esc(f.name)}</td><td class="mono">${esc(f.type)}</td></tr>`).join("");
    const rules = rejects.map(r => `<tr data-rule="${esc(r.rule)}"><td class="mono rule">${esc(r.rule)}</td><td class="num count">${r.count}</td><td>${
      r.samples.map(s => `<div class="sample"><span class="muted">${esc(s.source)}:${s.line} ${esc(s.field)}</span> ${esc(s.error)}<pre class="sample">${esc(s.original)}</pre></div>`).join("")}</td></tr>`).join("");
    return `<h1>Dataset <span id="dataset-name">${esc(m.name)}</span></h1>
      <dl class="kv" id="manifest"><dt>Format</dt><dd>${esc(m.format)}</dd><dt>Rows</dt><dd id="dataset-rows">${m.counts.rows}</dd>
      <dt>Duplicates</dt><dd>${m.counts.duplicates}</dd><dt>Rejected</dt><dd id="dataset-rejected">${m.counts.rejected}</dd>
      <dt>Created</dt><dd>${esc(m.created_at)}</dd><dt>Updated</dt><dd>${esc(m.updated_at)}</dd></dl>
      <h2>Parts</h2><table id="parts"><thead><tr><th>File</th><th class="num">Rows</th><th class="num">Size</th><th>SHA-256</th></tr></thead>
      <tbody>${parts || `<tr><td colspan="4" class="muted">No parts yet.</td></tr>`}</tbody></table>
      <h2>Rejects by rule</h2><table id="rejects"><thead><tr><th>Rule</th><th class="num">Count</th><th>Samples</th></tr></thead>
      <tbody>${rules || `<tr><td colspan="3" class="muted">No rejects.</td></tr>`}</tbody></table>
      <h2>Sources</h2><table id="sources"><thead><tr><th>Source</th><th>Run</th><th class="num">Shards</th><th class="num">Rows</th><th class="num">Duplicates</th><th class="num">Rejected</th></tr></thead><tbody>${sources}</tbody></table>
      <h2>Schema</h2><table id="schema"><thead><tr><th>Field</th><th>Type</th></tr></thead><tbody>${schema}</tbody></table>`;
  },

  async workers() {
    const { data, now } = await api("workers");
    const rows = data.map(w => `<tr data-id="${esc(w.id)}"><td class="mono">${esc(w.id)}</td><td class="role">${esc(w.role)}</td>
      <td class="models">${esc((w.models || []).join(", "))}</td><td class="num slots">${w.capacity || ""}</td>
      <td class="mono">${w.job ? `<a href="/console/jobs/${enc(w.job)}">${esc(w.job)}</a>` : ""}</td><td class="num">${w.pid}</td>
      <td>${fmtTime(w.started_at)}</td><td class="beat">${fmtAge(w.updated_at, now)}</td></tr>`).join("");
    return `<h1>Workers</h1><table id="workers"><thead><tr><th>ID</th><th>Role</th><th>Models</th><th class="num">Slots</th><th>Job</th>
      <th class="num">PID</th><th>Started</th><th>Heartbeat</th></tr></thead>
      <tbody>${rows || `<tr><td colspan="8" class="muted">No live workers.</td></tr>`}</tbody></table>`;
  },

  async experts() {
    const { experts, decisions } = await api("experts");
    const ex = experts.map(e => `<tr data-name="${esc(e.name)}"><td>${esc(e.name)}</td><td>${esc(e.description)}</td>
      <td>${esc((e.keywords || []).join(", "))}</td><td class="num">${e.priority}</td><td class="num live">${e.live_workers}</td>
      <td class="num">${e.recent_decisions}</td></tr>`).join("");
    const ds = decisions.map(d => `<tr><td>${esc(d.at)}</td><td class="mono">${esc(d.request_id)}</td><td>${esc(d.job)}</td>
      <td class="expert">${esc(d.expert)}</td><td class="num">${fmtNum(d.confidence, 3)}</td><td>${esc(d.stage)}</td></tr>`).join("");
    return `<h1>Experts</h1><table id="experts"><thead><tr><th>Name</th><th>Description</th><th>Keywords</th><th class="num">Priority</th>
      <th class="num">Live workers</th><th class="num">Recent decisions</th></tr></thead>
      <tbody>${ex || `<tr><td colspan="6" class="muted">No experts configured.</td></tr>`}</tbody></table>
      <h2>Recent routing decisions</h2><table id="decisions"><thead><tr><th>At</th><th>Request</th><th>Job</th><th>Expert</th>
      <th class="num">Confidence</th><th>Stage</th></tr></thead>
      <tbody>${ds || `<tr><td colspan="6" class="muted">No decisions yet.</td></tr>`}</tbody></table>`;
  },

  async training() {
    const { data } = await api("jobs");
    const rows = data.filter(j => j.kind === "training").map(j => {
      const t = j.training || {};
      return `<tr data-id="${esc(j.id)}"><td><a class="mono" href="/console/training/${enc(j.id)}">${esc(j.id)}</a></td><td>${esc(j.model)}</td>
        <td class="st">${status(j.status)}</td><td class="progress">${bar(progress(j))}</td><td class="num loss">${fmtNum(t.loss)}</td>
        <td class="num">${fmtNum(t.learning_rate, 3)}</td><td>${esc(t.fine_tuned_model)}</td></tr>`;
    }).join("");
    return `<h1>Training runs</h1><table id="runs"><thead><tr><th>Job</th><th>Model</th><th>Status</th><th>Progress</th>
      <th class="num">Loss</th><th class="num">Learning rate</th><th>Fine-tuned model</th></tr></thead>
      <tbody>${rows || `<tr><td colspan="7" class="muted">No training runs.</td></tr>`}</tbody></table>`;
  },

  async run(id) {
    const j = await api("jobs/" + enc(id));
    if (j.kind !== "training") throw new APIError(404, `Job "${id}" is a ${j.kind} job, not a training run`);
    const { data } = await api("jobs/" + enc(id) + "/events");
    // A resumed run repeats steps: the latest attempt's event of a step wins.
    const last = {};
    for (const e of data) {
      const k = e.kind + "/" + e.global_step;
      if (!last[k] || (e.attempt || 0) >= (last[k].attempt || 0)) last[k] = e;
    }
    const evs = Object.values(last).sort((a, b) => a.global_step - b.global_step);
    const steps = evs.filter(e => e.kind === "step");
    const evals = evs.filter(e => e.kind === "eval");
    const t = j.training || {};
    return `<h1>Training run <span class="mono" id="run-id">${esc(j.id)}</span></h1>
      <dl class="kv" id="run"><dt>Status</dt><dd id="run-status">${status(j.status)}</dd><dt>Model</dt><dd>${esc(j.model)}</dd>
      <dt>Progress</dt><dd id="run-progress">${bar(progress(j))}</dd><dt>Loss</dt><dd id="run-loss">${fmtNum(t.loss)}</dd>
      <dt>Events</dt><dd id="run-events">${steps.length} steps, ${evals.length} evaluations</dd>
      ${t.fine_tuned_model ? `<dt>Fine-tuned model</dt><dd>${esc(t.fine_tuned_model)}</dd>` : ""}
      <dt>Job</dt><dd><a href="/console/jobs/${enc(j.id)}">record, errors, cancel</a></dd></dl>
      <div class="charts">
        ${chart("loss-chart", "Loss", "step", "loss", [
          { name: "training loss", points: steps.map(e => [e.global_step, e.loss]) },
          { name: "evaluation loss", points: evals.map(e => [e.global_step, e.eval_loss]), dots: true }])}
        ${chart("lr-chart", "Learning rate", "step", "learning rate", [
          // A step event leaves out a rate of 0 (warmup's first step): it is 0, not missing.
          { name: "learning rate", points: steps.map(e => [e.global_step, e.learning_rate ?? 0]) }])}
      </div>`;
  },

  async models() {
    const { data } = await api("models");
    const rows = data.map(m => `<tr data-name="${esc(m.name)}"><td>${esc(m.name)}</td><td class="mono">${esc(m.digest.slice(0, 16))}</td>
      <td class="num">${fmtBytes(m.size)}</td><td class="num">${m.files}</td><td>${esc(m.updated)}</td></tr>`).join("");
    return `<h1>Models</h1><table id="models"><thead><tr><th>Name</th><th>Digest</th><th class="num">Size</th><th class="num">Files</th><th>Updated</th></tr></thead>
      <tbody>${rows || `<tr><td colspan="5" class="muted">No models in the store.</td></tr>`}</tbody></table>`;
  },
};

// ticks returns about n round values spanning [lo, hi].
function ticks(lo, hi, n) {
  if (hi <= lo) { hi = lo + (lo === 0 ? 1 : Math.abs(lo) * 0.1); }
  const raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map(m => m * mag).find(s => s >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(v);
  return { lo: Math.min(lo, out[0]), hi: Math.max(hi, out[out.length - 1]), ticks: out };
}

// chart draws series of [x, y] points as an SVG line chart with labelled axes.
function chart(id, title, xlabel, ylabel, series) {
  const W = 520, H = 300, L = 64, R = 16, T = 28, B = 44;
  const pts = series.flatMap(s => s.points).filter(p => Number.isFinite(p[1]));
  if (pts.length === 0) {
    return `<div class="chart" id="${id}"><strong>${esc(title)}</strong><p class="muted">No events yet.</p></div>`;
  }
  const xs = ticks(Math.min(...pts.map(p => p[0])), Math.max(...pts.map(p => p[0])), 5);
  const ys = ticks(Math.min(...pts.map(p => p[1])), Math.max(...pts.map(p => p[1])), 5);
  const X = x => L + (x - xs.lo) / (xs.hi - xs.lo) * (W - L - R);
  const Y = y => H - B - (y - ys.lo) / (ys.hi - ys.lo) * (H - T - B);
  const fmt = v => Math.abs(v) >= 1e-2 || v === 0 ? String(+v.toPrecision(3)) : v.toExponential(1);
  let g = "";
  for (const v of ys.ticks) g += `<line class="grid" x1="${L}" x2="${W - R}" y1="${Y(v)}" y2="${Y(v)}"/><text x="${L - 6}" y="${Y(v) + 4}" text-anchor="end">${fmt(v)}</text>`;
  for (const v of xs.ticks) g += `<text x="${X(v)}" y="${H - B + 16}" text-anchor="middle">${fmt(v)}</text>`;
  const lines = series.map((s, i) => {
    const p = s.points.filter(q => Number.isFinite(q[1]));
    const poly = `<polyline class="s${i} series" data-series="${esc(s.name)}" data-points="${p.length}" points="${p.map(q => X(q[0]).toFixed(1) + "," + Y(q[1]).toFixed(1)).join(" ")}"/>`;
    const dots = s.dots ? p.map(q => `<circle class="p${i}" r="3" cx="${X(q[0]).toFixed(1)}" cy="${Y(q[1]).toFixed(1)}"/>`).join("") : "";
    return poly + dots;
  }).join("");
  const legend = series.map((s, i) => `<span class="k${i}">&#9644; ${esc(s.name)} (${s.points.length})</span>`).join("");
  return `<div class="chart" id="${id}"><svg viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(title)}">
    <text x="${W / 2}" y="16" text-anchor="middle" font-weight="600">${esc(title)}</text>${g}
    <line class="axis" x1="${L}" x2="${L}" y1="${T}" y2="${H - B}"/><line class="axis" x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}"/>
    ${lines}
    <text x="${(L + W - R) / 2}" y="${H - 8}" text-anchor="middle">${esc(xlabel)}</text>
    <text transform="translate(14 ${(T + H - B) / 2}) rotate(-90)" text-anchor="middle">${esc(ylabel)}</text>
    </svg><div class="legend">${legend}</div></div>`;
}

// route maps the path to a view and its argument.
function route() {
  const parts = location.pathname.replace(/^\/console\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  const [page, id] = parts;
  const table = {
    undefined: ["jobs"], jobs: id ? ["job", id] : ["jobs"], datasets: id ? ["dataset", id] : ["datasets"],
    workers: ["workers"], experts: ["experts"], training: id ? ["run", id] : ["training"], models: ["models"],
  };
  const r = (page === undefined || Object.prototype.hasOwnProperty.call(table, page)) ? table[page] : null;
  document.querySelectorAll("header nav a").forEach(a => a.classList.toggle("active", a.dataset.nav === (page || "jobs")));
  return r;
}

async function render() {
  const r = route();
  if (!r) {
    main().innerHTML = notFound(`No page ${location.pathname}`);
    return;
  }
  const [name, arg] = r;
  try {
    const html = await views[name](arg);
    main().innerHTML = html;
    document.getElementById("live").classList.remove("stale");
    document.body.dataset.loaded = name;
    schedule();
  } catch (e) {
    if (e.status === 401) {
      main().innerHTML = loginForm(sessionStorage.getItem(KEY) ? "That API key was refused." : "");
      document.getElementById("login").addEventListener("submit", ev => {
        ev.preventDefault();
        sessionStorage.setItem(KEY, document.getElementById("apikey").value.trim());
        render();
      });
    } else if (e.status === 404) {
      main().innerHTML = notFound(e.message);
    } else {
      document.getElementById("live").classList.add("stale");
      if (!document.body.dataset.loaded) main().innerHTML = `<p class="error" id="error">${esc(e.message)}</p>`;
      schedule();
    }
  }
}

function schedule() {
  clearTimeout(timer);
  timer = setTimeout(render, POLL_MS);
}

document.addEventListener("click", async ev => {
  const b = ev.target.closest("#cancel");
  if (!b) return;
  b.disabled = true;
  clearTimeout(timer);
  try {
    const r = await api("jobs/" + enc(b.dataset.id) + "/cancel", { method: "POST" });
    notice = "Cancelled: the job is " + r.job.status + ".";
  } catch (e) {
    notice = "Cancel refused: " + e.message;
  }
  render();
});

render();
