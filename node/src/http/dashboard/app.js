// The node's live mesh dashboard: regions from GET /regions, then a frame
// every ~500 ms from the Server-Sent Events stream GET /dashboard/events.
// Plain ES2020 module, no dependencies, nothing fetched from another origin.

const REGIONS_URL = '/regions';
const EVENTS_URL = '/dashboard/events';

// Region colours, by region index in /regions order (or first-seen order when
// the node runs without regions). Red-free so cross-border lines stand out.
const PALETTE = ['#2563eb', '#0d9f6e', '#d97706', '#7c3aed', '#0891b2', '#a16207', '#db2777', '#4d7c0f', '#1e40af', '#9f1239'];
const UNKNOWN = '#9ca3af';
const MATCH_INK = 'rgba(17, 24, 39, 0.62)';
const CROSS_INK = '#e11d48';
const CLAIM_INK = '#111827';
const MAP_BG = '#eef2f6';
const KM_PER_DEG = 6371.0088 * Math.PI / 180; // mean Earth radius
const DEG = Math.PI / 180;
const TAU = Math.PI * 2;
const FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", Arial, sans-serif';
const STALL_MS = 3000;

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

const state = {
  regions: null,          // [{id, name, rings: [[[lon, lat], ...], ...]}] or null when none
  regionsMissing: false,  // the node answered no_regions
  regionIndex: new Map(), // region id -> colour index
  frame: null,
  frames: 0,
  lastFrameAt: 0,
  conn: 'connecting',
  pointBounds: null,      // expand-only bounds of everything seen, used without regions
  size: { w: 0, h: 0, dpr: 1 },
  drawQueued: false,
};

// ---- formatting ----------------------------------------------------------

const nf0 = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
const nf1 = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1, minimumFractionDigits: 1 });

const num = (v) => (Number.isFinite(v) ? v : null);
const count = (n) => nf0.format(n);
function rate(v) {
  v = num(v);
  if (v === null) return '–';
  return Math.abs(v) >= 100 ? nf0.format(v) : nf1.format(v);
}
function ms(v) {
  v = num(v);
  if (v === null) return '–';
  return v >= 100 ? nf0.format(v) : nf1.format(v);
}
function bytes(v) {
  v = num(v);
  if (v === null) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? nf0.format(v) : (v >= 100 ? nf0.format(v) : nf1.format(v))) + ' ' + units[i];
}
function clock(atMs) {
  const d = new Date(atMs);
  if (!Number.isFinite(d.getTime())) return '–';
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

// ---- colours ---------------------------------------------------------------

function regionSlot(id) {
  const i = state.regionIndex.get(id);
  return i === undefined ? -1 : i % PALETTE.length;
}
function colourOf(id) {
  const s = regionSlot(id);
  return s < 0 ? UNKNOWN : PALETTE[s];
}
// Without /regions, regions get colours in the order they are first seen.
function learnRegion(id) {
  if (state.regions || typeof id !== 'string' || id === '?' || id === '') return;
  if (!state.regionIndex.has(id)) {
    state.regionIndex.set(id, state.regionIndex.size);
    renderLegendOwners();
  }
}

function renderLegendOwners() {
  const ul = $('legend-owners');
  ul.replaceChildren();
  for (const [id] of state.regionIndex) {
    const li = el('li');
    const sw = el('span', 'swatch');
    sw.style.background = colourOf(id);
    li.append(sw, document.createTextNode(id));
    ul.append(li);
  }
  const li = el('li');
  const sw = el('span', 'swatch');
  sw.style.background = UNKNOWN;
  li.append(sw, document.createTextNode('unknown owner'));
  ul.append(li);
}

// ---- regions -----------------------------------------------------------------

async function loadRegions() {
  for (let attempt = 0; ; attempt++) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), 5000);
    try {
      const res = await fetch(REGIONS_URL, { signal: ctl.signal, headers: { accept: 'application/json' } });
      let body = null;
      try { body = await res.json(); } catch { /* not JSON */ }
      if (res.ok && body && Array.isArray(body.regions)) return applyRegions(body.regions);
      if (res.status === 404) { // {"error":{"code":"no_regions"}}: no areas, fit to the points
        state.regionsMissing = true;
        return;
      }
    } catch { /* network error or time-out: try again below */ } finally {
      clearTimeout(timer);
    }
    if (attempt === 0) {
      // Do not hold the live stream back: show the points now, areas when they come.
      openStream();
    }
    await new Promise((r) => setTimeout(r, Math.min(10000, 1000 * 2 ** attempt)));
  }
}

