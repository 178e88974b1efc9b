// The UI's only way to regd: the public REST API, with the token the user
// entered. Nothing here knows more than a curl user would.

const TOKEN_KEY = 'regd.token';

// The token lives in sessionStorage: one entry per tab, gone when the tab
// closes, never in a URL (the API does not accept tokens in URLs either).
export const token = {
  get() {
    try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch { return ''; }
  },
  set(t) {
    try { sessionStorage.setItem(TOKEN_KEY, t); } catch { /* storage disabled: the token lasts until reload */ }
    memo = t;
  },
  clear() {
    try { sessionStorage.removeItem(TOKEN_KEY); } catch { /* nothing stored */ }
    memo = '';
  },
};
let memo = '';
function currentToken() { return token.get() || memo; }

// ApiError carries the contract's error JSON: {"error":{"code","message"}}.
// status 0 means the request never got an answer (node down, restarting).
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headers(extra) {
  const h = { Accept: 'application/json', ...extra };
  const t = currentToken();
  if (t) h.Authorization = 'Bearer ' + t;
  return h;
}

async function errorOf(resp) {
  let code = 'http_' + resp.status;
  let message = resp.statusText || ('HTTP ' + resp.status);
  try {
    const body = await resp.json();
    if (body && body.error) {
      code = String(body.error.code || code);
      message = String(body.error.message || message);
    }
  } catch { /* not JSON: keep the status line */ }
  return new ApiError(resp.status, code, message);
}

const unreachable = () => new ApiError(0, 'unreachable',
  'regd cannot be reached: the node may be down, restarting or shutting down.');

// request sends one API request and returns {status, headers, data}; it
// throws ApiError for anything but a 2xx. body, when given, is sent as JSON
// (contentType overrides the type, e.g. for a JSON merge patch).
export async function request(method, path, { body, contentType, signal } = {}) {
  const init = {
    method,
    headers: headers(body === undefined ? {} : { 'Content-Type': contentType || 'application/json' }),
    signal,
    cache: 'no-store',
    credentials: 'omit',
    redirect: 'error',
  };
  if (body !== undefined) init.body = JSON.stringify(body);
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw unreachable();
  }
  if (!resp.ok) throw await errorOf(resp);
  const data = resp.status === 204 ? null : await resp.json();
  return { status: resp.status, headers: resp.headers, data };
}

export const get = (path, opts) => request('GET', path, opts).then(r => r.data);

export const sleep = (ms, signal) => new Promise(resolve => {
  const t = setTimeout(resolve, ms);
  if (signal) signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
});

// watch follows a Server-Sent Events stream of the API. EventSource cannot
// send an Authorization header, so this reads the stream with fetch. The
// first connection asks for a `reset` event up front (the full list, then
// the changes after it, with no gap); a reconnection sends the last event's
// id as Last-Event-ID (ids are opaque strings) and the server resumes after
// it, or sends a `reset` when it cannot. onEvent gets {id, type, data} with
// data parsed from JSON; onState gets {state: 'connecting'|'live'|'retrying'|
// 'stopped', error}. A 4xx other than 408 and 429 (a refused token, a bad
// name) stops the stream: retrying cannot help. With reset false the first
// connection starts live, without the list (for pages that only want to
// hear of changes). Returns a function that stops the stream.
export function watch(path, { onEvent, onState, reset = true }) {
  const ctl = new AbortController();
  let lastId = null;
  (async () => {
    let backoff = 250;
    while (!ctl.signal.aborted) {
      onState({ state: lastId === null ? 'connecting' : 'retrying' });
      const h = headers({ Accept: 'text/event-stream' });
      if (lastId !== null) h['Last-Event-ID'] = lastId;
      const url = lastId === null && reset ? path + (path.includes('?') ? '&' : '?') + 'reset=1' : path;
      const attempt = new AbortController();
      const stop = () => attempt.abort();
      ctl.signal.addEventListener('abort', stop, { once: true });
      let error = null;
      try {
        const resp = await fetch(url, { headers: h, signal: attempt.signal, cache: 'no-store', credentials: 'omit', redirect: 'error' });
        if (!resp.ok) {
          error = await errorOf(resp);
          // A refused token, a bad service name: retrying cannot help.
          // Overload (429) and unavailability (503) pass; the rest stop.
          if (resp.status >= 400 && resp.status < 500 && resp.status !== 408 && resp.status !== 429) {
            onState({ state: 'stopped', error });
            return;
          }
        } else {
          onState({ state: 'live' });
          backoff = 250;
          await readEvents(resp.body, attempt, ev => {
            if (ev.id !== null) lastId = ev.id;
            if (ev.type === 'message' && ev.data === '') return;
            let data;
            try { data = JSON.parse(ev.data); } catch { return; }
            onEvent({ id: ev.id, type: ev.type, data });
          });
        }
      } catch (e) {
        if (ctl.signal.aborted) return;
        error = e instanceof ApiError ? e : unreachable();
      } finally {
        ctl.signal.removeEventListener('abort', stop);
      }
      if (ctl.signal.aborted) return;
      onState({ state: 'retrying', error });
      // The docs' advice: a short backoff, doubling to 5 s, with jitter.
      await sleep(backoff + Math.random() * backoff / 2, ctl.signal);
      backoff = Math.min(backoff * 2, 5000);
    }
  })();
  return () => { ctl.abort(); };
}

// A stream that shows neither an event nor a keepalive comment (every 15 s)
// for three intervals is dead, whatever TCP thinks.
const IDLE_MS = 45000;

// readEvents parses text/event-stream as the HTML standard's EventSource
// does (lines end in CRLF, LF or CR; "field: value"; comments start with a
// colon; an event ends at a blank line; the id persists until changed) and
// calls dispatch({id, type, data}) for each event.
async function readEvents(body, attempt, dispatch) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let idle = setTimeout(() => attempt.abort(), IDLE_MS);
  let buf = '';
  let data = [];
  let type = '';
  let id = null;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      clearTimeout(idle);
      idle = setTimeout(() => attempt.abort(), IDLE_MS);
      buf += value;
      for (;;) {
        const i = buf.search(/[\r\n]/);
        if (i < 0) break;
        // A CR at the end of the buffer may be the first half of a CRLF.
        if (buf[i] === '\r' && i === buf.length - 1) break;
        const line = buf.slice(0, i);
        buf = buf.slice(buf[i] === '\r' && buf[i + 1] === '\n' ? i + 2 : i + 1);
        if (line === '') {
          if (data.length > 0 || id !== null) dispatch({ id, type: type || 'message', data: data.join('\n') });
          data = [];
          type = '';
          continue;
        }
        if (line[0] === ':') continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? '' : line.slice(colon + 1);
        if (val[0] === ' ') val = val.slice(1);
        if (field === 'event') type = val;
        else if (field === 'data') data.push(val);
        else if (field === 'id' && !val.includes('\0')) id = val;
      }
    }
  } finally {
    clearTimeout(idle);
    reader.cancel().catch(() => {});
  }
}
