// minifal's dashboard: runners (polled from /runners), startup timelines (the data dir's runs,
// drawn as SVG from the startup report's JSON) and a playground per endpoint (forms generated
// from /openapi.json, or each app's /local/<app>/openapi.json, submitted through the queue).
// Plain JS, no build step, no network beyond this gateway.
"use strict";

const RUNNERS_EVERY_MS = 1000;
const TIMELINE_EVERY_MS = 2000;
const STATUS_EVERY_MS = 300;
const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) node.append(child);
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

async function getJSON(url) {
  const response = await fetch(url, { credentials: "same-origin" });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

function seconds(value) {
  return value === null || value === undefined ? "-" : `${value.toFixed(1)}s`;
}

function duration(value) {
  if (value === null || value === undefined) return "-";
  const whole = Math.max(0, Math.floor(value));
  const h = Math.floor(whole / 3600), m = Math.floor((whole % 3600) / 60), s = whole % 60;
  if (h) return `${h}h ${String(m).padStart(2, "0")}m`;
  if (m) return `${m}m ${String(s).padStart(2, "0")}s`;
  return `${s}s`;
}

// -- runners ------------------------------------------------------------------------------------

const openHistories = new Set();

function revisionNote(revisions) {
  revisions = revisions || {};
  const rollout = revisions.rollout ? `, rolling out ${revisions.rollout}` : "";
  const failed = (revisions.revisions || []).filter((r) => r.status === "failed").slice(-1)
    .map((r) => `, ${r.revision} failed: ${r.reason}`).join("");
  return `revision ${revisions.serving || "-"}${rollout}${failed}`;
}

// One app: /runners has its name and revisions; several: `apps`, one entry per app.
function renderRunners(data) {
  const apps = data.apps || [{ app: data.app, revisions: data.revisions }];
  document.getElementById("app-name").textContent = apps.map((app) => app.app).join(", ");
  const notes = apps.map((app) => (data.apps ? `${app.app} ` : "") + revisionNote(app.revisions));
  document.getElementById("run-id").textContent = `run ${data.run_id}, ${notes.join("; ")}`;
  const body = document.querySelector("#runners tbody");
  body.replaceChildren();
  for (const runner of data.runners) {
    const row = el("tr", { class: "runner", "data-runner": runner.runner_id },
      el("td", { text: runner.alias || "-" }),
      el("td", { text: runner.runner_id }),
      el("td", { text: runner.machine_type || "-" }),
      el("td", { text: runner.revision || "-" }),
      el("td", {}, el("span", { class: `state state-${runner.state}`, text: runner.state })),
      el("td", { text: runner.node || "-" }),
      el("td", { text: runner.gpus || "-" }),
      el("td", { text: String(runner.in_flight_requests) }),
      el("td", { text: duration(runner.expires_in) }),
      el("td", { text: seconds(runner.startup_seconds) }),
      el("td", { text: duration(runner.uptime) }),
      el("td", { text: runner.last_exit_reason || "" }),
    );
    row.addEventListener("click", () => {
      if (openHistories.has(runner.runner_id)) openHistories.delete(runner.runner_id);
      else openHistories.add(runner.runner_id);
      renderRunners(data);
    });
    body.append(row);
    if (openHistories.has(runner.runner_id)) {
      const steps = runner.state_history.map(
        (step) => `${new Date(step.at * 1000).toLocaleTimeString()} ${step.state}`);
      const held = runner.suspensions && runner.suspensions.host_memory_bytes;
      const note = held ? ` (suspended, holds ${(held / 2 ** 30).toFixed(1)} GiB)` : "";
      body.append(el("tr", { class: "history" },
        el("td", { colspan: "12", text: steps.join(" → ") + note })));
    }
  }
}

async function refreshRunners() {
  const status = document.getElementById("connection");
  try {
    renderRunners(await getJSON("/runners"));
    status.textContent = "";
  } catch (error) {
    status.textContent = `gateway unreachable (${error.message})`;
  }
}

// -- startup timelines ------------------------------------------------------------------------

const LANE = { label: 230, width: 1000, bar: 12, gap: 2, pad: 5, minLevels: 2 };

// Bars go on levels: longest first, each on the first level where it overlaps no other bar, so
// a phase inside another (a compile inside setup) sits under it instead of hiding behind it.
// A phase in progress (begun, not ended) is a bar too, up to now; `open` holds what the report
// says of it (running or never finished, its last time).
function levelled(lane) {
  const bars = Object.entries(lane.phases)
    .filter(([, timing]) => !timing.instant)
    .map(([phase, timing]) => ({ phase, timing, open: null }))
    .concat((lane.in_progress || []).map((open) => ({ phase: open.phase, timing: open, open })))
    .sort((a, b) => (b.timing.end_s - b.timing.start_s) - (a.timing.end_s - a.timing.start_s));
  const levels = [];
  return bars.map(({ phase, timing, open }) => {
    let level = levels.findIndex((taken) =>
      taken.every(([start, end]) => timing.end_s <= start || timing.start_s >= end));
    if (level < 0) { level = levels.length; levels.push([]); }
    levels[level].push([timing.start_s, timing.end_s]);
    return { phase, timing, level, open };
  });
}

// A phase in progress: a bar up to now (translucent with a dashed edge while it runs, paler if its
// process exited before it ended), the outline of how long it took last time, its words beside it.
function openBar(group, { phase, timing, open }, x, lane, top, colour) {
  const start = lane.started_at_s + timing.start_s;
  const elapsed = timing.end_s - timing.start_s;
  const last = open.last_s === null ? "" : `, last time ${open.last_s.toFixed(1)} s`;
  const words = open.running ? `${open.title}: ${elapsed.toFixed(1)} s${last}`
    : `${open.title}: never finished (its process exited)`;
  if (open.last_s !== null) {
    group.append(svg("rect", { x: x(start), y: top, width: Math.max(1, x(start + open.last_s) - x(start)),
      height: LANE.bar, class: "last-time", fill: "none", stroke: colour }));
  }
  const bar = svg("rect", {
    x: x(start), y: top, width: Math.max(2, x(lane.started_at_s + timing.end_s) - x(start)), height: LANE.bar,
    fill: colour, class: `phase phase-${phase.replace(/\./g, "-")} ${open.running ? "in-progress" : "unfinished"}`,
  });
  bar.append(svg("title", {}, words));
  group.append(bar);
  // beside the bar's end, or over the bar where the plot ends
  const at = x(lane.started_at_s + timing.end_s), inside = at > LANE.width - 260;
  group.append(svg("text", { x: inside ? at - 3 : at + 3, y: top + LANE.bar - 2, class: "in-progress-label",
    "text-anchor": inside ? "end" : "start" }, words));
}

function colourOf(report, phase, others) {
  if (report.colours[phase]) return report.colours[phase];
  if (!others.has(phase)) others.set(phase, report.other_colours[others.size % report.other_colours.length]);
  return others.get(phase);
}

function timelineSvg(report, legend) {
  const lanes = report.runners;
  let end = 1;
  for (const lane of lanes) {
    for (const timing of Object.values(lane.phases)) end = Math.max(end, lane.started_at_s + timing.end_s);
    for (const open of lane.in_progress || []) {
      end = Math.max(end, lane.started_at_s + Math.max(open.end_s, open.start_s + (open.last_s || 0)));
    }
  }
  const plot = LANE.width - LANE.label - 10;
  const x = (s) => LANE.label + (s / end) * plot;
  const placed = lanes.map(levelled);
  const heights = placed.map((bars) => {
    const levels = Math.max(LANE.minLevels, ...bars.map((bar) => bar.level + 1));
    return LANE.pad * 2 + levels * (LANE.bar + LANE.gap);
  });
  const height = 24 + heights.reduce((sum, h) => sum + h + 4, 0);
  const root = svg("svg", { width: LANE.width, height, viewBox: `0 0 ${LANE.width} ${height}` });
  const axis = svg("g", { class: "axis" });
  const step = [0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600].find((s) => end / s <= 12) || 1200;
  for (let s = 0; s <= end; s += step) {
    axis.append(svg("line", { x1: x(s), x2: x(s), y1: 14, y2: height, stroke: "#e4e4e4" }));
    axis.append(svg("text", { x: x(s) + 2, y: 11 }, `${Math.round(s * 10) / 10}s`));
  }
  root.append(axis);
  const others = new Map();
  let top = 20;
  lanes.forEach((lane, index) => {
    const laneHeight = heights[index];
    const group = svg("g", { class: "lane", "data-runner": lane.runner_id });
    group.append(svg("rect", { x: 0, y: top, width: LANE.width, height: laneHeight, fill: "#f4f4f6" }));
    const ready = lane.ready_at_s === null ? "not ready" : `ready at ${lane.ready_at_s.toFixed(1)}s`;
    const revision = lane.revision ? ` · ${lane.revision}` : "";
    group.append(svg("text", { x: 4, y: top + 16 }, `${lane.runner}${revision}`));
    group.append(svg("text", { x: 4, y: top + 30, fill: "#6e6e6e" }, `${ready}, ${lane.cache || ""}`));
    for (const placedBar of placed[index]) {
      const { phase, timing, level } = placedBar;
      const start = lane.started_at_s + timing.start_s;
      const colour = colourOf(report, phase, others);
      legend.set(phase, colour);
      if (placedBar.open) {
        openBar(group, placedBar, x, lane, top + LANE.pad + level * (LANE.bar + LANE.gap), colour);
        continue;
      }
      const bar = svg("rect", {
        x: x(start), y: top + LANE.pad + level * (LANE.bar + LANE.gap),
        width: Math.max(1, x(lane.started_at_s + timing.end_s) - x(start)), height: LANE.bar,
        fill: colour, class: `phase phase-${phase.replace(/\./g, "-")}`,
      });
      const times = timing.count > 1 ? ` (${timing.count} times, ${timing.duration_s.toFixed(2)} s in all)` : "";
      bar.append(svg("title", {}, `${phase}: ${(timing.end_s - timing.start_s).toFixed(2)} s${times}`));
      group.append(bar);
    }
    for (const [phase, timing] of Object.entries(lane.phases)) {
      if (!timing.instant) continue;
      const at = x(lane.started_at_s + timing.start_s);
      const colour = colourOf(report, phase, others);
      legend.set(phase, colour);
      group.append(svg("line", { x1: at, x2: at, y1: top, y2: top + laneHeight,
        stroke: colour, "stroke-width": 2, class: `instant phase-${phase}` }));
    }
    root.append(group);
    top += laneHeight + 4;
  });
  return root;
}

async function drawTimelines() {
  const container = document.getElementById("timelines");
  const chosen = [document.getElementById("run-a").value, document.getElementById("run-b").value]
    .filter((id, index, all) => id && all.indexOf(id) === index);
  const legend = new Map();
  const figures = [];
  for (const runId of chosen) {
    try {
      const report = await getJSON(`/dashboard/api/runs/${encodeURIComponent(runId)}`);
      figures.push(el("div", { class: "timeline", "data-run": runId },
        el("h3", { text: `run ${runId}: ${report.runners.length} runner start(s)` }),
        timelineSvg(report, legend)));
    } catch (error) {
      figures.push(el("div", { class: "timeline", text: `run ${runId}: ${error.message}` }));
    }
  }
  container.replaceChildren(...figures);
  document.getElementById("legend").replaceChildren(...[...legend].map(([phase, colour]) =>
    el("span", {}, el("i", { style: `background:${colour}` }), phase)));
}

async function loadRuns() {
  const data = await getJSON("/dashboard/api/runs");
  const [a, b] = [document.getElementById("run-a"), document.getElementById("run-b")];
  const keepA = a.value, keepB = b.value;
  const label = (run) => `${run.run_id}${run.current ? " (this run)" : ""}`;
  a.replaceChildren(...data.runs.map((run) => el("option", { value: run.run_id, text: label(run) })));
  b.replaceChildren(el("option", { value: "", text: "-" }),
    ...data.runs.map((run) => el("option", { value: run.run_id, text: label(run) })));
  a.value = keepA || (data.runs.find((run) => run.current) || data.runs[0] || {}).run_id || "";
  b.value = keepB;
}

async function refreshStartup() {
  try {
    await loadRuns();
    await drawTimelines();
  } catch (error) {
    document.getElementById("timelines").textContent = `no startup data yet (${error.message})`;
  }
}

// -- playground -------------------------------------------------------------------------------

function resolve(spec, schema) {
  while (schema && schema.$ref) schema = spec.components.schemas[schema.$ref.split("/").pop()];
  if (schema && schema.allOf && schema.allOf.length === 1) return resolve(spec, schema.allOf[0]);
  return schema || {};
}

function fieldSchema(spec, schema) {
  // Optional[X] is anyOf [X, null]: the form shows X and leaves the field empty for null.
  const resolved = resolve(spec, schema);
  if (resolved.anyOf) {
    const inner = resolved.anyOf.filter((option) => option.type !== "null");
    if (inner.length === 1) return { ...resolve(spec, inner[0]), default: resolved.default,
      title: resolved.title, description: resolved.description, examples: resolved.examples };
  }
  return resolved;
}

function inputFor(name, schema, required) {
  const initial = schema.default ?? (required && schema.examples ? schema.examples[0] : undefined);
  if (schema.enum) {
    const select = el("select", { name });
    for (const value of schema.enum) select.append(el("option", { value, text: String(value) }));
    if (initial !== undefined) select.value = initial;
    return select;
  }
  if (schema.type === "boolean") return el("input", { type: "checkbox", name, checked: initial === true });
  if (schema.type === "integer" || schema.type === "number") {
    return el("input", {
      type: "number", name, value: initial ?? "",
      min: schema.minimum ?? schema.exclusiveMinimum, max: schema.maximum ?? schema.exclusiveMaximum,
      step: schema.multipleOf ?? (schema.type === "integer" ? 1 : "any"),
      placeholder: schema.examples ? String(schema.examples[0]) : undefined,
      "data-kind": schema.type,
    });
  }
  if (schema.type === "string" && !schema.format?.includes("binary")) {
    const long = (schema.maxLength ?? 1000) > 200;
    const attrs = { name, placeholder: schema.examples ? String(schema.examples[0]) : undefined,
      minlength: schema.minLength, maxlength: schema.maxLength };
    const input = long ? el("textarea", attrs) : el("input", { type: "text", ...attrs });
    input.value = initial ?? "";
    return input;
  }
  const input = el("textarea", { name, "data-kind": "json", placeholder: "JSON" });
  input.value = initial === undefined ? "" : JSON.stringify(initial);
  return input;
}

function formValues(form) {
  const body = {};
  for (const input of form.querySelectorAll("[name]")) {
    const name = input.getAttribute("name");
    if (input.type === "checkbox") { body[name] = input.checked; continue; }
    if (input.value === "") continue;
    const kind = input.getAttribute("data-kind");
    if (kind === "integer") body[name] = parseInt(input.value, 10);
    else if (kind === "number") body[name] = parseFloat(input.value);
    else if (kind === "json") body[name] = JSON.parse(input.value);
    else body[name] = input.value;
  }
  return body;
}

function imagesIn(value, found = []) {
  if (Array.isArray(value)) value.forEach((item) => imagesIn(item, found));
  else if (value && typeof value === "object") {
    const type = value.content_type || "";
    if (typeof value.url === "string" && (type.startsWith("image/") || /\.(png|jpe?g|webp|gif)$/i.test(value.url))) found.push(value.url);
    else Object.values(value).forEach((item) => imagesIn(item, found));
  }
  return found;
}

function showErrors(form, body, result) {
  const general = [];
  for (const item of Array.isArray(body.detail) ? body.detail : []) {
    const loc = item.loc || [];
    const field = loc[0] === "body" ? loc[1] : loc[loc.length - 1];
    const slot = field !== undefined && form.querySelector(`.error[data-field="${field}"]`);
    if (slot) slot.textContent = item.msg;
    else general.push(`${loc.join(".")}: ${item.msg}`);
  }
  if (!Array.isArray(body.detail)) general.push(typeof body.detail === "string" ? body.detail : JSON.stringify(body));
  if (general.length) result.append(el("div", { class: "error-box", text: general.join("\n") }));
}

// The request's own log lines (fal's fields), as its status returns them while it runs.
function showLogs(pre, logs) {
  pre.textContent = logs.map((l) => `${(l.timestamp || "").slice(11, 23)} ${l.level} ${l.message}`).join("\n");
  pre.hidden = logs.length === 0;
}

async function submit(form, path) {
  const status = form.querySelector(".status");
  const result = form.querySelector(".result");
  result.replaceChildren();
  showLogs(form.querySelector(".logs"), []);
  form.querySelectorAll(".error").forEach((slot) => { slot.textContent = ""; });
  let body;
  try { body = formValues(form); } catch (error) { status.textContent = `bad JSON: ${error.message}`; return; }
  status.textContent = "submitting";
  const submitted = await fetch(`/queue${path}`, {
    method: "POST", credentials: "same-origin",
    headers: { "content-type": "application/json" }, body: JSON.stringify(body),
  });
  const ticket = await submitted.json();
  if (!submitted.ok) { status.textContent = `HTTP ${submitted.status}`; showErrors(form, ticket, result); return; }
  const started = performance.now();
  for (;;) {
    const state = await getJSON(`${new URL(ticket.status_url).pathname}?logs=1`);
    const position = state.status === "IN_QUEUE" ? ` (position ${state.queue_position})` : "";
    status.textContent = `${state.status}${position}, ${((performance.now() - started) / 1000).toFixed(1)} s`;
    if (state.logs) showLogs(form.querySelector(".logs"), state.logs);
    if (state.status === "COMPLETED") break;
    await new Promise((done) => setTimeout(done, STATUS_EVERY_MS));
  }
  const answer = await fetch(new URL(ticket.response_url).pathname, { credentials: "same-origin" });
  const output = await answer.json();
  status.textContent += ` - HTTP ${answer.status}`;
  if (!answer.ok) { showErrors(form, output, result); return; }
  for (const url of imagesIn(output)) result.append(el("img", { src: url, alt: "result" }));
  result.append(el("pre", { text: JSON.stringify(output, null, 2) }));
}

function endpointForm(spec, path, operation) {
  const media = operation.requestBody?.content?.["application/json"];
  if (!media) return null;
  const schema = resolve(spec, media.schema);
  const required = new Set(schema.required || []);
  // novalidate: the endpoint's own validation (a 422 shown by its field) is the one truth.
  const form = el("form", { class: "endpoint", "data-path": path, novalidate: true },
    el("h3", { text: `POST ${path}  ${operation.summary || ""}` }));
  for (const [name, property] of Object.entries(schema.properties || {})) {
    const field = fieldSchema(spec, property);
    const bounds = [field.minimum !== undefined && `≥ ${field.minimum}`, field.maximum !== undefined && `≤ ${field.maximum}`,
      field.multipleOf && `multiple of ${field.multipleOf}`].filter(Boolean).join(", ");
    form.append(el("div", { class: "field" },
      el("label", { text: `${field.title || name}${required.has(name) ? " *" : ""}` }),
      inputFor(name, field, required.has(name)),
      el("div", { class: "hint", text: [field.description, bounds].filter(Boolean).join(" ") }),
      el("div", { class: "error", "data-field": name })));
  }
  form.append(el("button", { type: "submit", text: "Run" }), el("div", { class: "status" }),
    el("pre", { class: "logs", hidden: true }), el("div", { class: "result" }));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit(form, path).catch((error) => { form.querySelector(".status").textContent = error.message; });
  });
  return form;
}

// One app: its endpoints at their own paths; several: each app's at /local/<app>/...
async function buildPlayground() {
  const container = document.getElementById("playground");
  try {
    const runners = await getJSON("/runners");
    const apps = runners.apps ? runners.apps.map((app) => `/local/${app.app}`) : [""];
    const forms = [];
    for (const prefix of apps) {
      const spec = await getJSON(`${prefix}/openapi.json`);
      for (const [path, operations] of Object.entries(spec.paths || {})) {
        if (operations.post) {
          const form = endpointForm(spec, prefix ? `${prefix}${path}` : path, operations.post);
          if (form) forms.push(form);
        }
      }
    }
    container.replaceChildren(...(forms.length ? forms : [el("p", { class: "muted", text: "no JSON endpoints" })]));
  } catch (error) {
    container.textContent = `no OpenAPI schema (${error.message})`;
  }
}

document.getElementById("run-a").addEventListener("change", drawTimelines);
document.getElementById("run-b").addEventListener("change", drawTimelines);
refreshRunners();
refreshStartup();
buildPlayground();
setInterval(refreshRunners, RUNNERS_EVERY_MS);
setInterval(refreshStartup, TIMELINE_EVERY_MS);
