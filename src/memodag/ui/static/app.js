// memodag ui: the front end. Plain DOM, no framework. Every string from the server goes into
// the page as text (textContent / createTextNode / setAttribute), never as markup.
"use strict";

const main = document.getElementById("main");
let liveSource = null; // the EventSource of the run page being shown, closed on navigation

// -- DOM helpers ------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function badge(status) {
  return el("span", { class: `badge ${status}`, "data-status": status }, status);
}

function show(...children) {
  main.replaceChildren(...children.filter((c) => c !== null && c !== undefined));
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "";
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}

function where(address) {
  if (!address) return "";
  if (address.uri) return address.uri;
  return `io manager '${address.io_manager_key}'`;
}

async function api(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || `${response.status} ${path}`);
  return body;
}

function failed(error) {
  show(el("p", { class: "error", id: "error" }, error.message || String(error)));
}

// -- routing ----------------------------------------------------------------------------------

function route() {
  if (liveSource) {
    liveSource.close();
    liveSource = null;
  }
  const hash = location.hash || "#/runs";
  const [path, query] = hash.slice(1).split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "run" && parts[1]) return runPage(parts[1]).catch(failed);
  if (parts[0] === "job" && parts[1]) return jobPage(parts.slice(1).join("/")).catch(failed);
  if (parts[0] === "jobs") return jobsPage().catch(failed);
  return runsPage(params).catch(failed);
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", route);

// -- runs list --------------------------------------------------------------------------------

const PAGE = 50;
const RUN_STATUSES = ["", "STARTED", "SUCCESS", "FAILURE", "CANCELED", "DIED"];

