"""Records that once stopped or corrupted planning, sent to a real worker on a real broker:
each ends in a plan or a dead letter with a precise reason, the next valid goal is
planned at once, and the worker neither crash-loops nor stalls."""
from __future__ import annotations

import asyncio
import math
import time
import uuid

import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, given, settings, strategies as st

from processors.ids import plan_id
from streams.planner import partition_for
from streams.services import Worker
from tests.avro_strategies import records
from tests.conftest import fresh_group
from tests.kafka_helpers import collect, free_port, produce
from tests.probe_helpers import probe, wait_probe
from topics import registry as T
from topics.admin import create_topics
from topics.serde import serde

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
T0 = 1_700_000_000_000
HOUR_MS = 3_600_000


def _task(tid, hours, deps=(), **extra):
    return {"task_id": tid, "name": tid, "duration_hours": hours, "depends_on": list(deps), **extra}


def _goal(goal_id, tasks=None, **over):
    g = {"goal_id": goal_id, "title": f"goal {goal_id}", "created_at_ms": T0,
         "tasks": tasks if tasks is not None else [_task("a", 2), _task("b", 3, ["a"])]}
    g.update(over)
    return g


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024


@pytest.fixture(scope="module")
def worker(kafka_bootstrap, tmp_path_factory):
    """One planner worker for the module (its own consumer group and state)."""
    asyncio.run(create_topics(kafka_bootstrap))
    port = free_port()
    app_id = f"chimera-hardening-{uuid.uuid4().hex[:8]}"
    asyncio.run(fresh_group(kafka_bootstrap, app_id))
    w = Worker(kafka_bootstrap, env={"PLANNING_REFINE_BUDGET_SECONDS": "0", "CHIMERA_METRICS_PORT": str(port)},
               app_id=app_id,
               log_path=tmp_path_factory.mktemp("hardening") / "worker.log").start()
    w.metrics_port = port
    warm = _goal(f"warm-{app_id}")  # the worker is up and planning before any test times it
    produce(kafka_bootstrap, T.GOALS_CREATED.name, [(warm["goal_id"], warm)])
    assert collect(kafka_bootstrap, T.PLANS_CREATED.name, lambda r: r.key == plan_id(warm["goal_id"]), count=1,
                   timeout=120), w.log_tail()
    yield w
    w.stop()
    print(f"--- hardening worker (tail) ---\n{w.log_tail(60)}")


def test_the_probes_on_the_metrics_port_say_live_and_ready(worker):
    """What infra/k8s/planner.yaml asks: /healthz (the watchdog's timer runs, so the loop turns)
    and /readyz (owns partitions of its sources, not rebalancing nor recovering), beside /metrics."""
    ready = wait_probe(worker.metrics_port, "/readyz", lambda r: r[0] == 200, timeout=60)
    assert ready == (200, {"status": "ready", "components": ["planner"], "reasons": []}), \
        (ready, worker.log_tail())
    assert probe(worker.metrics_port, "/healthz") == (200, {"status": "live", "components": ["planner"],
                                                            "reasons": []})
    assert _metric(worker.metrics_port, "chimera_worker_healthy", "") == 1


def _planned_at_once(bootstrap: str, worker: Worker, run: str) -> None:
    """A valid goal sent now is planned within a second (broker timestamps: goal in, plan out)."""
    goal = _goal(f"next-{run}-{uuid.uuid4().hex[:6]}")
    produce(bootstrap, T.GOALS_CREATED.name, [(goal["goal_id"], goal)])
    sent = collect(bootstrap, T.GOALS_CREATED.name, lambda r: r.key == goal["goal_id"], count=1, timeout=30)
    plan = collect(bootstrap, T.PLANS_CREATED.name, lambda r: r.key == plan_id(goal["goal_id"]), count=1, timeout=30)
    assert plan, f"the next valid goal was not planned\n{worker.log_tail()}"
    assert worker.alive(), worker.log_tail()
    took_ms = plan[0].timestamp_ms - sent[0].timestamp_ms
    assert took_ms < 1000, f"the next goal took {took_ms} ms"


def _dead_letters(bootstrap: str, topic: str, keys: set[str], timeout: float = 60) -> dict[str, dict]:
    found = collect(bootstrap, topic, lambda r: r.key in keys, count=len(keys), timeout=timeout)
    return {r.key: r.headers for r in found}


