"""A small regd client in pure Python (standard library only, Python 3.11+).

Registrar keeps one instance registered: it registers, heartbeats every
TTL/3 from a daemon thread, registers again when regd answers a heartbeat
with 404 (the instance expired or was deregistered behind its back), moves
on to the next node when one fails, and deregisters on close().

Discoverer follows one service: it lists the instances, then follows the
watch stream (Server-Sent Events) on one node; when the stream ends it
reconnects to the next node with Last-Event-ID, so nothing is missed and
nothing is seen twice. A "reset" event (the history asked for is gone)
replaces the whole state, with callbacks for the differences.

    reg = Registrar(["http://127.0.0.1:8080"], "user", "user-1", "10.0.0.5:9000", ttl=10)
    reg.start()
    ...
    reg.close()

    d = Discoverer(["http://127.0.0.1:8080"], "user",
                   on_register=lambda inst: print("up", inst["id"]),
                   on_deregister=lambda inst, reason: print("down", inst["id"], reason))
    d.start()
    inst = d.pick()          # round-robin; None when there is none
    d.close()

Instances are dicts, as regd sends them: service, id, address, metadata,
status, weight, ttl, lease_id, registered_at, revision. The discoverer
follows the up instances: one that is drained (or taken out of service)
leaves it with on_deregister(inst, "status") and comes back with
on_register when it is up again.

A graceful shutdown drains first and waits until every client has seen it
(regd's drain handshake), then deregisters:

    obs = reg.drain(wait=30)     # an Observed: obs.complete, obs.delivered/obs.subscribers
    ...                          # finish the work in flight
    reg.close()

set_status(), patch() and deregister() do the same for any instance (a
deploy script), and heartbeats() renews up to 1000 instances in one request
(an agent that keeps many).

Something that cannot heartbeat (a database, a vendor program) is
registered once with a health check that regd runs itself: while it passes
regd keeps the lease alive; after `failures` failing probes in a row regd
removes the instance (an expiry with cause "check_failed"). The instance
dict then has "check" and, once probed, "health".

    register(base, "pg", "primary", "10.0.0.5:5432",
             check={"tcp": "10.0.0.5:5432"}, interval="5s", failures=3)

A Registrar takes check=... too (regd then removes the instance when the
check fails, heartbeats or not).

With regd's --auth-token-file, pass token=... to either class: it is sent as
"Authorization: Bearer <token>" on every request, the watch stream included
(a write token for a Registrar; a read token for a Discoverer, and none
unless regd runs with --auth-reads token). A 401 or 403 answer is raised by
start() at once (RegdError.auth_error) and never retried on another node.
The token is never logged.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable, Iterable

__all__ = ["RegdError", "Registrar", "Discoverer", "Observed", "register", "set_status", "patch", "deregister",
           "heartbeats"]

log = logging.getLogger("regd")

# regd sends a keep-alive comment every 15 s; a stream silent for this long
# is from a hung node.
STREAM_IDLE_TIMEOUT = 45.0

# A watch refused with 401 or 403 is tried again (on the same node) after
# this long: the token must change, which no quick retry brings about.
AUTH_RETRY_DELAY = 30.0


class RegdError(Exception):
    """An error answer of regd: {"error": {"code", "message"}}."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"regd: HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    @property
    def retryable(self) -> bool:
        """Another attempt, maybe on another node, may succeed."""
        return self.status >= 500 or self.status in (408, 429)

    @property
    def auth_error(self) -> bool:
        """401 (no token where one is needed, or one regd does not know) or
        403 (a read token on a write): the token must change. Every node
        answers the same, so it is not retried elsewhere."""
        return self.status in (401, 403)


def _retryable(err: BaseException) -> bool:
    if isinstance(err, RegdError):
        return err.retryable
    return True  # transport errors, timeouts, garbled answers


