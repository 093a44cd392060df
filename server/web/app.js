// crowd live page: one route's trains along the line, live from the server's
// event stream (/api/events), with a detail view per train.
//
// State is a map of trains by key; every event replaces what it names and
// the page is redrawn from the state, so a reconnect (new snapshot) or a
// missed change can never leave the page half-updated.
"use strict";

/** Trains silent for longer than this are gone (the estimate window). */
const STALE_S = 15 * 60;
/** Within this distance a train is "at" a station rather than between two. */
const AT_STATION_M = 250;
/** Reconnect delay when the browser gave up on the stream (e.g. a 503). */
const REOPEN_MS = 2000;

const LABELS = ["no data", "empty", "many seats", "few seats", "standing", "crushed", "full", "not boarding"];

const state = {
  route: null,
  line: null,          // { route_id, name, stations: [{id,name,lat,lon}], car_count }
  trains: new Map(),   // key -> { train, receivedAt, fraction, direction }
  selected: null,      // key of the train shown in the detail view
  source: null,
  drawnAt: 0,          // when the line was last drawn: newer changes glow
  drawPending: false,
};

const $ = (id) => document.getElementById(id);
const keyOf = (t) => `${t.start_date}:${t.trip_id}`;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined) node.append(c);
  }
  return node;
}

function levelOf(n) {
  return Number.isInteger(n) && n >= 1 && n <= 7 ? n : 0;
}

/** Seconds since the newest report, counting the time since it arrived. */
function ageOf(entry, age_s) {
  if (age_s === null || age_s === undefined) return null;
  return age_s + Math.max(0, (Date.now() - entry.receivedAt) / 1000);
}

function formatAge(s) {
  if (s === null) return "—";
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}

// ---- geometry: where a train is along the line -------------------------

/** Metres between two points (equirectangular; fine at line scale). */
function metres(a, b) {
  const k = Math.cos(((a.lat + b.lat) / 2) * Math.PI / 180);
  const dx = (b.lon - a.lon) * k * 111320;
  const dy = (b.lat - a.lat) * 110540;
  return Math.hypot(dx, dy);
}

/**
 * The train's place as a fractional station index (2.5 = half-way between
 * the third and fourth station), by projecting its position onto the line;
 * null without a position or without stations.
 */
function fractionAlong(stations, pos) {
  if (!pos || stations.length === 0) return null;
  if (stations.length === 1) return 0;
  let best = { d: Infinity, f: 0 };
  for (let i = 0; i + 1 < stations.length; i++) {
    const a = stations[i], b = stations[i + 1];
    const k = Math.cos(((a.lat + b.lat) / 2) * Math.PI / 180);
    const abx = (b.lon - a.lon) * k, aby = b.lat - a.lat;
    const apx = (pos.lon - a.lon) * k, apy = pos.lat - a.lat;
    const len2 = abx * abx + aby * aby;
    const t = len2 === 0 ? 0 : Math.min(1, Math.max(0, (apx * abx + apy * aby) / len2));
    const p = { lat: a.lat + t * (b.lat - a.lat), lon: a.lon + t * (b.lon - a.lon) };
    const d = metres(p, pos);
    if (d < best.d) best = { d, f: i + t };
  }
  return best.f;
}

/** Station index the train is at, or null when it is between stations. */
function atStation(stations, entry) {
  const f = entry.fraction;
  const i = Math.round(f);
  const pos = entry.train.position;
  return pos && metres(stations[i], pos) <= AT_STATION_M ? i : null;
}

// ---- state updates -----------------------------------------------------

/** Takes in a train's new estimate; `changed` makes it glow once. */
function upsert(train, changed) {
  const key = keyOf(train);
  const previous = state.trains.get(key);
  const stations = state.line ? state.line.stations : [];
  const fraction = fractionAlong(stations, train.position);
  let direction = previous ? previous.direction : 0;
  if (previous && previous.fraction !== null && fraction !== null) {
    const moved = fraction - previous.fraction;
    if (Math.abs(moved) > 0.02) direction = Math.sign(moved);
  }
  const changedAt = changed ? Date.now() : previous ? previous.changedAt : 0;
  state.trains.set(key, { train, receivedAt: Date.now(), fraction, direction, changedAt });
}

