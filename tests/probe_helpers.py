"""Ask a worker process's probe server (topics/probes.py) for /healthz or /readyz."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request


def probe(port: int, path: str) -> tuple[int | None, dict]:
    """(HTTP status, JSON body); (None, {}) while nothing answers on the port."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
    except (urllib.error.URLError, OSError):
        return None, {}


def wait_probe(port: int, path: str, ok, timeout: float = 90.0) -> tuple[int | None, dict]:
    """Poll until `ok((status, body))`; the last answer on timeout (the caller asserts)."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe(port, path)
        if ok(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.2)
