"""The plan lifecycle without Kafka: state in, domain events out (and the records the
wiring makes of them)."""
import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from processors import lifecycle as L
from processors.config import PlanningConfig
from processors.ids import plan_id
from processors.model import ApprovalState, PlanningError
from streams import codec, samples, state as state_codec
from topics import registry as T
from topics.serde import serde

CFG = PlanningConfig(refine_budget_seconds=0)
T0 = 1_700_000_000_000
PID = plan_id("g1")


def _explicit(goal_id="g1", deadline_h=None, **over):
    r = {"goal_id": goal_id, "title": "t", "created_at_ms": T0,
         "tasks": [{"task_id": "a", "name": "a", "duration_hours": 2},
                   {"task_id": "b", "name": "b", "duration_hours": 3, "depends_on": ["a"]},
                   {"task_id": "c", "name": "c", "duration_hours": 1, "depends_on": ["a"]}]}
    if deadline_h:
        r["constraints"] = {"deadline_ms": r["created_at_ms"] + int(deadline_h * 3_600_000)}
    r.update(over)
    return serde(T.GOALS_CREATED.name).decode(serde(T.GOALS_CREATED.name).encode(r))


def _goal(record, state=None, config=CFG, received_at_ms=T0):
    return L.on_goal(state, codec.goal_from_record(record), {}, config, received_at_ms=received_at_ms)


def _out(result):
    return codec.records(result[1])


def _topics(result):
    return [o.topic for o in _out(result)]


def _approve(state, version=1, decision="APPROVE", by="bob", reason=""):
    return L.on_approval(state, L.Approval(PID, version, decision, by, reason, T0 + 1), CFG)


def _fb(state, task, status, attempt=None):
    return L.on_feedback(state, L.Feedback(PID, task, status, T0 + 2, attempt), CFG)


def _reason(call, *args):
    with pytest.raises(PlanningError) as e:
        call(*args)
    return e.value.reason


def test_every_output_encodes_with_its_topic_schema_and_decodes_back():
    for record in samples.sample_goals(5, T0):
        for o in _out(_goal(serde(T.GOALS_CREATED.name).decode(serde(T.GOALS_CREATED.name).encode(record)))):
            assert serde(o.topic).decode(serde(o.topic).encode(o.value)) == o.value


def test_plan_record_round_trips_through_the_domain():
    state, _ = _goal(samples.sample_goals(1, T0)[0])
    rec = codec.plan_record(state.plan)
    assert codec.plan_record(codec.plan_from_record(rec)) == rec


def test_stored_state_round_trips_and_is_a_fraction_of_the_json():
    import json
    state, _ = _goal(samples.sample_goals(1, T0)[0])
    state = state.with_runs(x=L.TaskRun(L.RunStatus.STARTED, 2))
    data = state_codec.encode(state)
    back = _decoded(data)
    assert back == state and state_codec.finished_at(data) is None
    as_json = len(json.dumps({"plan": codec.plan_record(state.plan)}))
    assert len(data) < as_json / 4


def test_low_risk_plan_is_auto_approved_and_hands_out_roots():
    result = _goal(_explicit())
    out = _out(result)
    assert [o.topic for o in out] == [T.PLANS_CREATED.name, T.TASKS_ASSIGNED.name]
    assert out[0].value["approval"] == "AUTO_APPROVED"
    assert out[1].value["task"]["task_id"] == "a" and out[1].value["attempt"] == 1
    assert dict(result[0].runs) == {"a": L.TaskRun(L.RunStatus.ASSIGNED, 1)}


def test_replayed_goal_changes_nothing_an_edited_one_replans_and_an_ended_plans_is_refused():
    state, _ = _goal(_explicit())
    again, events = _goal(_explicit(), state)
    assert again is state and [type(e) for e in events] == [L.Ignored] and events[0].reason == "duplicate_goal"
    edited, events = _goal(_explicit(title="another title"), state)
    updates = [o.value for o in codec.records(events) if o.topic == T.PLANS_UPDATED.name]
    assert [u["trigger"] for u in updates] == ["goal_changed"] and updates[0]["plan"]["version"] == 2
    assert edited.goal.title == "another title" and edited.runs["a"].status is L.RunStatus.ASSIGNED
    assert not [e for e in events if isinstance(e, L.TaskAssigned)], "running work is not handed out again"
    cancelled, _ = L.on_control(state, L.Control("CANCEL", PID, "no longer needed", "bob", T0 + 5), CFG)
    assert _reason(_goal, _explicit(title="another title"), cancelled) == "goal_edited"


