"""The LLM decomposer's breakdown in the plan lifecycle (pure domain): asked off the fast path,
planned like an explicit breakdown, published as a new version only while the task list may
still be replaced and only if it judges better than the template plan."""
from __future__ import annotations

import dataclasses
import json
import statistics

import pytest

from processors import lifecycle as L, llm_plan
from processors.config import PlanningConfig
from processors.model import Goal
from streams import codec
from topics import registry as T
from topics.serde import serde

GOAL = Goal(goal_id="g-llm", title="Launch billing API", created_at_ms=1,
            objectives=("Design the API", "Build the service"))
PENDING = PlanningConfig(refine_budget_seconds=0, auto_approve_low_risk_plans=False)   # nothing dispatched
AUTO = PlanningConfig(refine_budget_seconds=0)


def _answer(hours=(3.0, 8.0)) -> str:
    return json.dumps({"tasks": [
        {"task_id": "design", "name": "Design the API", "duration_hours": hours[0]},
        {"task_id": "build", "name": "Build the service", "duration_hours": hours[1], "depends_on": ["design"]}]})


def _first(config=PENDING, goal=GOAL):
    return L.on_goal(None, goal, {}, config, received_at_ms=1, decompose=True)


def _llm(state, text=None, config=PENDING):
    plan, _ = llm_plan.candidate(text or _answer(), state.goal, {}, config, "decomposer/1", state.plan.version)
    return plan


def test_on_goal_asks_the_decomposer_after_publishing_the_template_plan():
    state, events = _first()
    assert isinstance(events[0], L.PlanCreated) and events[0].plan.strategy != llm_plan.STRATEGY
    asks = [e for e in events if isinstance(e, L.RefineRequested)]
    assert [e.kind for e in asks] == ["decompose"]
    out = [o for o in codec.records(events) if o.topic == T.PLANS_REFINE.name]
    record = serde(T.PLANS_REFINE.name).decode(serde(T.PLANS_REFINE.name).encode(out[0].value))
    assert record["kind"] == "decompose" and record["base_version"] == 1
    # off by default, and never for a goal whose author gave the tasks
    assert not any(isinstance(e, L.RefineRequested) for e in L.on_goal(None, GOAL, {}, PENDING, received_at_ms=1)[1])
    explicit = dataclasses.replace(GOAL, tasks=llm_plan.parse(_answer(), GOAL))
    assert not any(isinstance(e, L.RefineRequested) for e in _first(goal=explicit)[1])


def test_a_shorter_llm_breakdown_becomes_the_next_version_and_replans_keep_it():
    state, _ = _first()
    llm = _llm(state)
    assert llm.makespan_hours < state.plan.makespan_hours
    new, events = L.on_decomposed(state, state.plan.plan_id, 1, llm, _answer(), PENDING)
    update = events[0]
    assert isinstance(update, L.PlanUpdated) and update.plan.version == 2
    assert update.plan.strategy == "llm" and update.plan.estimates_source == "decomposer/1"
    assert "llm_decomposition" in update.plan.reason and "shorter" in update.plan.reason
    assert {t.task_id for t in new.goal.tasks} == {"design", "build"}     # replans plan the LLM's tasks
    assert new.goal_digest == state.goal_digest                           # a replayed goal is still a duplicate
    rec = codec.records(events)[0]
    assert rec.topic == T.PLANS_UPDATED.name and rec.value["plan"]["strategy"] == "llm"


def test_an_approved_plan_with_dispatched_tasks_keeps_its_task_list():
    state, events = _first(AUTO)
    assert state.runs and any(isinstance(e, L.TaskAssigned) for e in events)
    same, events = L.on_decomposed(state, state.plan.plan_id, 1, _llm(state, config=AUTO), _answer(), AUTO)
    assert same is state and events[0].reason == "llm_already_dispatched"