function applyRegions(list) {
  const regions = [];
  for (const r of list) {
    if (!r || typeof r.id !== 'string') continue;
    const coords = r.area && r.area.type === 'Polygon' && Array.isArray(r.area.coordinates) ? r.area.coordinates : [];
    const rings = coords
      .filter((ring) => Array.isArray(ring) && ring.length >= 3)
      .map((ring) => ring.filter((c) => Array.isArray(c) && Number.isFinite(c[0]) && Number.isFinite(c[1])));
    regions.push({ id: r.id, name: typeof r.name === 'string' ? r.name : '', rings });
  }
  state.regions = regions;
  state.regionIndex = new Map(regions.map((r, i) => [r.id, i]));
  renderLegendOwners();
  // Cards in /regions order; cards made earlier for other regions go last.
  const cards = $('cards');
  for (const r of regions) cards.append(cardFor(r.id));
  for (const c of [...cards.children]) if (!state.regionIndex.has(c.dataset.region)) cards.append(c);
  for (const c of cards.children) refreshCardHead(c);
  requestDraw();
}

function regionBounds() {
  let minLat = Infinity, maxLat = -Infinity, minLon = Infinity, maxLon = -Infinity;
  for (const r of state.regions || []) {
    for (const ring of r.rings.slice(0, 1)) {
      for (const [lon, lat] of ring) {
        if (lat < minLat) minLat = lat;
        if (lat > maxLat) maxLat = lat;
        if (lon < minLon) minLon = lon;
        if (lon > maxLon) maxLon = lon;
      }
    }
  }
  return minLat <= maxLat ? { minLat, maxLat, minLon, maxLon } : null;
}

// ---- live stream -----------------------------------------------------------

let source = null;
let retryMs = 1000;

function openStream() {
  if (source) return;
  source = new EventSource(EVENTS_URL);
  setConn('connecting');
  source.addEventListener('open', () => { retryMs = 1000; setConn('live'); });
  source.addEventListener('frame', onFrame);
  source.addEventListener('frame_error', (ev) => {
    // A frame the node could not encode; the next one may do.
    console.warn('dashboard: the node reported an error instead of a frame:', ev.data);
  });
  source.addEventListener('error', () => {
    if (source.readyState === EventSource.CLOSED) {
      // The browser gave up (a non-200 answer, say): reconnect ourselves.
      source.close();
      source = null;
      setConn('down');
      setTimeout(openStream, retryMs);
      retryMs = Math.min(15000, retryMs * 2);
    } else {
      setConn('reconnecting'); // the browser reconnects by itself
    }
  });
}

function setConn(conn) {
  state.conn = conn;
  const badge = $('conn');
  const view = {
    connecting: ['connecting', 'connecting…'],
    live: ['live', 'live'],
    stalled: ['stalled', 'stalled: no frames'],
    reconnecting: ['down', 'disconnected · reconnecting…'],
    down: ['down', 'disconnected · retrying…'],
  }[conn];
  badge.className = 'badge conn ' + view[0];
  if (badge.textContent !== view[1]) badge.textContent = view[1];
  const note = $('map-note');
  const stale = state.frame && conn !== 'live';
  note.hidden = !stale;
  if (stale) note.textContent = `${conn === 'stalled' ? 'No new frames' : 'Disconnected'}: showing the frame of ${clock(state.frame.at_ms)}`;
}

setInterval(() => {
  if (state.conn === 'live' && state.lastFrameAt && performance.now() - state.lastFrameAt > STALL_MS) setConn('stalled');
}, 1000);

function list(v) { return Array.isArray(v) ? v : []; }
function isPos(p) { return Array.isArray(p) && Number.isFinite(p[0]) && Number.isFinite(p[1]); }

function onFrame(ev) {
  let f;
  try {
    f = JSON.parse(ev.data);
  } catch {
    console.warn('dashboard: a frame that is not JSON was skipped');
    return;
  }
  if (!f || typeof f !== 'object') return;
  const frame = {
    node: String(f.node ?? ''),
    region: String(f.region ?? ''),
    at_ms: f.at_ms,
    owners: list(f.owners).map(String),
    riders: list(f.riders),
    drivers: list(f.drivers),
    matches: list(f.matches).filter((m) => m && isPos(m.rider) && isPos(m.driver)),
    claims: list(f.claims).filter((c) => c && isPos(c.rider) && isPos(c.driver)),
    nodes: list(f.nodes).filter((n) => n && typeof n.node === 'string'),
    serving: list(f.serving).map(String),
    adopters: f.adopters && typeof f.adopters === 'object' ? f.adopters : {},
  };
  state.frame = frame;
  state.frames += 1;
  state.lastFrameAt = performance.now();
  if (state.conn !== 'live') setConn('live');

  if (!state.regions) {
    learnRegion(frame.region);
    for (const n of frame.nodes) learnRegion(n.region);
    for (const o of frame.owners) learnRegion(o);
    growPointBounds(frame);
  }
  updateStats(frame);
  updateHeader(frame);
  updatePanel(frame);
  requestDraw();
}

