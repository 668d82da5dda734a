"""The executor on the real broker: assignments in, tasks run in the sandbox, feedback out,
each task's terminal feedback exactly once, also across a kill -9 mid-task."""
from __future__ import annotations

import asyncio
import json
import itertools
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Producer

from executor.build import toolchain_missing
from processors import ids
from tests.executor_helpers import (Executors, Feedback, assignment as _assignment, ends as _ends,
                                    produce_assignments as _produce, task as _task, tombstone)
from tests.kafka_helpers import free_port
from tests.probe_helpers import probe, wait_probe
from topics import registry as T
from topics.serde import serde

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(toolchain_missing() is not None and not os.environ.get("CI"),
                                 reason=f"WASI toolchain: {toolchain_missing()} (run `make modules`)")]
REPO = Path(__file__).resolve().parents[2]
_n = itertools.count()


@pytest.fixture
def executors(kafka_bootstrap, tmp_path):
    """Executors sharing one consumer group and running unassigned tasks (no planner here)."""
    from streams import client
    from topics.admin import create_topics
    asyncio.run(create_topics(kafka_bootstrap))
    group = f"executors-test-{os.getpid()}-{next(_n)}"
    asyncio.run(client.commit_at_end(kafka_bootstrap, group, [T.TASKS_ASSIGNED.name]))
    factory = Executors(kafka_bootstrap, tmp_path)
    yield lambda executor_id, slots=2, args=(), env=None: factory(
        executor_id, slots, args=("--group", group, "--unassigned", *args), env=env)
    factory.close()


def test_assigned_tasks_run_and_report_exactly_once(kafka_bootstrap, executors):
    start = _ends(kafka_bootstrap, T.EXECUTION_FEEDBACK.name)
    plans = {ids.plan_id(f"exec-e2e-{os.getpid()}-{next(_n)}-{i}") for i in range(4)}
    records = []
    for plan in sorted(plans):
        records += [_assignment(plan, _task("check", "Validate the input data", phase="data")),
                    _assignment(plan, _task("build", "Implement it", phase="build")),
                    _assignment(plan, _task("tests", "Run the tests", phase="test")),
                    _assignment(plan, _task("crunch", "Crunch numbers", description="wasm: compute 200000 2")),
                    _assignment(plan, _task("bad", "Loop", description="wasm: no-such-module"))]
    fb = Feedback(kafka_bootstrap, start, plans)
    port = free_port()
    executors("exec-a", slots=2, env={"CHIMERA_METRICS_PORT": str(port)})
    # the probes k8s asks (infra/k8s/executor.yaml): live, and ready once it owns tasks.assigned
    ready = wait_probe(port, "/readyz", lambda r: r[0] == 200, timeout=60)
    assert ready == (200, {"status": "ready", "components": ["executor"], "reasons": []}), ready
    assert probe(port, "/healthz")[0] == 200
    _produce(kafka_bootstrap, records)
    want = 5 * len(plans)
    got = fb.poll_until(lambda rs: sum(fb.terminal().values()) >= want, timeout=120, settle=3.0)
    fb.close()
    term = fb.terminal()
    assert sum(term.values()) == want, term
    assert all(n == 1 for n in term.values()), term
    by = {(r["plan_id"], r["task_id"], r["status"]): r for r in got}
    for plan in plans:
        for task in ("check", "build", "tests", "crunch"):
            assert (plan, task, "COMPLETED") in by, (task, [r for r in got if r["task_id"] == task])
            assert (plan, task, "STARTED") in by
        assert by[(plan, "bad", "FAILED")]["message"].startswith("module_not_found")
        summary = json.loads(by[(plan, "crunch", "COMPLETED")]["message"])["summary"]
        assert json.loads(summary) == {"n": 200000, "primes": 17984, "rounds": 2}
        assert any(r["status"] == "PROGRESS" and r["task_id"] == "crunch" and r["plan_id"] == plan for r in got)
    ev = Counter(r["event_id"] for r in got)
    assert all(n == 1 for n in ev.values())
    assert probe(port, "/readyz")[0] == 200 and probe(port, "/healthz")[0] == 200


