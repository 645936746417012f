// xlb's status page: polls /status.json every second and /history.json every two seconds,
// and draws what they say. Everything it needs comes from the agent itself.
"use strict";

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function si(n) {
  if (!isFinite(n)) return "-";
  const units = [[1e9, "G"], [1e6, "M"], [1e3, "k"]];
  for (const [v, u] of units) if (Math.abs(n) >= v) return (n / v).toFixed(n / v >= 100 ? 0 : 1) + u;
  // A count below 10 stays whole ("7", not "7.0"); a rate keeps its tenth.
  return n >= 10 || Number.isInteger(n) ? Math.round(n).toString() : n.toFixed(1);
}

// "1 service", "2 services".
const count = (n, what) => `${n} ${what}${n === 1 ? "" : "s"}`;

function duration(s) {
  s = Math.floor(s);
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  return `${m}m ${s % 60}s`;
}

// Lines of `series` ([[values...], class]) in an SVG, scaled to their common maximum.
function plot(svg, series) {
  const w = 600, h = svg.classList.contains("small") ? 50 : 120;
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  const n = Math.max(...series.map(([v]) => v.length), 2);
  const max = Math.max(1, ...series.flatMap(([v]) => v));
  svg.replaceChildren(...series.map(([values, cls]) => {
    const pts = values.map((v, i) => `${(i + n - values.length) * w / (n - 1)},${h - 2 - (v / max) * (h - 4)}`).join(" ");
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", pts);
    line.setAttribute("class", cls);
    return line;
  }));
  svg.dataset.max = String(max);
}

let history = { points: [] };

function drawHistory() {
  const pts = history.points;
  plot($("node-chart"), [[pts.map((p) => p.node.packets), "pps"], [pts.map((p) => p.node.new_flows), "flows"]]);
  const last = pts[pts.length - 1];
  $("node-now").textContent = last
    ? `${si(last.node.packets)} packets/s, ${si(last.node.new_flows)} new flows/s` +
      (last.unrecorded > 0 ? `, ${si(last.unrecorded)}/s unrecorded (new-flow limit)` : "") +
      (last.dropped > 0 ? `, ${si(last.dropped)}/s dropped` : "")
    : "";
  $("span").textContent = pts.length > 1 ? `last ${duration(pts[pts.length - 1].t - pts[0].t)}` : "";
  $("node-rates").dataset.packetsPerSecond = last ? String(last.node.packets) : "0";
  for (const card of document.querySelectorAll("section[data-service]")) {
    const name = card.dataset.service;
    const rates = pts.map((p) => p.services[name] || { packets: 0, new_flows: 0 });
    plot(card.querySelector("svg"), [[rates.map((r) => r.packets), "pps"], [rates.map((r) => r.new_flows), "flows"]]);
    const now = rates[rates.length - 1];
    card.querySelector(".rate").textContent = now ? `${si(now.packets)} packets/s, ${si(now.new_flows)} new flows/s` : "";
    card.dataset.packetsPerSecond = now ? String(now.packets) : "0";
  }
}

function backendRow(b, sorry) {
  const state = sorry ? `sorry:${b.state}` : b.state;
  const last = b.reason ? `${b.health} (${b.reason})` : b.health;
  const tr = el("tr", { "data-backend": b.address },
    el("td", {}, b.address, b.runtime ? el("small", { class: "reason" }, ` [${b.runtime}]`) : ""),
    el("td", { class: `state ${b.state}` }, state),
    el("td", { class: "num" }, b.weight),
    el("td", { class: "num" }, b.flows == null ? "-" : si(b.flows)),
    el("td", { class: "num" }, si(b.counters.packets)),
    el("td", { class: "num hide-narrow" }, si(b.counters.bytes)),
    el("td", { class: "reason hide-narrow" }, `${last}, ${count(b.transitions, "transition")}`));
  return tr;
}

function drawServices(st) {
  const cards = st.services.map((s) => {
    const vip = s.vip.includes(":") ? `[${s.vip}]` : s.vip;
    const rows = s.backends.map((b) => backendRow(b, false));
    if (s.sorry) rows.push(backendRow(s.sorry, true));
    const card = el("section", { class: "card", "data-service": s.name },
      el("div", { class: "service-head" },
        el("h2", {}, s.name, " ", el("small", {}, `${s.protocol.toUpperCase()} ${vip}:${s.port} ${s.scheduler}`)),
        el("span", { class: `mode-${s.mode}` }, s.mode === "normal" ? "" : `below quorum ${s.quorum}: ${s.mode}`),
        el("span", { class: "rate" }, "")),
      el("div", { class: "table-wrap" },
        el("table", {},
          el("thead", {}, el("tr", {},
            el("th", {}, "Backend"), el("th", {}, "State"), el("th", { class: "num" }, "Weight"),
            el("th", { class: "num" }, "Flows"), el("th", { class: "num" }, "Packets"),
            el("th", { class: "num hide-narrow" }, "Bytes"), el("th", { class: "hide-narrow" }, "Health, last transition"))),
          el("tbody", {}, ...rows))));
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("class", "chart small");
    svg.setAttribute("preserveAspectRatio", "none");
    card.insertBefore(svg, card.children[1]);
    return card;
  });
  $("services").replaceChildren(...cards);
}

function drawStatus(st) {
  const a = st.agent || {};
  $("node").textContent = a.hostname || "xlb";
  document.title = `xlb on ${a.hostname || "?"}`;
  $("version").textContent = a.version ? `xlb ${a.version}` : "";
  $("summary").textContent =
    `up ${duration(a.uptime_seconds || 0)} · interfaces ${st.interfaces.join(", ")} · ` +
    `flows ${si(st.flows)} of ${si(a.flow_table_size || 0)} · ${count(st.services.length, "service")}`;
  $("vrrp").replaceChildren(...st.vrrp.map((v) =>
    el("span", { class: `badge ${v.state}`, "data-instance": v.name },
      `${v.name} ${v.state} (prio ${v.priority}${v.master ? `, master ${v.master}` : ""})`)));
  const f = st.faults || {};
  const faults = [];
  if (f.out_of_sync) faults.push("maps not in the desired state (retrying)");
  if (f.last_error) faults.push(`last error: ${f.last_error}`);
  $("faults").hidden = faults.length === 0;
  $("faults").textContent = faults.join(" · ");
  drawServices(st);
  $("counters").replaceChildren(...Object.entries(st.counters).reduce((rows, [k, v], i) => {
    if (i % 2 === 0) rows.push(el("tr", {}));
    rows[rows.length - 1].append(el("td", {}, k), el("td", { class: "num" }, si(v)));
    return rows;
  }, []));
  drawHistory();
}

async function poll(url, every, draw) {
  for (;;) {
    try {
      const r = await fetch(url, { cache: "no-store" });
      if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
      draw(await r.json());
      $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (e) {
      $("updated").textContent = `not updated: ${e.message}`;
    }
    await new Promise((ok) => setTimeout(ok, every));
  }
}

poll("status.json", 1000, drawStatus);
poll("history.json", 2000, (h) => { history = h; drawHistory(); });