function updateStats(f) {
  const cross = f.matches.reduce((n, m) => n + (m.cross_border ? 1 : 0), 0);
  const out = $('stats');
  out.dataset.riders = f.riders.length;
  out.dataset.drivers = f.drivers.length;
  out.dataset.matches = f.matches.length;
  out.dataset.crossBorder = cross;
  out.dataset.claims = f.claims.length;
  out.dataset.frames = state.frames;
  $('c-riders').textContent = count(f.riders.length);
  $('c-drivers').textContent = count(f.drivers.length);
  $('c-matches').textContent = count(f.matches.length);
  $('c-cross').textContent = count(cross);
  $('c-claims').textContent = count(f.claims.length);
  $('c-at').textContent = clock(f.at_ms);
  $('map').setAttribute('aria-label',
    `Map of the mesh seen from node ${f.node}: ${f.riders.length} pending riders, ${f.drivers.length} pending drivers, ` +
    `${f.matches.length} recent matches (${cross} cross-border), ${f.claims.length} open claims`);
}

function updateHeader(f) {
  if ($('this-node').textContent !== f.node) $('this-node').textContent = f.node;
  if ($('this-region').textContent !== f.region) {
    $('this-region').textContent = f.region;
    document.title = `${f.node} · Ride mesh`;
    for (const c of $('cards').children) refreshCardHead(c);
  }
}

// ---- side panel ----------------------------------------------------------

const cardsById = new Map();
const rowsById = new Map();

function cardFor(regionId) {
  let card = cardsById.get(regionId);
  if (card) return card;
  card = el('section', 'card');
  card.dataset.region = regionId;
  card.setAttribute('aria-label', `Region ${regionId}`);
  const head = el('div', 'card-head');
  const sw = el('span', 'swatch');
  const h2 = el('h2', '', regionId);
  const badge = el('span', 'badge quiet', 'no nodes');
  head.append(sw, h2, badge);
  const name = el('div', 'card-name');
  const nodes = el('ul', 'nodes');
  const empty = el('p', 'empty-note', 'No node of this region reported yet.');
  card.append(head, name, nodes, empty);
  card._ui = { sw, badge, name, nodes, empty };
  cardsById.set(regionId, card);
  refreshCardHead(card);
  if (!card.isConnected) $('cards').append(card);
  return card;
}

function refreshCardHead(card) {
  const id = card.dataset.region;
  const ui = card._ui;
  const colour = colourOf(id);
  card.style.setProperty('--region', colour);
  ui.sw.style.background = colour;
  const r = state.regions && state.regions.find((x) => x.id === id);
  const name = r ? r.name : id === '?' ? 'peers that have not reported their region yet' : '';
  ui.name.textContent = name;
  ui.name.hidden = !name;
  ui.name.title = name;
  card.classList.toggle('mine', state.frame !== null && state.frame.region === id);
}

function setText(node, text) { if (node.textContent !== text) node.textContent = text; }

function rowFor(n) {
  let row = rowsById.get(n.node);
  if (row) return row;
  row = el('li', 'node');
  row.dataset.node = n.node;
  const head = el('div', 'node-head');
  const id = el('span', 'node-id', n.node);
  id.title = n.node;
  const staleNote = el('span', 'stale-note', 'last known');
  const reach = el('span', 'badge');
  const ready = el('span', 'ready');
  head.append(id, staleNote, ready, reach);
  const metrics = el('dl', 'metrics');
  const cell = (label) => {
    const d = el('div');
    const dd = el('dd');
    d.append(el('dt', '', label), dd);
    metrics.append(d);
    return dd;
  };
  const lag = cell('lag p50/p99');
  const req = cell('requests/s');
  const mat = cell('matches/s');
  const docs = cell('documents');
  const clock = cell('clock offset');
  const digest = el('div', 'digest');
  const code = el('code');
  const cmp = el('span', 'cmp');
  digest.append(el('span', 'k', 'digest'), code, cmp);
  row.append(head, metrics, digest);
  row._ui = { reach, ready, lag, req, mat, docs, clock, code, cmp, staleNote, digest: undefined };
  rowsById.set(n.node, row);
  return row;
}

