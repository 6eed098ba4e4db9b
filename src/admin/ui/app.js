// geolb status page. Reads /v1/status and /v1/ready every few seconds and
// renders them. Every string from the API reaches the page as a text node
// (el() and text() below), never as markup.
"use strict";

const REFRESH_MS = 3000;
const TOKEN_KEY = "geolb-admin-token";
const RANK = { green: 0, grey: 0, amber: 1, red: 2 };

let paused = false;
let timer = null;
let last = null; // { status, ready, at (ms, this clock), skew (s: server - this clock) }
let previous = null; // the status before `last`, for rates
let pending = null; // the action the dialog confirms

// ---- DOM helpers: data only ever becomes text --------------------------

function el(tag, attrs, ...kids) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") n.className = v;
    else if (k === "on") for (const [ev, f] of Object.entries(v)) n.addEventListener(ev, f);
    else if (k === "data") for (const [dk, dv] of Object.entries(v)) n.dataset[dk] = String(dv);
    else n.setAttribute(k, String(v));
  }
  for (const c of kids.flat()) {
    if (c === undefined || c === null || c === false) continue;
    n.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return n;
}

function $(id) { return document.getElementById(id); }
function light(color, title) { return el("span", { class: "light " + color, title: title || color }); }
function badge(color, words) { return el("span", { class: "badge " + color }, words); }
function worst(colors) { return colors.reduce((a, b) => (RANK[b] > RANK[a] ? b : a), "green"); }

// Any JSON value in words (for shapes the page does not know field by field).
function words(v) {
  if (v === null || v === undefined) return "";
  if (typeof v !== "object") return String(v);
  if (Array.isArray(v)) return v.map(words).join(", ");
  return Object.entries(v).map(([k, x]) => (typeof x === "object" && x !== null ? k + " (" + words(x) + ")" : k + " " + words(x))).join(", ");
}

