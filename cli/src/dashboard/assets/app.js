// fleet dashboard: read-only. Everything shown arrives over server-sent
// events from this page's own origin; every peer-supplied string is put in
// with textContent (never innerHTML). There is no input path: the page
// only ever makes GET requests.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const FILTERS = ['name', 'tenant', 'host', 'health', 'status', 'pane', 'flag'];
  const MAX_EVENTS = 300;
  let fleetSrc = null, eventsSrc = null, screenSrc = null;
  let selected = null;
  let lastSeq = 0;
  // The last view and when it came: ages move with the clock between
  // changes (redrawn once a second, no request).
  let lastDoc = null, lastAt = 0;

  // The token was in the first URL; the cookie carries it from now on.
  if (location.search.indexOf('token=') >= 0) {
    history.replaceState(null, '', '/');
  }

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function query() {
    const p = new URLSearchParams();
    for (const k of FILTERS) {
      const v = $('f-' + k).value.trim();
      if (v) p.set(k, v);
    }
    const s = p.toString();
    return s ? '?' + s : '';
  }

  function secs(v) {
    if (v === null || v === undefined) return '-';
    if (v < 60) return Math.floor(v) + 's';
    if (v < 3600) return Math.floor(v / 60) + 'm';
    return Math.floor(v / 3600) + 'h';
  }

  function setConn(live, text) {
    const c = $('conn');
    c.textContent = text;
    c.className = live ? 'conn live' : 'conn';
  }

  function problem(text) { $('problem').textContent = text || ''; }

  function onProblem(e) {
    try { problem(JSON.parse(e.data).error); } catch (_) { problem('stream error'); }
  }

  function addr(a) { return a.tenant_id + '/' + a.host + '/' + a.name; }

  function later(v, by) { return v === null || v === undefined ? v : v + by; }

  function renderAgents(doc) {
    const by = Math.max(0, (Date.now() - lastAt) / 1000);
    const body = document.createElement('tbody');
    for (const a of doc.agents) {
      const tr = document.createElement('tr');
      const id = addr(a);
      tr.dataset.agent = id;
      if (id === selected) tr.className = 'selected';
      const hb = a.heartbeat || {};
      tr.append(
        el('td', a.tenant_id, 'tenant'),
        el('td', a.host, 'host'),
        el('td', a.name, 'name'),
        el('td', a.runtime, 'runtime'),
        el('td', a.pane, 'pane pane-' + a.pane),
        el('td', a.process ? a.process.name : (a.pane_command || '-'), 'process'),
        el('td', secs(later(a.idle_seconds, by)), 'idle'),
        el('td', hb.health, 'health health-' + hb.health),
        el('td', secs(later(hb.age_seconds, by)), 'hb-age'),
        el('td', hb.status, 'status status-' + hb.status),
        el('td', a.model || '-', 'model'),
        el('td', (a.flags || []).join(',') || '-', 'flags'),
      );
      tr.addEventListener('click', () => watchScreen(id));
      body.append(tr);
    }
    $('agents').replaceChild(body, $('agents').tBodies[0]);
  }

  function renderHosts(doc) {
    const body = document.createElement('tbody');
    const now = doc.generated_at_unix_ms;
    for (const h of doc.hosts) {
      const tr = document.createElement('tr');
      tr.dataset.host = h.tenant_id + '/' + h.host;
      let link = h.link;
      let bad = h.link === 'unreachable';
      for (const u of h.uplinks || []) {
        link += ', up ' + u.address + ' ' + u.state;
        if (u.state !== 'connected') { bad = true; if (u.error) link += ' (' + u.error + ')'; }
      }
      const seen = h.last_seen_unix_ms > 0 ? secs(Math.max(0, now - h.last_seen_unix_ms) / 1000) + ' ago' : '-';
      tr.append(
        el('td', h.tenant_id),
        el('td', h.host),
        el('td', link, bad ? 'link link-bad' : 'link'),
        el('td', seen, 'last-seen'),
        el('td', h.hostd_version),
        el('td', '-L ' + h.tmux_socket + (h.tmux_running ? ' (up)' : ' (down)')),
        el('td', h.agents_total),
        el('td', h.agents_alive),
        el('td', h.agents_healthy),
        el('td', (h.flags || []).join(',') || '-', 'flags'),
      );
      body.append(tr);
    }
    $('hosts').replaceChild(body, $('hosts').tBodies[0]);
  }

  function renderSummary(s) {
    const t = s.total || {};
    const h = t.health || {}, st = t.status || {}, p = t.pane || {};
    const set = (k, v) => { $('sum-' + k).textContent = (v === undefined ? '-' : String(v)); };
    set('agents', t.agents);
    set('healthy', h.healthy); set('stale', h.stale); set('health_unknown', h.unknown);
    set('idle', st.idle); set('busy', st.busy); set('waiting', st.waiting);
    set('alive', p.alive); set('dead', p.dead); set('missing', p.missing);
  }

  function renderEvent(ev) {
    const li = el('li');
    li.dataset.kind = ev.kind;
    li.dataset.agent = ev.agent;
    const who = ev.agent ? ev.tenant_id + '/' + ev.host + '/' + ev.agent : ev.tenant_id + '/' + ev.host;
    li.append(el('span', ev.ts + ' ', 'ts'), el('span', ev.kind, 'kind'), el('span', ' ' + who + '  ' + ev.message, 'msg'));
    const list = $('events');
    list.insertBefore(li, list.firstChild);
    while (list.childNodes.length > MAX_EVENTS) list.removeChild(list.lastChild);
  }

  function renderFrame(f) {
    const box = document.createElement('div');
    box.id = 'screen';
    box.className = f.dead ? 'term dead' : 'term';
    box.dataset.seq = String(f.seq);
    for (const line of f.lines) {
      const row = document.createElement('div');
      for (const r of line) {
        const s = document.createElement('span');
        s.textContent = r.t;
        let cls = '';
        if (r.b) cls += ' b';
        if (r.dim) cls += ' dim';
        if (r.i) cls += ' i';
        if (r.u) cls += ' u';
        if (cls) s.className = cls.trim();
        // CSSOM, not a style attribute: allowed by style-src 'self'.
        if (r.fg) s.style.color = r.fg;
        if (r.bg) s.style.backgroundColor = r.bg;
        row.append(s);
      }
      box.append(row);
    }
    $('screen').replaceWith(box);
  }

  function watchScreen(id) {
    selected = id;
    for (const tr of $('agents').tBodies[0].rows) tr.className = tr.dataset.agent === id ? 'selected' : '';
    $('screen-title').textContent = id;
    if (screenSrc) screenSrc.close();
    screenSrc = new EventSource('/api/screen?agent=' + encodeURIComponent(id));
    screenSrc.addEventListener('frame', (e) => renderFrame(JSON.parse(e.data)));
    screenSrc.addEventListener('problem', onProblem);
  }

  function connect() {
    if (fleetSrc) fleetSrc.close();
    if (eventsSrc) eventsSrc.close();
    const q = query();
    fleetSrc = new EventSource('/api/fleet' + q);
    fleetSrc.onopen = () => { setConn(true, 'live'); };
    fleetSrc.onerror = () => { setConn(false, 'reconnecting…'); };
    fleetSrc.addEventListener('fleet', (e) => {
      const doc = JSON.parse(e.data);
      lastDoc = doc;
      lastAt = Date.now();
      problem('');
      $('too-many').textContent = '';
      renderAgents(doc);
      renderHosts(doc);
    });
    fleetSrc.addEventListener('summary', (e) => renderSummary(JSON.parse(e.data)));
    // More rows match than the page is sent: a count, no rows.
    fleetSrc.addEventListener('too_many', (e) => {
      const t = JSON.parse(e.data);
      lastDoc = null;
      $('agents').replaceChild(document.createElement('tbody'), $('agents').tBodies[0]);
      $('hosts').replaceChild(document.createElement('tbody'), $('hosts').tBodies[0]);
      $('too-many').textContent = t.matched + ' agents match: more than the ' + t.limit +
        ' rows this page is sent (--max-rows). Narrow the selection with the filters above.';
    });
    fleetSrc.addEventListener('problem', onProblem);
    $('events').textContent = '';
    lastSeq = 0;
    eventsSrc = new EventSource('/api/events' + q);
    eventsSrc.addEventListener('event', (e) => {
      const ev = JSON.parse(e.data);
      if (ev.seq <= lastSeq) return;
      lastSeq = ev.seq;
      renderEvent(ev);
    });
    eventsSrc.addEventListener('problem', onProblem);
  }

  let timer = null;
  for (const k of FILTERS) {
    const input = $('f-' + k);
    const again = () => { clearTimeout(timer); timer = setTimeout(connect, 300); };
    input.addEventListener('input', again);
    input.addEventListener('change', again);
  }
  setInterval(() => { if (lastDoc) renderAgents(lastDoc); }, 1000);
  connect();
})();