async function runsPage(params) {
  const job = params.get("job") || "";
  const status = params.get("status") || "";
  const offset = Number(params.get("offset") || 0);
  const query = new URLSearchParams({ job, status, offset, limit: PAGE });
  const page = await api(`/api/runs?${query}`);
  const go = (changes) => {
    const next = new URLSearchParams({ job, status, offset, ...changes });
    location.hash = `#/runs?${next}`;
  };
  const jobInput = el("input", { name: "job", placeholder: "job name", value: job });
  const statusSelect = el(
    "select",
    { name: "status" },
    RUN_STATUSES.map((s) => el("option", { value: s, selected: s === status }, s || "any status")),
  );
  const form = el(
    "form",
    {
      class: "filters",
      onsubmit: (event) => {
        event.preventDefault();
        go({ job: jobInput.value.trim(), status: statusSelect.value, offset: 0 });
      },
    },
    "Job ",
    jobInput,
    " Status ",
    statusSelect,
    el("button", { type: "submit" }, "Filter"),
  );
  statusSelect.addEventListener("change", () => form.requestSubmit());
  const rows = page.runs.map((run) =>
    el(
      "tr",
      { "data-run": run.run_id },
      el("td", { class: "mono" }, el("a", { href: `#/run/${encodeURIComponent(run.run_id)}` }, run.run_id.slice(0, 8))),
      el("td", {}, run.job_name),
      el("td", {}, badge(run.status)),
      el("td", {}, when(run.start_time)),
      el("td", { class: "num" }, duration(run.duration)),
      el("td", { class: "num" }, run.counts.executed),
      el("td", { class: "num" }, run.counts.memoized),
      el("td", { class: "num" }, run.counts.failed),
      el("td", { class: "num" }, run.counts.skipped),
    ),
  );
  const head = ["Run", "Job", "Status", "Started", "Duration", "Executed", "Memoized", "Failed", "Skipped"];
  const table = el(
    "table",
    { id: "runs" },
    el("thead", {}, el("tr", {}, head.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows),
  );
  const pager = el(
    "div",
    { class: "pager" },
    offset > 0 ? el("button", { id: "newer", onclick: () => go({ offset: Math.max(0, offset - PAGE) }) }, "← Newer") : null,
    el("span", { class: "muted" }, page.runs.length ? `runs ${offset + 1}–${offset + page.runs.length}` : "no runs"),
    page.has_more ? el("button", { id: "older", onclick: () => go({ offset: offset + PAGE }) }, "Older →") : null,
  );
  show(el("h1", {}, "Runs"), form, table, pager);
}

// -- graph ------------------------------------------------------------------------------------

// Lays the graph out with dagre and draws it as SVG. `label(node)` gives [status, subtitle];
// `onpick(id)` is called when a node is clicked. Returns {update(id, status, subtitle)}.
function drawGraph(container, graph, label, onpick) {
  const g = new dagre.graphlib.Graph({ compound: true });
  // dagre's best ranking and crossing reduction grow fast with size: a big graph (a 1,000-op
  // job) gets its quick ranker and no crossing reduction, so it paints in about a second
  const big = graph.nodes.length > 200;
  g.setGraph({ rankdir: "LR", nodesep: 14, ranksep: 40, marginx: 10, marginy: 10, ranker: big ? "longest-path" : "network-simplex" });
  g.setDefaultEdgeLabel(() => ({}));
  const stages = new Set();
  for (const node of graph.nodes) {
    const width = Math.max(110, 8 * Math.max(node.id.length, 12) + 20);
    g.setNode(node.id, { width, height: 42 });
    if (node.stage) {
      const group = `stage:${node.stage}`;
      if (!stages.has(group)) g.setNode(group, { label: node.stage, clusterLabelPos: "top" });
      stages.add(group);
      g.setParent(node.id, group);
    }
  }
  for (const edge of graph.edges) {
    if (g.hasNode(edge.source) && g.hasNode(edge.target)) g.setEdge(edge.source, edge.target);
  }
  dagre.layout(g, { disableOptimalOrderHeuristic: big });
  const size = g.graph();
  const root = svg("svg", { width: size.width, height: size.height, id: "graph-svg" });
  for (const group of stages) {
    const box = g.node(group);
    const holder = svg("g", { class: "group", "data-stage": box.label });
    holder.appendChild(svg("rect", { x: box.x - box.width / 2, y: box.y - box.height / 2, width: box.width, height: box.height }));
    holder.appendChild(svg("text", { x: box.x - box.width / 2 + 6, y: box.y - box.height / 2 + 12 }, `stage ${box.label}`));
    root.appendChild(holder);
  }
  for (const id of g.edges()) {
    const points = g.edge(id).points;
    const d = points.map((p, i) => `${i ? "L" : "M"}${p.x},${p.y}`).join(" ");
    root.appendChild(svg("path", { class: "edge", d, "data-source": id.v, "data-target": id.w }));
  }
  const shapes = new Map();
  for (const node of graph.nodes) {
    const box = g.node(node.id);
    const [status, subtitle] = label(node);
    const holder = svg("g", { class: "node", "data-node": node.id, "data-status": status, transform: `translate(${box.x - box.width / 2},${box.y - box.height / 2})` });
    holder.appendChild(svg("title", {}, `${node.id}: ${status}`));
    holder.appendChild(svg("rect", { width: box.width, height: box.height }));
    holder.appendChild(svg("text", { x: 8, y: 17 }, node.mapped ? `${node.id} [⋯]` : node.id));
    const sub = svg("text", { class: "sub", x: 8, y: 33 }, subtitle);
    holder.appendChild(sub);
    holder.addEventListener("click", () => {
      for (const other of root.querySelectorAll(".node.selected")) other.classList.remove("selected");
      holder.classList.add("selected");
      onpick(node.id);
    });
    shapes.set(node.id, { holder, sub });
    root.appendChild(holder);
  }
  container.replaceChildren(root);
  return {
    update(id, status, subtitle) {
      const shape = shapes.get(id);
      if (!shape) return;
      shape.holder.setAttribute("data-status", status);
      shape.holder.querySelector("title").textContent = `${id}: ${status}`;
      shape.sub.textContent = subtitle;
    },
  };
}

function countsText(counts) {
  return Object.entries(counts || {}).map(([status, n]) => `${n} ${status}`).join(" · ");
}

// -- a run ------------------------------------------------------------------------------------

async function runPage(runId) {
  const detail = await api(`/api/runs/${encodeURIComponent(runId)}`);
  const run = detail.run;
  let nodes = detail.nodes;
  let picked = null;

  const statusBadge = el("span", { id: "run-status" }, badge(run.status));
  const counts = el("span", { id: "run-counts", class: "muted" });
  const liveNote = el("span", { id: "live", class: "live" }, run.status === "STARTED" ? "live" : "");
  const setCounts = (c) => {
    counts.textContent = `${c.executed} executed · ${c.memoized} memoized · ${c.failed} failed · ${c.skipped} skipped`;
  };
  setCounts(run.counts);

  const graphBox = el("div", { id: "graph", class: "panel" });
  const timelineBox = el("div", { id: "timeline", class: "panel" });
  let timelineAt = 0;
  const refreshTimeline = () => {
    timelineAt = Date.now();
    drawTimeline(timelineBox, run.run_id).catch(failed);
  };
  const stepBox = el("div", { id: "step", class: "panel" }, el("p", { class: "muted" }, "Click a node to see its steps."));
  // A step's events are stored when it ends (with its STEP_START), so a step in progress has
  // none yet: in a live run, a node whose upstream nodes are all done is running or queued.
  let runStatus = run.status;
  const upstream = new Map(detail.graph.nodes.map((n) => [n.id, []]));
  for (const edge of detail.graph.edges) if (upstream.has(edge.target)) upstream.get(edge.target).push(edge.source);
  const done = (id) => nodes[id] && ["success", "memoized"].includes(nodes[id].status);
  const nodeLabel = (node) => {
    const state = nodes[node.id];
    if (state) return [state.status, countsText(state.counts)];
    if (runStatus === "STARTED" && upstream.get(node.id).every(done)) return ["running", "running or queued"];
    return ["pending", "not started"];
  };
  const graph = drawGraph(graphBox, detail.graph, nodeLabel, (id) => {
    picked = id;
    renderSteps().catch(failed);
  });

  // a node's steps come on demand: a fan-out may have 10,000 of them
  async function renderSteps() {
    if (picked === null) return;
    const node = picked;
    const query = new URLSearchParams({ node });
    const found = await api(`/api/runs/${encodeURIComponent(run.run_id)}/steps?${query}`);
    if (node !== picked) return;
    const more = found.total - found.steps.length;
    stepBox.replaceChildren(
      el("h2", {}, node),
      ...found.steps.map(stepDetails),
      more > 0 ? el("p", { class: "muted" }, `and ${more} more steps (failed ones are listed first)`) : null,
    );
    if (!found.total) stepBox.appendChild(el("p", { class: "muted" }, "No step of this node has ended yet."));
  }

  // the event stream, filterable by step and level
  const logBody = el("tbody");
  const stepFilter = el("select", { id: "log-step" }, el("option", { value: "" }, "all steps"));
  const levelFilter = el(
    "select",
    { id: "log-level" },
    ["", "DEBUG", "INFO", "WARNING", "ERROR"].map((l) => el("option", { value: l }, l || "any level")),
  );
  const knownSteps = new Set();
  const LEVELS = { DEBUG: 10, INFO: 20, WARNING: 30, ERROR: 40, CRITICAL: 50 };
  const applyFilter = () => {
    const step = stepFilter.value;
    const level = LEVELS[levelFilter.value] || 0;
    for (const row of logBody.children) {
      const okStep = !step || row.dataset.step === step;
      const okLevel = (LEVELS[row.dataset.level] || 20) >= level;
      row.hidden = !(okStep && okLevel);
    }
  };
  stepFilter.addEventListener("change", applyFilter);
  levelFilter.addEventListener("change", applyFilter);
  const earlier = el("p", { class: "muted", id: "log-earlier" });
  const addLines = (lines, first) => {
    if (first > 0 && !logBody.children.length) earlier.textContent = `${first} earlier events not shown.`;
    for (const line of lines) {
      const step = line.step_key || "";
      if (step && !knownSteps.has(step)) {
        knownSteps.add(step);
        stepFilter.appendChild(el("option", { value: step }, step));
      }
      logBody.appendChild(
        el(
          "tr",
          { class: line.level, "data-step": step, "data-level": line.level, "data-kind": line.kind },
          el("td", { class: "mono" }, new Date(line.time * 1000).toLocaleTimeString()),
          el("td", {}, step || "(run)"),
          el("td", {}, line.level),
          el("td", {}, line.kind),
          el("td", {}, el("pre", {}, line.message)),
        ),
      );
    }
    applyFilter();
  };

  const applyUpdate = (update) => {
    const before = picked === null ? null : JSON.stringify(nodes[picked] || null);
    nodes = update.nodes;
    runStatus = update.status;
    for (const node of detail.graph.nodes) {
      const [status, subtitle] = nodeLabel(node);
      graph.update(node.id, status, subtitle);
    }
    setCounts(update.counts);
    statusBadge.replaceChildren(badge(update.status));
    addLines(update.lines, update.first);
    // redrawn at most once a second while the run lives, and once when it ends
    if (update.lines.length && (Date.now() - timelineAt > 1000 || update.status !== "STARTED")) refreshTimeline();
    if (picked !== null && JSON.stringify(nodes[picked] || null) !== before) renderSteps().catch(failed);
  };

  show(
    el("h1", {}, "Run ", el("span", { class: "mono" }, run.run_id), " ", statusBadge, " ", liveNote),
    el(
      "p",
      {},
      "Job ",
      detail.graph_from === "job" ? el("a", { href: `#/job/${encodeURIComponent(run.job_name)}` }, run.job_name) : run.job_name,
      ` · started ${when(run.start_time)}${run.duration === null ? "" : ` · ${duration(run.duration)}`} · `,
      counts,
    ),
    detail.reason ? el("pre", { class: "error", id: "run-reason" }, detail.reason) : null,
    detail.graph_from === "events"
      ? el("p", { class: "muted" }, "Graph from the run's events (start memodag ui with -f/-m of this job for its full graph).")
      : null,
    configTable(run.run_config),
    legend(["success", "memoized", "failed", "skipped", "running", "retrying"]),
    el("div", { class: "layout" }, graphBox, stepBox),
    el("h2", {}, "Timeline"),
    timelineBox,
    el("h2", {}, "Events"),
    el("div", { class: "filters" }, "Step ", stepFilter, " Level ", levelFilter),
    earlier,
    el("div", { id: "log", class: "panel" }, el("table", {}, logBody)),
  );

  refreshTimeline();
  if (run.status === "STARTED") {
    liveSource = new EventSource(`/api/runs/${encodeURIComponent(run.run_id)}/stream`);
    liveSource.addEventListener("update", (message) => applyUpdate(JSON.parse(message.data)));
    liveSource.addEventListener("end", (message) => {
      liveSource.close();
      liveSource = null;
      liveNote.textContent = "";
      statusBadge.replaceChildren(badge(JSON.parse(message.data).status));
      document.body.dataset.runEnded = "1";
    });
  } else {
    const log = await api(`/api/runs/${encodeURIComponent(run.run_id)}/events`);
    addLines(log.lines, log.first);
  }
}

// the run config as "path: value" rows (passwords come masked from the server)
function configTable(config) {
  const rows = [];
  const walk = (value, path) => {
    if (value && typeof value === "object" && !Array.isArray(value) && Object.keys(value).length) {
      for (const [key, inner] of Object.entries(value)) walk(inner, path ? `${path}.${key}` : key);
    } else if (path) {
      rows.push(el("tr", {}, el("td", { class: "mono" }, path), el("td", { class: "mono" }, JSON.stringify(value))));
    }
  };
  walk(config, "");
  if (!rows.length) return null;
  return el("details", { id: "run-config" }, el("summary", {}, `Run config (${rows.length} values)`), el("table", {}, rows));
}

// One bar per step, by start time: where the run's time went
async function drawTimeline(container, runId) {
  const timeline = await api(`/api/runs/${encodeURIComponent(runId)}/timeline`);
  const bars = timeline.bars;
  if (!bars.length) {
    container.replaceChildren(el("p", { class: "muted" }, "No step has ended yet."));
    return;
  }
  const now = Date.now() / 1000;
  const t0 = Math.min(...bars.map((b) => b[1]));
  const t1 = Math.max(...bars.map((b) => b[2] || now), t0 + 0.001);
  const width = 1000;
  const label = 180;
  const row = Math.max(3, Math.min(16, Math.floor(400 / bars.length)));
  const root = svg("svg", { id: "timeline-svg", viewBox: `0 0 ${width} ${bars.length * row + 4}`, width: "100%" });
  const scale = (width - label - 10) / (t1 - t0);
  bars.forEach(([step, start, end, status], i) => {
    const bar = svg("g", { class: "bar", "data-step": step, "data-status": status });
    const span = ((end || now) - start);
    bar.appendChild(svg("title", {}, `${step}: ${status}, ${duration(end ? span : null) || "running"}`));
    if (row >= 10) bar.appendChild(svg("text", { x: 0, y: i * row + row - 3 }, step));
    bar.appendChild(svg("rect", { x: label + (start - t0) * scale, y: i * row + 1, width: Math.max(1.5, span * scale), height: row - 2 }));
    root.appendChild(bar);
  });
  const more = timeline.total - bars.length;
  container.replaceChildren(
    el("p", { class: "muted" }, `${duration(t1 - t0)} from the first step's start to the last step's end` + (more > 0 ? ` (the ${bars.length} longest of ${timeline.total} steps)` : "")),
    root,
  );
}

function legend(statuses) {
  return el("p", { class: "legend" }, statuses.map((s) => el("span", {}, badge(s))));
}

function addressTable(items) {
  if (!items.length) return el("p", { class: "muted" }, "none");
  return el(
    "table",
    {},
    el("tr", {}, el("th", {}, "Name"), el("th", {}, "Address"), el("th", {}, "Version")),
    items.map((item) =>
      el(
        "tr",
        {},
        el("td", {}, item.address && item.address.mapping_key != null ? `${item.name}[${item.address.mapping_key}]` : item.name),
        el("td", { class: "mono" }, where(item.address)),
        el("td", { class: "mono" }, (item.address && item.address.version) || ""),
      ),
    ),
  );
}

function stepDetails(step, index, all) {
  // a mapped node's clones fold into closed <details>; a failed one opens to show its error
  return el(
    "details",
    { class: "step", "data-step": step.step_key, open: all.length === 1 || (step.status === "failed" && index < 5) },
    el(
      "summary",
      {},
      el("span", { class: "mono" }, step.step_key),
      " ",
      badge(step.status),
      el("span", { class: "muted" }, ` ${duration(step.duration) || "–"} · attempts ${step.attempts}`),
    ),
    step.error ? el("pre", { class: "error" }, step.error) : null,
    el("h4", {}, "Inputs"),
    addressTable(step.inputs),
    el("h4", {}, "Outputs"),
    addressTable(step.outputs),
  );
}

// -- jobs -------------------------------------------------------------------------------------

async function jobsPage() {
  const names = await api("/api/jobs");
  show(
    el("h1", {}, "Jobs"),
    names.length
      ? el("ul", { id: "jobs" }, names.map((name) => el("li", {}, el("a", { href: `#/job/${encodeURIComponent(name)}` }, name))))
      : el("p", { class: "muted" }, "No job loaded: start memodag ui with -f FILE.py or -m MODULE."),
  );
}

async function jobPage(name) {
  const view = await api(`/api/jobs/${encodeURIComponent(name)}`);
  const graphBox = el("div", { id: "graph", class: "panel" });
  const outBox = el("div", { id: "outputs", class: "panel" }, el("p", { class: "muted" }, "Click a node to see its outputs and why they will be recomputed."));
  const label = (node) => {
    const state = view.nodes[node.id];
    if (!state) return ["pending", "not planned yet"];
    return [state.status, countsText(state.counts)];
  };
  drawGraph(graphBox, view.graph, label, (id) => {
    const state = view.nodes[id];
    const rows = state ? state.outputs : [];
    outBox.replaceChildren(
      el("h2", {}, id),
      el(
        "table",
        {},
        el("tr", {}, el("th", {}, "Output"), el("th", {}, "Version"), el("th", {}, "Status"), el("th", {}, "Why")),
        rows.map((row) =>
          el(
            "tr",
            { "data-output": row.step_output },
            el("td", { class: "mono" }, row.step_output),
            el("td", { class: "mono" }, row.version ? row.version.slice(0, 12) : "–"),
            el("td", {}, badge(row.status)),
            el("td", {}, row.reasons.join("; ")),
          ),
        ),
      ),
    );
  });
  const configs = view.config_files.length ? `config ${view.config_files.join(", ")}` : "default config";
  show(
    el("h1", {}, "Job ", view.job),
    el("p", { class: "muted", id: "job-summary" }, `If run now with ${configs}: ${countsText(view.counts) || "no outputs"}`),
    legend(["stored", "to-be-recomputed", "depends-on-data", "unversioned", "skipped"]),
    el("div", { class: "layout" }, graphBox, outBox),
  );
}