def test_oversized_and_extreme_goals_are_dead_lettered_with_a_reason(kafka_bootstrap, worker):
    run = uuid.uuid4().hex[:8]
    cases = {
        f"many-{run}": (_goal(f"many-{run}", [_task(f"t{i}", 1) for i in range(1500)]), "too_many_tasks"),
        f"title-{run}": (_goal(f"title-{run}", title="x" * 300_000), "too_large"),
        f"long-{run}": (_goal(f"long-{run}", title="y" * 5_000), "text_too_long"),
        f"eon-{run}": (_goal(f"eon-{run}", [_task("a", 1e9)]), "duration_out_of_range"),
        f"nan-{run}": (_goal(f"nan-{run}", [_task("a", math.nan)]), "not_finite"),
        f"budget-{run}": (_goal(f"budget-{run}", constraints={"budget": math.nan}), "not_finite"),
        f"cap-{run}": (_goal(f"cap-{run}", constraints={"capacities": {"gpu": math.inf}}), "not_finite"),
        f"res-{run}": (_goal(f"res-{run}", [_task("a", 1, resources={"cpu": -4.0})]), "value_out_of_range"),
    }
    # 0.25 h beside 90,000 h defeats the exact time grid: planned on a scaled grid, not rejected
    mixed = _goal(f"mixed-{run}", [_task("a", 0.25), _task("b", 90_000), _task("c", 0.25, ["a"])])
    produce(kafka_bootstrap, T.GOALS_CREATED.name, [(k, g) for k, (g, _) in cases.items()] + [(mixed["goal_id"], mixed)])
    letters = _dead_letters(kafka_bootstrap, T.GOALS_CREATED.dlq, set(cases))
    assert {k: h["chimera.dlq.reason"] for k, h in letters.items()} == {k: r for k, (_, r) in cases.items()}
    assert all(h["chimera.dlq.detail"] for h in letters.values())
    plan = collect(kafka_bootstrap, T.PLANS_CREATED.name, lambda r: r.key == plan_id(mixed["goal_id"]), count=1)
    assert plan and plan[0].value["makespan_hours"] >= 90_000
    _planned_at_once(kafka_bootstrap, worker, run)
    assert _rss_mb(worker.proc.pid) < 1024, "the worker's memory stays bounded"


def test_garbage_on_every_consumed_topic_is_dead_lettered_within_a_second(kafka_bootstrap, worker):
    run = uuid.uuid4().hex[:8]
    consumed = [T.GOALS_CREATED, T.RESOURCES_AVAILABILITY, T.EXECUTION_FEEDBACK, T.PLANS_APPROVALS,
                T.GOALS_BY_PLAN, T.PLANS_REFINE, T.PLANS_REFINED, T.PLANS_EXPIRE, T.CONTROL_COMMANDS,
                T.ALLOCATION_REQUESTS, T.ALLOCATION_DECISIONS, T.PLANS_TICK, T.CONTROL_GLOBAL]
    assert {t.name for t in consumed} == {t.name for t in T.TOPICS if t.has_dlq and not t.executed}
    key = f"garbage-{run}"
    for t in consumed:
        produce(kafka_bootstrap, t.name, [(key, b"\x00\x00\x00\x00\x07 not avro at all")])
    for t in consumed:
        sent = collect(kafka_bootstrap, t.name, lambda r: r.key == key, count=1, timeout=30)
        letter = collect(kafka_bootstrap, t.dlq, lambda r: r.key == key, count=1, timeout=30)
        assert letter, f"nothing on {t.dlq}\n{worker.log_tail()}"
        assert letter[0].headers["chimera.dlq.reason"] in ("schema_mismatch", "unknown_schema_id")
        assert letter[0].headers["chimera.source.topic"] == t.name
        assert letter[0].timestamp_ms - sent[0].timestamp_ms < 1000, t.name
    _planned_at_once(kafka_bootstrap, worker, run)