def test_an_executor_without_its_broker_is_live_but_not_ready_with_the_reason(tmp_path):
    """Nothing listens at its bootstrap: the process serves its probes, /healthz is 200 (a restart
    would not bring the broker), /readyz is 503 naming the group it could not join."""
    port = free_port()
    factory = Executors(f"127.0.0.1:{free_port()}", tmp_path)
    proc = factory("exec-nobroker", env={"CHIMERA_METRICS_PORT": str(port)})
    try:
        code, body = wait_probe(port, "/readyz", lambda r: "owns no partition" in str(r[1]), timeout=30)
        assert code == 503 and body["reasons"] == [
            f"executor: owns no partition of {T.TASKS_ASSIGNED.name} in group chimera-executor.exec-nobroker (yet)"
        ], body
        assert probe(port, "/healthz") == (200, {"status": "live", "components": ["executor"], "reasons": []})
    finally:
        proc.kill()
        proc.wait(10)           # nothing was announced (no broker): nothing to tombstone


def test_kill_9_mid_task_never_publishes_a_completed_twice(kafka_bootstrap, executors):
    start = _ends(kafka_bootstrap, T.EXECUTION_FEEDBACK.name)
    plan = ids.plan_id(f"exec-kill-{os.getpid()}-{next(_n)}")
    # one partition (one plan): a long task first, short ones after it that finish while it runs
    records = [_assignment(plan, _task("long", "Crunch", description="wasm: compute 1000000 150"))]
    records += [_assignment(plan, _task(f"short{i}", "Run the tests", phase="test")) for i in range(3)]
    fb = Feedback(kafka_bootstrap, start, {plan})
    first = executors("exec-k", slots=2)
    _produce(kafka_bootstrap, records)
    # the long task and the first short one have started (STARTED is published at once)
    fb.poll_until(lambda rs: {"long", "short0"} <= {r["task_id"] for r in rs if r["status"] == "STARTED"},
                  timeout=60)
    assert {"long", "short0"} <= {r["task_id"] for r in fb.records if r["status"] == "STARTED"}, fb.records
    time.sleep(1.0)                     # short0 finished by now; long still runs
    assert first.poll() is None
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    # nothing terminal was committed: short0 finished, but waits behind the unfinished long task
    assert not fb.terminal(), fb.terminal()
    executors("exec-k", slots=2)        # the same executor comes back
    fb.poll_until(lambda rs: len(fb.terminal()) >= 4, timeout=120, settle=5.0)
    fb.close()
    term = fb.terminal()
    assert term == Counter({(plan, t, "COMPLETED"): 1 for t in ("long", "short0", "short1", "short2")}), term
    started = Counter(r["task_id"] for r in fb.records if r["status"] == "STARTED")
    assert started["long"] == 2         # it really ran twice: killed once, then to the end


def test_runs_only_what_is_assigned_to_it_and_refuses_a_missing_capability(kafka_bootstrap, tmp_path):
    """Routing: an executor in its own consumer group runs the assignments that name it,
    leaves those of another executor alone, and refuses (FAILED missing_capability) one that
    needs a capability it lacks; the deadline is its wall-time limit (timeout)."""
    from streams import client
    from topics.admin import create_topics
    asyncio.run(create_topics(kafka_bootstrap))
    me, other = f"ex-route-{os.getpid()}-{next(_n)}", f"ex-other-{os.getpid()}"
    asyncio.run(client.commit_at_end(kafka_bootstrap, f"chimera-executor.{me}", [T.TASKS_ASSIGNED.name]))
    plan = ids.plan_id(f"exec-route-{os.getpid()}-{next(_n)}")
    now = int(time.time() * 1000)

    def to(task: dict, who: str | None, caps=(), deadline_ms=None) -> dict:
        a = _assignment(plan, dict(task, capabilities=list(caps)))
        return dict(a, assigned_to=who, deadline_ms=deadline_ms)
    records = [to(_task("mine", "Run the tests", phase="test"), me, caps=["qa"]),
               to(_task("theirs", "Run the tests", phase="test"), other),
               to(_task("nobody", "Run the tests", phase="test"), None),
               to(_task("lacking", "Run the tests", phase="test"), me, caps=["qa", "gpu"]),
               to(_task("slow", "Crunch", description="wasm: compute 1000000 100000"), me,
                  deadline_ms=now + 1500)]   # well before its fuel (2e10) runs out, even on a quiet machine
    fb = Feedback(kafka_bootstrap, _ends(kafka_bootstrap, T.EXECUTION_FEEDBACK.name), {plan})
    factory = Executors(kafka_bootstrap, tmp_path)
    try:
        factory(me, 2, capabilities=["wasm", "qa"])
        _produce(kafka_bootstrap, records)
        fb.poll_until(lambda rs: len(fb.terminal()) >= 3, timeout=60, settle=3.0)
    finally:
        fb.close()
        factory.close()
    term = {t: (s, r["message"]) for r in fb.records for t, s in [(r["task_id"], r["status"])]
            if s in ("COMPLETED", "FAILED")}
    assert set(term) == {"mine", "lacking", "slow"}, term
    assert term["mine"][0] == "COMPLETED"
    assert term["lacking"][0] == "FAILED" and term["lacking"][1].startswith("missing_capability: gpu")
    assert term["slow"][0] == "FAILED" and term["slow"][1].startswith("timeout"), term["slow"]
    assert not [r for r in fb.records if r["task_id"] in ("theirs", "nobody")]


