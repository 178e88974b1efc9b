#!/usr/bin/env python3
"""Tests of regd.py against a running regd (standard library only).

    REGD_URL=http://127.0.0.1:8080 python3 test_regd.py

REGD_URL may list several nodes, comma-separated. Against a regd with
--auth-token-file, set REGD_TOKEN to a write token: every client and request
of the tests then sends it. With REGD_READ_TOKEN (a read token) as well, and
regd running with --auth-reads token, AuthTest checks the refusals too.
Exits non-zero on failure. Every wait is bounded; the whole run takes about
15 seconds.
"""

import http.server
import json
import logging
import os
import socket
import sys
import threading
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import regd  # noqa: E402
from regd import Discoverer, RegdError, Registrar, request  # noqa: E402

URLS = [u.strip() for u in os.environ.get("REGD_URL", "http://127.0.0.1:8080").split(",") if u.strip()]
BASE = URLS[0].rstrip("/")
TOKEN = os.environ.get("REGD_TOKEN") or None            # a write token, or None: regd without tokens
READ_TOKEN = os.environ.get("REGD_READ_TOKEN") or None  # a read token: AuthTest runs
WRONG_TOKEN = "py-test-not-a-token-0123456789"


class _Records(logging.Handler):
    """Keeps every message of the "regd" logger, to check that no token
    is ever logged."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self._mu = threading.Lock()

    def emit(self, record):
        with self._mu:
            self.lines.append(self.format(record))

    def text(self) -> str:
        with self._mu:
            return "\n".join(self.lines)


RECORDS = _Records()
logging.getLogger("regd").addHandler(RECORDS)
logging.getLogger("regd").setLevel(logging.DEBUG)


def tearDownModule():
    logged = RECORDS.text()
    for tok in (TOKEN, READ_TOKEN, WRONG_TOKEN, FakeRegd.TOKEN):
        if tok and tok in logged:
            raise AssertionError("a token was logged")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def listed(service: str) -> dict:
    _, body = request(BASE, "GET", f"/v1/services/{service}/instances", token=TOKEN)
    return {i["id"]: i for i in body["instances"]}


def dead_url() -> str:
    """A loopback URL nothing listens on: a client that moved to it would
    see connection refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def wait_for(cond, timeout: float, what: str):
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)


class RegistrarTest(unittest.TestCase):
    def test_register_listed_and_close_deregisters(self):
        svc = unique("py-reg")
        reg = Registrar(URLS, svc, "i1", "10.9.0.1:8080", ttl=5, metadata={"zone": "a"}, token=TOKEN)
        inst = reg.start(timeout=10)
        self.assertEqual(inst["id"], "i1")
        self.assertEqual(inst["ttl"], 5)
        got = listed(svc).get("i1")
        self.assertIsNotNone(got, "instance not listed after start()")
        self.assertEqual(got["address"], "10.9.0.1:8080")
        self.assertEqual(got["metadata"], {"zone": "a"})
        reg.close()
        self.assertNotIn("i1", listed(svc))
        with self.assertRaises(RegdError) as cm:
            request(BASE, "GET", f"/v1/services/{svc}/instances/i1", token=TOKEN)
        self.assertEqual(cm.exception.status, 404)
        _, exp = request(BASE, "GET", f"/v1/expirations?service={svc}", token=TOKEN)
        self.assertEqual(exp["expirations"], [], "a deregistration was reported as an expiry")
        reg.close()  # a second close is a no-op

    def test_heartbeat_keeps_alive(self):
        svc = unique("py-hb")
        reg = Registrar(URLS, svc, "i1", "10.9.0.2:8080", ttl=2, token=TOKEN)
        lease = reg.start(timeout=10)["lease_id"]
        try:
            end = time.monotonic() + 5
            while time.monotonic() < end:  # a TTL-2 instance outlives 2.5 TTLs
                got = listed(svc).get("i1")
                self.assertIsNotNone(got, "the instance expired although heartbeating")
                self.assertEqual(got["lease_id"], lease, "re-registered: heartbeats did not keep the lease")
                time.sleep(0.2)
            self.assertIsNone(reg.last_error)
        finally:
            reg.close()

    def test_reregisters_after_removal(self):
        svc = unique("py-rr")
        reg = Registrar(URLS, svc, "i1", "10.9.0.3:8080", ttl=2, token=TOKEN)
        lease = reg.start(timeout=10)["lease_id"]
        try:
            status, _ = request(BASE, "DELETE", f"/v1/services/{svc}/instances/i1", token=TOKEN)
            self.assertEqual(status, 204)
            wait_for(lambda: listed(svc).get("i1", {}).get("lease_id") not in (None, lease), 5,
                     "registered again after a heartbeat's 404")
        finally:
            reg.close()

    def test_bad_address_raises(self):
        reg = Registrar(URLS, unique("py-bad"), "i1", "no port here", ttl=5, token=TOKEN)
        with self.assertRaises(RegdError) as cm:
            reg.start(timeout=5)
        self.assertEqual(cm.exception.status, 400)