def test_goal_whose_deadline_passed_on_arrival_is_planned_flagged_and_not_auto_approved():
    late = _explicit(deadline_h=100)
    state, _ = _goal(late, received_at_ms=T0 + 200 * 3_600_000)
    assert state.plan.approval is ApprovalState.PENDING
    assert any("deadline already passed" in v for v in state.plan.violations)
    on_time, _ = _goal(late, received_at_ms=T0 + 1)
    assert on_time.plan.approval is ApprovalState.AUTO_APPROVED


def test_pending_plan_alerts_then_approval_assigns():
    result = _goal(_explicit(deadline_h=3))
    state = result[0]
    assert state.plan.approval is ApprovalState.PENDING
    assert T.RISKS_ALERTS.name in _topics(result) and T.TASKS_ASSIGNED.name not in _topics(result)
    assert _reason(_approve, state, 9) == "stale_version"
    assert _reason(_approve, None) == "unknown_plan"
    ok = _approve(state)
    assert _topics(ok) == [T.PLANS_UPDATED.name, T.TASKS_ASSIGNED.name]
    plan = _out(ok)[0].value["plan"]
    assert plan["version"] == 2 and plan["approval"] == "APPROVED" and "bob" in plan["reason"]
    assert _reason(_approve, ok[0], 2) == "not_pending"


def test_rejection_is_a_new_version_without_assignments_and_finishes_the_plan():
    state, _ = _goal(_explicit(deadline_h=3))
    no = _approve(state, decision="REJECT", by="eve", reason="too slow")
    assert _topics(no) == [T.PLANS_UPDATED.name]
    assert no[0].plan.approval is ApprovalState.REJECTED and no[0].finished_at_ms == T0 + 1


def test_completed_task_releases_successors_once_and_finishes_the_plan():
    state, _ = _goal(_explicit())
    started = _fb(state, "a", "STARTED")
    assert _topics(started) == [T.PLANS_UPDATED.name] and started[0].runs["a"].status is L.RunStatus.STARTED
    assert _fb(started[0], "a", "PROGRESS")[0].runs["a"].status is L.RunStatus.STARTED
    done = _fb(started[0], "a", "COMPLETED")
    assert sorted(o.value["task"]["task_id"] for o in _out(done) if o.topic == T.TASKS_ASSIGNED.name) == ["b", "c"]
    again = _fb(done[0], "a", "COMPLETED")
    assert _out(again) == [] and again[1][0].reason == "duplicate_feedback"
    state = done[0]
    for t in ("b", "c"):
        state = _fb(state, t, "COMPLETED")[0]
    assert state.finished_at_ms == T0 + 2


@pytest.mark.parametrize("task,status,attempt,reason", [
    ("zzz", "COMPLETED", None, "unknown_task"),
    ("b", "COMPLETED", None, "not_assigned"),       # a forged COMPLETED for a task never handed out
    ("a", "COMPLETED", 2, "stale_attempt"),
])
def test_feedback_only_for_tasks_handed_out_in_this_attempt(task, status, attempt, reason):
    state, _ = _goal(_explicit())
    assert _reason(_fb, state, task, status, attempt) == reason


def test_feedback_follows_legal_transitions_only():
    state, _ = _goal(_explicit())
    failed = _fb(state, "a", "FAILED")[0]
    assert _reason(_fb, failed, "a", "COMPLETED") == "illegal_transition"
    assert _reason(_fb, failed, "a", "STARTED") == "illegal_transition"
    done = _fb(state, "a", "COMPLETED")[0]
    assert _reason(_fb, done, "a", "STARTED") == "illegal_transition"
    assert _reason(_fb, None, "a", "STARTED") == "unknown_plan"


def _contended():
    return samples.sample_goals(6, T0)[5]  # the fast path leaves slack here