def _base_urls(urls: str | Iterable[str]) -> list[str]:
    if isinstance(urls, str):
        urls = [u for u in urls.split(",") if u.strip()]
    out = []
    for u in urls:
        u = u.strip()
        if "://" not in u:
            u = "http://" + u
        out.append(u.rstrip("/"))
    if not out:
        out = ["http://127.0.0.1:8080"]
    return out


def _check_token(token: str | None) -> str | None:
    """The token without surrounding white space (the newline at the end of
    a token file), or None. A token that cannot travel in a header raises
    ValueError, which does not repeat it (http.client's error would)."""
    if token is None:
        return None
    token = token.strip()
    if not token:
        return None
    if any(not 0x21 <= ord(c) <= 0x7E for c in token):
        raise ValueError("regd: the token must be printable ASCII without spaces")
    return token


def _headers(token: str | None, headers: dict[str, str]) -> dict[str, str]:
    """headers plus the Authorization header when there is a token."""
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _instance_path(service: str, id: str) -> str:
    return f"/v1/services/{_q(service)}/instances/{_q(id)}"


def request(base: str, method: str, path: str, body=None, timeout: float = 10.0,
            token: str | None = None):
    """Send one request, with token as a bearer token when given; return
    (status, decoded JSON or None). Raises RegdError for an error answer,
    OSError for transport errors."""
    status, _, out = request_full(base, method, path, body, timeout, token)
    return status, out


def request_full(base: str, method: str, path: str, body=None, timeout: float = 10.0,
                 token: str | None = None, content_type: str = "application/json"):
    """request(), returning (status, headers, decoded JSON or None)."""
    data = None
    headers = _headers(_check_token(token), {"Accept": "application/json"})
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = content_type
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, resp.headers, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        with e:
            raw = e.read()
        code, message = "", raw.decode(errors="replace").strip() or e.reason
        try:
            err = json.loads(raw)["error"]
            code, message = err["code"], err["message"]
        except (ValueError, KeyError, TypeError):
            pass
        raise RegdError(e.code, code, message) from None


class Observed:
    """The outcome of regd's drain handshake (?wait_observed): of the
    subscribers the change concerned (watch streams and blocking queries on
    the members that answered), how many were written it before the
    answer; and how many of the cluster's voting members answered."""

    def __init__(self, headers=None):
        self.delivered, self.subscribers = _fraction(headers, "X-Regd-Observed")
        self.acked, self.members = _fraction(headers, "X-Regd-Observed-Members")

    @property
    def complete(self) -> bool:
        """Every member answered and every subscriber had the change."""
        return self.members > 0 and self.acked == self.members and self.delivered == self.subscribers

    def __repr__(self):
        return (f"Observed({self.delivered}/{self.subscribers} subscribers, "
                f"{self.acked}/{self.members} members)")


def _fraction(headers, name: str) -> tuple[int, int]:
    value = (headers.get(name) if headers is not None else None) or ""
    a, _, b = value.partition("/")
    try:
        return int(a), int(b)
    except ValueError:
        return 0, 0


def _wait_query(wait: float) -> str:
    return f"?wait_observed={wait:.3f}s" if wait and wait > 0 else ""


def register(base: str, service: str, id: str, address: str, ttl: int | None = None,
             metadata: dict[str, str] | None = None, weight: int | None = None,
             check: dict | None = None, interval: str | float | None = None,
             timeout: str | float | None = None, failures: int | None = None,
             token: str | None = None) -> dict:
    """Register (or register again) one instance, once, and return it as
    regd answers (with the TTL granted). check is {"http": url},
    {"tcp": "host:port"} or {"grpc": "host:port[/service]"}; interval and
    timeout a duration string ("10s", "500ms") or seconds; failures 1-100.
    A bad check raises RegdError 400 "invalid_check"."""
    body: dict = {"address": address}
    for k, v in (("ttl", ttl), ("metadata", metadata), ("weight", weight), ("check", check),
                 ("interval", interval), ("timeout", timeout), ("failures", failures)):
        if v is not None:
            body[k] = v
    _, inst = request(base, "PUT", _instance_path(service, id), body, token=token)
    return inst


