"""The decomposer's history of plans the planner's own lifecycle ran (processors.lifecycle, the
records it publishes as the sink decodes them, stored by the sink's rows_for): a completed plan
becomes a pair with its final task list and the executors' hours, a cancelled one does not.
(A module of its own: chdb opens one folder per process at a time.)"""
from __future__ import annotations

import json

import pytest

from tests import sinks_fixtures as F
from topics import registry as T

pytestmark = [pytest.mark.integration]

pytest.importorskip("torch")   # the answer's format lives with the model code (decomposer_net)

H = F.H


def _lifecycle(goal_id: str, cancel_after: int | None = None) -> list[tuple[str, dict]]:
    """A sample goal (budget and deadline generous) through the planner's own lifecycle: every task
    handed out reports COMPLETED (1.5 h) until the plan ends, or CANCEL after `cancel_after` tasks.
    The records the pipeline would publish, as the sink would decode them."""
    from processors import lifecycle as L
    from processors.config import PlanningConfig
    from sinks.clickhouse import SOURCE_TOPICS
    from streams import codec, samples
    from topics.serde import serde
    cfg = PlanningConfig(refine_budget_seconds=0)
    rec = {**samples.sample_goals(1, F.T0)[0], "goal_id": goal_id}
    rec["constraints"].update(budget=1e6, deadline_ms=F.T0 + 10_000 * H)
    state, events = L.on_goal(None, codec.goal_from_record(rec), {}, cfg, received_at_ms=F.T0)
    out, now, done = [(T.GOALS_CREATED.name, rec)] + [(o.topic, o.value) for o in codec.records(events)], F.T0, 0
    pid = state.plan.plan_id
    while state.status is L.PlanStatus.ACTIVE and done != cancel_after:
        for tid in [t for t, r in state.runs.items() if r.status is L.RunStatus.ASSIGNED][:1]:
            now += 60_000
            state, events = L.on_feedback(state, L.Feedback(pid, tid, "COMPLETED", now, state.runs[tid].attempt,
                                                            100.0, 1.5), cfg)
            out += [(T.EXECUTION_FEEDBACK.name, F.feedback(pid, tid, "COMPLETED", 1.5, at_ms=now))]
            out += [(o.topic, o.value) for o in codec.records(events)]
            done += 1
    if cancel_after is not None:
        state, events = L.on_control(state, L.Control("CANCEL", pid, "test", "bob", now + 1), cfg)
        out += [(o.topic, o.value) for o in codec.records(events)]
    assert state.status is (L.PlanStatus.CANCELLED if cancel_after is not None else L.PlanStatus.COMPLETED)
    return [(t, serde(t).decode(serde(t).encode(v))) for t, v in out if t in SOURCE_TOPICS]


def test_the_planners_own_completed_plan_becomes_a_pair_and_its_cancelled_one_does_not(tmp_path):
    from sinks.base import SinkRecord
    from triton_models import decomposer_history as D
    recs = _lifecycle("g-run") + _lifecycle("g-stop", cancel_after=3)
    final = [v["plan"] for t, v in recs if t == T.PLANS_UPDATED.name and v["plan"]["goal_id"] == "g-run"][-1]
    s = F.filled_store(tmp_path / "ch", [SinkRecord(t, 0, i, None, v, None, {}, F.T0 + i)
                                         for i, (t, v) in enumerate(recs)])
    try:
        got = D.from_clickhouse(s, log=pytest.fail)
    finally:
        s.close()
    assert [g["goal_id"] for g, _ in got] == ["g-run"]
    tasks = json.loads(got[0][1])["tasks"]
    assert sorted(t["name"] for t in tasks) == sorted(t["name"] for t in final["tasks"]) and len(tasks) > 10
    assert {t["duration_hours"] for t in tasks} == {1.5}              # what the executors reported
