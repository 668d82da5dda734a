"""Replay a past window through the current planner, into its own namespace, and compare.

`chimera replay --from T1 --to T2 [--plan ID] [--speed X] [--namespace NS]` reads the input
topics (goals, resources, feedback, approvals) for records whose timestamps fall in
[T1, T2), in timestamp order, and runs them through the planner's domain lifecycle
(processors.lifecycle: the same code the worker runs, in process, so the replay needs no
second worker and never touches the live one's state or group). Outputs go to
`<NS>.plans.created`, `<NS>.plans.updated`, `<NS>.tasks.assigned`, `<NS>.risks.alerts` (same
Avro, same keys, deterministic event ids). The replay reads with its own consumer group
(`chimera-replay-<NS>`; it assigns partitions and commits nothing). `--speed X` paces
records at X times their recorded rate (0: as fast as possible).

`chimera replay --compare [--namespace NS]` prints, per plan in the namespace, how its
latest version differs from the recorded one (makespan, cost, task count, tasks added or
removed), so a new planner version can be judged on a past day before it is deployed.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from processors import lifecycle, limits
from processors.dependencies import check_specs
from processors.ids import plan_id as derive_plan_id
from processors.model import PlanningError
from streams import codec
from streams.settings import load as load_settings, load_planning
from topics import registry as T
from topics.admin import create_topics
from topics.serde import SerdeError, serde

INPUTS = (T.GOALS_CREATED.name, T.RESOURCES_AVAILABILITY.name, T.EXECUTION_FEEDBACK.name, T.PLANS_APPROVALS.name)
OUTPUTS = (T.PLANS_CREATED.name, T.PLANS_UPDATED.name, T.TASKS_ASSIGNED.name, T.RISKS_ALERTS.name)


def parse_time(text: str) -> int:
    """Epoch milliseconds from epoch ms digits or an ISO 8601 time (UTC when no zone is given)."""
    if text.isdigit():
        return int(text)
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def ns_topic(namespace: str, topic: str) -> str:
    return f"{namespace}.{topic}"


@dataclass
class ReplayResult:
    namespace: str
    inputs: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (where, reason)
    outputs: dict[str, int] = field(default_factory=dict)
    plans: set[str] = field(default_factory=set)


def read_window(bootstrap: str, since_ms: int, until_ms: int, group: str,
                topics: Iterable[str] = INPUTS) -> list[tuple[int, str, int, int, bytes | None, bytes | None]]:
    """(timestamp, topic, partition, offset, key, value) of every input record in [since, until), in time order."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "enable.partition.eof": False})
    out = []
    try:
        md = c.list_topics(timeout=10)
        tps = [TopicPartition(t, p, since_ms) for t in topics if t in md.topics for p in md.topics[t].partitions]
        starts = c.offsets_for_times(tps, timeout=15)
        ends = {(tp.topic, tp.partition): c.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
        todo = [tp for tp in starts if tp.offset >= 0 and tp.offset < ends[(tp.topic, tp.partition)]]
        if not todo:
            return []
        c.assign(todo)
        open_parts = {(tp.topic, tp.partition) for tp in todo}
        deadline = time.monotonic() + 120
        while open_parts and time.monotonic() < deadline:
            for m in c.consume(1000, timeout=0.5):
                if m.error():
                    continue
                where = (m.topic(), m.partition())
                ts = m.timestamp()[1]
                if ts >= until_ms or m.offset() + 1 >= ends[where]:
                    open_parts.discard(where)
                if since_ms <= ts < until_ms:
                    out.append((ts, m.topic(), m.partition(), m.offset(), m.key(), m.value()))
    finally:
        c.close()
    order = {t: i for i, t in enumerate(INPUTS)}
    out.sort(key=lambda r: (r[0], order.get(r[1], 9), r[2], r[3]))
    return out


def _plan_of(topic: str, value: dict) -> str | None:
    if topic == T.GOALS_CREATED.name:
        return derive_plan_id(value["goal_id"])
    if topic in (T.EXECUTION_FEEDBACK.name, T.PLANS_APPROVALS.name):
        return value["plan_id"]
    return None


def replay(bootstrap: str, since_ms: int, until_ms: int, *, namespace: str = "replay", plan: str | None = None,
           speed: float = 0.0, config=None, refine: bool = True,
           progress: Callable[[str], None] | None = None) -> ReplayResult:
    """Re-run planning over the window into `<namespace>.*` topics (see the module docstring)."""
    config = config or load_planning()
    result = ReplayResult(namespace)
    group = f"chimera-replay-{namespace}"
    # resources are a table: its state at the window's start comes from every earlier record
    records = read_window(bootstrap, since_ms, until_ms, group,
                          [t for t in INPUTS if t != T.RESOURCES_AVAILABILITY.name])
    records += read_window(bootstrap, 0, until_ms, group, [T.RESOURCES_AVAILABILITY.name])
    order = {t: i for i, t in enumerate(INPUTS)}
    records.sort(key=lambda r: (r[0], order.get(r[1], 9), r[2], r[3]))
    _ensure_topics(bootstrap, namespace)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    states: dict[str, lifecycle.PlanState | None] = {}
    resources: dict[str, dict] = {}

    def capacities() -> dict[str, float]:
        total: dict[str, float] = {}
        for rec in resources.values():
            if rec.get("available", True):
                for kind, units in rec["capacities"].items():
                    total[kind] = total.get(kind, 0.0) + units
        return total

    def publish(events) -> None:
        for out in codec.records(events):
            if out.topic == T.PLANS_REFINE.name:
                continue
            producer.produce(ns_topic(namespace, out.topic), key=out.key.encode(),
                             value=serde(out.topic).encode(out.value))
            result.outputs[out.topic] = result.outputs.get(out.topic, 0) + 1
        producer.poll(0)

    started, first_ts = time.monotonic(), max(records[0][0], since_ms) if records else 0
    lim = load_settings().limits
    for ts, topic, part, offset, key, raw in records:
        if topic == T.RESOURCES_AVAILABILITY.name:
            _apply_resource(resources, key, raw, lim)
            continue
        if speed > 0:
            wait = (ts - first_ts) / 1000 / speed - (time.monotonic() - started)
            if wait > 0:
                time.sleep(wait)
        where = f"{topic}/{part}@{offset}"
        try:  # the worker's door: what it dead-letters is not replayed either
            limits.record_size(len(raw or b""), lim)
            value = serde(topic).decode(raw)
        except (SerdeError, PlanningError) as exc:
            result.skipped.append((where, exc.reason))
            continue
        pid = _plan_of(topic, value)
        if plan and pid != plan:
            continue
        result.inputs += 1
        try:
            if topic == T.GOALS_CREATED.name:
                goal = codec.goal_from_record(value)
                limits.check_goal(goal, lim)
                if goal.tasks:
                    check_specs(goal.tasks)
                new, events = lifecycle.on_goal(states.get(pid), goal, capacities(), config, received_at_ms=ts)
                states[pid] = new
                publish(events)
                for e in events:
                    if refine and isinstance(e, lifecycle.RefineRequested):
                        better = lifecycle.refine(e.goal, e.capacities, config)
                        if better is not None:
                            new, ev2 = lifecycle.on_refined(states[pid], pid, e.plan.version, better, config)
                            states[pid] = new
                            publish(ev2)
            elif topic == T.EXECUTION_FEEDBACK.name:
                new, events = lifecycle.on_feedback(states.get(pid), codec.feedback_from_record(value), config)
                states[pid] = new
                publish(events)
            elif topic == T.PLANS_APPROVALS.name:
                new, events = lifecycle.on_approval(states.get(pid), codec.approval_from_record(value), config)
                states[pid] = new
                publish(events)
            result.plans.add(pid)
        except PlanningError as exc:
            result.skipped.append((where, getattr(exc, "reason", None) or str(exc)[:80]))
        if progress and result.inputs % 100 == 0:
            progress(f"{result.inputs} records replayed")
    if producer.flush(30):
        raise ConnectionError("replayed records not acknowledged by the broker")
    return result


def _apply_resource(resources: dict, key: bytes | None, raw: bytes | None, lim) -> None:
    """The worker's resource table: a tombstone removes; a record keyed by its id with sane
    numbers sets; anything else (dead-lettered by the worker) is ignored."""
    if key is None:
        return
    if raw is None:
        resources.pop(key.decode(errors="replace"), None)
        return
    try:
        limits.record_size(len(raw), lim)
        value = serde(T.RESOURCES_AVAILABILITY.name).decode(raw)
        if key.decode(errors="replace") != value["resource_id"]:
            return
        limits.capacities(value["capacities"], "capacities", lim)
        limits.finite(value.get("hourly_rate"), "hourly_rate", high=lim.max_budget)
    except (SerdeError, PlanningError, KeyError, TypeError, ValueError):
        return
    resources[value["resource_id"]] = value


def _ensure_topics(bootstrap: str, namespace: str) -> None:
    asyncio.run(create_topics(bootstrap, list(OUTPUTS)))  # the recorded side exists for --compare
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=10).topics)
    new = [NewTopic(ns_topic(namespace, t), T.spec(t).partitions, 1, config=dict(T.spec(t).config))
           for t in OUTPUTS if ns_topic(namespace, t) not in existing]
    for name, fut in (admin.create_topics(new) if new else {}).items():
        try:
            fut.result()
        except Exception as exc:  # noqa: BLE001 - created meanwhile is fine
            if "already exists" not in str(exc).lower():
                raise