def test_resources_are_validated_and_a_tombstone_deletes_one(kafka_bootstrap, worker):
    run = uuid.uuid4().hex[:8]
    now = T0

    def resource(rid, caps):
        return {"resource_id": rid, "kind": "pool", "capacities": caps, "updated_at_ms": now}

    bad = {f"nan-{run}": ({"gpu": math.nan}, "not_finite"), f"neg-{run}": ({"gpu": -1.0}, "value_out_of_range"),
           f"inf-{run}": ({"gpu": math.inf}, "not_finite")}
    produce(kafka_bootstrap, T.RESOURCES_AVAILABILITY.name, [(k, resource(k, c)) for k, (c, _) in bad.items()])
    produce(kafka_bootstrap, T.RESOURCES_AVAILABILITY.name, [(f"other-{run}", resource(f"key-{run}", {"gpu": 1.0}))])
    letters = _dead_letters(kafka_bootstrap, T.RESOURCES_AVAILABILITY.dlq, set(bad) | {f"other-{run}"})
    assert {k: h["chimera.dlq.reason"] for k, h in letters.items()} == {
        **{k: r for k, (_, r) in bad.items()}, f"other-{run}": "wrong_key"}
    two_gpu_tasks = [_task("a", 4, resources={"gpu": 1.0}), _task("b", 4, resources={"gpu": 1.0})]
    gpu = f"gpu-{run}"
    produce(kafka_bootstrap, T.RESOURCES_AVAILABILITY.name, [(gpu, resource(gpu, {"gpu": 1.0}))])
    try:
        time.sleep(2)  # the global table catches up
        first = _goal(f"one-gpu-{run}", two_gpu_tasks)
        produce(kafka_bootstrap, T.GOALS_CREATED.name, [(first["goal_id"], first)])
        plan = collect(kafka_bootstrap, T.PLANS_CREATED.name, lambda r: r.key == plan_id(first["goal_id"]), count=1)
        assert plan[0].value["makespan_hours"] == 8, "one reported GPU: the tasks run one after the other"
    finally:
        produce(kafka_bootstrap, T.RESOURCES_AVAILABILITY.name, [(gpu, None)])  # tombstone
    time.sleep(2)
    second = _goal(f"no-gpu-{run}", two_gpu_tasks)
    produce(kafka_bootstrap, T.GOALS_CREATED.name, [(second["goal_id"], second)])
    plan = collect(kafka_bootstrap, T.PLANS_CREATED.name, lambda r: r.key == plan_id(second["goal_id"]), count=1)
    assert plan[0].value["makespan_hours"] == 4, "deleted: back to the configured default GPUs"
    assert not collect(kafka_bootstrap, T.RESOURCES_AVAILABILITY.dlq, lambda r: r.key == gpu, count=1, timeout=3)


async def _send_to_partition(bootstrap: str, topic: str, key: str, value: dict, partition: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, key=key.encode(), value=serde(topic).encode(value), partition=partition)
    finally:
        await producer.stop()


def _versions(bootstrap: str, pid: str, timeout: float = 3) -> list[dict]:
    """Every version of a plan published so far (plans.created, then plans.updated), in order."""
    created = collect(bootstrap, T.PLANS_CREATED.name, lambda r: r.key == pid, count=1, timeout=30)
    updated = collect(bootstrap, T.PLANS_UPDATED.name, lambda r: r.key == pid, count=10**9, timeout=timeout)
    return [r.value for r in created] + [r.value["plan"] for r in sorted(updated, key=lambda r: r.offset)]


def _reasons(bootstrap: str, topic: str, key: str, count: int) -> list[tuple[str, str]]:
    """(reason, detail) of the dead letters keyed `key` on `topic`, in order."""
    found = collect(bootstrap, topic, lambda r: r.key == key, count=count, timeout=60, settle=1.0)
    return [(r.headers["chimera.dlq.reason"], r.headers["chimera.dlq.detail"])
            for r in sorted(found, key=lambda r: r.offset)]