function updateRow(row, n, selfDigest) {
  const ui = row._ui;
  const self = n.this_node === true;
  const reachable = self || n.reachable === true;
  row.dataset.reachable = String(reachable);
  row.dataset.thisNode = String(self);
  row.classList.toggle('stale', !reachable);
  row.title = reachable ? '' : 'partitioned from this node: its last known values';
  ui.reach.className = 'badge ' + (self ? 'self' : reachable ? 'ok' : 'bad');
  setText(ui.reach, self ? 'this node' : reachable ? 'reachable' : 'partitioned');
  const ready = n.ready === true;
  ui.ready.className = 'ready ' + (ready ? 'yes' : 'no');
  setText(ui.ready, ready ? '✓ ready' : '✗ not ready');
  const noLag = num(n.lag_p50_ms) === null && num(n.lag_p99_ms) === null;
  setText(ui.lag, self || noLag ? '–' : `${ms(n.lag_p50_ms)} / ${ms(n.lag_p99_ms)} ms`);
  ui.lag.title = self ? 'replication lag is measured for peers' : 'replication lag p50 / p99';
  setText(ui.req, rate(n.requests_per_s));
  setText(ui.mat, rate(n.matches_per_s));
  const docs = num(n.documents) === null ? '–' : count(n.documents);
  setText(ui.docs, `${docs} · ${bytes(n.document_bytes)}`);
  ui.docs.title = num(n.document_bytes) === null ? '' : `${count(n.document_bytes)} bytes`;
  // A peer's clock minus this node's, measured from their status exchange;
  // beyond --max-clock-skew it is flagged (safety never depends on it).
  const offset = num(n.clock_offset_ms);
  setText(ui.clock, self || offset === null ? '–' : `${offset > 0 ? '+' : ''}${ms(offset)} ms${n.clock_skewed ? ' ⚠ skewed' : ''}`);
  ui.clock.classList.toggle('skewed', n.clock_skewed === true);
  ui.clock.title = n.clock_skewed ? 'beyond the clock skew bound' : '';
  ui.staleNote.hidden = reachable;
  const digest = typeof n.digest === 'string' ? n.digest : '';
  if (ui.digest !== digest) {
    ui.digest = digest;
    ui.code.replaceChildren();
    if (digest) ui.code.append(el('mark', '', digest.slice(0, 8)), document.createTextNode(digest.slice(8)));
    else ui.code.textContent = '–';
    ui.code.title = digest ? `state digest ${digest}` : 'no digest';
  }
  // A peer's digest of what it shares with this node's region against this
  // node's of what it shares with the peer's (halo replication: regions
  // hold different documents); equal once the two have converged.
  const mine = typeof n.shared_digest === 'string' && n.shared_digest ? n.shared_digest : selfDigest;
  const cmp = self || !digest || !mine ? '' : digest === mine ? 'same' : 'diff';
  ui.cmp.className = 'cmp ' + cmp;
  setText(ui.cmp, cmp === 'same' ? '= this node' : cmp === 'diff' ? '≠ this node' : '');
}

function updatePanel(f) {
  const seen = new Set();
  const byRegion = new Map();
  const me = f.nodes.find((n) => n.this_node === true);
  const selfDigest = me && typeof me.digest === 'string' ? me.digest : '';
  for (const n of f.nodes) {
    if (seen.has(n.node)) continue;
    seen.add(n.node);
    const region = typeof n.region === 'string' && n.region ? n.region : '?';
    const card = cardFor(region);
    const row = rowFor(n);
    updateRow(row, n, selfDigest);
    if (row.parentNode !== card._ui.nodes) card._ui.nodes.append(row);
    if (!byRegion.has(region)) byRegion.set(region, []);
    byRegion.get(region).push(n);
  }
  for (const [id, row] of rowsById) {
    if (!seen.has(id)) { row.remove(); rowsById.delete(id); }
  }
  for (const [id, card] of cardsById) {
    const nodes = byRegion.get(id) || [];
    card._ui.empty.hidden = nodes.length > 0;
    const b = card._ui.badge;
    const adopter = f.adopters[id];
    if (typeof adopter === 'string') {
      // Down, as this node judges it: say who serves its area now.
      b.className = 'badge bad';
      setText(b, 'down · served by ' + (adopter === f.region ? 'this node' : adopter));
    } else if (id !== f.region && f.serving.includes(id)) {
      b.className = 'badge warn'; setText(b, 'back · handing back');
    } else if (nodes.length === 0) { b.className = 'badge quiet'; setText(b, 'no nodes'); }
    else if (nodes.some((n) => n.this_node)) { b.className = 'badge self'; setText(b, 'this node'); }
    else if (nodes.some((n) => n.reachable)) {
      const all = nodes.every((n) => n.reachable);
      b.className = 'badge ' + (all ? 'ok' : 'warn');
      setText(b, all ? 'reachable' : 'partly reachable');
    } else { b.className = 'badge bad'; setText(b, 'partitioned'); }
    card.classList.toggle('mine', id === f.region);
  }
  updateConvergence(f.nodes);
}