function replaceAll(trains) {
  const previous = state.trains;
  state.trains = new Map();
  for (const t of trains) {
    const old = previous.get(keyOf(t));
    if (old) state.trains.set(keyOf(t), old);
    upsert(t, false);
  }
}

function dropStale() {
  for (const [key, entry] of state.trains) {
    const age = ageOf(entry, entry.train.age_s);
    const silent = (Date.now() - entry.receivedAt) / 1000;
    if ((age !== null && age > STALE_S) || silent > STALE_S) state.trains.delete(key);
  }
}

// ---- rendering ----------------------------------------------------------

/**
 * Cars of a train: the configured length, else the longest train seen on the
 * route, so that cars nobody reported on still show (greyed).
 */
function carCount(train) {
  let n = Math.max(train.car_count || 0, (state.line && state.line.car_count) || 0);
  if (n > 0) return n;
  for (const entry of state.trains.values()) {
    for (const c of entry.train.cars) n = Math.max(n, c.car);
  }
  return n;
}

function carBars(train) {
  const count = carCount(train);
  const byCar = new Map(train.cars.map((c) => [c.car, c]));
  const bars = [];
  for (let n = 1; n <= count; n++) {
    const c = byCar.get(n);
    const lv = c ? levelOf(c.level) : 0;
    const label = c ? LABELS[lv] : "no data";
    bars.push(el("span", {
      class: `car lv-${lv}`,
      "data-car": n,
      "data-level": lv,
      title: `car ${n}: ${label}`,
      "aria-label": `car ${n}: ${label}`,
      text: lv ? String(lv) : "–",
    }));
  }
  return el("span", { class: "cars", "aria-label": "cars front to back" }, bars);
}

function trainCard(entry) {
  const t = entry.train;
  const lv = levelOf(t.level);
  const key = keyOf(t);
  const arrow = entry.direction > 0 ? "↓" : entry.direction < 0 ? "↑" : "";
  const card = el("button", {
    type: "button",
    class: `train lv-${lv}`,
    "data-trip": t.trip_id,
    "data-level": lv,
    "aria-pressed": state.selected === key ? "true" : "false",
    onclick: () => select(key),
  },
  el("span", { class: "head" },
    el("span", { class: "trip", text: t.trip_id }),
    arrow ? el("span", { class: "dir", title: "direction of travel", text: arrow }) : null,
    el("span", { class: "level" },
      el("span", { class: `badge lv-${lv}`, text: lv ? String(lv) : "–" }),
      ` ${LABELS[lv]}`)),
  carBars(t));
  if (entry.changedAt > state.drawnAt) card.classList.add("flash");
  return card;
}

function sortedEntries() {
  return [...state.trains.values()].sort((a, b) => (a.train.trip_id < b.train.trip_id ? -1 : a.train.trip_id > b.train.trip_id ? 1 : 0));
}

function renderLine() {
  drawLine($("line"));
  state.drawnAt = Date.now();
}