def test_refinement_request_round_trip_publishes_a_shorter_version():
    cfg = PlanningConfig(refine_budget_seconds=1.0)
    record = serde(T.GOALS_CREATED.name).decode(serde(T.GOALS_CREATED.name).encode(_contended()))
    state, events = _goal(record, config=cfg)
    request = next(o for o in codec.records(events) if o.topic == T.PLANS_REFINE.name)
    request = serde(request.topic).decode(serde(request.topic).encode(request.value))
    assert request["base_version"] == 1
    better = L.refine(codec.goal_from_record(request["goal"]), request["known_capacities"], cfg)
    assert better is not None
    result = codec.refined_record(better, 1)
    result = serde(result.topic).decode(serde(result.topic).encode(result.value))
    done = L.on_refined(state, result["plan_id"], result["base_version"], codec.plan_from_record(result["plan"]), cfg)
    update = _out(done)[0]
    assert update.topic == T.PLANS_UPDATED.name and update.value["plan"]["version"] == 2
    first = state.plan.makespan_hours
    assert update.value["previous_makespan_hours"] == first and update.value["plan"]["makespan_hours"] < first


def test_refinement_based_on_an_old_version_is_refused():
    state, _ = _goal(_explicit(deadline_h=3))
    ok = _approve(state)[0]
    assert _reason(L.on_refined, ok, PID, 1, dataclasses.replace(state.plan, version=2), CFG) == "stale_version"
    assert _reason(L.on_refined, None, PID, 1, state.plan, CFG) == "unknown_plan"


def test_refined_version_keeps_a_persons_approval():
    state, _ = _goal(_explicit(deadline_h=3))
    ok = _approve(state)[0]
    current = ok.plan
    shorter = dataclasses.replace(current, version=current.version + 1, makespan_hours=current.makespan_hours - 1,
                                  approval=ApprovalState.PENDING, reason="refined")
    new, _ = L.on_refined(ok, PID, current.version, shorter, CFG)
    assert new.plan.approval is ApprovalState.APPROVED


def test_finished_plan_expires_only_if_unchanged():
    state, _ = _goal(_explicit(deadline_h=3))
    rejected = _approve(state, decision="REJECT")[0]
    assert L.expiry_due(rejected.finished_at_ms, T0 + 1 + 3_600_000, 1.0)
    assert not L.expiry_due(rejected.finished_at_ms, T0, 1.0) and not L.expiry_due(None, T0, 1.0)
    assert L.on_expire(rejected, PID, T0 + 1) == (None, ())
    kept, events = L.on_expire(rejected, PID, T0 + 999)
    assert kept is rejected and events[0].reason == "not_expired"


@pytest.mark.parametrize("field,value,reason", [("title", "", "missing_field"), ("goal_id", " ", "missing_field")])
def test_goal_record_validation(field, value, reason):
    rec = dict(_explicit(), **{field: value})
    with pytest.raises(PlanningError) as e:
        codec.goal_from_record(rec)
    assert e.value.reason == reason


_STATUSES = st.sampled_from(["STARTED", "PROGRESS", "COMPLETED", "FAILED"])
_INPUTS = st.lists(st.one_of(
    st.tuples(st.just("fb"), st.sampled_from(["a", "b", "c", "zzz"]), _STATUSES, st.sampled_from([None, 1, 2])),
    st.tuples(st.just("approval"), st.integers(0, 4), st.sampled_from(["APPROVE", "REJECT"])),
), max_size=25)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deadline_h=st.sampled_from([None, 3]), inputs=_INPUTS)
def test_any_sequence_of_inputs_keeps_the_lifecycle_consistent(deadline_h, inputs):
    """Whatever arrives, a record either applies or is refused with a reason, and a task is
    only ever handed out after every predecessor completed, once per attempt."""
    state, events = _goal(_explicit(deadline_h=deadline_h))
    handed = [e.task.task.task_id for e in events if isinstance(e, L.TaskAssigned)]
    for item in inputs:
        try:
            if item[0] == "fb":
                state, events = _fb(state, item[1], item[2], item[3])
            else:
                state, events = _approve(state, item[1], item[2])
        except PlanningError as exc:
            assert exc.reason and exc.detail
            continue
        for e in events:
            if isinstance(e, L.TaskAssigned):
                assert all(state.runs[d].status is L.RunStatus.COMPLETED for d in e.task.task.depends_on)
                handed.append(e.task.task.task_id)
        assert _decoded(state_codec.encode(state)) == state
    assert len(handed) == len(set(handed))
    assert set(handed) == set(state.runs)


def _decoded(data: bytes):
    """The bytes decoded, not the state cached when they were encoded."""
    state_codec.forget()
    return state_codec.decode(data)