function fmtNum(n) {
  if (n === null || n === undefined) return "–";
  if (typeof n !== "number") return String(n);
  if (Math.abs(n) >= 1e9) return (n / 1e9).toFixed(1) + "G";
  if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

function fmtDur(s) {
  if (s === null || s === undefined || !isFinite(s)) return "–";
  s = Math.max(0, Math.round(s));
  if (s < 120) return s + "s";
  if (s < 7200) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
  if (s < 172800) return Math.floor(s / 3600) + "h" + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
  return Math.floor(s / 86400) + "d" + Math.floor((s % 86400) / 3600) + "h";
}

// Server "now" in unix seconds, from the last fetch and this clock.
function serverNow() { return last ? Date.now() / 1000 + last.skew : Date.now() / 1000; }
function ago(unixS) { return unixS ? fmtDur(serverNow() - unixS) + " ago" : "never"; }
function when(unixS) { return unixS ? new Date(unixS * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "–"; }

// A countdown to a deadline in server unix seconds, ticking every second.
function countdown(untilS) {
  return el("span", { class: "countdown mono", data: { until: untilS } }, fmtDur(untilS - serverNow()));
}
function tick() {
  for (const n of document.querySelectorAll(".countdown")) {
    n.textContent = fmtDur(Number(n.dataset.until) - serverNow());
  }
  if (last) $("updated").textContent = "updated " + fmtDur((Date.now() - last.at) / 1000) + " ago";
}

function table(head, rows) {
  return el("table", {},
    el("thead", {}, el("tr", {}, head.map((h) => el("th", { class: h.startsWith("#") ? "num" : null }, h.replace(/^#/, ""))))),
    el("tbody", {}, rows));
}
function num(v) { return el("td", { class: "num" }, fmtNum(v)); }

// ---- fetching ----------------------------------------------------------

function token() { return sessionStorage.getItem(TOKEN_KEY); }

async function getJson(path) {
  const headers = { Accept: "application/json" };
  const t = token();
  if (t) headers.Authorization = "Bearer " + t;
  const r = await fetch(path, { headers, cache: "no-store", credentials: "omit" });
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  return { code: r.status, body, date: r.headers.get("Date") };
}

async function post(path, payload) {
  const headers = { "Content-Type": "application/json" };
  const t = token();
  if (t) headers.Authorization = "Bearer " + t;
  const r = await fetch(path, { method: "POST", headers, body: JSON.stringify(payload), credentials: "omit" });
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  return { code: r.status, body };
}

async function refresh() {
  clearTimeout(timer);
  try {
    const [st, rd] = await Promise.all([getJson("/v1/status"), getJson("/v1/ready")]);
    if (st.code === 401) {
      askToken(token() ? "That token was refused." : "");
      return;
    }
    $("login").hidden = true;
    if (st.code !== 200 || !st.body) throw new Error("GET /v1/status answered " + st.code);
    const at = Date.now();
    previous = last;
    last = { status: st.body, ready: rd.body || {}, at, skew: (st.body.now || at / 1000) - at / 1000 };
    $("banner").hidden = true;
    render();
  } catch (e) {
    const b = $("banner");
    b.hidden = false;
    b.textContent = "Cannot read this node's status: " + e.message + (last ? " — showing what it said " + fmtDur((Date.now() - last.at) / 1000) + " ago." : "");
    $("light").className = "light red";
  } finally {
    if (!paused && $("login").hidden) timer = setTimeout(refresh, REFRESH_MS);
  }
}

function askToken(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  $("main").replaceChildren();
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("summary").textContent = "token needed";
  $("light").className = "light grey";
  $("token").focus();
}

// ---- rendering ---------------------------------------------------------

// Problems found while rendering, for the "needs attention" list on top.
let problems = [];
function note(color, what, why) {
  if (color !== "green" && color !== "grey") problems.push({ color, what, why });
  return color;
}

function render() {
  const s = last.status;
  const ready = last.ready;
  problems = [];
  const sections = [
    nodeCard(s, ready),
    healthCard(s.health || {}),
    tierCard(s.tier || { listeners: [], groups: [] }, s.health || {}),
    dnsCard(s),
  ];
  const overall = worst(problems.map((p) => p.color));
  $("light").className = "light " + overall;
  $("light").title = overall;
  $("node").textContent = s.nsid || "";
  $("summary").textContent = (ready.ready ? "ready" : "NOT READY") + " · generation " + s.generation + " · v" + s.version +
    " · " + (problems.length ? problems.length + " to look at" : "all green");
  document.title = (overall === "green" ? "✓ " : overall === "red" ? "✗ " : "! ") + "geolb " + (s.nsid || "");
  $("main").replaceChildren(attentionCard(), ...sections);
  tick();
}

function attentionCard() {
  if (!problems.length) {
    return el("section", { class: "card", id: "attention-ok" },
      el("h2", {}, light("green"), "Everything is green"));
  }
  const sorted = problems.slice().sort((a, b) => RANK[b.color] - RANK[a.color]);
  return el("section", { class: "card", id: "attention" },
    el("h2", {}, light(sorted[0].color), "Needs attention (" + problems.length + ")"),
    el("ul", {}, sorted.map((p) => el("li", {}, light(p.color), el("span", { class: "what" }, p.what), el("span", {}, p.why)))));
}

function nodeCard(s, ready) {
  const readyColor = note(ready.ready ? "green" : "red", "readiness", ready.reason || "not ready");
  const r = s.last_reload;
  let reload = el("span", { class: "muted" }, "no reload since start");
  if (r) {
    const c = note(r.ok ? (r.warnings.length ? "amber" : "green") : "red", "last reload",
      r.ok ? r.warnings.join("; ") : "refused (generation " + r.generation + " still serving): " + r.errors.join("; "));
    reload = el("div", {}, badge(c, r.ok ? "ok" : "failed"), " ", ago(r.at), " → generation " + r.generation,
      el("ul", { class: "mono" }, r.errors.map((e) => el("li", { class: "bad-text" }, e)), r.warnings.map((w) => el("li", {}, w))));
  }
  const g = s.geoip || {};
  const geoColor = note(g.last_error ? "amber" : "green", "GeoIP", g.last_error ? g.last_error + " (since " + ago(g.last_error_at) + "; the previous database keeps serving)" : "");
  const db = (name, d) => d
    ? el("div", {}, el("b", {}, name + " "), d.database_type, " · built " + when(d.build_epoch), " · ", el("span", { class: "mono" }, d.path), " (" + d.copy + ")",
      d.wrong_type_records ? el("span", { class: "bad-text" }, " · " + d.wrong_type_records + " records of the wrong type, first " + words(d.first_wrong_type)) : null)
    : null;
  return el("section", { class: "card", id: "node-card" },
    el("h2", {}, light(worst([readyColor, geoColor, r && !r.ok ? "red" : "green"])), "Node"),
    el("dl", { class: "kv" },
      el("dt", {}, "node"), el("dd", {}, (s.nsid || "–") + " · geolb " + s.version + " · up " + fmtDur(serverNow() - s.started_at)),
      el("dt", {}, "ready"), el("dd", {}, badge(readyColor, ready.ready ? "ready" : "not ready"), " ", ready.reason || ""),
      el("dt", {}, "config"), el("dd", {}, el("span", { class: "mono" }, s.config || "–"), " · generation " + s.generation + ", loaded " + ago(s.loaded_at)),
      el("dt", {}, "last reload"), el("dd", {}, reload),
      el("dt", {}, "GeoIP"), el("dd", {}, db("city", g.city), db("asn", g.asn),
        !g.city && !g.asn ? el("span", { class: "muted" }, "no database") : null,
        g.last_swap ? el("div", { class: "muted" }, "last swap " + ago(g.last_swap)) : null,
        g.building_since ? el("div", {}, badge("amber", "building"), " a new database since " + ago(g.building_since)) : null,
        g.last_error ? el("div", { class: "bad-text" }, g.last_error) : null)));
}

// The endpoint's colour and why.
function endpointVerdict(e) {
  const votes = Object.values(e.votes || {});
  // An operator's drain or forced state is intended: amber, whatever it does.
  if (e.override) return ["amber", e.reason || e.override.state];
  if (!e.up) return ["red", e.reason || e.last_error || "down"];
  if (votes.some((v) => v !== "up")) return ["amber", "votes: " + words(e.votes)];
  if (e.reason && !/^(up|healthy|ok)\b/i.test(e.reason) && e.checked_up === false) return ["amber", e.reason];
  return ["green", ""];
}

function voteChips(votes) {
  return el("span", { class: "votes" }, Object.entries(votes || {}).map(([name, v]) =>
    badge(v === "up" ? "green" : v === "down" ? "red" : "amber", name + ": " + v)));
}

// "drain", "force down", or "partial drain 10 %".
function overrideLabel(ov) {
  if (ov.state === "drain" && typeof ov.fraction === "number") return "partial drain " + Math.round(ov.fraction * 100) + " %";
  return ov.state.replace("_", " ");
}

function overrideCell(ov) {
  if (!ov) return el("td", {}, "");
  return el("td", {}, badge("amber", overrideLabel(ov)), " ",
    el("span", { class: "muted" }, ov.target),
    ov.until ? el("span", {}, " · reverts in ", countdown(ov.until)) : el("span", { class: "muted" }, " · until undone"));
}

function actionButtons(target, admin) {
  if (admin && admin !== "none") {
    return el("button", { class: "small", type: "button", on: { click: () => confirmAction("undrain", target) } }, "undo " + admin.replace("_", " "));
  }
  return el("button", { class: "small", type: "button", on: { click: () => confirmAction("drain", target) } }, "drain…");
}

function healthCard(h) {
  const regions = new Map();
  for (const p of h.pools || []) {
    if (!regions.has(p.region)) regions.set(p.region, []);
    regions.get(p.region).push(p);
  }
  const vantages = (h.vantages || []).map((v) => {
    const c = note(v.fresh ? "green" : "amber", "vantage " + v.vantage,
      "no fresh observations" + (v.last_ok ? " since " + ago(v.last_ok) : "") + (v.last_error ? ": " + v.last_error : ""));
    return el("tr", { class: c }, el("td", {}, v.vantage), el("td", {}, badge(c, v.fresh ? "fresh" : "stale")),
      el("td", { class: "mono" }, v.url), el("td", {}, v.last_ok ? ago(v.last_ok) : "never"), el("td", { class: "reason" }, v.last_error || ""));
  });
  const blocks = [];
  for (const [region, pools] of regions) {
    const poolBlocks = pools.map((p) => {
      const eps = (h.endpoints || []).filter((e) => e.pool === p.pool);
      const rows = eps.map((e) => {
        const [c, why] = endpointVerdict(e);
        note(c, e.endpoint, why);
        return el("tr", { class: c },
          el("td", { class: "addr" }, e.endpoint),
          el("td", {}, badge(c, e.override ? overrideLabel(e.override) : e.up ? "up" : "down")),
          el("td", { class: "reason" }, e.reason || "", e.last_error && e.last_error !== e.reason ? el("div", { class: "bad-text" }, e.last_error) : null),
          el("td", {}, voteChips(e.votes)),
          el("td", { class: "num" }, e.rtt_ewma_ms === null || e.rtt_ewma_ms === undefined ? "–" : e.rtt_ewma_ms.toFixed(1) + " ms"),
          overrideCell(e.override),
          el("td", {}, e.last_change ? ago(e.last_change) : ""),
          el("td", {}, actionButtons(e.endpoint, e.override && e.override.state)));
      });
      const pc = p.healthy ? (p.up < p.endpoints ? "amber" : "green") : "red";
      note(pc === "amber" ? "green" : pc, "pool " + p.pool, p.up + " of " + p.endpoints + " endpoints up, needs " + p.min_healthy);
      return el("div", { class: "pool" },
        el("h3", {}, light(pc), "pool " + p.pool, badge(pc, p.up + "/" + p.endpoints + " up"),
          el("span", { class: "muted" }, "min healthy " + p.min_healthy), actionButtons(p.pool, null)),
        table(["endpoint", "verdict", "reason", "votes", "#RTT", "admin", "changed", ""], rows));
    });
    const rc = worst(pools.map((p) => (p.healthy ? (p.up < p.endpoints ? "amber" : "green") : "red")));
    blocks.push(el("div", { class: "region" },
      el("h3", {}, light(rc), el("span", {}, "region " + region), actionButtons(region, null)), poolBlocks));
  }
  const overrides = (h.overrides || []).map((o) => el("li", {}, badge("amber", overrideLabel(o)), " ", el("span", { class: "mono" }, o.target),
    " set " + ago(o.set_at), o.until ? el("span", {}, " · reverts in ", countdown(o.until)) : " · until undone", " ",
    el("button", { class: "small", type: "button", on: { click: () => confirmAction("undrain", o.target) } }, "undo")));
  return el("section", { class: "card", id: "health-card" },
    el("h2", {}, "Health", el("span", { class: "muted" }, "epoch " + (h.epoch ? h.epoch.id : "–") + " · this vantage " + h.vantage + (h.local_checks === false ? " (no local checks)" : "") + " · quorum " + h.quorum)),
    vantages.length ? table(["vantage", "", "url", "last ok", "last error"], vantages) : null,
    overrides.length ? el("div", {}, el("h3", {}, "Operator overrides"), el("ul", {}, overrides)) : null,
    blocks.length ? blocks : el("p", { class: "muted" }, "no regions or pools configured"));
}

function classes(arr) {
  return (arr || []).map((n, i) => (i >= 4 && n > 0 ? el("b", { class: "bad-text" }, fmtNum(n)) : fmtNum(n)))
    .flatMap((x, i) => (i ? [" / ", x] : [x]));
}

function backendVerdict(b) {
  if (b.admin && b.admin !== "none") return ["amber", b.admin.replace("_", " ") + " by operator"];
  if (b.ejection) return ["red", "ejected: " + words(b.ejection.reason) + " (ejection " + b.ejection.count + ")"];
  if (!b.up) return ["red", b.health || "down"];
  if (b.drain) return ["amber", "draining: " + b.drain.remaining + " connections left"];
  if (!b.eligible) return ["amber", "not eligible"];
  if (b.effective_weight < 1) return ["amber", "slow start at " + Math.round(b.effective_weight * 100) + "% weight"];
  return ["green", ""];
}

function tierCard(t, h) {
  if (!(t.listeners || []).length && !(t.groups || []).length) {
    return el("section", { class: "card", id: "tier-card" }, el("h2", {}, "Tier"), el("p", { class: "muted" }, "no tier listeners on this node"));
  }
  const groupUp = new Map(t.groups.map((g) => [g.name, g.backends.some((b) => b.up && !b.ejection)]));
  const listeners = t.listeners.map((l) => {
    const full = l.max_connections && l.active >= 0.9 * l.max_connections;
    const c = groupUp.get(l.group) === false
      ? note("red", "listener " + l.name, "group " + l.group + " has no backend up: new connections are closed")
      : note(full ? "amber" : "green", "listener " + l.name, l.active + " of " + l.max_connections + " connections");
    return el("tr", { class: c },
      el("td", {}, l.name), el("td", {}, l.mode), el("td", { class: "addr" }, l.bind), el("td", {}, l.region), el("td", {}, l.group),
      el("td", { class: "num" }, fmtNum(l.active) + " / " + fmtNum(l.max_connections)), num(l.parked), num(l.accepted), num(l.requests),
      el("td", { class: "num" }, classes(l.responses)),
      num(l.refused_max), num(l.no_backend), num(l.errors));
  });
  const groups = t.groups.map((g) => {
    const rows = g.backends.map((b) => {
      const [c, why] = backendVerdict(b);
      note(c, g.name + "/" + b.address, why);
      const ov = overrideFor(h, [g.name + "/" + b.address, g.region + "/" + b.address, g.name, g.region]);
      return el("tr", { class: c },
        el("td", { class: "addr" }, b.address, b.backup ? el("span", { class: "muted" }, " backup") : null),
        el("td", {}, badge(c, b.admin && b.admin !== "none" ? b.admin.replace("_", " ") : b.ejection ? "ejected" : b.up ? "up" : "down")),
        el("td", { class: "reason" }, why || b.health,
          b.ejection_ends_in_s !== null && b.ejection_ends_in_s !== undefined ? el("span", {}, " · back in ", countdown(serverNow() + b.ejection_ends_in_s)) : null,
          b.drain ? el("span", {}, " · deadline in ", countdown(serverNow() + b.drain.deadline_in_s)) : null),
        el("td", {}, b.admin && b.admin !== "none" ? badge("amber", b.admin.replace("_", " ")) : "",
          ov && ov.until ? el("span", {}, " ", countdown(ov.until)) : null),
        num(b.active), num(b.idle_connections),
        el("td", { class: "num" }, b.weight + (b.effective_weight < 1 ? " × " + Math.round(b.effective_weight * 100) + "%" : "")),
        el("td", { class: "num" }, b.latency_ms === null || b.latency_ms === undefined ? "–" : b.latency_ms.toFixed(1) + " ms"),
        num(b.total), num(b.connect_errors), el("td", { class: "num" }, classes(b.http_responses)),
        el("td", {}, actionButtons(g.name + "/" + b.address, b.admin)));
    });
    const up = g.backends.filter((b) => b.up && !b.ejection).length;
    const gc = up === 0 ? "red" : up < g.backends.length ? "amber" : "green";
    if (up === 0) note("red", "group " + g.name, "no backend up");
    return el("div", { class: "group" },
      el("h3", {}, light(gc), "group " + g.name, badge(gc, up + "/" + g.backends.length + " up"),
        el("span", { class: "muted" }, g.region + " · " + g.algorithm + " · " + g.protocol + (g.persistence !== "none" ? " · sticky " + g.persistence : "") +
          (g.slow_start_s ? " · slow start " + fmtDur(g.slow_start_s) : "")), actionButtons(g.name, null)),
      table(["backend", "state", "reason", "admin", "#active", "#idle pool", "#weight", "#latency", "#conns", "#connect err", "#http 1xx/2xx/3xx/4xx/5xx", ""], rows));
  });
  return el("section", { class: "card", id: "tier-card" },
    el("h2", {}, "Tier"),
    table(["listener", "mode", "bind", "region", "group", "#active / max", "#parked", "#accepted", "#requests", "#1xx/2xx/3xx/4xx/5xx", "#refused", "#no backend", "#errors"], listeners),
    groups);
}

function overrideFor(h, targets) {
  for (const t of targets) {
    const o = (h.overrides || []).find((x) => x.target === t);
    if (o) return o;
  }
  return null;
}

// DNS counters: every counter /v1/status reports (new ones appear by
// themselves), with its rate since the previous refresh.
function dnsCard(s) {
  const prev = previous && previous.status.counters;
  const dt = previous ? (last.at - previous.at) / 1000 : 0;
  const rows = Object.entries(s.counters || {}).map(([k, v]) => {
    const rate = prev && dt > 0 && typeof prev[k] === "number" ? (v - prev[k]) / dt : null;
    const bad = /dropped|panic|restart|refused|error/.test(k);
    const c = bad && rate > 0 ? note("amber", k.replace(/_/g, " "), fmtNum(rate) + "/s now") : "green";
    return el("tr", { class: c }, el("td", {}, k.replace(/_/g, " ")), num(v), el("td", { class: "num" }, rate === null ? "–" : fmtNum(rate) + "/s"));
  });
  const zones = (s.zones || []).map((z) => el("tr", {}, el("td", {}, z.name), el("td", { class: "num" }, z.serial), num(z.records), el("td", { class: "mono" }, z.file)));
  const workers = (s.udp_workers || []).map((w) => el("tr", {}, el("td", {}, w.worker), el("td", { class: "addr" }, w.listener || "–"),
    el("td", {}, w.cpu === null || w.cpu === undefined ? "–" : w.cpu), num(w.queries)));
  return el("section", { class: "card", id: "dns-card" },
    el("h2", {}, "DNS", el("span", { class: "muted" }, "listening on " + ((s.listeners && s.listeners.dns) || []).join(", "))),
    el("div", { class: "grid2" },
      el("div", {}, table(["counter", "#total", "#rate"], rows)),
      el("div", {}, table(["zone", "#serial", "#records", "file"], zones), table(["udp worker", "listener", "cpu", "#queries"], workers))));
}

// ---- actions -----------------------------------------------------------

function confirmAction(kind, target) {
  pending = { kind, target };
  $("act-title").textContent = kind === "drain" ? "Drain " + target + "?" : "Undo the override of " + target + "?";
  $("act-text").textContent = kind === "drain"
    ? "It leaves DNS answers and takes no new tier connections until the time below runs out or someone undoes it."
    : "It goes back to what its health checks say.";
  $("act-for-label").hidden = kind !== "drain";
  $("act-for").disabled = kind !== "drain";
  $("act-error").textContent = "";
  $("act").showModal();
}

async function onConfirm(ev) {
  ev.preventDefault();
  if (!pending) return;
  const body = { target: pending.target };
  if (pending.kind === "drain") body.for = $("act-for").value.trim();
  const r = await post("/v1/" + pending.kind, body);
  if (r.code === 200) {
    $("act").close();
    pending = null;
    refresh();
  } else {
    $("act-error").textContent = "Refused (" + r.code + "): " + ((r.body && r.body.error) || "");
  }
}

// ---- start -------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value);
    $("token").value = "";
    $("login").hidden = true;
    refresh();
  });
  $("pause").addEventListener("click", () => {
    paused = !paused;
    $("pause").textContent = paused ? "resume" : "pause";
    if (!paused) refresh();
    else clearTimeout(timer);
  });
  $("act-form").addEventListener("submit", onConfirm);
  $("act-cancel").addEventListener("click", () => { pending = null; $("act").close(); });
  setInterval(tick, 1000);
  refresh();
});
