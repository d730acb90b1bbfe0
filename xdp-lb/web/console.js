// The xdp-lb console: fetches /status.json (the report of `xdp-lb status --json`) every
// second and draws it. Rates are the difference of two reports' counters over the
// difference of their times (`at_ms`, the agent's clock). Read-only: it only ever GETs.
'use strict';

const POLL_MS = 1000;
const FETCH_TIMEOUT_MS = 5000;
// No report for this long: the page says it is stale.
const STALE_MS = 5000;
// The packets-per-second chart's window.
const HISTORY_S = 300;
const PALETTE = ['#58a6ff', '#3fb950', '#f0883e', '#bc8cff', '#ff7b72', '#d29922',
  '#39c5cf', '#f778ba', '#a5d6ff', '#7ee787', '#ffa657', '#d2a8ff'];

const view = {
  token: null,
  // Counters of the last report, by key: {at, packets, bytes}.
  last: new Map(),
  // The last rates computed, by key: {pps, bps}.
  rates: new Map(),
  // Packets per second over time, by backend key: [{at, pps}].
  history: new Map(),
  // Each service's section and charts, by service name.
  services: new Map(),
  lastOk: 0,
  lastReportAt: 0,
  problem: null,
  tokenNeeded: false,
};

const $ = (id) => document.getElementById(id);

function esc(value) {
  return String(value ?? '').replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  })[c]);
}