def latest_plans(bootstrap: str, topics: tuple[str, str], decode_as: tuple[str, str],
                 wanted: set[str] | None = None) -> dict[str, dict]:
    """plan_id -> the plan record of its highest version, from a created and an updated topic."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"chimera-replay-compare-{time.time_ns()}",
                  "enable.auto.commit": False, "enable.partition.eof": False})
    best: dict[str, dict] = {}
    try:
        md = c.list_topics(timeout=10)
        tps = [TopicPartition(t, p, 0) for t in topics if t in md.topics for p in md.topics[t].partitions]
        ends = {(tp.topic, tp.partition): c.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
        todo = [tp for tp in tps if ends[(tp.topic, tp.partition)] > 0]
        if not todo:
            return best
        c.assign(todo)
        open_parts = {(tp.topic, tp.partition) for tp in todo}
        as_name = dict(zip(topics, decode_as))
        deadline = time.monotonic() + 120
        while open_parts and time.monotonic() < deadline:
            for m in c.consume(1000, timeout=0.5):
                if m.error():
                    continue
                if m.offset() + 1 >= ends[(m.topic(), m.partition())]:
                    open_parts.discard((m.topic(), m.partition()))
                try:
                    v = serde(as_name[m.topic()]).decode(m.value())
                except SerdeError:
                    continue
                p = v["plan"] if "plan" in v else v
                if wanted is not None and p["plan_id"] not in wanted:
                    continue
                old = best.get(p["plan_id"])
                if old is None or p["version"] >= old["version"]:
                    best[p["plan_id"]] = p
    finally:
        c.close()
    return best


@dataclass
class PlanDiff:
    plan_id: str
    recorded: dict | None
    replayed: dict

    @property
    def changes(self) -> dict[str, tuple]:
        r, n = self.recorded, self.replayed
        if r is None:
            return {"recorded": (None, "missing")}
        out = {}
        for what, get in (("makespan_hours", lambda p: round(p["makespan_hours"], 4)),
                          ("cost", lambda p: round(p["cost"]["total"], 2)),
                          ("tasks", lambda p: len(p["tasks"]))):
            if get(r) != get(n):
                out[what] = (get(r), get(n))
        before, after = {t["task_id"] for t in r["tasks"]}, {t["task_id"] for t in n["tasks"]}
        if before != after:
            out["task_ids"] = (sorted(before - after), sorted(after - before))
        return out


def compare(bootstrap: str, namespace: str = "replay") -> list[PlanDiff]:
    """Each replayed plan (latest version) against the recorded one (latest version)."""
    names = (T.PLANS_CREATED.name, T.PLANS_UPDATED.name)
    replayed = latest_plans(bootstrap, tuple(ns_topic(namespace, t) for t in names), names)
    recorded = latest_plans(bootstrap, names, names, wanted=set(replayed))
    return [PlanDiff(pid, recorded.get(pid), p) for pid, p in sorted(replayed.items())]
