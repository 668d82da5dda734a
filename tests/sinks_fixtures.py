"""Records with known contents for the sink tests, and a runner helper.

Built by hand (not by the planner) so that every count and analytics answer is known.
Every builder returns a dict that the topic's Avro schema accepts (checked by encoding).
"""
from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time

from topics import registry as T
from topics.serde import serde

# midnight UTC yesterday: aligned to minutes and days, and recent enough for the tables' TTLs
T0 = (int(time.time() * 1000) // 86_400_000 - 1) * 86_400_000
H = 3_600_000
_ids = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{next(_ids)}"


def goal(goal_id: str, *, title: str = "Launch billing API", domain: str = "software", created_at_ms: int = T0,
         deadline_h: float | None = 100.0, budget: float | None = 10_000.0, objectives=("Design", "Build")) -> dict:
    return {"goal_id": goal_id, "title": title, "description": f"{title} for the team", "domain": domain,
            "priority": "HIGH", "objectives": list(objectives), "success_criteria": [],
            "constraints": {"deadline_ms": None if deadline_h is None else int(created_at_ms + deadline_h * H),
                            "budget": budget, "max_parallelism": 2, "capacities": {}, "required_capabilities": []},
            "strategy": None, "tasks": [], "submitted_by": "test", "created_at_ms": created_at_ms}


def task(task_id: str, start: float, hours: float, deps=(), resources=None, caps=("python",)) -> dict:
    return {"task_id": task_id, "name": f"Task {task_id}", "description": "", "phase": "build", "component": "api",
            "depends_on": list(deps), "estimate": {"optimistic": hours * 0.8, "most_likely": hours,
                                                   "pessimistic": hours * 1.5},
            "resources": dict(resources or {"engineer": 1.0}), "capabilities": list(caps), "success_criteria": [],
            "validation": [], "risk_mitigation": False, "start_hours": start, "finish_hours": start + hours,
            "earliest_start_hours": start, "latest_start_hours": start, "slack_hours": 0.0, "critical": True}


def risk(risk_id: str, category: str = "TECHNICAL", score: float = 0.3, severity: str = "MEDIUM",
         task_ids=()) -> dict:
    return {"risk_id": risk_id, "category": category, "title": f"risk {risk_id}", "description": "",
            "probability": 0.5, "impact": score * 2, "score": score, "severity": severity, "mitigations": [],
            "task_ids": list(task_ids)}


def plan(plan_id: str, goal_id: str, *, version: int = 1, tasks=None, risks=(), cost: float = 5_000.0,
         created_at_ms: int = T0 + 1000, by_resource=None) -> dict:
    tasks = tasks if tasks is not None else [task("t1", 0, 10), task("t2", 10, 20, deps=["t1"])]
    return {"event_id": f"{plan_id}:v{version}:created", "plan_id": plan_id, "goal_id": goal_id, "version": version,
            "strategy": "hierarchical", "approval": "AUTO_APPROVED", "schedule_method": "sgs", "reason": "created",
            "makespan_hours": max(t["finish_hours"] for t in tasks), "lower_bound_hours": 0.0,
            "critical_path": [t["task_id"] for t in tasks], "tasks": tasks, "phases": [], "milestones": [],
            "risks": list(risks), "cost": {"total": cost, "currency": "USD",
                                           "by_resource": dict(by_resource or {"engineer": cost})},
            "violations": [], "created_at_ms": created_at_ms}


def plan_update(p: dict, *, version: int, makespan: float | None = None, progress: float = 0.0,
                status: str = "ACTIVE", cost_estimate: float = 0.0, reason: str = "refined") -> dict:
    new = {**p, "version": version, "event_id": f"{p['plan_id']}:v{version}:updated", "reason": reason}
    if makespan is not None:
        new["makespan_hours"] = makespan
    return {"event_id": new["event_id"], "plan": new, "previous_version": p["version"],
            "previous_makespan_hours": p["makespan_hours"], "progress_pct": progress, "variance_hours": 0.0,
            "status": status, "trigger": reason.split(":")[0], "spi": 1.0, "cpi": 1.0, "planned_value": 0.0,
            "earned_value": 0.0, "actual_cost": 0.0, "budget_variance": 0.0, "cost_estimate": cost_estimate}


def assignment(p: dict, task_id: str, executor: str | None, at_ms: int = T0 + 2000) -> dict:
    t = next(t for t in p["tasks"] if t["task_id"] == task_id)
    return {"event_id": f"{p['plan_id']}:v{p['version']}:assign:{task_id}", "plan_id": p["plan_id"],
            "goal_id": p["goal_id"], "plan_version": p["version"], "task": t, "assigned_to": executor,
            "assigned_at_ms": at_ms, "attempt": 1}


def feedback(plan_id: str, task_id: str, status: str, actual_hours: float | None = None, at_ms: int = T0 + 3000,
             message: str = "") -> dict:
    return {"event_id": f"{plan_id}:{task_id}:{status}", "plan_id": plan_id, "task_id": task_id, "status": status,
            "progress_pct": 100.0 if status == "COMPLETED" else 0.0, "actual_hours": actual_hours,
            "message": message, "reported_at_ms": at_ms, "attempt": None}


def alert(p: dict, r: dict, at_ms: int = T0 + 1500) -> dict:
    return {"event_id": f"{p['plan_id']}:v{p['version']}:risk:{r['risk_id']}", "plan_id": p["plan_id"],
            "goal_id": p["goal_id"], "plan_version": p["version"], "risk": r, "raised_at_ms": at_ms}


def resource(resource_id: str, capacities: dict, rate: float = 100.0, available: bool = True) -> dict:
    return {"resource_id": resource_id, "kind": "team", "capacities": capacities, "capabilities": ["python"],
            "available": available, "hourly_rate": rate, "updated_at_ms": T0}


def check(topic: str, record: dict) -> dict:
    serde(topic).encode(record, strict=True)
    return record


def produce_raw(bootstrap: str, topic: str, pairs) -> None:
    """(key, value) pairs; dict values Avro-encoded. Creates the topics first; every record acknowledged."""
    import asyncio

    from confluent_kafka import Producer

    from topics.admin import create_topics

    asyncio.run(create_topics(bootstrap))
    errors = []
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    for k, v in pairs:
        p.produce(topic, key=k.encode() if k else None,
                  value=v if isinstance(v, (bytes, type(None))) else serde(topic).encode(v, strict=True),
                  on_delivery=lambda err, msg: err and errors.append(err))
    left = p.flush(30)
    del p
    assert left == 0 and not errors, errors


def wait_until(cond, timeout: float = 60.0, every: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what() if callable(what) else what} "
                         f"(last: {last!r})")