function human(n, unit) {
  if (n === null || n === undefined || !Number.isFinite(n)) return '–';
  const steps = [[1e9, 'G'], [1e6, 'M'], [1e3, 'k']];
  for (const [size, prefix] of steps) {
    if (Math.abs(n) >= size) return (n / size).toFixed(1) + ' ' + prefix + unit;
  }
  return (n < 10 && n % 1 !== 0 ? n.toFixed(1) : Math.round(n)) + (unit ? ' ' + unit : '');
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

// The token: from `#token=...` once (then kept for the tab only), or typed in the form.
function loadToken() {
  const match = location.hash.match(/^#token=(.+)$/);
  if (match) {
    sessionStorage.setItem('xdp-lb-token', decodeURIComponent(match[1]));
    history.replaceState(null, '', location.pathname);
  }
  view.token = sessionStorage.getItem('xdp-lb-token');
}

// The rate of a counter since the last report (`null` until there are two, or when the
// counter went back: a backend removed and added again).
function rate(key, at, packets, bytes) {
  const last = view.last.get(key);
  if (last && at > last.at) {
    const seconds = (at - last.at) / 1000;
    const pps = (packets - last.packets) / seconds;
    const bps = ((bytes - last.bytes) * 8) / seconds;
    view.rates.set(key, pps >= 0 && bps >= 0 ? { pps, bps } : { pps: null, bps: null });
  }
  if (!last || at > last.at) view.last.set(key, { at, packets, bytes });
  return view.rates.get(key) ?? { pps: null, bps: null };
}

function remember(key, at, pps) {
  if (pps === null) return;
  const points = view.history.get(key) ?? [];
  if (!points.length || points[points.length - 1].at < at) points.push({ at, pps });
  while (points.length && points[0].at < at - HISTORY_S * 1000) points.shift();
  view.history.set(key, points);
}

function stateBadge(state) {
  const word = state ?? '';
  return `<span class="state state-${esc(word)}">${esc(word)}</span>`;
}

function lastCheck(b) {
  if (!b.health) return ['<span class="muted">not checked</span>', '–'];
  const last = b.health.last_check;
  if (!last) return ['<span class="muted">pending</span>', '–'];
  const verdict = last.ok ? 'ok' : '<span class="check-fail">FAIL</span>';
  const at = Date.parse(last.at);
  const when = Number.isFinite(at) ? ` <span class="muted">${esc(clock(at))}</span>` : '';
  return [`${verdict} ${esc(last.detail)}${when}`, (last.duration_us / 1000).toFixed(1) + ' ms'];
}

function serviceSection(name) {
  let entry = view.services.get(name);
  if (entry) return entry;
  const section = document.createElement('section');
  section.className = 'service';
  section.dataset.service = name;
  section.innerHTML = `<div class="service-head"></div><table class="backends"></table>
    <div class="charts"><div class="chart"><canvas class="share"></canvas></div>
    <div class="chart"><canvas class="pps"></canvas></div></div>`;
  $('services').appendChild(section);
  entry = { section, share: null, pps: null };
  if (typeof Chart !== 'undefined') {
    entry.share = new Chart(section.querySelector('canvas.share'), {
      type: 'bar',
      data: { labels: [], datasets: [
        { label: 'new flows (share of Maglev slots)', data: [], backgroundColor: '#58a6ff' },
        { label: 'live flows', data: [], backgroundColor: '#3fb950' },
        { label: 'traffic (bits/s)', data: [], backgroundColor: '#f0883e' },
      ] },
      options: {
        animation: false, maintainAspectRatio: false,
        plugins: { title: { display: true, text: 'Share per backend (%)' } },
        scales: { y: { min: 0, max: 100 } },
      },
    });
    entry.pps = new Chart(section.querySelector('canvas.pps'), {
      type: 'line',
      data: { datasets: [] },
      options: {
        animation: false, maintainAspectRatio: false, parsing: false,
        elements: { point: { radius: 0 }, line: { borderWidth: 2 } },
        plugins: { title: { display: true, text: `Packets per second, last ${HISTORY_S / 60} minutes` } },
        scales: {
          x: { type: 'linear', min: -HISTORY_S, max: 0, ticks: { callback: (v) => `${v}s` } },
          y: { beginAtZero: true },
        },
      },
    });
  }
  view.services.set(name, entry);
  return entry;
}

function renderService(s, at) {
  const entry = serviceSection(s.name);
  const vip = s.vip.includes(':') ? `[${s.vip}]:${s.port}` : `${s.vip}:${s.port}`;
  const svc = rate(`service|${s.name}`, at, s.packets, s.bytes);
  const pools = s.pools.length
    ? ` · pools ${s.pools.map((p) => `${esc(p.name)} (${p.serving} serving)`).join(', ')}`
    : '';
  entry.section.querySelector('.service-head').innerHTML =
    `<h3>${esc(s.name)}</h3><span>${esc(vip)}/${esc(s.protocol)}</span>
     <span class="muted">${s.serving} serving · Maglev ${s.maglev_size} · hash ${esc(s.hash)}
     · ${s.table_switches} table switch(es)${s.last_switch_us != null ? `, last ${(s.last_switch_us / 1000).toFixed(1)} ms` : ''}${pools}</span>
     <span>${human(svc.pps, 'pkt/s')} · ${human(svc.bps, 'bit/s')}</span>`;
  const rows = s.backends.map((b) => {
    const key = `${s.name}|${b.address}`;
    const r = rate(key, at, b.packets, b.bytes);
    remember(key, at, r.pps);
    const [check, latency] = lastCheck(b);
    return { b, key, r, html: `<tr class="backend" data-backend="${esc(b.address)}" data-state="${esc(b.state)}"
        data-pps="${r.pps === null ? '' : r.pps.toFixed(1)}">
      <td>${esc(b.address)}</td><td>${esc(b.pool)}</td><td class="state-cell">${stateBadge(b.state)}</td>
      <td class="num">${b.weight}</td><td class="num">${b.slots}</td><td class="num">${b.flows}</td>
      <td class="num pps">${human(r.pps, '')}</td><td class="num">${human(r.bps, 'bit/s')}</td>
      <td class="check">${check}</td><td class="num">${latency}</td></tr>` };
  });
  entry.section.querySelector('table.backends').innerHTML =
    `<tr><th>backend</th><th>pool</th><th>state</th><th class="num">weight</th>
     <th class="num">slots</th><th class="num">live flows</th><th class="num">packets/s</th>
     <th class="num">traffic</th><th>last check</th><th class="num">latency</th></tr>` +
    rows.map((row) => row.html).join('');
  if (entry.share) {
    const percent = (values) => {
      const total = values.reduce((a, v) => a + (v || 0), 0);
      return values.map((v) => (total > 0 ? (100 * (v || 0)) / total : 0));
    };
    entry.share.data.labels = rows.map((row) => row.b.address);
    entry.share.data.datasets[0].data = percent(rows.map((row) => row.b.slots));
    entry.share.data.datasets[1].data = percent(rows.map((row) => row.b.flows));
    entry.share.data.datasets[2].data = percent(rows.map((row) => row.r.bps));
    entry.share.update('none');
  }
  if (entry.pps) {
    entry.pps.data.datasets = rows.map((row, i) => ({
      label: row.b.address,
      borderColor: PALETTE[i % PALETTE.length],
      backgroundColor: PALETTE[i % PALETTE.length],
      data: (view.history.get(row.key) ?? []).map((p) => ({ x: (p.at - at) / 1000, y: p.pps })),
    }));
    entry.pps.update('none');
  }
}

function counterRows(counters, prefix, at) {
  return '<tr><th>name</th><th class="num">packets</th><th class="num">packets/s</th><th class="num">bytes</th></tr>' +
    counters.map((c) => {
      const r = rate(`${prefix}|${c.name}`, at, c.packets, c.bytes);
      return `<tr data-counter="${esc(c.name)}"><td>${esc(c.name)}</td><td class="num">${c.packets}</td>
        <td class="num">${human(r.pps, '')}</td><td class="num">${human(c.bytes, 'B')}</td></tr>`;
    }).join('');
}

function renderTimeline(events) {
  const items = events.slice().reverse().map((e) => {
    const change = e.from || e.to
      ? `${e.from ? stateBadge(e.from) : '–'} → ${e.to ? stateBadge(e.to) : '–'}` : '';
    return `<li data-kind="${esc(e.kind)}"><time>${esc(clock(e.at_ms))}</time><span class="kind">${esc(e.kind)}</span>
      <b>${esc(e.service)}</b> ${esc(e.backend ?? '')} ${change} <span class="muted">${esc(e.detail)}</span></li>`;
  });
  $('timeline').innerHTML = items.join('') || '<li class="muted">nothing since the agent started</li>';
}

function render(report) {
  const at = report.at_ms || Date.now();
  const fresh = at > view.lastReportAt;
  view.lastReportAt = at;
  const a = report.agent || {};
  $('agent').textContent = `agent ${a.version || '?'} · config ${a.config_hash || '?'}` +
    (a.started_at_s ? ` · up since ${new Date(a.started_at_s * 1000).toLocaleString()}` : '');
  $('updated').textContent = `report of ${clock(at)}`;
  if (!fresh) return;
  const names = new Set(report.services.map((s) => s.name));
  for (const [name, entry] of view.services) {
    if (!names.has(name)) {
      entry.share?.destroy();
      entry.pps?.destroy();
      entry.section.remove();
      view.services.delete(name);
    }
  }
  report.services.forEach((s) => renderService(s, at));
  const table = report.flow_table || {};
  const total = report.services.reduce((sum, s) => {
    const r = view.rates.get(`service|${s.name}`);
    return sum + (r && r.pps ? r.pps : 0);
  }, 0);
  const cards = [
    [report.services.length, 'services'],
    [report.services.reduce((n, s) => n + s.serving, 0), 'backends serving'],
    [report.active_flows, 'live flows'],
    [table.usable ? `${Math.round((100 * report.active_flows) / table.usable)} %` : '–',
      `of the connection table (${table.usable || '?'} usable)`],
    [human(total, ''), 'packets/s to the services'],
  ];
  $('summary').innerHTML = cards.map(([value, label]) =>
    `<div class="card"><div class="value">${esc(value)}</div><div class="label">${esc(label)}</div></div>`).join('');
  $('verdicts').innerHTML = counterRows(report.verdicts, 'verdict', at);
  $('flow-events').innerHTML = counterRows(report.flow_events, 'flow', at);
  renderTimeline(report.events || []);
  view.drift = report.drift || [];
}

function renderBanners() {
  const banners = [];
  const age = Date.now() - view.lastOk;
  if (view.problem) {
    banners.push(['error', view.problem +
      (view.lastOk ? ` — the figures below are from ${clock(view.lastOk)}` : '')]);
  } else if (view.lastOk && age > STALE_MS) {
    banners.push(['error', `Report stale: the last one came ${Math.round(age / 1000)} s ago`]);
  }
  if (view.drift && view.drift.length) {
    banners.push(['warn', `Data-plane drift: the kernel's maps differ from the agent's intent in ${view.drift.length} place(s); the agent does not repair it: restart the agent`,
      view.drift.map((d) => `${d.subject}: ${d.map}: ${d.problem}`)]);
  }
  $('banners').innerHTML = banners.map(([kind, text, items]) =>
    `<div class="banner banner-${kind}" data-banner="${kind}">${esc(text)}` +
    (items ? `<ul>${items.map((i) => `<li>${esc(i)}</li>`).join('')}</ul>` : '') + '</div>').join('');
  const connection = $('connection');
  const ok = !view.problem && view.lastOk && age <= STALE_MS;
  connection.className = 'pill ' + (ok ? 'pill-ok' : view.lastOk || view.problem ? 'pill-bad' : 'pill-wait');
  connection.textContent = ok ? 'live' : view.tokenNeeded ? 'token needed' : view.problem ? 'unreachable' : view.lastOk ? 'stale' : 'connecting…';
  $('token-form').classList.toggle('hidden', !view.tokenNeeded);
}

async function poll() {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), FETCH_TIMEOUT_MS);
  try {
    const headers = view.token ? { Authorization: `Bearer ${view.token}` } : {};
    const answer = await fetch('/status.json', { headers, cache: 'no-store', signal: abort.signal });
    view.tokenNeeded = answer.status === 401;
    if (answer.ok) {
      const report = await answer.json();
      render(report);
      view.lastOk = Date.now();
      view.problem = null;
    } else if (view.tokenNeeded) {
      view.problem = 'The agent wants its console token (metrics.token_file): enter it above';
    } else {
      view.problem = `The agent answered ${answer.status}: ${(await answer.text()).trim()}`;
    }
  } catch (err) {
    const why = err.name === 'AbortError' ? `no answer within ${FETCH_TIMEOUT_MS / 1000} s` : String(err.message || err);
    view.problem = `Agent unreachable: ${why}`;
  } finally {
    clearTimeout(timer);
  }
  renderBanners();
  setTimeout(poll, POLL_MS);
}

function start() {
  if (typeof Chart !== 'undefined') {
    Chart.defaults.color = '#e6edf3';
    Chart.defaults.borderColor = '#2a3340';
    Chart.defaults.font.size = Math.max(12, Math.round(parseFloat(getComputedStyle(document.documentElement).fontSize) * 0.8));
  }
  loadToken();
  $('token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    view.token = $('token').value.trim();
    sessionStorage.setItem('xdp-lb-token', view.token);
  });
  setInterval(renderBanners, 1000);
  poll();
}

start();