def test_a_plan_that_changed_since_the_request_keeps_its_version():
    state, _ = _first()
    llm = _llm(state)
    moved = dataclasses.replace(state, plan=dataclasses.replace(state.plan, version=2))
    same, events = L.on_decomposed(moved, state.plan.plan_id, 1, llm, _answer(), PENDING)
    assert same is moved and events[0].reason == "llm_plan_changed"
    ended = dataclasses.replace(state, status=L.PlanStatus.CANCELLED)
    assert L.on_decomposed(ended, state.plan.plan_id, 1, llm, _answer(), PENDING)[1][0].reason == "llm_plan_ended"


def _chain(names, hours=1.0) -> str:
    return json.dumps({"tasks": [{"task_id": f"t{i}", "name": n, "duration_hours": hours,
                                  "depends_on": [f"t{i - 1}"] if i else []} for i, n in enumerate(names)]})


def test_a_longer_breakdown_covering_the_same_objectives_loses():
    state, _ = _first()
    text = _chain(["Design the API"] + [f"Build the service, step {i}" for i in range(12)])
    llm = _llm(state, text)
    assert llm.makespan_hours > state.plan.makespan_hours
    same, events = L.on_decomposed(state, state.plan.plan_id, 1, llm, text, PENDING)
    assert same is state and events[0].reason == "llm_not_better" and "makespan" in events[0].detail


def test_the_llm_hours_never_decide_the_judgement():
    """The template's own breakdown answered with invented hours (0.1 h a task) plans to the
    template's makespan: the LLM's figures are replaced by the template's (llm_plan.priced), so
    promising less does not win; and the LLM's hours do not change its plan at all."""
    state, _ = _first()
    tasks = [{"task_id": st.task.task_id, "name": st.task.name, "duration_hours": 0.1,
              "depends_on": list(st.task.depends_on)} for st in state.plan.tasks]
    text = json.dumps({"tasks": tasks})
    llm = _llm(state, text)
    assert llm.makespan_hours == pytest.approx(state.plan.makespan_hours, rel=1e-3)
    same, events = L.on_decomposed(state, state.plan.plan_id, 1, llm, text, PENDING)
    assert same is state and events[0].reason == "llm_not_better"
    assert _llm(state, _answer((0.01, 0.01))).makespan_hours == _llm(state, _answer((100.0, 100.0))).makespan_hours


def test_priced_takes_learned_estimates_like_the_template_plan():
    """A confident learned estimate for a template task moves the LLM task that matches it,
    exactly as it moved the template task; an LLM task matching nothing takes the median."""
    from processors.model import LearnedEstimate
    state, _ = _first()
    specs = llm_plan.parse(_chain(["Gather requirements", "Design the API", "Build the service", "Paint zebras"]),
                           GOAL)
    plain = llm_plan.priced(GOAL, specs, PENDING)
    assert plain[0].duration_hours == pytest.approx(4.0, abs=1e-3)   # "Gather and refine requirements"
    learned = dataclasses.replace(GOAL, estimates=(LearnedEstimate("requirements", 19.0, 20.0, 21.0, 0.1),))
    again = llm_plan.priced(learned, specs, PENDING)
    assert again[0].duration_hours == pytest.approx(20.0, abs=1e-3)
    assert [s.duration_hours for s in again[1:]] == [s.duration_hours for s in plain[1:]]
    templ = [st.task.duration_hours for st in state.plan.tasks]
    assert plain[3].duration_hours == pytest.approx(statistics.median(templ), abs=1e-3)


def test_replans_keep_the_durations_the_breakdown_was_judged_with():
    state, _ = _first()
    llm = _llm(state)
    new, _ = L.on_decomposed(state, state.plan.plan_id, 1, llm, _answer((0.01, 0.01)), PENDING)
    by_id = {st.task.task_id: st.task.duration_hours for st in llm.tasks}
    assert {s.task_id: s.duration_hours for s in new.goal.tasks} == pytest.approx(by_id, abs=1e-3)


def test_an_invalid_answer_is_ignored_with_its_reason_never_published():
    state, _ = _first()
    llm = _llm(state)
    same, events = L.on_decomposed(state, state.plan.plan_id, 1, llm, "Sure! Design it, then build it.", PENDING)
    assert same is state and events[0].reason == "llm_rejected:not_json" and not codec.records(events)