def test_feedback_and_approvals_are_checked_and_nothing_is_dropped_silently(kafka_bootstrap, worker):
    """Issue 6's contract against issue 7's moving versions: an approval applies only to the
    *current* version (read from plans.created/plans.updated, as a person's client would) of a
    PENDING plan; feedback only to a task handed out, in its current attempt, in a legal
    transition; everything refused is a dead letter with a precise reason, and a harmless
    repeat is counted."""
    run = uuid.uuid4().hex[:8]
    # goals made now: one made in the past is behind its own schedule at once and replanned for drift
    now_ms = int(time.time() * 1000)
    goal = _goal(f"live-{run}", created_at_ms=now_ms)    # low risk: auto-approved, dispatched at once
    late = _goal(f"wait-{run}", created_at_ms=now_ms, constraints={"deadline_ms": now_ms - HOUR_MS})  # PENDING
    pid, wpid = plan_id(goal["goal_id"]), plan_id(late["goal_id"])
    produce(kafka_bootstrap, T.GOALS_CREATED.name, [(goal["goal_id"], goal), (late["goal_id"], late)])
    first = collect(kafka_bootstrap, T.TASKS_ASSIGNED.name, lambda r: r.key == pid, count=1)
    assert [r.value["task"]["task_id"] for r in first] == ["a"]
    attempt = first[0].value["attempt"]

    def fb(task, status, attempt=None, plan=pid, n=0):
        return {"event_id": f"fb-{run}-{task}-{status}-{attempt}-{n}", "plan_id": plan, "task_id": task,
                "status": status, "reported_at_ms": int(time.time() * 1000), "attempt": attempt}

    def approval(version, plan=pid):
        return {"plan_id": plan, "version": version, "decision": "APPROVE", "by": "eve",
                "decided_at_ms": int(time.time() * 1000)}

    # feedback that cannot apply: each is a dead letter with its reason
    ghost = plan_id(f"ghost-{run}")
    produce(kafka_bootstrap, T.EXECUTION_FEEDBACK.name, [
        (pid, fb("b", "COMPLETED")),                 # forged: b was never assigned
        (pid, fb("zzz", "COMPLETED")),
        (pid, fb("a", "COMPLETED", attempt=attempt + 6)),
        (ghost, fb("a", "COMPLETED", plan=ghost)),
        (pid, fb("a", "PROGRESS", n=1) | {"progress_pct": math.nan}),
    ])
    reasons = [r.headers["chimera.dlq.reason"] for r in collect(
        kafka_bootstrap, T.EXECUTION_FEEDBACK.dlq, lambda r: r.key in (pid, ghost), count=5)]
    assert sorted(reasons) == sorted(["not_assigned", "unknown_task", "stale_attempt", "unknown_plan", "not_finite"])

    # approvals of the auto-approved plan: its current version is not PENDING, other versions are stale
    versions = _versions(kafka_bootstrap, pid)
    current = versions[-1]
    assert current["approval"] == "AUTO_APPROVED" and [v["version"] for v in versions] == list(
        range(1, current["version"] + 1)), "versions are published in order, none skipped"
    cur = current["version"]
    stale = [cur + 7] + ([cur - 1] if cur > 1 else [])
    produce(kafka_bootstrap, T.PLANS_APPROVALS.name, [(pid, approval(cur))] + [(pid, approval(v)) for v in stale]
            + [(f"not-{pid}", approval(cur))])
    wrong = (partition_for(pid.encode(), T.PLAN_PARTITIONS) + 1) % T.PLAN_PARTITIONS
    asyncio.run(_send_to_partition(kafka_bootstrap, T.PLANS_APPROVALS.name, pid, approval(cur), wrong))
    letters = _reasons(kafka_bootstrap, T.PLANS_APPROVALS.dlq, pid, count=2 + len(stale))
    assert sorted(r for r, _ in letters) == sorted(["not_pending", "wrong_partition"] + ["stale_version"] * len(stale))
    assert all(f"current version is {cur}" in d for r, d in letters if r == "stale_version"), letters
    assert [r for r, _ in _reasons(kafka_bootstrap, T.PLANS_APPROVALS.dlq, f"not-{pid}", 1)] == ["wrong_key"]
    assert _versions(kafka_bootstrap, pid)[-1]["version"] == cur, "refused approvals move no version"

    # the PENDING plan: only its current version can be approved, and only once
    waiting = _versions(kafka_bootstrap, wpid)
    assert waiting[-1]["approval"] == "PENDING", waiting[-1]
    assert not collect(kafka_bootstrap, T.TASKS_ASSIGNED.name, lambda r: r.key == wpid, count=1, timeout=2)
    wcur = waiting[-1]["version"]
    produce(kafka_bootstrap, T.PLANS_APPROVALS.name, [(wpid, approval(wcur + 1, wpid)), (wpid, approval(wcur, wpid))])
    approved = collect(kafka_bootstrap, T.PLANS_UPDATED.name,
                       lambda r: r.key == wpid and r.value["plan"]["approval"] == "APPROVED", count=1, timeout=30)
    assert approved and approved[0].value["plan"]["version"] == wcur + 1, "approving the current version is applied"
    assert approved[0].value["plan"]["reason"] == "approved by eve"
    assert collect(kafka_bootstrap, T.TASKS_ASSIGNED.name, lambda r: r.key == wpid, count=1, timeout=30), \
        "an approved plan dispatches"
    now = _versions(kafka_bootstrap, wpid)[-1]["version"]
    produce(kafka_bootstrap, T.PLANS_APPROVALS.name, [(wpid, approval(wcur, wpid)), (wpid, approval(now, wpid))])
    letters = _reasons(kafka_bootstrap, T.PLANS_APPROVALS.dlq, wpid, count=3)
    assert [r for r, _ in letters] == ["stale_version", "stale_version", "not_pending"], letters
    assert f"current version is {wcur}" in letters[0][1] and f"current version is {now}" in letters[1][1]

    # the real feedback: a STARTED then COMPLETED releases b, once; later reports for a are refused or counted
    dup_before = _metric(worker.metrics_port, "chimera_records_ignored_total", 'reason="duplicate_feedback"')
    produce(kafka_bootstrap, T.EXECUTION_FEEDBACK.name, [(pid, fb("a", "STARTED", attempt)),
                                                         (pid, fb("a", "COMPLETED", attempt))])
    after = collect(kafka_bootstrap, T.TASKS_ASSIGNED.name, lambda r: r.key == pid, count=2, settle=1.0)
    if [r.value["task"]["task_id"] for r in after] != ["a", "b"]:
        _explain(kafka_bootstrap, worker, pid)
    assert [r.value["task"]["task_id"] for r in after] == ["a", "b"], "the real COMPLETED releases b, once"
    produce(kafka_bootstrap, T.EXECUTION_FEEDBACK.name, [
        (pid, fb("a", "FAILED", attempt)),               # COMPLETED -> FAILED
        (pid, fb("a", "COMPLETED", attempt, n=1)),       # a second report of the same state: counted, harmless
        (pid, fb("a", "COMPLETED", attempt)),            # the very same feedback id again
    ])
    letters = _reasons(kafka_bootstrap, T.EXECUTION_FEEDBACK.dlq, pid, count=5)
    assert [r for r, _ in letters][-1:] == ["illegal_transition"] and len(letters) == 5, letters
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _metric(
            worker.metrics_port, "chimera_records_ignored_total", 'reason="duplicate_feedback"') < dup_before + 2:
        time.sleep(0.25)
    assert _metric(worker.metrics_port, "chimera_records_ignored_total",
                   'reason="duplicate_feedback"') == dup_before + 2, "repeats are counted, not dead-lettered"

    edited = dict(goal, title="edited title")   # an edited goal replans the live plan (issue 7)
    produce(kafka_bootstrap, T.GOALS_CREATED.name, [(goal["goal_id"], goal), (goal["goal_id"], edited)])
    replans = collect(kafka_bootstrap, T.PLANS_UPDATED.name,
                      lambda r: r.key == pid and r.value["trigger"] == "goal_changed", count=1)
    assert replans, "a changed goal is surfaced as a new version"
    assert _metric(worker.metrics_port, "chimera_records_ignored_total", 'reason="duplicate_goal"') >= 1