class _Health(http.server.ThreadingHTTPServer):
    """A health endpoint to check: 200 until failing is set, then 503."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            status = 503 if self.server.failing.is_set() else 200
            raw = b"down" if status == 503 else b"ok"
            self.send_response(status)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    def __init__(self):
        super().__init__(("127.0.0.1", 0), self.Handler)
        self.failing = threading.Event()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/health"


class CheckTest(unittest.TestCase):
    def test_register_with_check(self):
        svc = unique("py-chk")
        target = _Health()
        try:
            inst = regd.register(BASE, svc, "c1", "10.9.9.1:5432", check={"http": target.url},
                                 interval="1s", failures=2, token=TOKEN)
            self.assertEqual(inst["check"], {"http": target.url, "interval": "1s", "timeout": "500ms",
                                             "failures": 2})
            self.assertGreaterEqual(inst["ttl"], 5)
            path = f"/v1/services/{svc}/instances/c1"
            wait_for(lambda: (request(BASE, "GET", path, token=TOKEN)[1].get("health") or {}).get("status")
                     == "passing", 10, "health passing")
            target.failing.set()

            def reported():
                _, exp = request(BASE, "GET", f"/v1/expirations?service={svc}", token=TOKEN)
                return exp["expirations"]
            exp = wait_for(reported, 15, "the failed check reported")
            self.assertEqual(len(exp), 1)
            self.assertEqual((exp[0]["id"], exp[0]["cause"]), ("c1", "check_failed"))
            self.assertIn("503", exp[0]["output"])
            with self.assertRaises(RegdError) as cm:
                regd.register(BASE, svc, "c2", "10.9.9.1:5432", check={"tcp": "x"}, token=TOKEN)
            self.assertEqual((cm.exception.status, cm.exception.code), (400, "invalid_check"))
        finally:
            target.shutdown()
            target.server_close()

    def test_registrar_with_check(self):
        svc = unique("py-rchk")
        target = _Health()
        reg = Registrar(URLS, svc, "r1", "10.9.9.2:80", ttl=5, token=TOKEN,
                        check={"http": target.url, "interval": "2s"})
        try:
            inst = reg.start(timeout=10)
            self.assertEqual(inst["check"]["http"], target.url)
            self.assertEqual(inst["check"]["interval"], "2s")
        finally:
            reg.close()
            target.shutdown()
            target.server_close()


class DiscovererTest(unittest.TestCase):
    def test_events(self):
        svc = unique("py-disc")
        lock = threading.Lock()
        events = []
        seen = threading.Condition(lock)

        def on_register(inst):
            with seen:
                events.append(("register", inst["id"]))
                seen.notify_all()

        def on_deregister(inst, reason):
            with seen:
                events.append((reason, inst["id"]))
                seen.notify_all()

        def wait_event(ev, timeout=10.0):
            with seen:
                if not seen.wait_for(lambda: ev in events, timeout):
                    self.fail(f"no {ev} within {timeout}s; events: {events}")

        request(BASE, "PUT", f"/v1/services/{svc}/instances/early", {"address": "10.9.1.0:80", "ttl": 30},
                token=TOKEN)
        disc = Discoverer(URLS, svc, on_register=on_register, on_deregister=on_deregister, token=TOKEN)
        disc.start(timeout=10)
        try:
            self.assertEqual(events, [("register", "early")], "initial list not reported")
            self.assertGreater(disc.revision, 0)

            regs = [Registrar(URLS, svc, f"i{n}", f"10.9.1.{n}:80", ttl=5, token=TOKEN) for n in (1, 2)]
            for r in regs:
                r.start(timeout=10)
            wait_event(("register", "i1"))
            wait_event(("register", "i2"))
            self.assertEqual([i["id"] for i in disc.instances()], ["early", "i1", "i2"])
            picks = [disc.pick()["id"] for _ in range(4)]
            self.assertEqual(picks, ["early", "i1", "i2", "early"])

            regs[0].close()
            wait_event(("deregister", "i1"))
            request(BASE, "DELETE", f"/v1/services/{svc}/instances/early", token=TOKEN)
            wait_event(("deregister", "early"))
            self.assertEqual([i["id"] for i in disc.instances()], ["i2"])
            regs[1].close()
            wait_event(("deregister", "i2"))
            self.assertIsNone(disc.pick())
            with lock:
                self.assertEqual(sorted(events), sorted([
                    ("register", "early"), ("register", "i1"), ("register", "i2"),
                    ("deregister", "i1"), ("deregister", "early"), ("deregister", "i2"),
                ]), "an event was missed or doubled")
        finally:
            disc.close()
        self.assertFalse(disc._thread.is_alive(), "the watch thread outlived close()")


@unittest.skipUnless(TOKEN and READ_TOKEN,
                     "REGD_TOKEN and REGD_READ_TOKEN not set (regd with --auth-token-file --auth-reads token)")
class AuthTest(unittest.TestCase):
    """Refusals of a regd that needs tokens for reads and writes: raised at
    once, never retried on another (here: dead) node."""

    def assert_refused(self, call, status: int, word: str) -> RegdError:
        began = time.monotonic()
        with self.assertRaises(RegdError) as cm:
            call()
        self.assertLess(time.monotonic() - began, 3.0, "the refusal was retried")
        e = cm.exception
        self.assertEqual(e.status, status)
        self.assertTrue(e.auth_error)
        self.assertIn(str(status), str(e))
        self.assertIn(word, str(e))
        return e

    def test_registrar_refused(self):
        for label, token, status, word in (("no token", None, 401, "unauthorized"),
                                           ("read token", READ_TOKEN, 403, "forbidden"),
                                           ("wrong token", WRONG_TOKEN, 401, "unauthorized")):
            with self.subTest(label):
                svc = unique("py-auth")
                reg = Registrar(URLS + [dead_url()], svc, "i1", "10.9.2.1:80", ttl=5, token=token)
                self.assert_refused(lambda: reg.start(timeout=10), status, word)
                self.assertIsInstance(reg.last_error, RegdError)
                self.assert_refused(reg.close, status, word)  # the deregistration is refused alike
                self.assertEqual(listed(svc), {})

    def test_discoverer_read_token(self):
        svc = unique("py-auth-disc")
        seen = []
        cond = threading.Condition()

        def on_register(inst):
            with cond:
                seen.append(inst["id"])
                cond.notify_all()

        for label, token in (("no token", None), ("wrong token", WRONG_TOKEN)):
            with self.subTest(label):
                d = Discoverer(URLS + [dead_url()], svc, token=token)
                self.assert_refused(lambda: d.start(timeout=10), 401, "unauthorized")
                d.close()
        disc = Discoverer(URLS, svc, on_register=on_register, token=f" {READ_TOKEN}\n")  # white space is ignored
        disc.start(timeout=10)
        try:
            reg = Registrar(URLS, svc, "i1", "10.9.2.2:80", ttl=5, token=TOKEN)
            reg.start(timeout=10)
            reg.close()
            with cond:  # the watch stream needs the token too
                self.assertTrue(cond.wait_for(lambda: "i1" in seen, 10), f"no register event: {disc.last_error}")
            self.assertIsNone(disc.last_error)
        finally:
            disc.close()

    def test_bad_token(self):
        with self.assertRaises(ValueError) as cm:
            Registrar(URLS, "svc", "i1", "10.9.2.3:80", token="has a space " + WRONG_TOKEN)
        self.assertNotIn(WRONG_TOKEN, str(cm.exception))


class LifecycleTest(unittest.TestCase):
    """Drain with the handshake's wait, undrain, and batch heartbeats,
    against the real regd."""

    def test_drain_undrain_and_batch(self):
        svc = unique("pylife")
        cond = threading.Condition()
        regs: list[str] = []
        deregs: list[tuple[str, str]] = []

        def on_reg(inst):
            with cond:
                regs.append(inst["id"])
                cond.notify_all()

        def on_dereg(inst, reason):
            with cond:
                deregs.append((inst["id"], reason))
                cond.notify_all()

        reg = Registrar(URLS, svc, "d1", "10.9.7.1:80", ttl=10, weight=5, token=TOKEN)
        inst = reg.start(timeout=10)
        self.assertEqual((inst["status"], inst["weight"]), ("up", 5))
        disc = Discoverer(URLS, svc, on_register=on_reg, on_deregister=on_dereg, token=TOKEN)
        disc.start(timeout=10)
        try:
            with cond:
                self.assertTrue(cond.wait_for(lambda: "d1" in regs, 10))
            obs = reg.drain(wait=10)
            self.assertTrue(obs.complete, obs)
            self.assertGreaterEqual(obs.subscribers, 1, obs)  # the discoverer's stream
            with cond:
                self.assertTrue(cond.wait_for(lambda: ("d1", "status") in deregs, 10), deregs)
            self.assertNotIn("d1", listed(svc))  # lists show up instances
            _, body = request(BASE, "GET", f"/v1/services/{svc}/instances?status=draining", token=TOKEN)
            self.assertEqual([i["id"] for i in body["instances"]], ["d1"])
            self.assertEqual(disc.instances(), [])

            inst, obs = regd.set_status(BASE, svc, "d1", "up", wait=10, token=TOKEN)
            self.assertEqual(inst["status"], "up")
            with cond:
                self.assertTrue(cond.wait_for(lambda: regs.count("d1") == 2, 10), regs)

            results = regd.heartbeats(BASE, [(svc, "d1"), (svc, "nobody"), ("bad name", "x")], token=TOKEN)
            self.assertEqual([r["id"] for r in results], ["d1", "nobody", "x"])
            self.assertGreater(results[0]["ttl"], 0)
            self.assertEqual(results[1]["error"]["code"], "not_found")
            self.assertEqual(results[2]["error"]["code"], "invalid_service_name")
        finally:
            disc.close()
            reg.close()
        with self.assertRaises(RegdError) as cm:
            regd.deregister(BASE, svc, "d1", wait=1, token=TOKEN)
        self.assertEqual(cm.exception.status, 404)


class FakeRegd(http.server.ThreadingHTTPServer):
    """A stand-in for regd that accepts the first registration and then
    refuses: heartbeats with 403, watch streams with 401. It records the
    Authorization header of every request."""

    TOKEN = "py-fake-token-abcdefabcdef"

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def answer(self, status: int, body: dict | None):
            raw = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def handle_one(self):
            srv = self.server
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            with srv.mu:
                srv.seen.append((self.command, self.path, self.headers.get("Authorization")))
            if self.path.endswith("/watch"):
                return self.answer(401, {"error": {"code": "unauthorized", "message": "the token is not valid"}})
            if self.path.endswith("/heartbeat"):
                return self.answer(403, {"error": {"code": "forbidden", "message": "read token"}})
            if self.command == "PUT":
                return self.answer(201, {"id": "i1", "ttl": 3, "lease_id": "1", "revision": 2})
            if self.command == "DELETE":
                return self.answer(204, None)
            return self.answer(200, {"instances": [], "revision": 2})

        do_GET = do_PUT = do_DELETE = handle_one

    def __init__(self):
        super().__init__(("127.0.0.1", 0), self.Handler)
        self.mu = threading.Lock()
        self.seen: list[tuple] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def requests(self) -> list[tuple]:
        with self.mu:
            return list(self.seen)


class AuthRetryTest(unittest.TestCase):
    """A token refused after start (revoked, say): neither client moves to
    another node or registers again; last_error keeps the refusal. Against
    FakeRegd, so it runs with or without tokens on the real regd."""

    def setUp(self):
        self.fake = FakeRegd()
        self.addCleanup(self.fake.server_close)
        self.addCleanup(self.fake.shutdown)

    def hold(self, get_error, status: int, seconds: float):
        """get_error() becomes a RegdError of status and stays one."""
        wait_for(lambda: isinstance(get_error(), RegdError), 5, f"a {status} in last_error")
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            e = get_error()
            self.assertIsInstance(e, RegdError, "moved to the dead node after the refusal")
            self.assertEqual(e.status, status)
            time.sleep(0.05)

    def test_registrar(self):
        reg = Registrar([self.fake.url, dead_url()], "svc", "i1", "10.9.3.1:80", ttl=3, token=FakeRegd.TOKEN)
        reg.start(timeout=5)
        self.hold(lambda: reg.last_error, 403, 2.5)  # heartbeats every second
        reg.close()
        reqs = self.fake.requests()
        self.assertEqual([m for m, p, _ in reqs if m == "PUT" and not p.endswith("/heartbeat")], ["PUT"],
                         "registered again after a refused heartbeat")
        self.assertGreaterEqual(len([p for _, p, _ in reqs if p.endswith("/heartbeat")]), 2)
        self.assertEqual(reqs[-1][0], "DELETE")
        self.assertEqual({a for _, _, a in reqs}, {f"Bearer {FakeRegd.TOKEN}"}, "a request without the token")

    def test_discoverer(self):
        saved, regd.AUTH_RETRY_DELAY = regd.AUTH_RETRY_DELAY, 0.5
        self.addCleanup(setattr, regd, "AUTH_RETRY_DELAY", saved)
        disc = Discoverer([self.fake.url, dead_url()], "svc", token=FakeRegd.TOKEN)
        disc.start(timeout=5)
        try:
            self.hold(lambda: disc.last_error, 401, 1.5)
        finally:
            disc.close()
        reqs = self.fake.requests()
        self.assertGreaterEqual(len([p for _, p, _ in reqs if p.endswith("/watch")]), 2, "not tried again")
        self.assertEqual({a for _, _, a in reqs}, {f"Bearer {FakeRegd.TOKEN}"}, "a request without the token")


class FakeStream(http.server.ThreadingHTTPServer):
    """A stand-in for regd's list and watch: the list is at revision 4;
    the first stream sends two events of revision 5 ("5.0", "5.1") and
    ends; the next one sends "6" and stays open. It records each watch's
    Last-Event-ID."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        @staticmethod
        def event(eid: str, typ: str, id: str) -> bytes:
            inst = {"service": "svc", "id": id, "address": "10.7.0.1:80", "metadata": {},
                    "ttl": 10, "lease_id": "1", "revision": int(eid.split(".")[0]),
                    "status": "up", "weight": 100}
            return f"id: {eid}\nevent: {typ}\ndata: {json.dumps(inst)}\n\n".encode()

        def do_GET(self):
            srv = self.server
            if not self.path.endswith("/watch"):
                raw = json.dumps({"service": "svc", "instances": [], "revision": 4}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)
                return
            with srv.mu:
                srv.resumes.append(self.headers.get("Last-Event-ID"))
                n = len(srv.resumes)
            # Chunked, as regd's streams are: the client keeps the socket
            # (its close() shuts it down to end a blocked read).
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

            def chunk(b: bytes):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(b), b))
                self.wfile.flush()

            if n == 1:
                chunk(self.event("5.0", "register", "a") + self.event("5.1", "register", "b"))
                chunk(b"")
                self.close_connection = True
                return  # the stream ends after 5.1: the next resumes there
            chunk(self.event("6", "register", "c"))
            srv.release.wait(10)
            self.close_connection = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), self.Handler)
        self.mu = threading.Lock()
        self.resumes: list[str | None] = []
        self.release = threading.Event()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


class ResumeTest(unittest.TestCase):
    """Event ids are opaque strings: a stream that ends after "5.1" (the
    second event of revision 5) resumes with exactly that id."""

    def test_resume_mid_revision(self):
        fake = FakeStream()
        self.addCleanup(fake.server_close)
        self.addCleanup(fake.shutdown)
        self.addCleanup(fake.release.set)
        disc = Discoverer([fake.url], "svc")
        disc.start(timeout=5)
        try:
            wait_for(lambda: [i["id"] for i in disc.instances()] == ["a", "b", "c"], 10, "a, b and c")
            with fake.mu:
                self.assertEqual(fake.resumes[:2], ["4", "5.1"])
            self.assertEqual(disc.revision, 6)
        finally:
            disc.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
