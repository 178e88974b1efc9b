// regd's web UI: Preact components written with htm (tagged templates, no
// build step). Every value from the API is rendered as text by Preact;
// nothing here builds HTML from strings, and the page's CSP would refuse it.

import { h, render } from './vendor/preact.js';
import { useState, useEffect, useRef } from './vendor/hooks.js';
import htm from './vendor/htm.js';
import { request, get, watch, token, sleep } from './api.js';

const html = htm.bind(h);

const INSTANCE_PATH = '/v1/services/{service}/instances/{id}';

// ---------------------------------------------------------------- routing

// Pages live in the fragment (#/services/user), so the server serves one
// file and a reload keeps the page. Names are [A-Za-z0-9._-] by the
// contract; anything else is passed to the API, which answers 400.
function parseRoute(hash) {
  const [path, query = ''] = hash.replace(/^#/, '').split('?');
  let parts;
  try {
    parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  } catch {
    return { page: 'notfound' };
  }
  const q = new URLSearchParams(query);
  if (parts.length === 0) return { page: 'overview' };
  if (parts[0] === 'services' && parts.length === 1) return { page: 'services' };
  if (parts[0] === 'services' && parts.length === 2) return { page: 'service', service: parts[1] };
  if (parts[0] === 'expirations' && parts.length === 1) return { page: 'expirations', service: q.get('service') || '' };
  return { page: 'notfound' };
}

const serviceHref = name => '#/services/' + encodeURIComponent(name);
const instancePath = (service, id) => '/v1/services/' + encodeURIComponent(service) + '/instances/' + encodeURIComponent(id);

function useRoute() {
  const [route, setRoute] = useState(() => parseRoute(location.hash));
  useEffect(() => {
    const on = () => setRoute(parseRoute(location.hash));
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return route;
}

// ---------------------------------------------------------------- helpers

const pad = n => String(n).padStart(2, '0');
function fmtTime(s) {
  if (!s) return '';
  const d = new Date(s);
  if (isNaN(d)) return String(s);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function Time({ value }) {
  if (!value) return html`<span class="muted" title="unknown: written by a plain etcd client">—</span>`;
  return html`<time datetime=${value} title=${value}>${fmtTime(value)}</time>`;
}

// usePoll runs fn now and every ms until the component goes away; fn gets
// an AbortSignal and handles its own errors.
function usePoll(fn, ms, deps) {
  useEffect(() => {
    const ctl = new AbortController();
    (async () => {
      while (!ctl.signal.aborted) {
        try { await fn(ctl.signal); } catch { /* fn reports its own errors */ }
        await sleep(ms, ctl.signal);
      }
    })();
    return () => ctl.abort();
  }, deps);
}

const isAbort = e => e && e.name === 'AbortError';

// ---------------------------------------------------------------- states

// Problem turns an API error into what a person can act on.
function Problem({ error, onToken }) {
  if (!error) return null;
  const s = error.status;
  let title;
  let hint = null;
  if (s === 0) {
    title = 'regd cannot be reached';
    hint = 'The node may be down, restarting or shutting down. The page keeps trying.';
  } else if (s === 401) {
    title = 'A token is needed';
    hint = html`This regd only answers with a valid token. <button type="button" onClick=${onToken}>Enter a token</button>`;
  } else if (s === 403) {
    title = 'Your token does not allow this';
    hint = html`Ask for a token with a wider scope. <button type="button" onClick=${onToken}>Change token</button>`;
  } else if (s === 503) {
    title = /shutting down/i.test(error.message) ? 'This node is shutting down'
      : error.code === 'storage_full' || error.code === 'storage_unwritable' ? 'This node cannot write to its disk'
      : 'The cluster cannot serve this right now';
    hint = 'Without a quorum (a majority of members up and talking) or a leader, regd refuses rather than answer wrongly. Retrying.';
  } else if (s === 429) {
    title = 'Too many open streams from this address';
    hint = 'Close other regd tabs; the page retries.';
  } else {
    title = `The request failed (${s})`;
  }
  return html`<div class="problem" role="alert" data-status=${s} data-code=${error.code}>
    <strong>${title}</strong>
    <p class="why">${error.message}${error.code && s !== 0 ? html` <code>${error.code}</code>` : null}</p>
    ${hint ? html`<p>${hint}</p>` : null}
  </div>`;
}

function Empty({ children }) {
  return html`<div class="empty">${children}</div>`;
}

// ---------------------------------------------------------------- dialogs

// Dialog is a modal <dialog>: focus moves into it, Escape closes it, and
// focus returns to where it was.
//
// onClose hears only closes the person made (Escape), never the page's
// own: the browser fires a dialog's close event in a task of its own, queued
// when the dialog closes, and input runs before such tasks on a busy
// machine. A dialog the page closed (its action done) would otherwise
// report its close after a click that opened the next dialog, and close
// that one (TestBrowserDrain). So the listener lives only while the dialog
// is mounted, and goes before the page closes it.
function Dialog({ title, onClose, children, labelledBy }) {
  const ref = useRef();
  const closed = useRef(onClose);
  closed.current = onClose;
  useEffect(() => {
    const d = ref.current;
    const before = document.activeElement;
    const onCloseEvent = () => closed.current();
    d.addEventListener('close', onCloseEvent);
    if (!d.open) d.showModal();
    return () => {
      d.removeEventListener('close', onCloseEvent);
      if (d.open) d.close();
      if (before && before.focus && document.contains(before)) before.focus();
    };
  }, []);
  return html`<dialog ref=${ref} aria-labelledby=${labelledBy}>
    <h2 id=${labelledBy}>${title}</h2>
    ${children}
  </dialog>`;
}

function TokenDialog({ current, onDone, onClose }) {
  const [value, setValue] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  async function submit(e) {
    e.preventDefault();
    const v = value.trim();
    if (!v) { setError('Enter a token, or close this dialog.'); return; }
    setBusy(true);
    setError(null);
    const before = token.get();
    token.set(v);
    try {
      const info = await get('/v1/auth/token');
      onDone(v, info);
    } catch (err) {
      if (before) token.set(before); else token.clear();
      setError(err.status === 401 ? 'regd refused this token: ' + err.message : err.message);
      setBusy(false);
    }
  }
  function forget() {
    token.clear();
    onDone('', null);
  }
  return html`<${Dialog} title="Access token" labelledBy="token-title" onClose=${onClose}>
    <form onSubmit=${submit} class="stack">
      <p>The token is kept in this tab only (sessionStorage) and sent in the <code>Authorization</code> header; it never goes in a URL.</p>
      <label for="token-input">Token</label>
      <input id="token-input" type="password" autocomplete="off" spellcheck="false" value=${value}
        onInput=${e => setValue(e.currentTarget.value)} autofocus required />
      ${error ? html`<p class="error" role="alert" id="token-error">${error}</p>` : null}
      <div class="buttons">
        <button type="submit" class="primary" disabled=${busy}>Use token</button>
        ${current ? html`<button type="button" onClick=${forget}>Forget token</button>` : null}
        <button type="button" onClick=${onClose}>Cancel</button>
      </div>
    </form>
  <//>`;
}

// Confirm asks before a write. The safe choice (Cancel) has the focus.
// Escape still closes it while the request runs (a drain may wait up to a
// minute for its handshake); the request goes on, onConfirm reports its
// outcome, and a failure then goes to notify, since the dialog that would
// have shown it is gone. A closed Confirm never calls onClose again: by
// then another dialog may be open.
function Confirm({ title, children, confirmLabel, danger, onConfirm, onClose, notify }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const mounted = useRef(true);
  useEffect(() => () => { mounted.current = false; }, []);
  async function submit(e) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await onConfirm(new FormData(e.currentTarget));
      if (mounted.current) onClose();
    } catch (err) {
      if (!mounted.current) {
        notify(`${title.replace(/\?$/, '')} failed: ${err.message}`);
        return;
      }
      setError(err);
      setBusy(false);
    }
  }
  return html`<${Dialog} title=${title} labelledBy="confirm-title" onClose=${onClose}>
    <form onSubmit=${submit} class="stack">
      ${children}
      ${error ? html`<p class="error" role="alert">${error.message}${error.code ? html` <code>${error.code}</code>` : null}</p>` : null}
      <div class="buttons">
        <button type="submit" class=${danger ? 'danger' : 'primary'} disabled=${busy} data-action="confirm">${busy ? 'Working…' : confirmLabel}</button>
        <button type="button" onClick=${onClose} autofocus>Cancel</button>
      </div>
    </form>
  <//>`;
}

// ---------------------------------------------------------------- overview

// What each etcd alarm means for a person looking at the cluster
// (docs/operations.md, "Alarms").
const ALARM_HELP = {
  NOSPACE: 'Every member refuses writes (503 storage_full) until it is cleared; reads, heartbeats and watches go on. The disk guard or the automatic defragmentation clears it once there is room.',
  CORRUPT: 'The members’ data disagree: this node is not ready until an operator has looked at it.',
};

function Overview({ onToken }) {
  const [st, setSt] = useState({ loading: true });
  usePoll(async signal => {
    const [cluster, ready, services] = await Promise.allSettled([
      get('/v1/cluster', { signal }),
      get('/readyz', { signal }),
      get('/v1/services', { signal }),
    ]);
    if (signal.aborted) return;
    setSt({
      cluster: cluster.value, clusterError: cluster.reason,
      ready: ready.status === 'fulfilled', readyError: ready.reason,
      readyAlarms: (ready.value && Array.isArray(ready.value.alarms)) ? ready.value.alarms : [],
      services: services.value, servicesError: services.reason,
    });
  }, 5000, []);

  const c = st.cluster;
  const svcs = st.services && st.services.services;
  const total = svcs ? svcs.reduce((n, s) => n + (s.instances || 0), 0) : null;
  const hasUp = svcs && svcs.some(s => typeof s.up === 'number');
  const up = hasUp ? svcs.reduce((n, s) => n + (s.up || 0), 0) : null;
  const hasLearners = c && c.members && c.members.some(m => 'is_learner' in m);
  const learners = hasLearners ? c.members.filter(m => m.is_learner).length : 0;
  const alarms = c && Array.isArray(c.alarms) ? c.alarms : null;
  const alarmText = a => (typeof a === 'string' ? a : Object.entries(a).map(([k, v]) => `${k}: ${v}`).join(', '));
  const alarmTypes = alarms ? [...new Set(alarms.map(a => alarmText(a).split(' ')[0]))] : [];
  const err = st.clusterError && !isAbort(st.clusterError) ? st.clusterError : null;

  return html`<section aria-labelledby="page-title">
    <h1 id="page-title" tabindex="-1">Cluster</h1>
    ${st.loading ? html`<p class="muted">Loading…</p>` : null}
    ${err ? html`<${Problem} error=${err} onToken=${onToken} />` : null}
    ${!st.loading ? html`<dl class="facts">
      <div><dt>Readiness</dt><dd data-field="readiness">${st.ready
        ? html`<span class="pill ok">Ready</span>${st.readyAlarms.length > 0 ? html` <span class="why" title=${st.readyAlarms.join(', ')}>with ${[...new Set(st.readyAlarms.map(a => String(a).split(' ')[0]))].join(', ')}</span>` : null}`
        : html`<span class="pill bad">Not ready</span> <span class="why">${st.readyError ? st.readyError.message : ''}</span>`}</dd></div>
      ${c ? html`
        <div><dt>This node</dt><dd data-field="node">${c.node}</dd></div>
        <div><dt>Leader</dt><dd data-field="leader">${c.leader || html`<span class="pill bad">none</span>`}</dd></div>
        <div><dt>Term</dt><dd>${c.term}</dd></div>
        <div><dt>Revision</dt><dd data-field="revision">${c.revision}</dd></div>
        <div><dt>Members</dt><dd data-field="members">${c.members.length}${learners > 0 ? html` <span class="muted">(${learners} learner${learners === 1 ? '' : 's'})</span>` : null}</dd></div>` : null}
      ${svcs ? html`
        <div><dt>Services</dt><dd data-field="services">${svcs.length}</dd></div>
        <div><dt>Instances</dt><dd data-field="instances">${total}${hasUp ? html` <span class="muted">(${up} up)</span>` : null}</dd></div>` : null}
    </dl>` : null}
    ${alarms ? html`<h2>Alarms</h2>${alarms.length === 0
      ? html`<p class="muted" data-field="alarms" data-count="0">None raised.</p>`
      : html`<div class="problem" role="alert" data-field="alarms" data-count=${alarms.length}>
          <ul class="alarms">${alarms.map(a => html`<li class="pill bad">${alarmText(a)}</li>`)}</ul>
          ${alarmTypes.map(t => ALARM_HELP[t] ? html`<p key=${t}><strong>${t}</strong>: ${ALARM_HELP[t]}</p>` : null)}
        </div>`}` : null}
    ${c ? html`<h2>Members</h2>
      <table class="grid" aria-label="Members">
        <thead><tr><th scope="col">Name</th><th scope="col">ID</th><th scope="col">Role</th><th scope="col">Peer URLs</th><th scope="col">Client URLs</th></tr></thead>
        <tbody>${c.members.map(m => {
          const role = m.is_leader ? 'leader' : m.is_learner ? 'learner' : 'follower';
          return html`<tr key=${m.id} data-member=${m.name} data-member-id=${m.id} data-role=${role}>
          <td data-label="Name">${m.name || html`<span class="muted" title="added, not started yet">(not started)</span>`}${m.name && m.name === c.node ? html` <span class="muted">(this node)</span>` : null}</td>
          <td data-label="ID"><code>${m.id}</code></td>
          <td data-label="Role">${role === 'leader' ? html`<span class="pill ok">leader</span>`
            : role === 'learner' ? html`<span class="pill warn" title="a non-voting member catching up; promote it to make it vote">learner</span>` : 'follower'}</td>
          <td data-label="Peer URLs">${(m.peer_urls || []).join(', ')}</td>
          <td data-label="Client URLs">${(m.client_urls || []).join(', ')}</td>
        </tr>`;
        })}</tbody>
      </table>` : null}
  </section>`;
}

// ---------------------------------------------------------------- services

function Services({ onToken }) {
  const [st, setSt] = useState({ loading: true });
  const [filter, setFilter] = useState('');
  // A blocking query (?index=&wait=) holds until a service changes: the
  // list is live without polling.
  useEffect(() => {
    const ctl = new AbortController();
    (async () => {
      let index = 0;
      while (!ctl.signal.aborted) {
        try {
          const q = index ? `?index=${index}&wait=55s` : '';
          const d = await get('/v1/services' + q, { signal: ctl.signal });
          index = d.revision;
          setSt({ list: d.services || [], revision: d.revision });
        } catch (e) {
          if (ctl.signal.aborted || isAbort(e)) return;
          setSt(s => ({ ...s, loading: false, error: e }));
          if (e.status >= 400 && e.status < 500 && e.status !== 429) return;
          await sleep(2000, ctl.signal);
        }
      }
    })();
    return () => ctl.abort();
  }, []);

  const list = st.list || [];
  const shown = filter ? list.filter(s => s.name.toLowerCase().includes(filter.toLowerCase())) : list;
  // `up` came with the instance lifecycle: every service has it, or none.
  const hasUp = list.length > 0 && list.every(s => typeof s.up === 'number');
  return html`<section aria-labelledby="page-title">
    <h1 id="page-title" tabindex="-1">Services</h1>
    ${st.error ? html`<${Problem} error=${st.error} onToken=${onToken} />` : null}
    ${st.loading && !st.error ? html`<p class="muted">Loading…</p>` : null}
    ${st.list && list.length === 0 ? html`<${Empty}>
      <p><strong>No services are registered.</strong> This page updates by itself when one is.</p>
      <p>Register an instance with <code>curl -X PUT -d '{"address":"10.0.0.5:8080"}' ${location.origin}/v1/services/user/instances/u1</code></p>
    <//>` : null}
    ${list.length > 0 ? html`
      <div class="toolbar">
        <label for="service-filter">Filter services</label>
        <input id="service-filter" type="search" value=${filter} onInput=${e => setFilter(e.currentTarget.value)} placeholder="name contains…" />
        <span class="muted" aria-live="polite">${shown.length} of ${list.length} services · revision ${st.revision}</span>
      </div>
      <table class="grid" aria-label="Services">
        <thead><tr><th scope="col">Service</th><th scope="col" class="num">${hasUp ? 'Up / total' : 'Instances'}</th></tr></thead>
        <tbody>${shown.map(s => html`<tr key=${s.name} data-service=${s.name}>
          <td data-label="Service"><a href=${serviceHref(s.name)}>${s.name}</a></td>
          ${hasUp ? html`<td data-label="Up / total" class="num">
              <span class=${s.up < s.instances ? 'pill ' + (s.up === 0 ? 'bad' : 'warn') : ''} title=${s.up < s.instances ? `${s.instances - s.up} not up (draining or out of service)` : undefined}><span data-field="up">${s.up}</span> / <span data-field="instances">${s.instances}</span></span>
            </td>`
            : html`<td data-label="Instances" class="num" data-field="instances">${s.instances}</td>`}
        </tr>`)}</tbody>
      </table>
      ${shown.length === 0 ? html`<${Empty}>No service name contains “${filter}”.<//>` : null}` : null}
  </section>`;
}

// ---------------------------------------------------------------- one service

const STATES = {
  connecting: ['Connecting…', 'warn'],
  live: ['Live', 'ok'],
  retrying: ['Reconnecting…', 'warn'],
  stopped: ['Stopped', 'bad'],
};

// An instance's status as the API names it: up (in discovery answers),
// draining (finishing its work, no new traffic), out_of_service.
const STATUS_TONE = { up: 'ok', draining: 'warn', out_of_service: 'bad' };

// handshake reads the drain handshake's answer to a write sent with
// ?wait_observed: X-Regd-Observed "<delivered>/<subscribers>" (the watch
// streams and blocking queries the change concerned, and how many were
// written it in time) and X-Regd-Observed-Members "<answered>/<members>"
// (the voting members that reported back; a silent one adds to neither
// count above). null when the answer has no handshake (no wait).
function handshake(headers, wait) {
  const pair = v => {
    const m = /^(\d+)\/(\d+)$/.exec((v || '').trim());
    return m ? [Number(m[1]), Number(m[2])] : null;
  };
  const obs = pair(headers.get('X-Regd-Observed'));
  if (!obs) return null;
  const mem = pair(headers.get('X-Regd-Observed-Members')) || [null, null];
  const hs = { delivered: obs[0], subscribers: obs[1], answered: mem[0], members: mem[1], wait };
  hs.allSubscribers = hs.delivered >= hs.subscribers;
  hs.allMembers = hs.members === null || hs.answered >= hs.members;
  return hs;
}

// handshakeText says in a sentence how far the change got.
function handshakeText(hs) {
  const counts = `(${hs.delivered}/${hs.subscribers} subscribers` + (hs.members === null ? ')' : `, ${hs.answered}/${hs.members} members)`);
  if (hs.subscribers === 0 && hs.allMembers) return `No watch stream or blocking query was following it ${counts}.`;
  if (hs.allSubscribers && hs.allMembers) return `Every subscriber was sent the change ${counts}.`;
  if (!hs.allMembers) return `Not every member answered within ${hs.wait}: subscribers on the silent ones are not counted ${counts}.`;
  return `Only ${hs.delivered} of ${hs.subscribers} subscribers were sent the change within ${hs.wait} ${counts}.`;
}

function Handshake({ hs }) {
  const ok = hs.allSubscribers && hs.allMembers;
  return html`<span class=${'pill ' + (ok ? 'ok' : 'warn')} data-field="handshake" title=${handshakeText(hs)}
      data-delivered=${hs.delivered} data-subscribers=${hs.subscribers} data-answered=${hs.answered ?? ''} data-members=${hs.members ?? ''}>
    seen by ${hs.delivered}/${hs.subscribers}${hs.members === null ? '' : html` · members ${hs.answered}/${hs.members}`}
  </span>`;
}

// Health shows the check the registry runs for an instance, when it has one.
function Health({ inst }) {
  const h = inst.health;
  const c = inst.check || {};
  const kind = ['http', 'tcp', 'grpc'].find(k => c[k]);
  const target = kind ? `${kind.toUpperCase()} check of ${c[kind]}${c.interval ? ' every ' + c.interval : ''}` : '';
  if (!h) return html`<span class="muted" title=${target}>${kind ? 'not checked yet' : 'no check'}</span>`;
  const title = [target, h.checked_at ? 'last checked ' + fmtTime(h.checked_at) : '', h.output || ''].filter(Boolean).join('\n');
  const fails = h.consecutive_failures > 0 ? ` ${h.consecutive_failures}${c.failures ? '/' + c.failures : ''}` : '';
  return html`<span class=${'pill ' + (h.status === 'passing' ? 'ok' : 'bad')} title=${title} data-field="health">${h.status}${fails}</span>`;
}

// WaitSelect is the handshake's wait, offered with every write that has one.
function WaitSelect() {
  return html`<label for="wait-observed">Wait until every subscriber (watch streams, blocking queries, on every member) has been sent the change, up to</label>
    <select id="wait-observed" name="wait">
      <option value="0s">no wait</option><option value="5s">5 s</option><option value="10s" selected>10 s</option>
      <option value="30s">30 s</option><option value="60s">60 s</option>
    </select>`;
}

function Service({ name, canWrite, features, onToken, notify }) {
  const [insts, setInsts] = useState(null);
  const [conn, setConn] = useState({ state: 'connecting' });
  const [recent, setRecent] = useState([]);
  const [action, setAction] = useState(null);
  // The handshakes of this page's own writes, by the change they made
  // ("update:<id>:<revision>", "deregister:<id>:<revision>"), shown beside
  // that change in the list below, whichever of the answer and the event
  // arrives first.
  const [handshakes, setHandshakes] = useState(() => new Map());

  useEffect(() => {
    setInsts(null);
    setRecent([]);
    // With the lifecycle (status) in the API, lists default to up
    // instances only; the console shows all of them.
    const q = features.lifecycle ? '?status=any' : '';
    return watch('/v1/services/' + encodeURIComponent(name) + '/watch' + q, {
      onState: setConn,
      onEvent: ev => {
        if (ev.type === 'reset') {
          const m = new Map();
          for (const i of (ev.data && ev.data.instances) || []) m.set(i.id, i);
          setInsts(m);
          return;
        }
        const inst = ev.data;
        if (!inst || typeof inst.id !== 'string') return;
        setInsts(prev => {
          const m = new Map(prev || []);
          if (ev.type === 'deregister' || ev.type === 'expire') m.delete(inst.id);
          else m.set(inst.id, inst);
          return m;
        });
        setRecent(prev => [{
          key: ev.id + ':' + inst.id + ':' + ev.type, type: ev.type, id: inst.id, at: new Date(),
          status: inst.status, weight: inst.weight, change: ev.type + ':' + inst.id + ':' + inst.revision,
        }, ...prev].slice(0, 20));
      },
    });
  }, [name, features.lifecycle]);

  const list = insts ? [...insts.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)) : [];
  const has = f => list.some(i => i[f] !== undefined && i[f] !== null);
  const cols = { status: has('status'), weight: has('weight'), health: has('health') || has('check') };
  const [label, tone] = STATES[conn.state] || [conn.state, 'warn'];

  function remember(change, hs) {
    if (hs) setHandshakes(prev => new Map(prev).set(change, hs));
  }
  // ?wait_observed came with the lifecycle (PATCH); without a form (an
  // older regd) a write does not ask for the handshake.
  const waitQuery = form => {
    const wait = form && form.get('wait');
    return wait ? [wait, '?wait_observed=' + encodeURIComponent(wait)] : ['', ''];
  };
  async function deregister(inst, form) {
    const [wait, q] = waitQuery(form);
    const r = await request('DELETE', instancePath(name, inst.id) + q);
    const hs = handshake(r.headers, wait);
    // The deregister event carries the instance as it was: its revision.
    remember('deregister:' + inst.id + ':' + inst.revision, hs);
    notify(`Deregistered ${name}/${inst.id}.` + (hs ? ' ' + handshakeText(hs) : ''));
  }
  async function setStatus(inst, status, form) {
    const [wait, q] = waitQuery(form);
    const r = await request('PATCH', instancePath(name, inst.id) + q, {
      body: { status }, contentType: 'application/merge-patch+json',
    });
    const hs = handshake(r.headers, wait);
    remember('update:' + inst.id + ':' + (r.data && r.data.revision), hs);
    notify(`${name}/${inst.id} is now ${status}.` + (hs ? ' ' + handshakeText(hs) : ''));
  }

  return html`<section aria-labelledby="page-title">
    <p class="crumbs"><a href="#/services">Services</a> /</p>
    <h1 id="page-title" tabindex="-1">${name}</h1>
    <div class="toolbar">
      <span class=${'pill ' + tone} data-field="stream" data-state=${conn.state} role="status">${label}</span>
      <span class="muted" data-field="counts">${insts ? `${list.length} instance${list.length === 1 ? '' : 's'}` : ''}${insts && cols.status ? `, ${list.filter(i => i.status === 'up').length} up` : ''}</span>
      <a href=${'#/expirations?service=' + encodeURIComponent(name)}>Expiry reports of ${name}</a>
    </div>
    ${conn.error && conn.state !== 'live' ? html`<${Problem} error=${conn.error} onToken=${onToken} />` : null}
    ${insts && list.length === 0 ? html`<${Empty}><strong>No instances of ${name} right now.</strong> This page updates live when one registers.<//>` : null}
    ${list.length > 0 ? html`<table class="grid instances" aria-label=${'Instances of ' + name}>
      <thead><tr>
        <th scope="col">ID</th><th scope="col">Address</th>
        ${cols.status ? html`<th scope="col">Status</th>` : null}
        ${cols.weight ? html`<th scope="col" class="num">Weight</th>` : null}
        ${cols.health ? html`<th scope="col">Health</th>` : null}
        <th scope="col">Metadata</th><th scope="col" class="num">TTL</th><th scope="col">Registered</th>
        ${canWrite ? html`<th scope="col"><span class="sr-only">Actions</span></th>` : null}
      </tr></thead>
      <tbody>${list.map(i => html`<tr key=${i.id} data-instance-id=${i.id} data-status=${i.status || ''}>
        <td data-label="ID"><code>${i.id}</code></td>
        <td data-label="Address"><code>${i.address}</code></td>
        ${cols.status ? html`<td data-label="Status"><span class=${'pill ' + (STATUS_TONE[i.status || 'up'] || 'warn')} data-field="status">${i.status || 'up'}</span></td>` : null}
        ${cols.weight ? html`<td data-label="Weight" class="num" data-field="weight"
            title=${i.weight === 0 ? 'weight 0: no share of traffic (left out of DNS SRV answers)' : undefined}>${i.weight ?? ''}</td>` : null}
        ${cols.health ? html`<td data-label="Health"><${Health} inst=${i} /></td>` : null}
        <td data-label="Metadata"><${Metadata} md=${i.metadata} /></td>
        <td data-label="TTL" class="num">${i.ttl ? i.ttl + ' s' : html`<span class="muted" title="a key without a lease">none</span>`}</td>
        <td data-label="Registered"><${Time} value=${i.registered_at} /></td>
        ${canWrite ? html`<td data-label="Actions" class="actions">
          ${features.patch && (i.status === 'draining' || i.status === 'out_of_service')
            ? html`<button type="button" data-action="undrain" aria-label=${'Undrain ' + i.id} onClick=${() => setAction({ kind: 'undrain', inst: i })}>Undrain</button>` : null}
          ${features.patch && (!i.status || i.status === 'up')
            ? html`<button type="button" data-action="drain" aria-label=${'Drain ' + i.id} onClick=${() => setAction({ kind: 'drain', inst: i })}>Drain</button>` : null}
          <button type="button" class="danger" data-action="deregister" aria-label=${'Deregister ' + i.id} onClick=${() => setAction({ kind: 'deregister', inst: i })}>Deregister</button>
        </td>` : null}
      </tr>`)}</tbody>
    </table>` : null}
    ${recent.length > 0 ? html`<h2>Changes seen on this page</h2>
      <ol class="recent" aria-label="Changes seen on this page">${recent.map(r => html`<li key=${r.key} data-change=${r.change}>
        <time>${fmtTime(r.at)}</time> <span class=${'pill ' + (r.type === 'expire' ? 'bad' : r.type === 'register' ? 'ok' : 'warn')}>${r.type}</span> <code>${r.id}</code>
        ${r.type === 'update' && r.status ? html` <span class="muted">now ${r.status}${r.weight !== undefined ? `, weight ${r.weight}` : ''}</span>` : null}
        ${handshakes.has(r.change) ? html` <${Handshake} hs=${handshakes.get(r.change)} />` : null}
      </li>`)}</ol>` : null}
    ${action && action.kind === 'deregister' ? html`<${Confirm} title=${'Deregister ' + action.inst.id + '?'} confirmLabel="Deregister" danger
        onConfirm=${form => deregister(action.inst, features.patch ? form : null)} onClose=${() => setAction(null)} notify=${notify}>
      <p><code>${name}/${action.inst.id}</code> (<code>${action.inst.address}</code>) disappears from lists and watches at once. It is not reported as an expiry; if its process is still running and heartbeating, its next heartbeat gets 404 and it registers again.</p>
      ${features.patch ? html`<${WaitSelect} />` : null}
    <//>` : null}
    ${action && (action.kind === 'drain' || action.kind === 'undrain') ? html`<${Confirm}
        title=${(action.kind === 'drain' ? 'Drain ' : 'Undrain ') + action.inst.id + '?'} confirmLabel=${action.kind === 'drain' ? 'Drain' : 'Undrain'}
        onConfirm=${form => setStatus(action.inst, action.kind === 'drain' ? 'draining' : 'up', form)} onClose=${() => setAction(null)} notify=${notify}>
      <p>${action.kind === 'drain'
        ? html`<code>${name}/${action.inst.id}</code> stays registered (its lease and heartbeats go on) but leaves discovery answers, so clients stop sending it new work.`
        : html`<code>${name}/${action.inst.id}</code> returns to discovery answers.`}</p>
      <${WaitSelect} />
    <//>` : null}
  </section>`;
}

function Metadata({ md }) {
  const entries = Object.entries(md || {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  if (entries.length === 0) return html`<span class="muted">none</span>`;
  return html`<ul class="meta">${entries.map(([k, v]) => html`<li key=${k}><span class="k">${k}</span>=<span class="v">${v}</span></li>`)}</ul>`;
}

// ---------------------------------------------------------------- expirations

// What an expiry report's cause means (docs/api.md, "Expirations").
const CAUSES = {
  ttl: 'its lease’s TTL ran out: heartbeats stopped',
  check_failed: 'the health check the registry runs failed',
};

function Expirations({ service, features, onToken }) {
  const [st, setSt] = useState({ loading: true });
  const [input, setInput] = useState(service);
  const [known, setKnown] = useState([]);

  useEffect(() => { setInput(service); }, [service]);
  useEffect(() => {
    get('/v1/services').then(d => setKnown((d.services || []).map(s => s.name))).catch(() => {});
  }, []);

  // The ledger is read every 10 s, and soon after the stream reports an
  // expiry (the leader writes the report just after the key goes).
  useEffect(() => {
    const ctl = new AbortController();
    const path = '/v1/expirations?limit=200' + (service ? '&service=' + encodeURIComponent(service) : '');
    let seq = 0;
    const load = async () => {
      const mine = ++seq;
      try {
        const d = await get(path, { signal: ctl.signal });
        if (mine === seq) setSt({ list: d.expirations || [] });
      } catch (e) {
        if (!isAbort(e) && mine === seq) setSt(s => ({ ...s, loading: false, error: e }));
      }
    };
    (async () => {
      while (!ctl.signal.aborted) {
        await load();
        await sleep(10000, ctl.signal);
      }
    })();
    // Every status: a draining instance that expires is reported too, and
    // a default (up only) stream would not carry its expire event.
    const stream = (service ? '/v1/services/' + encodeURIComponent(service) + '/watch' : '/v1/watch') + (features.lifecycle ? '?status=any' : '');
    const stop = watch(stream, {
      reset: false,
      onState: () => {},
      onEvent: ev => {
        if (ev.type !== 'expire') return;
        for (const ms of [250, 1000, 3000]) setTimeout(() => { if (!ctl.signal.aborted) load(); }, ms);
      },
    });
    return () => { ctl.abort(); stop(); };
  }, [service, features.lifecycle]);

  function submit(e) {
    e.preventDefault();
    const v = input.trim();
    location.hash = '#/expirations' + (v ? '?service=' + encodeURIComponent(v) : '');
  }
  const list = st.list || [];
  const hasCause = list.some(x => x.cause !== undefined);
  return html`<section aria-labelledby="page-title">
    <h1 id="page-title" tabindex="-1">Expiry reports</h1>
    <p class="muted">Instances whose lease ran out, newest first: each reported exactly once, by the raft leader of the moment. Deregistrations are never listed.</p>
    <form class="toolbar" onSubmit=${submit} role="search">
      <label for="expiry-service">Service</label>
      <input id="expiry-service" list="known-services" value=${input} onInput=${e => setInput(e.currentTarget.value)} placeholder="all services" />
      <datalist id="known-services">${known.map(n => html`<option value=${n} />`)}</datalist>
      <button type="submit">Filter</button>
      ${service ? html`<a href="#/expirations">Show all</a>` : null}
    </form>
    ${st.error ? html`<${Problem} error=${st.error} onToken=${onToken} />` : null}
    ${st.loading && !st.error ? html`<p class="muted">Loading…</p>` : null}
    ${st.list && list.length === 0 ? html`<${Empty}><strong>No expiry reports${service ? html` for <code>${service}</code>` : ''}.</strong> An instance expires when it stops heartbeating for longer than its TTL.<//>` : null}
    ${list.length > 0 ? html`<table class="grid" aria-label="Expiry reports">
      <thead><tr><th scope="col">Expired</th><th scope="col">Service</th><th scope="col">ID</th><th scope="col">Address</th>
        ${hasCause ? html`<th scope="col">Cause</th>` : null}<th scope="col">Reported by</th><th scope="col" class="num">Revision</th></tr></thead>
      <tbody>${list.map(x => html`<tr data-expiry=${x.service + '/' + x.id} key=${x.revision + '/' + x.service + '/' + x.id}>
        <td data-label="Expired"><${Time} value=${x.expired_at} /></td>
        <td data-label="Service"><a href=${serviceHref(x.service)}>${x.service}</a></td>
        <td data-label="ID"><code>${x.id}</code></td>
        <td data-label="Address"><code>${x.address}</code></td>
        ${hasCause ? html`<td data-label="Cause"><span class=${'pill ' + (x.cause === 'ttl' ? 'warn' : 'bad')} title=${CAUSES[x.cause] || ''} data-field="cause">${x.cause || ''}</span>${x.output
          ? html` <span class="why" data-field="output">${x.output}</span>` : null}</td>` : null}
        <td data-label="Reported by">${x.reported_by}</td>
        <td data-label="Revision" class="num">${x.revision}</td>
      </tr>`)}</tbody>
    </table>` : null}
  </section>`;
}

// ---------------------------------------------------------------- app

const PAGES = [['overview', '#/', 'Cluster'], ['services', '#/services', 'Services'], ['expirations', '#/expirations', 'Expiry reports']];

function scopeLabel(session, tok) {
  if (!session || session.loading) return '';
  if (session.needToken) return 'no token';
  if (session.scope === 'unknown') return tok ? 'token set' : 'no token';
  if (!session.authenticated) return session.scope === 'write' ? 'open access (no tokens)' : 'no token: read-only';
  return session.scope === 'read' ? 'read token: read-only' : session.scope + ' token';
}

function App() {
  const route = useRoute();
  const [tok, setTok] = useState(token.get());
  const [session, setSession] = useState({ loading: true });
  const [features, setFeatures] = useState(null);
  const [tokenOpen, setTokenOpen] = useState(false);
  const [note, setNote] = useState('');

  // What the token allows decides which controls exist at all: a read
  // token never sees write controls (the API would refuse them anyway).
  // Until it knows, the page shows no write control; a node that is down
  // or without quorum is asked again every few seconds.
  useEffect(() => {
    const ctl = new AbortController();
    setSession({ loading: true });
    (async () => {
      for (;;) {
        try {
          const d = await get('/v1/auth/token', { signal: ctl.signal });
          setSession({ scope: d.scope, authenticated: !!d.authenticated });
          return;
        } catch (e) {
          if (ctl.signal.aborted || isAbort(e)) return;
          if (e.status === 401) { setSession({ needToken: true, error: e }); return; }
          if (e.status === 404) { setSession({ scope: 'unknown' }); return; } // a regd without the route
          setSession({ error: e, scope: 'unknown' });
          await sleep(3000, ctl.signal);
        }
      }
    })();
    return () => ctl.abort();
  }, [tok]);

  // Drain and undrain exist once the API has PATCH (the instance
  // lifecycle); the API's own OpenAPI document says whether it does.
  useEffect(() => {
    if (session.loading || session.needToken) return undefined;
    let live = true;
    get('/v1/openapi.json').then(
      doc => {
        const item = doc && doc.paths && doc.paths[INSTANCE_PATH];
        const patch = !!(item && item.patch);
        live && setFeatures({ patch, lifecycle: patch });
      },
      () => live && setFeatures({ patch: false, lifecycle: false }));
    return () => { live = false; };
  }, [tok, session.loading, session.needToken, session.scope]);

  // After a move to another page, focus goes to its heading, so that a
  // keyboard or screen reader user starts reading there; not on the first
  // load, where the browser's own start is expected.
  const moved = useRef(false);
  useEffect(() => {
    const t = document.querySelector('#page-title');
    if (t && moved.current) t.focus({ preventScroll: true });
    moved.current = true;
    document.title = (PAGES.find(p => p[0] === route.page) || [, , route.service || 'regd'])[2] + ' · regd';
  }, [route.page, route.service]);

  // A note (the outcome of an action) stays long enough to be read, then
  // goes; screen readers hear it at once through the live region.
  useEffect(() => {
    if (!note) return undefined;
    const t = setTimeout(() => setNote(''), 8000);
    return () => clearTimeout(t);
  }, [note]);

  const canWrite = session.scope === 'write' || session.scope === 'admin';
  const openToken = () => setTokenOpen(true);
  const notify = msg => setNote(msg);

  let page;
  if (session.loading) {
    page = html`<p class="muted">Loading…</p>`;
  } else if (session.needToken) {
    page = html`<section aria-labelledby="page-title" class="gate">
      <h1 id="page-title" tabindex="-1">This regd needs a token</h1>
      <p>Reads need a token here (<code>--auth-reads token</code>). Enter one to see the registry; a read token shows everything, a write (or admin) token also lets you drain, undrain and deregister instances.</p>
      <p><button type="button" class="primary" onClick=${openToken} data-action="enter-token">Enter a token</button></p>
    </section>`;
  } else if (!features) {
    page = html`<p class="muted">Loading…</p>`;
  } else {
    switch (route.page) {
      case 'overview': page = html`<${Overview} onToken=${openToken} />`; break;
      case 'services': page = html`<${Services} onToken=${openToken} />`; break;
      case 'service': page = html`<${Service} key=${route.service} name=${route.service} canWrite=${canWrite} features=${features} onToken=${openToken} notify=${notify} />`; break;
      case 'expirations': page = html`<${Expirations} service=${route.service} features=${features} onToken=${openToken} />`; break;
      default: page = html`<section aria-labelledby="page-title"><h1 id="page-title" tabindex="-1">No such page</h1><p><a href="#/">Go to the cluster overview</a></p></section>`;
    }
  }
  const current = route.page === 'service' ? 'services' : route.page;
  return html`
    <a class="skip" href="#/" onClick=${e => { e.preventDefault(); const t = document.querySelector('#page-title'); t && t.focus(); }}>Skip to content</a>
    <header class="top">
      <a class="brand" href="#/">regd</a>
      <nav aria-label="Main"><ul>${PAGES.map(([id, href, label]) => html`<li><a href=${href} aria-current=${current === id ? 'page' : undefined}>${label}</a></li>`)}</ul></nav>
      <div class="auth">
        <span class="scope" data-field="scope" data-scope=${session.scope || ''}>${scopeLabel(session, tok)}</span>
        <button type="button" onClick=${openToken} data-action="token">${tok ? 'Change token' : 'Enter token'}</button>
      </div>
    </header>
    ${session.error && !session.needToken ? html`<div class="wrap"><${Problem} error=${session.error} onToken=${openToken} /></div>` : null}
    <main id="main" class="wrap" key=${tok}>${page}</main>
    <div class="note" role="status" aria-live="polite" data-field="note">${note}</div>
    ${tokenOpen ? html`<${TokenDialog} current=${tok} onClose=${() => setTokenOpen(false)}
        onDone=${v => { setTokenOpen(false); setNote(v ? 'Token set for this tab.' : 'Token forgotten.'); setTok(v); }} />` : null}
  `;
}

const root = document.getElementById('app');
root.textContent = ''; // the "Loading…" and <noscript> placeholders
render(html`<${App} />`, root);