function drawLine(root) {
  const entries = sortedEntries();
  const stations = state.line ? state.line.stations : [];
  const title = el("h2", { text: state.line ? `${state.line.name} · ${entries.length} train${entries.length === 1 ? "" : "s"} reported` : "" });
  if (stations.length === 0) {
    // No schedule: the trains as a list, by trip id.
    const list = el("div", { class: "trains list" }, entries.map(trainCard));
    const hint = entries.length === 0
      ? el("p", { class: "empty", text: "No train has been reported on this line yet." })
      : el("p", { class: "hint", text: "No station list for this line (no schedule loaded): trains by trip id." });
    root.replaceChildren(title, hint, list);
    return;
  }
  const atStop = stations.map(() => []);
  const between = stations.map(() => []);
  const unplaced = [];
  for (const entry of entries) {
    if (entry.fraction === null) { unplaced.push(entry); continue; }
    const i = atStation(stations, entry);
    if (i !== null) atStop[i].push(entry);
    else between[Math.min(Math.floor(entry.fraction), stations.length - 2)].push(entry);
  }
  const rows = [];
  stations.forEach((s, i) => {
    const last = i === stations.length - 1;
    rows.push(el("div", { class: `stop${i === 0 ? " first" : ""}${last ? " last" : ""}`, "data-stop": s.id },
      el("span", { class: "rail", "aria-hidden": "true" }),
      el("span", { class: "name", text: s.name }),
      el("span", { class: "trains" }, atStop[i].map(trainCard))));
    if (!last) {
      rows.push(el("div", { class: "gap", "aria-label": `between ${s.name} and ${stations[i + 1].name}` },
        el("span", { class: "rail", "aria-hidden": "true" }),
        el("span", { class: "name", text: between[i].length ? "between stations" : "" }),
        el("span", { class: "trains" }, between[i].map(trainCard))));
    }
  });
  const extra = unplaced.length
    ? [el("h2", { text: "Position unknown" }), el("div", { class: "trains list" }, unplaced.map(trainCard))]
    : [];
  const none = entries.length === 0 ? el("p", { class: "empty", text: "No train has been reported on this line yet." }) : null;
  root.replaceChildren(title, none || "", ...rows, ...extra);
}

/** The car a rider should pick: lowest level, then lowest percentage, then most confident. */
function emptiestCar(cars) {
  const known = cars.filter((c) => levelOf(c.level) > 0);
  if (known.length < 2) return null;
  return known.reduce((best, c) =>
    c.level < best.level || (c.level === best.level && (c.percentage < best.percentage ||
      (c.percentage === best.percentage && c.confidence > best.confidence))) ? c : best);
}

function renderDetail() {
  const box = $("detail");
  const entry = state.selected && state.trains.get(state.selected);
  if (!entry) {
    box.hidden = true;
    box.replaceChildren();
    return;
  }
  const t = entry.train;
  const lv = levelOf(t.level);
  const count = carCount(t);
  const byCar = new Map(t.cars.map((c) => [c.car, c]));
  const best = emptiestCar(t.cars);
  const rows = [];
  for (let n = 1; n <= count; n++) {
    const c = byCar.get(n);
    if (!c) {
      rows.push(el("tr", { "data-car": n }, el("td", { text: String(n) }), el("td", { class: "nodata", colspan: 3, text: "no data" })));
      continue;
    }
    const clv = levelOf(c.level);
    rows.push(el("tr", { "data-car": n, class: best && best.car === n ? "emptiest" : null },
      el("td", { text: String(n) }),
      el("td", {}, el("span", { class: `badge lv-${clv}`, text: clv ? String(clv) : "–" }), ` ${LABELS[clv]}`),
      el("td", { text: `${c.percentage}%` }),
      el("td", { text: `${c.reporters} · ${formatAge(ageOf(entry, c.age_s))}` })));
  }
  box.replaceChildren(
    el("h2", {},
      el("span", { text: `Train ${t.trip_id}` }),
      el("button", { type: "button", class: "close", "aria-label": "Close", onclick: () => select(null), text: "✕" })),
    el("dl", {},
      el("dt", { text: "Crowding" }), el("dd", { id: "detail-level", "data-level": lv }, el("span", { class: `badge lv-${lv}`, text: lv ? String(lv) : "–" }), ` ${LABELS[lv]}`),
      el("dt", { text: "Occupancy" }), el("dd", { text: t.usual ? `${t.percentage}% · ${t.usual}` : `${t.percentage}%` }),
      el("dt", { text: "Confidence" }), el("dd", { text: `${Math.round(t.confidence * 100)}%` }),
      el("dt", { text: "Reporters" }), el("dd", { text: String(t.reporters) }),
      el("dt", { text: "Newest report" }), el("dd", { id: "detail-age", text: formatAge(ageOf(entry, t.age_s)) })),
    best
      ? el("p", { class: "pick", id: "emptiest", "data-car": best.car, text: `Emptiest car: ${best.car} (${LABELS[levelOf(best.level)]}). Board near it.` })
      : el("p", { class: "hint", text: "Not enough car reports to pick the emptiest car." }),
    count
      ? el("table", { class: "car-table" },
        el("thead", {}, el("tr", {}, ["Car", "Crowding", "%", "Riders · newest"].map((h) => el("th", { text: h })))),
        el("tbody", {}, rows))
      : null);
  box.hidden = false;
}

