"""Learned estimates in planning (issue 10): confident ones replace template durations,
failure probabilities become a risk, and everything survives Avro, state and refinement."""
from __future__ import annotations

import dataclasses

from processors import decomposition, estimates, lifecycle
from processors.config import PlanningConfig
from processors.model import Goal, LearnedEstimate
from streams import codec, state as state_codec
from topics import registry as T
from topics.serde import serde

CONFIG = PlanningConfig(refine_budget_seconds=1.0)
GOAL = Goal(goal_id="g-est", title="Launch billing API", created_at_ms=1_700_000_000_000, domain="software",
            objectives=("Design", "Build"))


def _tasks():
    return decomposition.decompose(GOAL, max_task_hours=CONFIG.default_task_timeout_hours).tasks


def learned(ratio_ok=True, failure=0.02):
    out = []
    for t in _tasks():
        m = t.duration_hours * 1.5
        low, high = (m * 0.8, m * 1.3) if ratio_ok else (m * 0.3, m * 3.0)
        out.append(LearnedEstimate(t.task_id, low, m, high, failure))
    return tuple(out)


def test_confident_estimates_replace_template_durations_and_wide_ones_do_not():
    tasks = _tasks()
    new, n = estimates.apply(tasks, learned(), CONFIG)
    assert n == len(tasks)
    assert all(abs(a.duration_hours - b.duration_hours * 1.5) < 1e-9 for a, b in zip(new, tasks))
    assert all(abs(a.estimate.optimistic - b.duration_hours * 1.2) < 1e-9 for a, b in zip(new, tasks))
    same, n = estimates.apply(tasks, learned(ratio_ok=False), CONFIG)
    assert n == 0 and same == tuple(tasks)


def test_unusable_estimates_are_ignored():
    t = _tasks()[0]
    bad = [LearnedEstimate(t.task_id, 2.0, 1.0, 3.0, 0.1),             # low > median
           LearnedEstimate(t.task_id, 1.0, float("nan"), 3.0, 0.1),
           LearnedEstimate(t.task_id, 1.0, 1.1, 1.2, 1.5)]              # not a probability
    for e in bad:
        assert estimates.apply([t], [e], CONFIG)[1] == 0


def test_on_goal_plans_with_learned_durations_records_the_source_and_refines_with_them():
    est = learned()
    state, events = lifecycle.on_goal(None, GOAL, {}, CONFIG, received_at_ms=GOAL.created_at_ms,
                                      estimates=est, estimates_source="estimator/2")
    plan = events[0].plan
    assert plan.estimates_source == "estimator/2"
    by_id = {e.task_id: e for e in est}
    assert all(abs(st.task.duration_hours - by_id[st.task.task_id].median) < 1e-9 for st in plan.tasks)
    refine = [e for e in events if isinstance(e, lifecycle.RefineRequested)][0]
    assert refine.goal.estimates == est
    # the refine request carries them through Avro, and the refiner plans the same durations
    rec = codec.records([refine])[0]
    s = serde(T.PLANS_REFINE.name)
    back = s.decode(s.encode(rec.value))
    assert codec.estimates_from_records(back["estimates"]) == est
    better = lifecycle.refine(refine.goal, {}, CONFIG)
    if better is not None:
        _, ev = lifecycle.on_refined(state, plan.plan_id, 1, better, CONFIG)
        assert ev[0].plan.estimates_source == "estimator/2"
    # the replayed goal is a duplicate whatever the estimator says now
    _, ev = lifecycle.on_goal(state, GOAL, {}, CONFIG, received_at_ms=GOAL.created_at_ms, estimates=())
    assert isinstance(ev[0], lifecycle.Ignored)


def test_goal_digest_ignores_estimates_and_is_unchanged_for_goals_without_them():
    with_est = dataclasses.replace(GOAL, estimates=learned())
    assert lifecycle.goal_digest(with_est) == lifecycle.goal_digest(GOAL)
    old_repr = repr(GOAL).replace(", estimates=())", ")")
    import hashlib
    assert lifecycle.goal_digest(GOAL) == hashlib.sha256(old_repr.encode()).hexdigest()[:32]


def test_failure_probability_feeds_the_risk_model():
    _, events = lifecycle.on_goal(None, GOAL, {}, CONFIG, received_at_ms=GOAL.created_at_ms,
                                  estimates=learned(failure=0.6))
    risks = {r.risk_id: r for r in events[0].plan.risks}
    r = risks["technical-learned-failure"]
    assert r.probability > 0.6 and set(r.task_ids) == {t.task_id for t in _tasks()}
    _, events = lifecycle.on_goal(None, GOAL, {}, CONFIG, received_at_ms=GOAL.created_at_ms,
                                  estimates=learned(failure=0.01))
    assert "technical-learned-failure" not in {r.risk_id for r in events[0].plan.risks}


def test_estimates_source_round_trips_and_old_records_read_as_heuristic():
    _, events = lifecycle.on_goal(None, GOAL, {}, CONFIG, received_at_ms=GOAL.created_at_ms,
                                  estimates_source="heuristic:fallback")
    s = serde(T.PLANS_CREATED.name)
    rec = codec.plan_record(events[0].plan)
    assert codec.plan_from_record(s.decode(s.encode(rec))).estimates_source == "heuristic:fallback"
    del rec["estimates_source"]
    assert codec.plan_from_record(rec).estimates_source == "heuristic"


def test_state_keeps_the_planned_goal_with_its_estimates():
    g = dataclasses.replace(GOAL, estimates=learned())
    assert state_codec.goal_back(state_codec.goal_json(g)) == g
    assert "le" not in state_codec.goal_json(GOAL)