function updateConvergence(nodes) {
  const box = $('convergence');
  // Each peer against this node, on what the two share.
  const peers = nodes.filter((n) => n.this_node !== true);
  const known = peers.filter((n) => typeof n.digest === 'string' && n.digest && n.shared_digest);
  const differ = known.filter((n) => n.digest !== n.shared_digest).length;
  let cls, text, detail;
  if (peers.length === 0) {
    cls = 'equal'; text = '✓ no peers'; detail = '';
  } else if (known.length === 0) {
    cls = 'unknown'; text = 'no digests yet'; detail = '';
  } else if (differ === 0) {
    cls = 'equal'; text = '✓ in step with every peer';
    detail = known.length < peers.length
      ? ` (${known.length} of ${peers.length} peers report)`
      : ` on what each shares with this node (${known.length} peer${known.length === 1 ? '' : 's'})`;
  } else {
    cls = 'differ'; text = '≠ not in step';
    detail = ` (${differ} of ${known.length} peers differ on what they share with this node)`;
  }
  box.className = 'convergence ' + cls;
  const key = text + detail;
  if (box.dataset.key !== key) {
    box.dataset.key = key;
    box.dataset.state = cls;
    box.replaceChildren(document.createTextNode(text), el('span', 'detail', detail));
  }
}

// ---- map -------------------------------------------------------------------

const canvas = $('map');
const ctx = canvas.getContext('2d', { alpha: false });

function requestDraw() {
  if (state.drawQueued) return;
  state.drawQueued = true;
  requestAnimationFrame(() => {
    state.drawQueued = false;
    const t0 = performance.now();
    draw();
    const dt = performance.now() - t0;
    if (state.frame) $('stats').dataset.drawMs = dt.toFixed(2);
  });
}

function resize() {
  const wrap = $('map-wrap');
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, wrap.clientWidth);
  const h = Math.max(1, wrap.clientHeight);
  if (w === state.size.w && h === state.size.h && dpr === state.size.dpr) return;
  state.size = { w, h, dpr };
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  requestDraw();
}

new ResizeObserver(resize).observe($('map-wrap'));
window.addEventListener('resize', resize);
// A change of devicePixelRatio (browser zoom, another screen) resizes nothing in CSS pixels.
(function watchDpr() {
  const mq = matchMedia(`(resolution: ${window.devicePixelRatio || 1}dppx)`);
  mq.addEventListener('change', () => { resize(); watchDpr(); }, { once: true });
})();

function growPointBounds(f) {
  let b = state.pointBounds;
  const add = (lat, lon) => {
    if (!Number.isFinite(lat) || !Number.isFinite(lon)) return;
    if (!b) b = { minLat: lat, maxLat: lat, minLon: lon, maxLon: lon };
    else {
      if (lat < b.minLat) b.minLat = lat;
      if (lat > b.maxLat) b.maxLat = lat;
      if (lon < b.minLon) b.minLon = lon;
      if (lon > b.maxLon) b.maxLon = lon;
    }
  };
  for (const p of f.riders) add(p[0], p[1]);
  for (const p of f.drivers) add(p[0], p[1]);
  for (const m of f.matches) { add(m.rider[0], m.rider[1]); add(m.driver[0], m.driver[1]); }
  for (const c of f.claims) { add(c.rider[0], c.rider[1]); add(c.driver[0], c.driver[1]); }
  state.pointBounds = b;
}

