"""The API on the real broker, in process (Starlette's TestClient drives the ASGI app and its
lifespan, so the view's consumer thread runs as in `chimera api`)."""
from __future__ import annotations

import asyncio
import time
from contextlib import contextmanager

from fastapi.testclient import TestClient

from api.app import Deps, create_app
from api.keys import KeyStore
from api.ratelimit import RateLimiter
from api.store import Store
from api.view import View
from api.writer import Writer
from streams.settings import ApiSettings
from topics.admin import create_topics

ENV = dict(PLANNING_REFINE_BUDGET_SECONDS=0, PLANNING_AUTO_APPROVE_LOW_RISK_PLANS="false",
           PLANNING_PROGRESS_INTERVAL_SECONDS=0.2, PLANNING_ENABLE_CONTINUOUS_REPLANNING="false")

GOAL = {"title": "Ship the billing API", "domain": "software",
        "tasks": [{"task_id": "design", "name": "Design", "duration_hours": 2},
                  {"task_id": "build", "name": "Build", "duration_hours": 3, "depends_on": ["design"]}]}


class Keys:
    """One key per role for tenant acme, an admin of tenant globex."""

    def __init__(self) -> None:
        self.store = KeyStore()
        self.planner, _ = self.store.add("acme", "planner", "pat@acme")
        self.approver, _ = self.store.add("acme", "approver", "alice@acme")
        self.viewer, _ = self.store.add("acme", "viewer", "vic@acme")
        self.other, _ = self.store.add("globex", "admin", "root@globex")


def h(key: str) -> dict:
    return {"X-API-Key": key}


@contextmanager
def api_client(bootstrap: str, keys: Keys, *, per_minute: float = 60000, burst: int = 10000, health=None,
               kafka_config: dict | None = None):
    asyncio.run(create_topics(bootstrap))
    store = Store()
    view = View(bootstrap, store, kafka_config=kafka_config)
    deps = Deps(settings=ApiSettings(), keys=keys.store, store=store, writer=Writer(bootstrap, 10.0, kafka_config),
                limiter=RateLimiter(per_minute, burst), view=view)
    if health is not None:
        deps.health = health(view)
    with TestClient(create_app(deps)) as client:
        assert view.ready.wait(60), "the API's view did not catch up with the topics"
        client.deps = deps
        yield client


def wait_for(get, ok, timeout: float = 90.0, what: str = ""):
    """Poll `get()` until `ok(result)`; the last result on timeout (the caller asserts)."""
    deadline = time.monotonic() + timeout
    while True:
        got = get()
        if ok(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def scrape(port: int) -> dict[str, float] | None:
    """A worker's /metrics as {sample name with labels: value}, summed over label sets under the
    bare name too; None while nothing answers."""
    import urllib.error
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
            if labels:
                out[s.name] = out.get(s.name, 0.0) + s.value
    return out