def _explain(bootstrap: str, worker: Worker, pid: str) -> None:
    """What the topics say about a plan (printed when the test fails)."""
    for topic in (T.PLANS_CREATED.name, T.PLANS_UPDATED.name, T.TASKS_ASSIGNED.name, T.EXECUTION_FEEDBACK.name,
                  T.EXECUTION_FEEDBACK.dlq, T.PLANS_TICK.name, T.PLANS_TICK.dlq, T.GOALS_BY_PLAN.dlq):
        for r in collect(bootstrap, topic, lambda r: r.key == pid, count=10**9, timeout=3):
            v = r.value if isinstance(r.value, dict) else {}
            print(topic, r.offset, r.headers.get("chimera.dlq.reason", ""), {k: v.get(k) for k in (
                "version", "trigger", "status", "task_id", "attempt", "event_id", "kind")},
                  (v.get("plan") or {}).get("version"), (v.get("task") or {}).get("task_id"))
    print(worker.log_tail(40))


def _metric(port: int, name: str, label: str = "") -> float:
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith((name + "{", name + " ")) and label in line)


def test_goal_past_its_deadline_is_planned_flagged_and_waits_for_a_person(kafka_bootstrap, worker):
    run = uuid.uuid4().hex[:8]
    late = _goal(f"late-{run}", created_at_ms=T0, constraints={"deadline_ms": T0 + 48 * HOUR_MS})
    produce(kafka_bootstrap, T.GOALS_CREATED.name, [(late["goal_id"], late)])
    plan = collect(kafka_bootstrap, T.PLANS_CREATED.name, lambda r: r.key == plan_id(late["goal_id"]), count=1)[0]
    assert plan.value["approval"] == "PENDING"
    assert any("deadline already passed" in v for v in plan.value["violations"])
    assert not collect(kafka_bootstrap, T.TASKS_ASSIGNED.name, lambda r: r.key == plan_id(late["goal_id"]),
                       count=1, timeout=3)