def test_an_unreadable_assignment_is_dead_lettered_once_per_executor_and_the_next_one_runs(tmp_path):
    """Garbage on tasks.assigned goes to tasks.assigned.dlq with its reason, its source and the
    executor that read it (each executor reads every assignment in its own group), in the
    transaction that moves the offset past it; the assignment after it runs as usual. On its own
    broker: the garbage would otherwise sit on the session's tasks.assigned for every later test."""
    from infra.kafka import KafkaBroker
    from streams import client
    from tests.kafka_helpers import collect, produce
    from topics.admin import create_topics
    with KafkaBroker() as broker:
        kafka_bootstrap = broker.bootstrap
        asyncio.run(create_topics(kafka_bootstrap))
        me = f"ex-dlq-{os.getpid()}-{next(_n)}"
        asyncio.run(client.commit_at_end(kafka_bootstrap, f"chimera-executor.{me}", [T.TASKS_ASSIGNED.name]))
        plan = ids.plan_id(f"exec-dlq-{os.getpid()}-{next(_n)}")
        garbage = {f"{plan}-json": b'{"plan_id": "x"}', f"{plan}-id": b"\x00\x00\x00\x00\x07 not avro at all"}
        fb = Feedback(kafka_bootstrap, _ends(kafka_bootstrap, T.EXECUTION_FEEDBACK.name), {plan})
        factory = Executors(kafka_bootstrap, tmp_path)
        try:
            factory(me, 1, capabilities=["wasm", "qa"])
            produce(kafka_bootstrap, T.TASKS_ASSIGNED.name, list(garbage.items()))
            _produce(kafka_bootstrap, [dict(_assignment(plan, _task("after", "Run the tests", phase="test")),
                                            assigned_to=me)])
            fb.poll_until(lambda rs: len(fb.terminal()) >= 1, timeout=60, settle=1.0)
            letters = collect(kafka_bootstrap, T.TASKS_ASSIGNED.dlq, lambda r: r.key in garbage, count=2,
                              timeout=30, settle=1.0)
        finally:
            fb.close()
            factory.close()
        assert fb.terminal() == Counter({(plan, "after", "COMPLETED"): 1}), fb.terminal()
        assert sorted(r.key for r in letters) == sorted(garbage), "each garbage record dead-lettered once"
        for r in letters:
            assert r.raw == garbage[r.key], "the raw bytes are kept"
            assert r.headers["chimera.dlq.reason"] in ("not_avro", "unknown_schema_id", "schema_mismatch")
            assert r.headers["chimera.source.topic"] == T.TASKS_ASSIGNED.name
            assert r.headers["chimera.dlq.consumer"] == me


