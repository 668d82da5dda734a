"""Workers of their own (no other worker of this module consumes the same topics, so
every output seen here is theirs): a state over the limit is refused whole, and a
stalled worker exits and is restarted by its supervisor."""
from __future__ import annotations

import os
import time
import uuid

import pytest

from processors.ids import plan_id
from streams import samples
from tests.e2e.test_hardening import T0, _goal, _task
from tests.kafka_helpers import collect, produce
from topics import registry as T

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def test_state_over_the_limit_is_refused_whole_with_nothing_published(kafka_bootstrap, planner_stack):
    w = planner_stack(PLANNING_REFINE_BUDGET_SECONDS=0, LIMITS_MAX_STATE_BYTES=1500)
    run = uuid.uuid4().hex[:8]
    big = samples.sample_goals(1, T0, prefix=f"big-{run}")[0]      # decomposed: ~5 KB of state
    small = _goal(f"small-{run}", [_task("a", 1)])
    produce(kafka_bootstrap, T.GOALS_CREATED.name, [(big["goal_id"], big), (small["goal_id"], small)])
    letter = collect(kafka_bootstrap, T.GOALS_CREATED.dlq, lambda r: r.key == big["goal_id"], count=1)
    assert letter and letter[0].headers["chimera.dlq.reason"] == "too_large", w.log_tail()
    assert collect(kafka_bootstrap, T.PLANS_CREATED.name, lambda r: r.key == plan_id(small["goal_id"]), count=1)
    for topic in (T.PLANS_CREATED.name, T.TASKS_ASSIGNED.name, T.RISKS_ALERTS.name):
        assert not collect(kafka_bootstrap, topic, lambda r: r.key == plan_id(big["goal_id"]), count=1, timeout=2)


def test_stalled_worker_exits_and_its_supervisor_restarts_it(kafka_bootstrap, planner_stack, tmp_path):
    """The stall is a named fault injection (CHIMERA_FAULT_STALL_GOAL): a real consumer stall
    (faust-streaming issues 175, 640) cannot be produced on demand."""
    run = uuid.uuid4().hex[:8]
    stall = f"stall-{run}"
    w = planner_stack(PLANNING_REFINE_BUDGET_SECONDS=0, CHIMERA_FAULT_STALL_GOAL=stall,
                      CHIMERA_WATCHDOG_INTERVAL_S=1, CHIMERA_WATCHDOG_STALL_S=6)
    w.supervise(backoff_s=0.5)
    produce(kafka_bootstrap, T.GOALS_CREATED.name, [(stall, _goal(stall))])
    deadline = time.monotonic() + 90
    while w.restarts < 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    log = w.log_path.read_text(errors="replace")
    assert w.restarts >= 1, log[-3000:]
    assert "unhealthy: " in log and "no progress" in log and "exited with 70" in log
    assert os.path.exists(f"/proc/{w.proc.pid}") and w.alive()


def test_a_partition_ending_in_a_transaction_marker_is_not_a_stall(kafka_bootstrap, planner_stack):
    """The executors write execution.feedback in transactions; each commit leaves a marker at
    the partition's end that no consumer receives, so the worker's committed offset stays one
    short of the high watermark. The watchdog took that for a stall and restarted an idle worker
    every `stall_s`. Feedback here is transactional (as an executor writes it), for a plan this
    worker never made (dead-lettered: the record is read and handled); the worker then idles for
    three stall periods and must still be the same process."""
    from confluent_kafka import Producer

    from topics.serde import serde
    w = planner_stack(PLANNING_REFINE_BUDGET_SECONDS=0, CHIMERA_WATCHDOG_INTERVAL_S=1, CHIMERA_WATCHDOG_STALL_S=4)
    w.supervise(backoff_s=0.5)
    run = uuid.uuid4().hex[:8]
    warm = _goal(f"warm-{run}", [_task("a", 1)])
    produce(kafka_bootstrap, T.GOALS_CREATED.name, [(warm["goal_id"], warm)])
    assert collect(kafka_bootstrap, T.PLANS_CREATED.name, lambda r: r.key == plan_id(warm["goal_id"]), count=1,
                   timeout=90), w.log_tail()
    pid = f"plan-tx-{run}"
    fb = {"event_id": f"{pid}:t:STARTED", "plan_id": pid, "task_id": "t", "status": "STARTED",
          "progress_pct": 0.0, "actual_hours": None, "message": "", "reported_at_ms": int(time.time() * 1000),
          "attempt": 1}
    p = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": f"test-executor-{run}"})
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(T.EXECUTION_FEEDBACK.name, key=pid.encode(), value=serde(T.EXECUTION_FEEDBACK.name).encode(fb))
    p.commit_transaction(30)
    del p                                                   # no producer outlives the test's broker
    assert collect(kafka_bootstrap, T.EXECUTION_FEEDBACK.dlq, lambda r: r.key == pid, count=1, timeout=60), \
        w.log_tail()
    time.sleep(14)                                          # > 3 x stall_s, with the marker last
    log = w.log_path.read_text(errors="replace")
    assert w.restarts == 0 and "unhealthy: " not in log, log[-3000:]


def test_the_probes_say_not_ready_with_the_reason_until_the_worker_owns_its_partitions(planner_stack):
    """The probe server answers before the Faust app starts, and the watchdog's first check
    comes an interval after it: /readyz is 503 with a reason first, 200 once the worker owns
    partitions of its sources; /healthz is 200 all along (a starting worker is not restarted)."""
    from tests.kafka_helpers import free_port
    from tests.probe_helpers import probe, wait_probe

    port = free_port()
    w = planner_stack(PLANNING_REFINE_BUDGET_SECONDS=0, CHIMERA_METRICS_PORT=port)
    code, body = wait_probe(port, "/readyz", lambda r: r[0] is not None, timeout=60)
    assert code == 503 and body["reasons"][0] in {
        "planner: no watchdog check yet (starting)", "planner: rebalancing",
        "planner: recovering its tables from their changelogs",
        "planner: owns no partition of its source topics"}, (code, body)
    assert probe(port, "/healthz")[0] == 200
    code, body = wait_probe(port, "/readyz", lambda r: r[0] == 200, timeout=90)
    assert code == 200, (body, w.log_tail())
    assert probe(port, "/healthz")[0] == 200