function render() {
  dropStale();
  renderLine();
  renderDetail();
}

/** Draws once per frame however many events arrived in it. */
function scheduleRender() {
  if (state.drawPending) return;
  state.drawPending = true;
  requestAnimationFrame(() => {
    state.drawPending = false;
    render();
  });
}

/** Once a second: drop trains gone silent, refresh the ages shown. */
function tick() {
  const before = state.trains.size;
  dropStale();
  if (state.trains.size !== before) renderLine();
  renderDetail();
}

function select(key) {
  state.selected = key;
  render();
}

// ---- live connection -----------------------------------------------------

function setStatus(s) {
  const node = $("status");
  node.dataset.state = s;
  document.body.dataset.connection = s;
  node.textContent = { live: "live", connecting: "connecting…", disconnected: "disconnected — reconnecting…" }[s];
}

function connect() {
  if (state.source) state.source.close();
  const source = new EventSource(`/api/events?route_id=${encodeURIComponent(state.route)}`);
  state.source = source;
  setStatus("connecting");
  source.addEventListener("open", () => setStatus("live"));
  source.addEventListener("snapshot", (e) => {
    setStatus("live");
    replaceAll(JSON.parse(e.data));
    scheduleRender();
  });
  source.addEventListener("train", (e) => {
    upsert(JSON.parse(e.data), true);
    scheduleRender();
  });
  source.addEventListener("error", () => {
    if (state.source !== source) return;
    setStatus("disconnected");
    // The browser retries by itself unless the server answered with an
    // error status; then it is up to us.
    if (source.readyState === EventSource.CLOSED) setTimeout(() => state.source === source && connect(), REOPEN_MS);
  });
}

async function fetchJson(url) {
  const reply = await fetch(url);
  if (!reply.ok) throw new Error(`${url}: ${reply.status}`);
  return reply.json();
}

async function loadRoute(route) {
  state.route = route;
  state.trains = new Map();
  state.selected = null;
  const url = new URL(location.href);
  url.searchParams.set("route_id", route);
  history.replaceState(null, "", url);
  try {
    state.line = await fetchJson(`/api/line?route_id=${encodeURIComponent(route)}`);
  } catch (e) {
    state.line = { route_id: route, name: route, stations: [], car_count: null };
  }
  $("route-name").textContent = state.line.name;
  render();
  connect();
}

/** Retry delay while no line is known yet. */
const ROUTES_RETRY_MS = 5000;

async function start() {
  const wanted = new URLSearchParams(location.search).get("route_id");
  let routes = [];
  try { routes = await fetchJson("/api/routes"); } catch (e) { routes = []; }
  if (wanted && !routes.includes(wanted)) routes.unshift(wanted);
  if (routes.length === 0) {
    // Nothing to show until a schedule is loaded or a train is reported.
    $("line").replaceChildren(el("p", { class: "empty", text: "No line known yet: waiting for the first report…" }));
    setTimeout(start, ROUTES_RETRY_MS);
    return;
  }
  const pick = $("route");
  pick.replaceChildren(...routes.map((r) => el("option", { value: r, text: r })));
  pick.value = wanted || routes[0];
  pick.addEventListener("change", () => loadRoute(pick.value));
  document.addEventListener("keydown", (e) => { if (e.key === "Escape" && state.selected) select(null); });
  // Ages tick and stale trains leave even when nothing new arrives.
  setInterval(tick, 1000);
  await loadRoute(pick.value);
}

start();