_BATCH = st.tuples(st.lists(records(T.GOALS_CREATED.name, big=False), min_size=3, max_size=6),
                   st.lists(records(T.RESOURCES_AVAILABILITY.name, big=False), max_size=3),
                   st.lists(records(T.EXECUTION_FEEDBACK.name, big=False), max_size=4),
                   st.lists(records(T.PLANS_APPROVALS.name, big=False), max_size=3))


@pytest.mark.slow
@settings(max_examples=4, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(batch=_BATCH)
def test_generated_records_end_in_a_plan_or_a_dead_letter(kafka_bootstrap, worker, batch):
    """Goals, resources, feedback and approvals generated from the Avro schemas (extreme
    numbers and sizes included) through the real worker."""
    goals, resources, feedback, approvals = batch
    run = uuid.uuid4().hex[:8]
    goals = [dict(g, goal_id=f"gen-{run}-{i}") for i, g in enumerate(goals)]
    resources = [dict(r, resource_id=f"genres-{run}-{i}") for i, r in enumerate(resources)]
    feedback = [dict(f, plan_id=f"genplan-{run}-f{i}") for i, f in enumerate(feedback)]
    approvals = [dict(a, plan_id=f"genplan-{run}-a{i}") for i, a in enumerate(approvals)]
    try:
        produce(kafka_bootstrap, T.GOALS_CREATED.name, [(g["goal_id"], g) for g in goals])
        produce(kafka_bootstrap, T.RESOURCES_AVAILABILITY.name, [(r["resource_id"], r) for r in resources])
        produce(kafka_bootstrap, T.EXECUTION_FEEDBACK.name, [(f["plan_id"], f) for f in feedback])
        produce(kafka_bootstrap, T.PLANS_APPROVALS.name, [(a["plan_id"], a) for a in approvals])
        want = {g["goal_id"] for g in goals}

        def planned_now(timeout):
            return {r.value["goal_id"] for r in collect(
                kafka_bootstrap, T.PLANS_CREATED.name, lambda r: r.value and r.value["goal_id"] in want,
                count=len(want), timeout=timeout)}

        planned = planned_now(3)
        refused = {r.key: r.headers["chimera.dlq.reason"] for r in collect(
            kafka_bootstrap, T.GOALS_CREATED.dlq, lambda r: r.key in want - planned, count=len(want - planned),
            timeout=30)}
        if planned | set(refused) != want:
            planned = planned_now(15)
        assert planned | set(refused) == want, f"lost goals: {want - planned - set(refused)}\n{worker.log_tail()}"
        assert all(refused.values())
        for topic, recs in ((T.EXECUTION_FEEDBACK, feedback), (T.PLANS_APPROVALS, approvals)):
            keys = {r["plan_id"] for r in recs}
            letters = collect(kafka_bootstrap, topic.dlq, lambda r: r.key in keys, count=len(keys), timeout=60)
            assert {r.key for r in letters} == keys, f"{topic.name}: none of these plans exist"
        _planned_at_once(kafka_bootstrap, worker, run)
        assert _rss_mb(worker.proc.pid) < 1024, "the worker's memory stays bounded"
    finally:
        produce(kafka_bootstrap, T.RESOURCES_AVAILABILITY.name, [(r["resource_id"], None) for r in resources])