@pytest.mark.parametrize("text, reason", [
    ("First design the API, then build it.", "not_json"),
    (json.dumps({"tasks": [{"task_id": "a", "name": "Design the API", "duration_hours": 1, "depends_on": ["b"]},
                           {"task_id": "b", "name": "Build the service", "duration_hours": 1, "depends_on": ["a"]}]}),
     "cyclic_dependency"),
    (json.dumps({"tasks": [{"task_id": "a", "name": "Design the API", "duration_hours": 1, "owner": "x"}]}),
     "unknown_field")])
def test_candidate_rejects_invalid_answers_with_a_reason(text, reason):
    with pytest.raises(llm_plan.Rejected) as exc:
        llm_plan.candidate(text, GOAL, {}, PENDING, "decomposer/1", 1)
    assert exc.value.reason == reason


def test_judge_coverage_first_then_a_strictly_shorter_makespan():
    state, _ = _first()
    template, llm = state.plan, _llm(state)
    assert llm_plan.judge(GOAL, template, llm)[0]
    tie = dataclasses.replace(llm, makespan_hours=template.makespan_hours)
    assert llm_plan.judge(GOAL, template, tie) == (False, llm_plan.judge(GOAL, template, tie)[1])
    assert "not_better" in llm_plan.judge(GOAL, template, tie)[1]
    worse = dataclasses.replace(llm, violations=template.violations + ("x",))
    assert not llm_plan.judge(GOAL, template, worse)[0]
    # the template misses an objective the LLM covers: the LLM wins even when longer
    goal = dataclasses.replace(GOAL, objectives=GOAL.objectives + ("Zebra migration",))
    blind = dataclasses.replace(template, tasks=tuple(st for st in template.tasks if "Zebra" not in st.task.name))
    longer = dataclasses.replace(llm, makespan_hours=template.makespan_hours * 2,
                                 tasks=llm.tasks + (dataclasses.replace(
                                     llm.tasks[0], task=dataclasses.replace(llm.tasks[0].task, name="Zebra migration")),))
    wins, why = llm_plan.judge(goal, blind, longer)
    assert wins and "Zebra migration" in why
    assert not llm_plan.judge(goal, longer, blind)[0]


def test_decomposer_client_batches_concurrent_asks_and_gives_up_at_once_when_dead():
    import asyncio
    import time as _time

    from inference.decomposer import DecomposerClient

    async def run():
        c = DecomposerClient("127.0.0.1:1", max_batch=8, batch_wait_s=0.01, timeout_s=1, retry_after_s=60)
        calls = []

        async def fake(items):
            calls.append(list(items))
            return [f"answer {i}" for i in range(len(items))], "3"
        c.call = fake
        goals = [dataclasses.replace(GOAL, goal_id=f"g{i}") for i in range(11)]
        got = await asyncio.gather(*(c.ask(g) for g in goals))
        assert [len(b) for b in calls] == [8, 3]                   # one request per batch
        assert got[0] == ("answer 0", "3") and got[10] == ("answer 2", "3")
        assert json.loads(calls[0][1])["goal_id"] == "g1"
        # a dead server: the first batch fails, the breaker opens, later asks return None at once
        d = DecomposerClient("127.0.0.1:1", timeout_s=2, retry_after_s=60)   # nothing listens there
        assert await d.ask(GOAL) is None and d.open
        t = _time.perf_counter()
        assert await d.ask(GOAL) is None and d.last_reason == "breaker_open"
        assert _time.perf_counter() - t < 0.05
        await d.close()

    asyncio.run(run())


def test_decompose_is_off_by_default_and_set_by_env():
    from streams.settings import TritonSettings
    assert TritonSettings.from_mapping({}, {}).decompose is False
    on = TritonSettings.from_mapping({}, {"TRITON_DECOMPOSE": "true", "TRITON_DECOMPOSE_TIMEOUT_S": "5"})
    assert on.decompose and on.decompose_timeout_s == 5.0