// Equirectangular: x = lon * cos(mean lat), y = lat, fitted into the canvas.
function makeView(b, w, h) {
  let { minLat, maxLat, minLon, maxLon } = b;
  const minSpan = 0.01; // about a kilometre, for a single point
  if (maxLat - minLat < minSpan) { const c = (minLat + maxLat) / 2; minLat = c - minSpan / 2; maxLat = c + minSpan / 2; }
  if (maxLon - minLon < minSpan) { const c = (minLon + maxLon) / 2; minLon = c - minSpan / 2; maxLon = c + minSpan / 2; }
  const midLat = (minLat + maxLat) / 2;
  const midLon = (minLon + maxLon) / 2;
  const k = Math.cos(midLat * DEG);
  const pad = 28 + Math.min(w, h) * 0.04;
  const availW = Math.max(10, w - 2 * pad);
  const availH = Math.max(10, h - 2 * pad);
  const scale = Math.min(availW / ((maxLon - minLon) * k), availH / (maxLat - minLat)); // px per degree of latitude
  const sx = scale * k;
  const sy = scale;
  const ax = w / 2 - midLon * sx;
  const ay = h / 2 + midLat * sy;
  return { sx, sy, ax, ay, scale, w, h, x: (lon) => ax + lon * sx, y: (lat) => ay - lat * sy };
}

function draw() {
  const { w, h, dpr } = state.size;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = MAP_BG;
  ctx.fillRect(0, 0, w, h);

  const bounds = (state.regions && regionBounds()) || state.pointBounds;
  if (!bounds) {
    ctx.fillStyle = '#5b6472';
    ctx.font = `14px ${FONT}`;
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    ctx.fillText(state.frame ? 'Nothing to show yet: no regions and no pending riders or drivers.' : 'Waiting for the first frame…', w / 2, h / 2);
    return;
  }
  const v = makeView(bounds, w, h);
  drawGraticule(v);
  drawAreas(v);
  const f = state.frame;
  if (f) {
    drawPoints(v, f);
    drawMatches(v, f);
    drawClaims(v, f);
  }
  drawAreaLabels(v);
  drawScaleBar(v);
}

function niceStep(raw) {
  const p = 10 ** Math.floor(Math.log10(raw));
  const m = raw / p;
  return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

function drawGraticule(v) {
  const lonAt = (x) => (x - v.ax) / v.sx;
  const latAt = (y) => (v.ay - y) / v.sy;
  const step = niceStep(Math.max(lonAt(v.w) - lonAt(0), latAt(0) - latAt(v.h)) / 10);
  const digits = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  ctx.lineWidth = 1;
  ctx.strokeStyle = '#dbe2ea';
  ctx.beginPath();
  for (let lon = Math.ceil(lonAt(0) / step) * step; lon <= lonAt(v.w); lon += step) {
    const x = Math.round(v.x(lon)) + 0.5;
    ctx.moveTo(x, 0); ctx.lineTo(x, v.h);
  }
  for (let lat = Math.ceil(latAt(v.h) / step) * step; lat <= latAt(0); lat += step) {
    const y = Math.round(v.y(lat)) + 0.5;
    ctx.moveTo(0, y); ctx.lineTo(v.w, y);
  }
  ctx.stroke();
  ctx.fillStyle = '#7b8594';
  ctx.font = `11px ${FONT}`;
  ctx.textBaseline = 'top';
  ctx.textAlign = 'left';
  for (let lon = Math.ceil(lonAt(0) / step) * step; lon <= lonAt(v.w); lon += step) {
    const x = Math.round(v.x(lon));
    if (x > 4 && x < v.w - 60) ctx.fillText(`${Math.abs(lon).toFixed(digits)}°${lon < 0 ? 'W' : 'E'}`, x + 3, 4);
  }
  ctx.textBaseline = 'bottom';
  for (let lat = Math.ceil(latAt(v.h) / step) * step; lat <= latAt(0); lat += step) {
    const y = Math.round(v.y(lat));
    if (y > 30 && y < v.h - 4) ctx.fillText(`${Math.abs(lat).toFixed(digits)}°${lat < 0 ? 'S' : 'N'}`, 4, y - 2);
  }
}

function areaPath(v, r) {
  const p = new Path2D();
  for (const ring of r.rings) {
    ring.forEach(([lon, lat], i) => (i === 0 ? p.moveTo(v.x(lon), v.y(lat)) : p.lineTo(v.x(lon), v.y(lat))));
    p.closePath();
  }
  return p;
}

function regionStatus(id) {
  const f = state.frame;
  if (!f) return null;
  const nodes = f.nodes.filter((n) => n.region === id);
  if (nodes.length === 0) return null;
  if (nodes.some((n) => n.this_node)) return 'self';
  return nodes.some((n) => n.reachable) ? 'ok' : 'bad';
}

function drawAreas(v) {
  if (!state.regions) return;
  for (const r of state.regions) {
    const p = areaPath(v, r);
    const c = colourOf(r.id);
    ctx.fillStyle = '#ffffff';
    ctx.fill(p, 'evenodd');
    ctx.globalAlpha = 0.1;
    ctx.fillStyle = c;
    ctx.fill(p, 'evenodd');
    ctx.globalAlpha = 1;
  }
  for (const r of state.regions) {
    const p = areaPath(v, r);
    const status = regionStatus(r.id);
    ctx.strokeStyle = colourOf(r.id);
    ctx.lineWidth = status === 'self' ? 2.5 : 1.5;
    ctx.setLineDash(status === 'bad' ? [7, 5] : []);
    ctx.stroke(p);
  }
  ctx.setLineDash([]);
}

// Area-weighted centroid of the exterior ring, in screen coordinates.
function centroid(v, ring) {
  let a = 0, cx = 0, cy = 0;
  for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
    const x0 = v.x(ring[j][0]), y0 = v.y(ring[j][1]);
    const x1 = v.x(ring[i][0]), y1 = v.y(ring[i][1]);
    const cr = x0 * y1 - x1 * y0;
    a += cr; cx += (x0 + x1) * cr; cy += (y0 + y1) * cr;
  }
  if (Math.abs(a) < 1e-9) return [v.x(ring[0][0]), v.y(ring[0][1])];
  return [cx / (3 * a), cy / (3 * a)];
}