def patch(base: str, service: str, id: str, changes: dict, wait: float = 0.0,
          token: str | None = None) -> tuple[dict, Observed]:
    """Change an instance in place with a JSON merge patch of status, weight
    and metadata (None as a metadata value removes that key): its lease,
    TTL and address stay. With wait > 0 (seconds, at most 60) regd answers
    once every subscriber of the service on every node has been written
    the change, or when the wait ends. Returns (instance, Observed)."""
    _, headers, inst = request_full(base, "PATCH", _instance_path(service, id) + _wait_query(wait), changes,
                                    timeout=10.0 + wait, token=token,
                                    content_type="application/merge-patch+json")
    return inst, Observed(headers)


def set_status(base: str, service: str, id: str, status: str, wait: float = 0.0,
               token: str | None = None) -> tuple[dict, Observed]:
    """Drain ("draining"), take out of service ("out_of_service") or undrain
    ("up") an instance; see patch()."""
    return patch(base, service, id, {"status": status}, wait, token)


def deregister(base: str, service: str, id: str, wait: float = 0.0,
               token: str | None = None) -> Observed:
    """Deregister an instance now; with wait > 0, after every subscriber the
    removal concerns has been written it (see patch()). An instance already
    gone raises RegdError 404."""
    _, headers, _ = request_full(base, "DELETE", _instance_path(service, id) + _wait_query(wait),
                                 timeout=10.0 + wait, token=token)
    return Observed(headers)


def heartbeats(base: str, instances: Iterable[tuple[str, str]], token: str | None = None) -> list[dict]:
    """Renew up to 1000 instances, given as (service, id) pairs, in one
    request. Returns one dict per instance, in order: {"service", "id",
    "ttl"} when renewed, {"service", "id", "error": {"code", "message"}}
    with the single heartbeat's meaning otherwise (code "not_found":
    register it again)."""
    body = {"instances": [{"service": s, "id": i} for s, i in instances]}
    _, out = request(base, "PUT", "/v1/heartbeats", body, token=token)
    return out["results"]


class _Backoff:
    """Capped exponential backoff with jitter: a delay in [d/2, d]."""

    def __init__(self, base: float = 0.1, cap: float = 5.0):
        self.base, self.cap, self.n = base, cap, 0

    def next(self) -> float:
        d = min(self.base * (2 ** self.n), self.cap)
        self.n = min(self.n + 1, 30)
        return d / 2 + random.uniform(0, d / 2)

    def reset(self) -> None:
        self.n = 0


