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