def test_every_slot_busy_pauses_the_partitions_and_a_free_slot_resumes_them(kafka_bootstrap, tmp_path):
    """Backpressure: an executor whose one slot is busy stops taking assignments and pauses its
    partitions (it keeps polling, so it stays in its group); when the slot frees it resumes
    and runs the rest, each exactly once."""
    import threading
    from executor.service import Executor, ExecutorConfig
    from streams import client
    from topics.admin import create_topics
    asyncio.run(create_topics(kafka_bootstrap))
    me = f"ex-pause-{os.getpid()}-{next(_n)}"
    asyncio.run(client.commit_at_end(kafka_bootstrap, f"chimera-executor.{me}", [T.TASKS_ASSIGNED.name]))
    plan = ids.plan_id(f"exec-pause-{os.getpid()}-{next(_n)}")
    records = [_assignment(plan, _task(f"crunch{i}", "Crunch", description="wasm: compute 1000000 60"))
               for i in range(3)]
    fb = Feedback(kafka_bootstrap, _ends(kafka_bootstrap, T.EXECUTION_FEEDBACK.name), {plan})
    ex = Executor(ExecutorConfig(kafka_bootstrap, executor_id=me, slots=1, unassigned=True, heartbeat_s=1.0,
                                 work_root=tmp_path, control=False, pause_after_s=0.1))
    stop = threading.Event()
    runner = threading.Thread(target=ex.run, args=(stop,), daemon=True)
    runner.start()
    seen: list[tuple[bool, int]] = []      # (paused, tasks running) while the work goes on
    try:
        _produce(kafka_bootstrap, records)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(fb.terminal()) < 3:
            seen.append((ex.paused, ex.cfg.slots - ex.pool.free))
            fb.poll(0.05)
        fb.poll_until(lambda rs: False, timeout=1.0)      # anything published twice would show now
    finally:
        stop.set()
        runner.join(30)
        fb.close()
        tombstone(kafka_bootstrap, [me])   # the session's later tests must not see this executor as a resource
    assert fb.terminal() == Counter({(plan, f"crunch{i}", "COMPLETED"): 1 for i in range(3)}), fb.terminal()
    assert any(paused for paused, _ in seen), "the partitions were paused while the slot was busy"
    assert max(running for _, running in seen) == 1, "never more tasks running than slots"
    assert not ex.paused, "resumed once the slot was free"


def test_hostile_modules_fail_with_their_reasons_and_the_executor_keeps_consuming(kafka_bootstrap, tmp_path):
    """The sandbox's "Done when" through the running service: assignments whose modules are an
    infinite loop, a memory bomb, a recursion bomb, a file escape, an unknown host import and
    10 MB of output each end with one terminal feedback carrying the sandbox's reason, and a good
    task behind them (same partition, so its offset commits only after theirs) still COMPLETES.
    Two executors, because fuel is an executor's setting: `ex-fuel` (2e8 instructions, 32 MB)
    stops the loop by fuel, `ex-clock` (fuel without end, 3 s of wall time) by its deadline."""
    from streams import client
    from topics.admin import create_topics
    asyncio.run(create_topics(kafka_bootstrap))
    run = f"{os.getpid()}-{next(_n)}"
    fuel, clock = f"ex-fuel-{run}", f"ex-clock-{run}"
    for who in (fuel, clock):
        asyncio.run(client.commit_at_end(kafka_bootstrap, f"chimera-executor.{who}", [T.TASKS_ASSIGNED.name]))
    (tmp_path / fuel).mkdir()
    secret = tmp_path / fuel / "secret.txt"        # beside the executor's task folders, not in one
    secret.write_text("TOPSECRET\n")
    plan = ids.plan_id(f"exec-hostile-{run}")
    hostile = {"loop-fuel": (fuel, "wasm: loop"), "membomb": (fuel, "wasm: membomb"),
               "recursion": (fuel, "wasm: recursion"), "escape": (fuel, f"wasm: escape {secret}"),
               "import": (fuel, "wasm: unknown-import"), "spew": (fuel, "wasm: spew"),
               "loop-time": (clock, "wasm: loop")}
    records = [dict(_assignment(plan, _task(t, name)), assigned_to=who) for t, (who, name) in hostile.items()]
    records += [dict(_assignment(plan, _task(f"good-{who}", "Run the tests", phase="test")), assigned_to=who)
                for who in (fuel, clock)]
    fb = Feedback(kafka_bootstrap, _ends(kafka_bootstrap, T.EXECUTION_FEEDBACK.name), {plan})
    factory = Executors(kafka_bootstrap, tmp_path)
    try:
        procs = [factory(fuel, 4, args=("--fuel", str(2 * 10**8), "--memory-mb", "32"),
                         entry="tests.hostile_executor"),
                 factory(clock, 2, args=("--fuel", str(10**15), "--timeout-s", "3"), entry="tests.hostile_executor")]
        _produce(kafka_bootstrap, records)
        fb.poll_until(lambda rs: len(fb.terminal()) >= len(records), timeout=120, settle=3.0)
        alive = [p.poll() is None for p in procs]
    finally:
        fb.close()
        factory.close()
    term = fb.terminal()
    assert all(n == 1 for n in term.values()), term
    end = {r["task_id"]: r for r in fb.records if r["status"] in ("COMPLETED", "FAILED", "CANCELLED")}
    assert set(end) == set(hostile) | {f"good-{fuel}", f"good-{clock}"}, sorted(end)
    reasons = {"loop-fuel": "out_of_fuel", "loop-time": "timeout", "membomb": "out_of_memory",
               "recursion": "trap", "import": "unknown_import", "spew": "output_limit"}
    for t, reason in reasons.items():
        assert end[t]["status"] == "FAILED" and end[t]["message"].startswith(reason + ":"), (t, end[t]["message"])
    assert "launch_missiles" in end["import"]["message"]
    # the escape is no failure of the sandbox: every open outside `/` is refused inside the module,
    # which exits 0 only when nothing leaked (9 if it could read anything) and prints DENIED last
    assert end["escape"]["status"] == "COMPLETED", end["escape"]
    assert end["escape"]["produced"]["exit_status"] == 0
    assert json.loads(end["escape"]["message"])["summary"] == f"DENIED {secret}"
    assert not [r for r in fb.records if "TOPSECRET" in (r["message"] or "")]
    for who in (fuel, clock):
        good = end[f"good-{who}"]
        assert good["status"] == "COMPLETED" and json.loads(good["message"])["executor"] == who, good["message"]
    assert alive == [True, True], "both executors still ran after their hostile tasks"


