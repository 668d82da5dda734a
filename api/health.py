"""Health of the pipeline as the API sees it: /health and /health/{component}, with reasons.

A component is judged by what it leaves in Kafka: its consumer group's lag on the topics it
reads (over `[api] lag_threshold`: unhealthy; no committed offsets: unhealthy, nothing of it
ever ran), after the broker itself answers. Stores and Triton are probed where an address is
configured ([stores] and [triton] url: CLICKHOUSE_URL, NEO4J_URI, CHROMA_URL, TRITON_URL); without one they are
`disabled`, which is not a failure. Answers 200 when healthy, 503 with reasons otherwise.
"""
from __future__ import annotations

import asyncio
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlparse

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse

from streams.settings import Settings
from topics import registry as T, security

COMPONENTS = ("planner", "decomposer", "coordinator", "executor", "sinks", "triton")
# the worker kinds in this codebase: decomposition runs in the planner worker's intake and
# refiner, coordination (resource ledgers) in its ledger agent; each is judged on its own topics
TOPICS = {
    "planner": (T.GOALS_BY_PLAN.name, T.EXECUTION_FEEDBACK.name, T.PLANS_APPROVALS.name, T.CONTROL_COMMANDS.name,
                T.PLANS_TICK.name, T.PLANS_REFINED.name),
    "decomposer": (T.GOALS_CREATED.name, T.PLANS_REFINE.name),
    "coordinator": (T.ALLOCATION_REQUESTS.name, T.ALLOCATION_DECISIONS.name),
    "executor": (T.TASKS_ASSIGNED.name,),
    "sinks": (T.PLANS_CREATED.name, T.PLANS_UPDATED.name, T.TASKS_ASSIGNED.name, T.EXECUTION_FEEDBACK.name),
}
MARKERS_READ = 100   # offsets behind that a lag check reads to leave out transaction markers
STORES = {"clickhouse": "clickhouse_url", "neo4j": "neo4j_uri", "chroma": "chroma_url"}   # [stores] fields


@dataclass
class Result:
    status: str                 # healthy, unhealthy, disabled
    reasons: list[str]
    details: dict

    def as_dict(self, name: str) -> dict:
        return {"component": name, "status": self.status, "reasons": self.reasons, "details": self.details}


async def _records_behind(consumer, tp, committed: int, end: int, deadline: float) -> int:
    """Records a read_committed consumer would still get between `committed` and `end`. The end
    counts transaction markers (and aborted records) too: a group that committed past a
    transactional producer's last record stays one marker behind for ever, so a few offsets
    behind are read to tell (more than MARKERS_READ, or out of time: the offsets, it lags)."""
    if end - committed <= 0 or end - committed > MARKERS_READ:
        return max(0, end - committed)
    consumer.assign([tp])
    consumer.seek(tp, committed)
    records = 0
    while await consumer.position(tp) < end and time.monotonic() < deadline:
        got = await consumer.getmany(tp, timeout_ms=200)
        records += sum(1 for r in got.get(tp, ()) if r.offset < end)
    return records if await consumer.position(tp) >= end else end - committed


def _tcp(url: str, timeout: float = 2.0) -> str | None:
    """None when host:port of `url` accepts a connection, else why not."""
    u = urlparse(url if "://" in url else f"tcp://{url}")
    try:
        with socket.create_connection((u.hostname or "127.0.0.1", u.port or 80), timeout=timeout):
            return None
    except OSError as exc:
        return f"{u.hostname}:{u.port} refuses connections ({exc.strerror or exc})"