function haloText(text, x, y, fill) {
  ctx.lineJoin = 'round';
  ctx.lineWidth = 4;
  ctx.strokeStyle = 'rgba(255,255,255,0.92)';
  ctx.strokeText(text, x, y);
  ctx.fillStyle = fill;
  ctx.fillText(text, x, y);
}

function drawAreaLabels(v) {
  if (!state.regions) return;
  ctx.textAlign = 'center';
  ctx.textBaseline = 'middle';
  for (const r of state.regions) {
    const ring = r.rings[0];
    if (!ring || ring.length < 3) continue;
    const [x, y] = centroid(v, ring);
    let minX = Infinity, maxX = -Infinity;
    for (const [lon] of ring) { const px = v.x(lon); minX = Math.min(minX, px); maxX = Math.max(maxX, px); }
    const room = maxX - minX - 12;
    ctx.font = `700 14px ${FONT}`;
    haloText(r.id, x, y - 8, '#0f172a');
    const status = regionStatus(r.id);
    const line2 = status === 'self' ? 'this node' : status === 'bad' ? 'partitioned' : status === 'ok' ? 'reachable' : '';
    const short = r.name.replace(/\s*\(.*\)\s*$/, '');
    ctx.font = `12px ${FONT}`;
    let sub = short && short !== r.id ? short : '';
    if (line2) sub = sub ? `${sub} · ${line2}` : line2;
    if (sub && ctx.measureText(sub).width > room) sub = line2;
    if (sub) haloText(sub, x, y + 9, status === 'bad' ? '#9f1239' : '#334155');
  }
}

function drawPoints(v, f) {
  const n = f.owners.length;
  // Path per (shape, colour): slot -1 is the grey of unknown owners.
  const slots = new Array(n);
  for (let i = 0; i < n; i++) slots[i] = f.owners[i] === '?' ? -1 : regionSlot(f.owners[i]);
  const riderPaths = new Map();
  const driverPaths = new Map();
  const pathOf = (paths, owner) => {
    const s = Number.isInteger(owner) && owner >= 0 && owner < n ? slots[owner] : -1;
    let p = paths.get(s);
    if (!p) { p = new Path2D(); paths.set(s, p); }
    return p;
  };
  const { sx, sy, ax, ay } = v;
  const r = 2.4;
  const d = 4.2;
  const hd = d / 2;
  const drivers = f.drivers;
  for (let i = 0; i < drivers.length; i++) {
    const q = drivers[i];
    const x = ax + q[1] * sx, y = ay - q[0] * sy;
    if (x === x && y === y) pathOf(driverPaths, q[2]).rect(x - hd, y - hd, d, d);
  }
  const riders = f.riders;
  for (let i = 0; i < riders.length; i++) {
    const q = riders[i];
    const x = ax + q[1] * sx, y = ay - q[0] * sy;
    if (x === x && y === y) {
      const p = pathOf(riderPaths, q[2]);
      p.moveTo(x + r, y);
      p.arc(x, y, r, 0, TAU);
    }
  }
  ctx.globalAlpha = 0.85;
  for (const [s, p] of driverPaths) { ctx.fillStyle = s < 0 ? UNKNOWN : PALETTE[s]; ctx.fill(p); }
  for (const [s, p] of riderPaths) { ctx.fillStyle = s < 0 ? UNKNOWN : PALETTE[s]; ctx.fill(p); }
  ctx.globalAlpha = 1;
}