def test_a_stop_of_every_plan_interrupts_two_plans_within_a_second_and_nothing_starts_until_resume(
        kafka_bootstrap, executors):
    """control.commands' STOP for all plans (key `*`, plan_id null) interrupts the running sandboxes
    of two plans (CANCELLED within a second of the stop); an assignment that arrives while every
    plan is stopped is answered CANCELLED without starting; after RESUME a new one runs. The
    RESUME is sent whatever happens: the broker and its control topic are the session's."""
    from streams import codec
    from tests.kafka_helpers import produce
    run = f"{os.getpid()}-{next(_n)}"
    a, b, held, after = (ids.plan_id(f"exec-stopall-{run}-{x}") for x in ("a", "b", "held", "after"))
    now = lambda: int(time.time() * 1000)  # noqa: E731

    def control(command: str) -> int:
        rec = codec.control_record(command, None, reason="stop-all test", by="pytest", at_ms=now())
        produce(kafka_bootstrap, rec.topic, [(rec.key, rec.value)])
        return now()

    fb = Feedback(kafka_bootstrap, _ends(kafka_bootstrap, T.EXECUTION_FEEDBACK.name), {a, b, held, after})
    executors(f"exec-stopall-{run}", slots=2)
    resumed_ms = None
    try:
        _produce(kafka_bootstrap, [_assignment(p, _task("forever", "wasm: compute 1000000 100000")) for p in (a, b)])
        fb.poll_until(lambda rs: {a, b} <= {r["plan_id"] for r in rs if r["status"] == "STARTED"}, timeout=60)
        assert {a, b} <= {r["plan_id"] for r in fb.records if r["status"] == "STARTED"}, fb.records
        time.sleep(0.5)
        stopped_ms = control("STOP")
        fb.poll_until(lambda rs: {a, b} <= {r["plan_id"] for r in rs if r["status"] == "CANCELLED"}, timeout=10)
        _produce(kafka_bootstrap, [_assignment(held, _task("check", "Run the tests", phase="test"))])
        fb.poll_until(lambda rs: any(r["plan_id"] == held and r["status"] == "CANCELLED" for r in rs), timeout=20,
                      settle=2.0)
        during = [r for r in fb.records if r["status"] == "STARTED" and r["_ts"] >= stopped_ms]
    finally:
        resumed_ms = control("RESUME")
    _produce(kafka_bootstrap, [_assignment(after, _task("check", "Run the tests", phase="test"))])
    fb.poll_until(lambda rs: any(r["plan_id"] == after and r["status"] == "COMPLETED" for r in rs), timeout=60)
    fb.close()
    end = {r["plan_id"]: r for r in fb.records if r["status"] in ("COMPLETED", "FAILED", "CANCELLED")}
    for p in (a, b):
        took = end[p]["_ts"] - stopped_ms
        assert end[p]["status"] == "CANCELLED" and ", after " in end[p]["message"], end[p]
        assert took < 1000, f"plan {p}'s running sandbox was interrupted and reported {took} ms after the stop"
        assert "stop by pytest" in end[p]["message"]
    assert end[held]["status"] == "CANCELLED" and "not started" in end[held]["message"], end[held]
    assert during == [], "nothing started while every plan was stopped"
    assert end[after]["status"] == "COMPLETED"
    started_after = [r for r in fb.records if r["plan_id"] == after and r["status"] == "STARTED"]
    assert started_after and started_after[0]["_ts"] >= resumed_ms - 50
    assert fb.terminal() == Counter({(a, "forever", "CANCELLED"): 1, (b, "forever", "CANCELLED"): 1,
                                     (held, "check", "CANCELLED"): 1, (after, "check", "COMPLETED"): 1})


