#!/usr/bin/env python3
"""regd demo: register "demo/py-1", follow service "demo", deregister.

    python3 example.py http://127.0.0.1:8080 [http://127.0.0.1:8081 ...]

Start a node first (`regd` with no flags is a single-node registry on
127.0.0.1:8080). While the demo runs, register more instances of "demo" with
curl (see README.md) and watch them appear.

When regd runs with --auth-token-file, put a write token in REGD_TOKEN (it
serves both the registrar and the discoverer):

    REGD_TOKEN=$(cat write.token) python3 example.py http://127.0.0.1:8080
"""

import logging
import os
import sys
import time

from regd import Discoverer, Registrar


def main() -> int:
    urls = sys.argv[1:] or ["http://127.0.0.1:8080"]
    token = os.environ.get("REGD_TOKEN") or None
    seconds = 5.0
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")

    def up(inst):
        print(f"[event] register   {inst['service']}/{inst['id']} at {inst['address']} "
              f"(revision {inst['revision']}, metadata {inst.get('metadata')})", flush=True)

    def down(inst, reason):
        print(f"[event] {reason:<10} {inst['service']}/{inst['id']} at {inst['address']}", flush=True)

    disc = Discoverer(urls, "demo", on_register=up, on_deregister=down, token=token)
    disc.start()
    print(f"following demo at revision {disc.revision}: {len(disc.instances())} instance(s)")

    reg = Registrar(urls, "demo", "py-1", "127.0.0.1:9999", ttl=5, metadata={"lang": "python"}, token=token)
    inst = reg.start()
    print(f"registered demo/py-1 with lease {inst['lease_id']}, ttl {inst['ttl']}s; heartbeating")

    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(1)
            picked = disc.pick()
            print("pick ->", picked["id"] if picked else None, "| instances:",
                  [i["id"] for i in disc.instances()], flush=True)
    finally:
        reg.close()
        print("deregistered demo/py-1")
        time.sleep(0.5)  # let the deregister event arrive
        disc.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