@contextlib.contextmanager
def running(runner):
    """Run a SinkRunner in a thread for the block; stop it (final flush + commit) after."""
    from sinks.base import run_in_thread

    thread, stop = run_in_thread(runner)
    try:
        assert runner.ready.wait(90), f"sink {runner.sink.name} did not start: {runner.last_error!r}"
        yield runner
    finally:
        stop.set()
        thread.join(60)
        assert not thread.is_alive(), "sink thread did not stop"


def reset_group(bootstrap: str, group: str, topics) -> None:
    """Delete a consumer group's committed offsets, so its next run re-reads everything (a replay)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.delete_consumer_groups([group], request_timeout=15)[group]
    with contextlib.suppress(Exception):
        fut.result()


def new_topics_prefix() -> str:
    return unique("t")


def _thread_names() -> list[str]:
    return [t.name for t in threading.enumerate()]


def read_dlq(bootstrap: str, topic: str = "chimera.sinks.dlq", timeout: float = 10.0) -> list[dict]:
    """Every record of a dead-letter topic: key, raw value, headers (decoded)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("dlq-reader"), "enable.auto.commit": False})
    try:
        md = c.list_topics(topic, timeout=10)
        parts = list(md.topics[topic].partitions)
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        out, deadline = [], time.monotonic() + timeout
        done = {p for p, e in ends.items() if e == 0}
        while len(done) < len(parts) and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None or m.error():
                continue
            out.append({"key": m.key().decode() if m.key() else None, "value": m.value(),
                        "headers": {k: (v or b"").decode() for k, v in (m.headers() or [])}})
            if m.offset() + 1 >= ends[m.partition()]:
                done.add(m.partition())
        return out
    finally:
        c.close()


def sample_records(prefix: str) -> dict[str, list]:
    """One goal planned twice (v1, refined v2), assigned, fed back; a second goal; a resource."""
    g1, g2 = goal(f"{prefix}-g1"), goal(f"{prefix}-g2", title="Train a model", domain="ml", budget=1000.0)
    p1 = plan(f"{prefix}-p1", g1["goal_id"], risks=[risk("r1")])
    p2 = plan(f"{prefix}-p2", g2["goal_id"], cost=2000.0, tasks=[task("a", 0, 5)])
    up = plan_update(p1, version=2, makespan=25.0)
    return {
        T.GOALS_CREATED.name: [(g1["goal_id"], g1), (g2["goal_id"], g2)],
        T.PLANS_CREATED.name: [(p1["plan_id"], p1), (p2["plan_id"], p2)],
        T.PLANS_UPDATED.name: [(p1["plan_id"], up)],
        T.TASKS_ASSIGNED.name: [(p1["plan_id"], assignment(p1, "t1", f"{prefix}-exec"))],
        T.EXECUTION_FEEDBACK.name: [(p1["plan_id"], feedback(p1["plan_id"], "t1", "COMPLETED", 12.0))],
        T.RISKS_ALERTS.name: [(p1["plan_id"], alert(p1, p1["risks"][0]))],
        T.RESOURCES_AVAILABILITY.name: [(sample_resource(prefix), resource(sample_resource(prefix), {"engineer": 2.0}))],
    }


def sample_resource(prefix: str) -> str:
    """The id of sample_records' resource: a test that produces them to the shared broker
    hands it to the `withdraw` fixture (tombstoned at the test's end)."""
    return f"{prefix}-res"


def sink_records(pairs) -> list:
    """(topic, value) pairs as the sink's records (each value checked against its schema), in order."""
    from sinks.base import SinkRecord
    return [SinkRecord(t, 0, i, None, check(t, v), None, {}, T0) for i, (t, v) in enumerate(pairs)]


def filled_store(folder, records, deliveries: int = 2):
    """A set-up ClickHouse store (chdb on `folder`) holding the rows the sink's own `rows_for`
    makes of `records`, inserted `deliveries` times without dedup tokens (at least once:
    FINAL and argMax must collapse the duplicates). The caller closes it."""
    from sinks.clickhouse import COLUMNS, ClickHouseStore, rows_for

    store = ClickHouseStore(folder)
    store.setup()
    records = list(records)
    for _ in range(deliveries):
        tables = {t: [] for t in COLUMNS}
        for rec in records:
            for t, rows in rows_for(rec).items():
                tables[t].extend(rows)
        for t, rows in tables.items():
            if rows:
                store.insert(t, rows)
    return store