function linePath(v, items) {
  const p = new Path2D();
  for (const m of items) {
    p.moveTo(v.x(m.driver[1]), v.y(m.driver[0]));
    p.lineTo(v.x(m.rider[1]), v.y(m.rider[0]));
  }
  return p;
}

function drawMatches(v, f) {
  const plain = [];
  const cross = [];
  for (const m of f.matches) (m.cross_border ? cross : plain).push(m);
  ctx.lineCap = 'round';
  if (plain.length) {
    ctx.strokeStyle = MATCH_INK;
    ctx.lineWidth = 1.4;
    ctx.stroke(linePath(v, plain));
    const ends = new Path2D(); // a dot at the rider's end shows the direction
    for (const m of plain) { const x = v.x(m.rider[1]), y = v.y(m.rider[0]); ends.moveTo(x + 1.8, y); ends.arc(x, y, 1.8, 0, TAU); }
    ctx.fillStyle = MATCH_INK;
    ctx.fill(ends);
  }
  if (cross.length) {
    const p = linePath(v, cross);
    ctx.strokeStyle = 'rgba(255,255,255,0.95)';
    ctx.lineWidth = 6;
    ctx.stroke(p);
    ctx.strokeStyle = CROSS_INK;
    ctx.lineWidth = 3;
    ctx.stroke(p);
    const ends = new Path2D();
    for (const m of cross) { const x = v.x(m.rider[1]), y = v.y(m.rider[0]); ends.moveTo(x + 3, y); ends.arc(x, y, 3, 0, TAU); }
    ctx.fillStyle = CROSS_INK;
    ctx.fill(ends);
  }
}

function drawClaims(v, f) {
  if (!f.claims.length) return;
  const p = linePath(v, f.claims);
  const ends = new Path2D();
  for (const c of f.claims) {
    for (const [lat, lon] of [c.rider, c.driver]) {
      const x = v.x(lon), y = v.y(lat);
      ends.moveTo(x + 4, y);
      ends.arc(x, y, 4, 0, TAU);
    }
  }
  ctx.lineCap = 'butt';
  ctx.strokeStyle = 'rgba(255,255,255,0.95)';
  ctx.lineWidth = 5;
  ctx.stroke(p);
  ctx.stroke(ends);
  ctx.strokeStyle = CLAIM_INK;
  ctx.lineWidth = 1.75;
  ctx.setLineDash([5, 3]);
  ctx.stroke(p);
  ctx.setLineDash([]);
  ctx.lineWidth = 1.5;
  ctx.stroke(ends);
}

function drawScaleBar(v) {
  const kmPerPx = KM_PER_DEG / v.scale;
  const km = niceStep((v.w / 5) * kmPerPx);
  const px = km / kmPerPx;
  const label = km >= 1 ? `${km} km` : `${Math.round(km * 1000)} m`;
  const x = 16, y = v.h - 22;
  ctx.font = `600 12px ${FONT}`;
  const tw = ctx.measureText(label).width;
  ctx.fillStyle = 'rgba(255,255,255,0.9)';
  ctx.strokeStyle = '#dde3ea';
  ctx.lineWidth = 1;
  ctx.beginPath();
  const bw = Math.max(px, tw) + 16;
  if (ctx.roundRect) ctx.roundRect(x - 8, y - 22, bw, 36, 6); else ctx.rect(x - 8, y - 22, bw, 36);
  ctx.fill();
  ctx.stroke();
  // Alternating black and white halves, the usual map scale.
  ctx.fillStyle = '#111827';
  ctx.fillRect(x, y, px / 2, 5);
  ctx.fillStyle = '#ffffff';
  ctx.fillRect(x + px / 2, y, px / 2, 5);
  ctx.strokeStyle = '#111827';
  ctx.strokeRect(x + 0.5, y + 0.5, px - 1, 5);
  ctx.fillStyle = '#111827';
  ctx.textBaseline = 'bottom';
  ctx.textAlign = 'left';
  ctx.fillText('0', x, y - 2);
  ctx.textAlign = 'right';
  ctx.fillText(label, x + Math.max(px, tw), y - 2);
}

// ---- start -------------------------------------------------------------------

renderLegendOwners();
resize();
loadRegions().finally(openStream);
