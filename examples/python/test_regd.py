#!/usr/bin/env python3
"""Tests of regd.py against a running regd (standard library only).

    REGD_URL=http://127.0.0.1:8080 python3 test_regd.py

REGD_URL may list several nodes, comma-separated. Exits non-zero on failure.
Every wait is bounded; the whole run takes about 15 seconds.
"""

import os
import sys
import threading
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from regd import Discoverer, RegdError, Registrar, request  # noqa: E402

URLS = [u.strip() for u in os.environ.get("REGD_URL", "http://127.0.0.1:8080").split(",") if u.strip()]
BASE = URLS[0].rstrip("/")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def listed(service: str) -> dict:
    _, body = request(BASE, "GET", f"/v1/services/{service}/instances")
    return {i["id"]: i for i in body["instances"]}


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
        reg = Registrar(URLS, svc, "i1", "10.9.0.1:8080", ttl=5, metadata={"zone": "a"})
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
            request(BASE, "GET", f"/v1/services/{svc}/instances/i1")
        self.assertEqual(cm.exception.status, 404)
        _, exp = request(BASE, "GET", f"/v1/expirations?service={svc}")
        self.assertEqual(exp["expirations"], [], "a deregistration was reported as an expiry")
        reg.close()  # a second close is a no-op

    def test_heartbeat_keeps_alive(self):
        svc = unique("py-hb")
        reg = Registrar(URLS, svc, "i1", "10.9.0.2:8080", ttl=2)
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
        reg = Registrar(URLS, svc, "i1", "10.9.0.3:8080", ttl=2)
        lease = reg.start(timeout=10)["lease_id"]
        try:
            status, _ = request(BASE, "DELETE", f"/v1/services/{svc}/instances/i1")
            self.assertEqual(status, 204)
            wait_for(lambda: listed(svc).get("i1", {}).get("lease_id") not in (None, lease), 5,
                     "registered again after a heartbeat's 404")
        finally:
            reg.close()

    def test_bad_address_raises(self):
        reg = Registrar(URLS, unique("py-bad"), "i1", "no port here", ttl=5)
        with self.assertRaises(RegdError) as cm:
            reg.start(timeout=5)
        self.assertEqual(cm.exception.status, 400)


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

        request(BASE, "PUT", f"/v1/services/{svc}/instances/early", {"address": "10.9.1.0:80", "ttl": 30})
        disc = Discoverer(URLS, svc, on_register=on_register, on_deregister=on_deregister)
        disc.start(timeout=10)
        try:
            self.assertEqual(events, [("register", "early")], "initial list not reported")
            self.assertGreater(disc.revision, 0)

            regs = [Registrar(URLS, svc, f"i{n}", f"10.9.1.{n}:80", ttl=5) for n in (1, 2)]
            for r in regs:
                r.start(timeout=10)
            wait_event(("register", "i1"))
            wait_event(("register", "i2"))
            self.assertEqual([i["id"] for i in disc.instances()], ["early", "i1", "i2"])
            picks = [disc.pick()["id"] for _ in range(4)]
            self.assertEqual(picks, ["early", "i1", "i2", "early"])

            regs[0].close()
            wait_event(("deregister", "i1"))
            request(BASE, "DELETE", f"/v1/services/{svc}/instances/early")
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


if __name__ == "__main__":
    unittest.main(verbosity=2)
