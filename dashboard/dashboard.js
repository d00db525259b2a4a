// The Reactions dashboard: the current hour and the last 24 hours, from the public API only.
//
// Two loops, one a second each, so that a slow series (a cold read, a shard
// that does not answer) never delays the current hour's numbers. Every request
// is bounded: the entry point answers within 3 s, and the page gives up a
// little later. A 503 or no answer keeps what is shown and marks it.
"use strict";

const HOUR_MS = 3600000;
// The current hour and the chart are polled this often (the API's live hour lags commits by at most 2 s).
const POLL_MS = 1000;
// nginx answers every request within 3 s; past this the answer is not coming.
const REQUEST_TIMEOUT_MS = 3500;
const CHART_HOURS = 24;
const SERIES = [
  { key: "unique_users", cls: "users", name: "Unique users" },
  { key: "clicks", cls: "clicks", name: "Clicks" },
  { key: "impressions", cls: "impressions", name: "Impressions" },
];
const SVG_NS = "http://www.w3.org/2000/svg";

const hourStart = (ms) => Math.floor(ms / HOUR_MS) * HOUR_MS;
const clockTime = (date) => date.toISOString().slice(11, 19);
const hourLabel = (ms) => new Date(ms).toISOString().slice(11, 16);
const formatCount = (n) => n.toLocaleString("en-US");

// One GET, bounded; resolves to status, body and the staleness headers, rejects if no answer came.
async function get(url) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
  try {
    const resp = await fetch(url, { signal: controller.signal, cache: "no-store" });
    return {
      status: resp.status,
      text: await resp.text(),
      stale: resp.headers.get("X-Reactions-Stale") === "true",
      staleSince: resp.headers.get("X-Reactions-Stale-Since"),
    };
  } finally {
    clearTimeout(timer);
  }
}

// The one-line reason of a refusal (the API's error bodies are one line).
const reasonOf = (answer) => answer.text.split("\n")[0] || `HTTP ${answer.status}`;

function setBadge(id, state, text) {
  const badge = document.getElementById(id);
  badge.dataset.state = state;
  badge.textContent = text;
}

// "unique_users,3\nclicks,2\nimpressions,1\n" -> {unique_users: 3, clicks: 2, impressions: 1}
function parseCounts(text) {
  const counts = {};
  for (const line of text.trim().split("\n")) {
    const [name, value] = line.split(",");
    counts[name] = Number(value);
  }
  return counts;
}

// The series CSV (a header line, then hour_start_ms,unique_users,clicks,impressions) -> rows.
function parseSeries(text) {
  const [header, ...lines] = text.trim().split("\n");
  const names = header.split(",");
  return lines.map((line) => {
    const row = {};
    line.split(",").forEach((value, i) => { row[names[i]] = Number(value); });
    return row;
  });
}

// ---- the current hour ----

function showCounts(counts, hourMs) {
  for (const s of SERIES) {
    document.getElementById(s.key.replace("_", "-")).textContent = formatCount(counts[s.key]);
  }
  document.getElementById("hour-label").textContent =
    `This hour: ${hourLabel(hourMs)}–${hourLabel(hourMs + HOUR_MS)} UTC`;
}

async function pollCounts() {
  const hourMs = hourStart(Date.now());
  const counts = document.getElementById("counts");
  try {
    const answer = await get(`/analytics?timestamp=${hourMs}`);
    if (answer.status !== 200) {
      counts.dataset.state = "incomplete";
      setBadge("live-status", "incomplete", `incomplete: ${reasonOf(answer)}`);
      return;
    }
    showCounts(parseCounts(answer.text), hourMs);
    const now = clockTime(new Date());
    if (answer.stale) {
      const since = answer.staleSince ? clockTime(new Date(answer.staleSince)) : "?";
      counts.dataset.state = "stale";
      setBadge("live-status", "stale", `stale since ${since} UTC`);
    } else {
      counts.dataset.state = "live";
      setBadge("live-status", "live", `live · ${now} UTC`);
    }
  } catch (err) {
    counts.dataset.state = "incomplete";
    setBadge("live-status", "incomplete", "no answer from the entry point");
  }
}