class Registrar:
    """Keeps one instance registered; see the module documentation."""

    def __init__(self, base_urls, service: str, id: str, address: str,
                 ttl: int = 10, metadata: dict[str, str] | None = None,
                 token: str | None = None, weight: int | None = None,
                 check: dict | None = None):
        self.bases = _base_urls(base_urls)
        self._token = _check_token(token)  # a write token
        self.service, self.id, self.address = service, id, address
        self.ttl = ttl
        self.metadata = dict(metadata or {})
        self.weight = weight
        self.check = dict(check) if check else None  # a health check regd runs as well
        self.status = "up"  # registered with each registration; drain() changes it
        self.instance: dict | None = None  # the last registration's answer
        self.last_error: BaseException | None = None
        self._node = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = False

    # -- public -----------------------------------------------------------

    def start(self, timeout: float = 30.0) -> dict:
        """Register (trying the nodes in turn, with backoff, for up to
        timeout seconds), then heartbeat in a daemon thread. A 4xx answer
        (bad name, address, TTL...; 401 or 403: the token is missing,
        unknown or read-only) is raised at once as RegdError."""
        if self._started:
            raise RuntimeError("already started")
        self._started = True
        deadline = time.monotonic() + timeout
        bo = _Backoff()
        while True:
            try:
                self._register()
                break
            except Exception as e:  # noqa: BLE001 - classified below
                if not _retryable(e) or self._stop.is_set():
                    raise
                self._next_node(e)
                delay = bo.next()
                if time.monotonic() + delay > deadline:
                    raise TimeoutError(f"regd: could not register {self.service}/{self.id}: {e}") from e
                if self._stop.wait(delay):
                    raise RuntimeError("closed") from e
        self._thread = threading.Thread(target=self._run, name=f"regd-heartbeat-{self.service}/{self.id}",
                                        daemon=True)
        self._thread.start()
        return self.instance

    def drain(self, wait: float = 30.0) -> Observed:
        """Set the instance's status to draining: it stays registered and
        heartbeating but leaves discovery answers. Returns once every
        subscriber of the service on every node has been written the change,
        or after wait seconds (at most 60); the Observed says how far it got.
        A graceful shutdown: drain(), finish the work in flight, close().
        Registrations this registrar makes later keep the status."""
        return self.set_status("draining", wait)

    def set_status(self, status: str, wait: float = 0.0) -> Observed:
        """Change the instance's status in place ("up" undrains); see drain()."""
        bo = _Backoff(cap=2.0)
        deadline = time.monotonic() + 10.0 + wait
        while True:
            base = self._base()
            try:
                inst, obs = set_status(base, self.service, self.id, status, wait, token=self._token)
                self.instance, self.status = inst, status
                log.info("regd: %s/%s is %s (%r)", self.service, self.id, status, obs)
                return obs
            except (RegdError, OSError) as e:
                if not _retryable(e) or time.monotonic() > deadline:
                    raise
                self._next_node(e)
                time.sleep(bo.next())

    def close(self, timeout: float = 10.0) -> None:
        """Stop heartbeating and deregister (204 and 404 both count). A 4xx
        answer, such as the 401 or 403 of a missing or read-only token, is
        raised at once."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if not self._started:
            return
        deadline = time.monotonic() + timeout
        bo = _Backoff(cap=2.0)
        while True:
            base = self._base()
            try:
                request(base, "DELETE", _instance_path(self.service, self.id),
                        timeout=max(0.5, min(5.0, deadline - time.monotonic())), token=self._token)
                log.info("deregistered %s/%s via %s", self.service, self.id, base)
                return
            except RegdError as e:
                if e.status == 404:
                    return
                if not e.retryable:
                    raise
                err: BaseException = e
            except OSError as e:
                err = e
            self._next_node(err)
            delay = bo.next()
            if time.monotonic() + delay > deadline:
                raise TimeoutError(f"regd: could not deregister {self.service}/{self.id}: {err}") from err
            time.sleep(delay)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    # -- internals --------------------------------------------------------

    def _base(self) -> str:
        with self._lock:
            return self.bases[self._node % len(self.bases)]

    def _next_node(self, err: BaseException) -> None:
        if not _retryable(err) or len(self.bases) < 2:
            return
        with self._lock:
            self._node = (self._node + 1) % len(self.bases)
            nxt = self.bases[self._node]
        log.info("regd: %s/%s switching to %s after: %s", self.service, self.id, nxt, err)

    def _interval(self) -> float:
        ttl = (self.instance or {}).get("ttl") or self.ttl
        return max(ttl / 3.0, 0.1)

    def _register(self) -> None:
        base = self._base()
        body = {"address": self.address, "ttl": self.ttl}
        if self.metadata:
            body["metadata"] = self.metadata
        if self.weight is not None:
            body["weight"] = self.weight
        if self.check:
            body["check"] = self.check
        if self.status != "up":
            body["status"] = self.status
        try:
            status, inst = request(base, "PUT", _instance_path(self.service, self.id), body, token=self._token)
        except Exception as e:
            self.last_error = e
            log.warning("regd: register %s/%s via %s failed: %s", self.service, self.id, base, e)
            raise
        self.instance, self.last_error = inst, None
        log.info("regd: registered %s/%s via %s (%d, lease %s)", self.service, self.id, base, status,
                 inst.get("lease_id"))

    def _heartbeat(self) -> None:
        base = self._base()
        # Half the TTL: a hung node leaves time to try another.
        timeout = min(max(self.ttl / 2.0, 1.0), 10.0)
        try:
            request(base, "PUT", _instance_path(self.service, self.id) + "/heartbeat", timeout=timeout,
                    token=self._token)
            self.last_error = None
        except Exception as e:
            self.last_error = e
            log.warning("regd: heartbeat %s/%s via %s failed: %s", self.service, self.id, base, e)
            raise

    def _run(self) -> None:
        bo = _Backoff(cap=self._interval())
        delay = self._interval()
        while not self._stop.wait(delay):
            try:
                try:
                    self._heartbeat()
                except RegdError as e:
                    if e.retryable or e.auth_error:
                        raise
                    # 404: expired or deregistered behind our back; 409
                    # no_lease: a plain etcd client replaced the key.
                    self._register()
                bo.reset()
                bo.cap = self._interval()
                delay = self._interval()
            except Exception as e:  # noqa: BLE001 - keep the thread alive
                if self._stop.is_set():
                    return
                if isinstance(e, RegdError) and e.auth_error:
                    # The token is missing, unknown or read-only (revoked,
                    # say): every node answers the same, and registering
                    # again would too. last_error reports it; go on at the
                    # heartbeat pace, on the same node, in case regd's
                    # tokens are put right before the lease runs out.
                    delay = self._interval()
                    continue
                self._next_node(e)
                delay = bo.next()


class Discoverer:
    """Follows one service's instances; see the module documentation.

    Callbacks run one at a time, in the order of the changes, on the
    discoverer's thread (on start()'s thread for the initial list), never
    while it holds its lock; they must not call close(). on_register gets
    the instance dict (also for a re-registration: register is an upsert);
    on_deregister gets the instance and the reason: "deregister", "expire",
    "status" when it is still registered but no longer up (drained), or
    "reset" when a reset's full list no longer has it.

    token: a read (or write) token, needed only when regd runs with
    --auth-reads token. A watch refused with 401 or 403 (the token was
    revoked, say) stays on its node and is tried again every
    AUTH_RETRY_DELAY seconds; last_error reports it meanwhile.
    """

    def __init__(self, base_urls, service: str,
                 on_register: Callable[[dict], None] | None = None,
                 on_deregister: Callable[[dict, str], None] | None = None,
                 token: str | None = None):
        self.bases = _base_urls(base_urls)
        self._token = _check_token(token)
        self.service = service
        self.on_register = on_register
        self.on_deregister = on_deregister
        self.last_error: BaseException | None = None
        self._lock = threading.Lock()
        self._state: dict[str, dict] = {}
        self._sorted: list[dict] | None = None
        self._rev = 0
        # Where the next stream resumes (Last-Event-ID): the last event's
        # id as regd sent it ("42", or "42.1" for the second event of a
        # revision with several; ids are opaque), or the last list's
        # revision.
        self._last_id = "0"
        self._rr = 0
        self._node = 0
        self._closed = threading.Event()
        self._conn: http.client.HTTPConnection | None = None
        self._thread: threading.Thread | None = None

    # -- public -----------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """List the instances (trying the nodes in turn for up to timeout
        seconds), call on_register for each, then follow the watch stream
        in a daemon thread until close(). A 4xx answer (401 or 403: the
        token is missing or unknown) is raised at once as RegdError."""
        deadline = time.monotonic() + timeout
        bo = _Backoff()
        node = 0
        while True:
            base = self.bases[node]
            try:
                _, lst = request(base, "GET", f"/v1/services/{_q(self.service)}/instances", token=self._token)
                break
            except Exception as e:  # noqa: BLE001 - classified below
                if not _retryable(e):
                    raise
                node = (node + 1) % len(self.bases)
                delay = bo.next()
                if time.monotonic() + delay > deadline:
                    raise TimeoutError(f"regd: could not list {self.service}: {e}") from e
                if self._closed.wait(delay):
                    raise RuntimeError("closed") from e
        with self._lock:
            self._node = node
            calls = self._reset(lst)
        self._dispatch(calls)
        self._thread = threading.Thread(target=self._run, name=f"regd-watch-{self.service}", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop following the service."""
        self._closed.set()
        with self._lock:
            conn = self._conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked read
            except OSError:
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def instances(self) -> list[dict]:
        """A copy of the current instances, sorted by id."""
        with self._lock:
            return [dict(i, metadata=dict(i.get("metadata") or {})) for i in self._sorted_locked()]

    def pick(self) -> dict | None:
        """The next instance round-robin, or None when there is none."""
        with self._lock:
            s = self._sorted_locked()
            if not s:
                return None
            inst = s[self._rr % len(s)]
            self._rr += 1
            return dict(inst, metadata=dict(inst.get("metadata") or {}))

    @property
    def revision(self) -> int:
        """The newest etcd revision the state reflects."""
        with self._lock:
            return self._rev

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    # -- state ------------------------------------------------------------

    def _sorted_locked(self) -> list[dict]:
        if self._sorted is None:
            self._sorted = sorted(self._state.values(), key=lambda i: i["id"])
        return self._sorted

    def _reset(self, lst: dict) -> list[tuple]:
        """Replace the state with a full list; return the callbacks for the
        differences (removed first, then new or changed, by id)."""
        fresh = {i["id"]: i for i in lst.get("instances") or []}
        calls: list[tuple] = []
        for id in sorted(self._state):
            if id not in fresh:
                calls.append(("deregister", self._state[id], "reset"))
        for id in sorted(fresh):
            old, new = self._state.get(id), fresh[id]
            if old is None or any(old.get(k) != new.get(k) for k in ("revision", "lease_id", "address")):
                calls.append(("register", new, None))
        self._state, self._sorted = fresh, None
        self._rev = int(lst.get("revision") or 0)
        self._last_id = str(self._rev)
        return calls

    def _apply(self, event: str, id_field: str | None, data: str) -> list[tuple]:
        if id_field:
            # A resume with this id continues with the next event, on any
            # node: nothing is missed or applied twice.
            self._last_id = id_field
            head = id_field.split(".", 1)[0]
            if head.isdigit() and int(head) > self._rev:
                self._rev = int(head)  # for .revision only
        if event == "reset":
            return self._reset(json.loads(data))
        if event not in ("register", "update", "deregister", "expire"):
            return []
        inst = json.loads(data)
        inst.setdefault("metadata", {})
        if event in ("register", "update"):
            # The stream shows up instances (regd's default): one with
            # another status has left this view (a drain).
            if inst.get("status", "up") == "up":
                self._state[inst["id"]] = inst
                self._sorted = None
                return [("register", inst, None)]
            if self._state.pop(inst["id"], None) is None:
                return []
            self._sorted = None
            return [("deregister", inst, "status")]
        old = self._state.pop(inst["id"], None)
        if old is None:
            return []  # never seen registered
        self._sorted = None
        return [("deregister", inst if inst.get("address") else old, event)]

    def _resume_from(self) -> str:
        with self._lock:
            return self._last_id

    def _dispatch(self, calls: list[tuple]) -> None:
        for kind, inst, reason in calls:
            try:
                if kind == "register" and self.on_register:
                    self.on_register(dict(inst))
                elif kind == "deregister" and self.on_deregister:
                    self.on_deregister(dict(inst), reason)
            except Exception:  # noqa: BLE001 - a callback must not end the watch
                log.exception("regd: callback failed")

    # -- the watch --------------------------------------------------------

    def _run(self) -> None:
        bo = _Backoff(cap=3.0)
        while not self._closed.is_set():
            with self._lock:
                base = self.bases[self._node % len(self.bases)]
            began = time.monotonic()
            try:
                self._stream(base)
                err: BaseException = EOFError("server closed the stream")
            except Exception as e:  # noqa: BLE001 - every failure means: next node
                err = e
            if self._closed.is_set():
                return
            self.last_error = err
            if isinstance(err, RegdError) and err.auth_error:
                # The token is missing, unknown or lacks the read scope:
                # every node answers the same. Stay, and try again seldom.
                log.error("regd: watch of %s via %s refused (%s); check the token; retrying in %.0fs",
                          self.service, base, err, AUTH_RETRY_DELAY)
                if self._closed.wait(AUTH_RETRY_DELAY):
                    return
                continue
            with self._lock:
                self._node = (self._node + 1) % len(self.bases)
                nxt = self.bases[self._node]
            if time.monotonic() - began > 5:
                bo.reset()
            delay = bo.next()
            log.warning("regd: watch of %s via %s ended (%s); resuming on %s in %.2fs",
                        self.service, base, err, nxt, delay)
            if self._closed.wait(delay):
                return

    def _stream(self, base: str) -> None:
        u = urllib.parse.urlsplit(base)
        cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
        conn = cls(u.hostname, u.port, timeout=STREAM_IDLE_TIMEOUT)
        with self._lock:
            self._conn = conn
        try:
            if self._closed.is_set():
                return
            after = self._resume_from()
            conn.request("GET", f"/v1/services/{_q(self.service)}/watch", headers=_headers(self._token, {
                "Accept": "text/event-stream",
                "Cache-Control": "no-cache",
                "Last-Event-ID": after,
            }))
            if self._closed.is_set():  # close() may have come before the socket existed
                return
            resp = conn.getresponse()
            if resp.status != 200:
                raw = resp.read(65536)
                try:
                    e = json.loads(raw)["error"]
                    raise RegdError(resp.status, e["code"], e["message"])
                except (ValueError, KeyError, TypeError):
                    raise RegdError(resp.status, "", raw.decode(errors="replace")) from None
            ctype = (resp.getheader("Content-Type") or "").split(";")[0].strip()
            if ctype != "text/event-stream":
                raise RegdError(resp.status, "", f"watch answered {ctype!r}, not an event stream")
            log.info("regd: watching %s via %s after event %s", self.service, base, after)
            self.last_error = None
            self._read_events(resp)
        finally:
            with self._lock:
                self._conn = None
            conn.close()

    def _read_events(self, resp) -> None:
        """Parse Server-Sent Events: "field: value" lines, ':' comments,
        multi-line data joined by newlines, a blank line dispatches."""
        event, id_field, data, closing = "", None, [], None
        first = True
        while True:
            raw = resp.readline(64 << 20)
            if not raw:
                if closing:
                    raise EOFError(f"server closed the stream: {closing}")
                return  # EOF: an incomplete block is discarded
            if not raw.endswith(b"\n"):
                raise EOFError("stream ended within a line, or a line over 64 MiB")
            if self._closed.is_set():
                return
            line = raw.decode("utf-8", errors="replace").rstrip("\n").removesuffix("\r")
            if first:
                line, first = line.removeprefix("\ufeff"), False
            if line == "":
                if data:
                    with self._lock:
                        calls = self._apply(event or "message", id_field, "\n".join(data))
                    self._dispatch(calls)
                event, id_field, data = "", None, []
                continue
            if line.startswith(":"):
                comment = line[1:].strip()
                if comment.startswith("closing:"):
                    closing = comment[len("closing:"):].strip()
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
            elif name == "id" and "\0" not in value:
                id_field = value