class Checks:
    def __init__(self, settings: Settings, view=None, env=os.environ) -> None:
        self.settings = settings
        self.view = view
        self.env = env
        self.timeout = 3.0

    # -- Kafka (aiokafka, a new client per check: librdkafka admin clients that saw the broker
    # go away kept timing out on group requests after it came back, or crashed the process with
    # SIGSEGV in confluent-kafka 2.16.1's list_consumer_group_offsets) -------------------------

    def _kafka(self, coro_fn):
        async def go():
            admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.bootstrap,
                                        request_timeout_ms=int(self.timeout * 1000), **security.aiokafka(self.env))
            try:
                await asyncio.wait_for(admin.start(), self.timeout)
                return await asyncio.wait_for(coro_fn(admin), self.timeout * 2)
            finally:
                await admin.close()
        return asyncio.run(go())

    def broker(self) -> str | None:
        try:
            self._kafka(lambda admin: admin.describe_cluster())
            return None
        except (KafkaError, OSError, asyncio.TimeoutError) as exc:
            return f"broker unreachable at {self.settings.bootstrap}: {type(exc).__name__}: {exc}"

    def groups(self, prefix: str) -> list[str]:
        async def go(admin):
            return await admin.list_consumer_groups()
        return sorted(g[0] for g in self._kafka(go) if g[0].startswith(prefix))

    def lag(self, group: str, topics: tuple[str, ...]) -> tuple[int | None, dict[str, int]]:
        """(total lag, per topic) of `group` on `topics`; None when it committed nothing there."""
        async def go(admin):
            offsets = await admin.list_consumer_group_offsets(group)
            committed = {tp: om.offset for tp, om in offsets.items() if tp.topic in topics and om.offset >= 0}
            if not committed:
                return None
            consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.bootstrap, enable_auto_commit=False,
                                        isolation_level="read_committed",
                                        request_timeout_ms=int(self.timeout * 1000), **security.aiokafka(self.env))
            await consumer.start()
            try:
                ends = await consumer.end_offsets(list(committed))
                deadline = time.monotonic() + self.timeout
                return {tp: await _records_behind(consumer, tp, off, ends[tp], deadline)
                        for tp, off in committed.items()}
            finally:
                await consumer.stop()
        got = self._kafka(go)
        if got is None:
            return None, {}
        per: dict[str, int] = {}
        for tp, n in got.items():
            per[tp.topic] = per.get(tp.topic, 0) + n
        return sum(per.values()), per


    def _groups_lag(self, name: str, groups: list[str]) -> Result:
        threshold = self.settings.api.lag_threshold
        if not groups:
            return Result("unhealthy", [f"no {name} consumer group exists: none has run"], {})
        reasons, details = [], {}
        for g in groups:
            total, per = self.lag(g, TOPICS[name])
            details[g] = {"lag": total, "by_topic": per}
            if total is None:
                reasons.append(f"group {g} has committed no offsets on {', '.join(TOPICS[name])}")
            elif total > threshold:
                reasons.append(f"consumer lag {total} over threshold {threshold} (group {g}: "
                               + ", ".join(f"{t} {n}" for t, n in sorted(per.items()) if n) + ")")
        return Result("unhealthy" if reasons else "healthy", reasons, details)

    # -- components ----------------------------------------------------------------------

    def component(self, name: str) -> Result:
        if name == "triton":
            return self.triton()
        why = self.broker()
        if why:
            return Result("unhealthy", [why], {})
        try:
            if name in ("planner", "decomposer", "coordinator"):
                return self._groups_lag(name, [self.settings.app_id])
            if name == "executor":
                return self._groups_lag(name, self.groups("chimera-executor"))
            result = self._groups_lag(name, self.groups("chimera-sink-"))
            for store, key in STORES.items():
                url = getattr(self.settings.stores, key)
                if url:
                    down = _tcp(url)
                    result.details[store] = down or "up"
                    if down:
                        result.reasons.append(f"store {store} down: {down}")
                        result.status = "unhealthy"
            return result
        except (KafkaError, OSError) as exc:
            return Result("unhealthy", [f"broker unreachable at {self.settings.bootstrap}: {exc}"], {})
        except asyncio.TimeoutError:
            return Result("unhealthy", [f"broker at {self.settings.bootstrap} did not answer a group or offset "
                                        f"request within {self.timeout:g} s"], {})

    def triton(self) -> Result:
        """[triton] url (TRITON_URL) means what it means for the planner: the server's gRPC host:port."""
        url = self.settings.triton.url
        if not url:
            return Result("disabled", [], {"reason": "TRITON_URL not set: inference uses the fallbacks"})
        address = url.split("://", 1)[-1].rstrip("/")
        try:
            import tritonclient.grpc as grpcclient
            client = grpcclient.InferenceServerClient(address)
            try:
                ready = client.is_server_ready(client_timeout=self.timeout)
            finally:
                client.close()
        except ImportError:
            return Result("unhealthy", ["tritonclient is not installed (the [triton-client] extra)"], {"url": address})
        except Exception as exc:  # tritonclient raises its own InferenceServerException for a refusal
            return Result("unhealthy", [f"Triton down at {address}: {exc}"], {"url": address})
        if not ready:
            return Result("unhealthy", [f"Triton at {address} is not ready"], {"url": address})
        return Result("healthy", [], {"url": address})

    def api(self) -> Result:
        """The API process itself: the broker, and its view caught up within the threshold."""
        why = self.broker()
        reasons = [why] if why else []
        view = self.view
        details = {}
        if view is not None:
            details = {"view_ready": view.ready.is_set(), "view_lag": view.lag, "view_records": view.records}
            if not view.ready.is_set():
                reasons.append("the API's view has not caught up with the plan topics yet")
            elif view.lag > self.settings.api.lag_threshold:
                reasons.append(f"the API's view lags {view.lag} records (threshold {self.settings.api.lag_threshold})")
        return Result("unhealthy" if reasons else "healthy", reasons, details)


def _answer(body: dict, healthy: bool) -> JSONResponse:
    return JSONResponse(body, status_code=200 if healthy else 503)


def mount(app: FastAPI, deps) -> None:
    """/health (no key: probes and load balancers call it; it names no plan and no tenant)."""
    checks: Checks = deps.health

    @app.get("/health", tags=["health"])
    def health():
        started = time.monotonic()
        own = checks.api()
        parts = {name: checks.component(name).as_dict(name) for name in COMPONENTS} if own.status == "healthy" \
            else {}
        expected = {c.strip() for c in checks.settings.api.health_components.split(",")}
        bad = own.status != "healthy" or any(p["status"] == "unhealthy" for n, p in parts.items() if n in expected)
        reasons = own.reasons + [f"{n}: {r}" for n, p in parts.items() if n in expected for r in p["reasons"]]
        return _answer({"status": "unhealthy" if bad else "healthy", "reasons": reasons, "api": own.as_dict("api"),
                        "components": {n: p["status"] for n, p in parts.items()},
                        "checked_in_s": round(time.monotonic() - started, 3)}, not bad)

    @app.get("/health/live", tags=["health"])
    def live():
        """The API process answers (liveness): nothing it depends on is asked, so a broker
        outage makes it unready (/health/api), never restarted."""
        return {"status": "live"}

    @app.get("/health/api", tags=["health"])
    def api_only():
        """The API process alone (readiness): the broker answers and its view caught up."""
        r = checks.api()
        return _answer(r.as_dict("api"), r.status == "healthy")

    @app.get("/health/{component}", tags=["health"])
    def component(component: str):
        if component not in COMPONENTS:
            raise HTTPException(404, {"error": "not_found",
                                      "message": f"no component {component!r}; one of {', '.join(COMPONENTS)}"})
        r = checks.component(component)
        return _answer(r.as_dict(component), r.status != "unhealthy")