// ---- the chart: a hand-drawn SVG at the container's own pixel size ----

let lastRows = null;

// A grid step of 1, 2 or 5 times a power of ten, about a quarter of the largest value.
function niceStep(value) {
  const raw = Math.max(1, value / 4);
  const power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * power).find((step) => step >= raw);
}

function svg(name, attrs, text) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function drawChart(rows) {
  const box = document.getElementById("chart");
  const width = Math.max(260, box.clientWidth);
  const narrow = width < 480;
  const height = narrow ? 220 : 280;
  const pad = { left: narrow ? 40 : 56, right: narrow ? 16 : 24, top: 12, bottom: 28 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const largest = Math.max(0, ...rows.flatMap((r) => SERIES.map((s) => r[s.key])));
  const step = niceStep(largest);
  const top = Math.max(step, Math.ceil(largest / step) * step);
  const x = (i) => pad.left + (rows.length > 1 ? (i * plotW) / (rows.length - 1) : plotW / 2);
  const y = (v) => pad.top + plotH - (v / top) * plotH;

  const chart = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, "data-hours": rows.length });
  for (let value = 0; value <= top; value += step) {
    chart.append(svg("line", { class: "grid", x1: pad.left, x2: width - pad.right, y1: y(value), y2: y(value) }));
    chart.append(svg("text", { class: "axis", x: pad.left - 6, y: y(value) + 4, "text-anchor": "end" },
      formatCount(value)));
  }
  const every = narrow ? 6 : 3;
  rows.forEach((row, i) => {
    if ((rows.length - 1 - i) % every === 0) {
      const anchor = i === rows.length - 1 ? "end" : "middle";  // the last label stays inside the chart
      chart.append(svg("text", { class: "axis", x: x(i) + (anchor === "end" ? 8 : 0), y: height - 8, "text-anchor": anchor },
        hourLabel(row.hour_start_ms)));
    }
  });
  for (const s of SERIES) {
    const points = rows.map((row, i) => `${x(i).toFixed(1)},${y(row[s.key]).toFixed(1)}`).join(" ");
    const values = rows.map((row) => row[s.key]).join(",");
    chart.append(svg("polyline", { class: `line ${s.cls}`, points, "data-series": s.key, "data-values": values }));
    const last = rows.length - 1;
    const dot = svg("circle", { class: `dot ${s.cls}`, cx: x(last), cy: y(rows[last][s.key]), r: 3.5 });
    dot.append(svg("title", {}, `${s.name}: ${formatCount(rows[last][s.key])}`));
    chart.append(dot);
  }
  box.replaceChildren(chart);
}

async function pollChart() {
  const to = hourStart(Date.now());
  const from = to - (CHART_HOURS - 1) * HOUR_MS;
  const box = document.getElementById("chart");
  try {
    const answer = await get(`/analytics/series?from=${from}&to=${to}`);
    if (answer.status !== 200) {  // keep the last chart, marked
      box.dataset.state = "incomplete";
      setBadge("chart-status", "incomplete", `incomplete: ${reasonOf(answer)}`);
      return;
    }
    lastRows = parseSeries(answer.text);
    drawChart(lastRows);
    box.dataset.state = answer.stale ? "stale" : "complete";
    setBadge("chart-status", answer.stale ? "stale" : "complete",
      answer.stale ? "stale: this hour lags" : `complete · ${clockTime(new Date())} UTC`);
  } catch (err) {
    box.dataset.state = "incomplete";
    setBadge("chart-status", "incomplete", "incomplete: no answer from the entry point");
  }
}

// ---- loops ----

function every(intervalMs, poll) {
  const loop = async () => {
    const started = performance.now();
    await poll();
    setTimeout(loop, Math.max(0, intervalMs - (performance.now() - started)));
  };
  loop();
}

window.addEventListener("resize", () => { if (lastRows) drawChart(lastRows); });
every(POLL_MS, pollCounts);
every(POLL_MS, pollChart);