def _pool_members(bootstrap: str, group: str) -> dict[str, set[int]]:
    """The members of a consumer group and the tasks.assigned partitions each owns now."""
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        desc = admin.describe_consumer_groups([group])[group].result(10)
    except Exception:   # the group does not exist yet
        return {}
    if str(desc.state).rsplit(".", 1)[-1] != "STABLE":
        return {}
    return {m.client_id: {tp.partition for tp in m.assignment.topic_partitions} for m in desc.members}


def test_two_executors_of_one_pool_share_its_tasks_and_refuse_what_no_member_can_run(kafka_bootstrap, tmp_path):
    """--pool: the pool's assignments reach its members through the pool's shared consumer group,
    so each runs on exactly one member (both members run some: one per partition here), while an
    assignment to a member by id still reaches that member through its own group. An assignment
    to the pool needing a capability no member has is refused (FAILED missing_capability)."""
    from streams import client
    from topics.admin import create_topics
    asyncio.run(create_topics(kafka_bootstrap))
    run = f"{os.getpid()}-{next(_n)}"
    pool, a, b = f"pool-{run}", f"ex-pool-a-{run}", f"ex-pool-b-{run}"
    for group in (f"chimera-executor.{a}", f"chimera-executor.{b}", f"chimera-executor-pool.{pool}"):
        asyncio.run(client.commit_at_end(kafka_bootstrap, group, [T.TASKS_ASSIGNED.name]))
    parts = T.TASKS_ASSIGNED.partitions
    plans = [ids.plan_id(f"exec-pool-{run}-{p}") for p in range(parts)]

    def to(plan: str, task: dict, who: str, caps=("qa",)) -> dict:
        return dict(_assignment(plan, dict(task, capabilities=list(caps))), assigned_to=who)
    records: list[tuple[int, dict]] = []          # every partition gets pool work, so both members do
    for p, plan in enumerate(plans):
        records += [(p, to(plan, _task(f"t{i}", "Crunch", description="wasm: compute 200000 2"), pool))
                    for i in range(3)]
    records += [(0, to(plans[0], _task("gpu", "Run the tests", phase="test"), pool, caps=("qa", "gpu"))),
                (1, to(plans[1], _task("by-id", "Run the tests", phase="test"), b))]
    fb = Feedback(kafka_bootstrap, _ends(kafka_bootstrap, T.EXECUTION_FEEDBACK.name), set(plans))
    factory = Executors(kafka_bootstrap, tmp_path)
    try:
        for me in (a, b):
            factory(me, 2, capabilities=["wasm", "qa"], args=("--pool", pool))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:            # both members joined the pool's group
            members = _pool_members(kafka_bootstrap, f"chimera-executor-pool.{pool}")
            if len(members) == 2 and all(members.values()):
                break
            time.sleep(0.5)
        assert len(members) == 2 and all(members.values()), members
        p = Producer({"bootstrap.servers": kafka_bootstrap})
        s = serde(T.TASKS_ASSIGNED.name)
        for part, r in records:
            p.produce(T.TASKS_ASSIGNED.name, key=r["plan_id"].encode(), value=s.encode(r), partition=part)
        assert p.flush(30) == 0
        fb.poll_until(lambda rs: sum(fb.terminal().values()) >= len(records), timeout=120, settle=3.0)
    finally:
        fb.close()
        factory.close()
    term = fb.terminal()
    assert sum(term.values()) == len(records) and all(n == 1 for n in term.values()), term
    started = Counter((r["plan_id"], r["task_id"]) for r in fb.records if r["status"] == "STARTED")
    assert all(n == 1 for n in started.values()), started          # no task ran twice
    done = {(r["plan_id"], r["task_id"]): r for r in fb.records if r["status"] == "COMPLETED"}
    ran_by = Counter(json.loads(done[(plan, f"t{i}")]["message"])["executor"] for plan in plans for i in range(3))
    assert set(ran_by) == {a, b} and sum(ran_by.values()) == 3 * parts, ran_by
    assert json.loads(done[(plans[1], "by-id")]["message"])["executor"] == b
    refused = [r for r in fb.records if r["task_id"] == "gpu" and r["status"] == "FAILED"]
    assert len(refused) == 1 and refused[0]["message"].startswith("missing_capability: gpu"), refused
