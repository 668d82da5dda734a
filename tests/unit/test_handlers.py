"""The planner agent's decisions, without Kafka: state in, messages out."""
import dataclasses

import pytest

from processors.config import PlanningConfig
from processors.ids import plan_id
from processors.model import ApprovalState
from streams import codec, handlers, samples
from topics import registry as T
from topics.serde import serde

CFG = PlanningConfig(refine_budget_seconds=0)


def _explicit(goal_id="g1", deadline_h=None):
    r = {"goal_id": goal_id, "title": "t", "created_at_ms": 1_700_000_000_000,
         "tasks": [{"task_id": "a", "name": "a", "duration_hours": 2},
                   {"task_id": "b", "name": "b", "duration_hours": 3, "depends_on": ["a"]},
                   {"task_id": "c", "name": "c", "duration_hours": 1, "depends_on": ["a"]}]}
    if deadline_h:
        r["constraints"] = {"deadline_ms": r["created_at_ms"] + int(deadline_h * 3_600_000)}
    return serde(T.GOALS_CREATED.name).decode(serde(T.GOALS_CREATED.name).encode(r))


def _first(record, config=CFG):
    return handlers.on_goal(codec.goal_from_record(record), record, None, {}, config), None


def _topics(step):
    return [o.topic for o in step.out]


def test_every_output_encodes_with_its_topic_schema_and_decodes_back():
    for record in samples.sample_goals(5, 1_700_000_000_000):
        step, _ = _first(serde(T.GOALS_CREATED.name).decode(serde(T.GOALS_CREATED.name).encode(record)))
        for o in step.out:
            assert serde(o.topic).decode(serde(o.topic).encode(o.value)) == o.value


def test_plan_record_round_trips_through_the_domain():
    step, _ = _first(samples.sample_goals(1, 1_700_000_000_000)[0])
    rec = step.state["plan"]
    assert codec.plan_record(codec.plan_from_record(rec)) == rec


def test_low_risk_plan_is_auto_approved_and_hands_out_roots():
    step, _ = _first(_explicit())
    assert _topics(step) == [T.PLANS_CREATED.name, T.TASKS_ASSIGNED.name]
    assert step.out[0].value["approval"] == "AUTO_APPROVED"
    assert step.out[1].value["task"]["task_id"] == "a" and step.state["assigned"] == ["a"]


def test_duplicate_goal_changes_nothing():
    rec = _explicit()
    step, _ = _first(rec)
    again = handlers.on_goal(codec.goal_from_record(rec), rec, step.state, {}, CFG)
    assert again.out == [] and "duplicate" in again.ignored


def test_pending_plan_alerts_then_approval_assigns():
    step, _ = _first(_explicit(deadline_h=3))
    assert step.state["plan"]["approval"] == "PENDING"
    assert T.RISKS_ALERTS.name in _topics(step) and T.TASKS_ASSIGNED.name not in _topics(step)
    pid = plan_id("g1")
    stale = handlers.on_approval({"plan_id": pid, "version": 9, "decision": "APPROVE", "by": "x"}, step.state, CFG)
    assert stale.out == [] and "version 9" in stale.ignored
    ok = handlers.on_approval({"plan_id": pid, "version": 1, "decision": "APPROVE", "by": "bob"}, step.state, CFG)
    assert _topics(ok) == [T.PLANS_UPDATED.name, T.TASKS_ASSIGNED.name]
    plan = ok.out[0].value["plan"]
    assert plan["version"] == 2 and plan["approval"] == "APPROVED" and "bob" in plan["reason"]
    again = handlers.on_approval({"plan_id": pid, "version": 2, "decision": "APPROVE", "by": "bob"}, ok.state, CFG)
    assert again.out == [] and "already" in again.ignored


def test_rejection_is_a_new_version_without_assignments():
    step, _ = _first(_explicit(deadline_h=3))
    no = handlers.on_approval({"plan_id": plan_id("g1"), "version": 1, "decision": "REJECT", "by": "eve",
                               "reason": "too slow"}, step.state, CFG)
    assert _topics(no) == [T.PLANS_UPDATED.name]
    assert no.out[0].value["plan"]["approval"] == "REJECTED"


def test_completed_task_releases_successors_once():
    step, _ = _first(_explicit())
    fb = {"plan_id": plan_id("g1"), "task_id": "a", "status": "COMPLETED"}
    done = handlers.on_feedback(fb, step.state, CFG)
    assert sorted(o.value["task"]["task_id"] for o in done.out) == ["b", "c"]
    assert handlers.on_feedback(fb, done.state, CFG).out == []
    unknown = handlers.on_feedback({**fb, "task_id": "zzz"}, done.state, CFG)
    assert "unknown task" in unknown.ignored
    assert handlers.on_feedback(fb, None, CFG).ignored.startswith("no plan")


def _contended():
    return samples.sample_goals(6, 1_700_000_000_000)[5]  # the fast path leaves slack here


def test_refinement_request_round_trip_publishes_a_shorter_version():
    cfg = PlanningConfig(refine_budget_seconds=1.0)
    record = serde(T.GOALS_CREATED.name).decode(serde(T.GOALS_CREATED.name).encode(_contended()))
    step, _ = _first(record, cfg)
    request = next(o for o in step.out if o.topic == T.PLANS_REFINE.name)
    assert request.value["base_version"] == 1
    result = handlers.refine(serde(request.topic).decode(serde(request.topic).encode(request.value)), cfg)
    assert result is not None and result.topic == T.PLANS_REFINED.name
    done = handlers.on_refined(serde(result.topic).decode(serde(result.topic).encode(result.value)), step.state, cfg)
    update = done.out[0].value
    assert done.out[0].topic == T.PLANS_UPDATED.name and update["plan"]["version"] == 2
    first = step.out[0].value["makespan_hours"]
    assert update["previous_makespan_hours"] == first and update["plan"]["makespan_hours"] < first


def test_refinement_based_on_an_old_version_is_dropped():
    step, _ = _first(_explicit(deadline_h=3))
    ok = handlers.on_approval({"plan_id": plan_id("g1"), "version": 1, "decision": "APPROVE", "by": "bob"},
                              step.state, CFG)
    stale = {"plan_id": plan_id("g1"), "base_version": 1, "plan": step.state["plan"]}
    out = handlers.on_refined(stale, ok.state, CFG)
    assert out.out == [] and "current is 2" in out.ignored
    assert handlers.on_refined(stale, None, CFG).ignored.startswith("no plan")


def test_refined_version_keeps_a_persons_approval():
    step, _ = _first(_explicit(deadline_h=3))
    ok = handlers.on_approval({"plan_id": plan_id("g1"), "version": 1, "decision": "APPROVE", "by": "bob"},
                              step.state, CFG)
    current = codec.plan_from_record(ok.state["plan"])
    shorter = dataclasses.replace(current, version=current.version + 1, makespan_hours=current.makespan_hours - 1,
                                  approval=ApprovalState.PENDING, reason="refined")
    record = {"plan_id": current.plan_id, "base_version": current.version, "plan": codec.plan_record(shorter)}
    out = handlers.on_refined(record, ok.state, CFG)
    assert out.out[0].value["plan"]["approval"] == "APPROVED"


@pytest.mark.parametrize("field,value,reason", [("title", "", "missing_field"), ("goal_id", " ", "missing_field")])
def test_goal_record_validation(field, value, reason):
    from processors.model import PlanningError
    rec = dict(_explicit(), **{field: value})
    with pytest.raises(PlanningError) as e:
        codec.goal_from_record(rec)
    assert e.value.reason == reason
