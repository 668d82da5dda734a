"""processors.memory: when and how a past episode is reused, and the plan that records it."""
from __future__ import annotations

import dataclasses

import pytest

from processors import lifecycle, memory
from processors.config import PlanningConfig
from processors.memory import Episode, EpisodeTask, ReusePolicy
from processors.model import Goal, TaskSpec
from streams import codec
from topics import registry as T
from topics.serde import serde

CONFIG = PlanningConfig(refine_budget_seconds=1.0)
GOAL = Goal("g-new", "Launch the billing API", created_at_ms=1_700_000_000_000, domain="software",
            objectives=("Design the API", "Implement payments"))


def episode(similarity: float = 0.9, outcome: str = "COMPLETED", actuals=(12.0, None, 3.0)) -> Episode:
    tasks = (EpisodeTask("design", "Design", 8.0, (), actuals[0], {"cpu": 1.0}),
             EpisodeTask("build", "Build", 20.0, ("design",), actuals[1]),
             EpisodeTask("test", "Test", 4.0, ("build",), actuals[2]))
    return Episode("g-old", similarity, tasks, outcome)


def test_observed_actuals_win_and_the_rest_scale_by_the_episode_factor():
    r = memory.reuse(GOAL, episode())
    assert r is not None
    hours = {s.task_id: s.duration_hours for s in r.goal.tasks}
    factor = (12.0 + 3.0) / (8.0 + 4.0)            # over the tasks that reported actuals
    assert hours == {"design": 12.0, "build": pytest.approx(20.0 * factor), "test": 3.0}
    assert r.use.source_goal_id == "g-old" and r.use.tasks_reused == 3 and r.use.tasks_observed == 2
    assert r.use.duration_factor == pytest.approx(factor)
    assert r.goal.tasks[1].depends_on == ("design",) and r.goal.tasks[0].resources == {"cpu": 1.0}
    assert dataclasses.replace(r.goal, tasks=()) == GOAL   # nothing else of the goal changes


def test_no_observations_keep_the_planned_hours():
    r = memory.reuse(GOAL, episode(actuals=(None, None, None)))
    assert [s.duration_hours for s in r.goal.tasks] == [8.0, 20.0, 4.0]
    assert r.use.duration_factor == 1.0 and r.use.tasks_observed == 0


def test_corrections_are_clamped():
    policy = ReusePolicy(min_factor=0.5, max_factor=2.0)
    r = memory.reuse(GOAL, episode(actuals=(1000.0, None, 0.0)), policy)
    hours = {s.task_id: s.duration_hours for s in r.goal.tasks}
    assert hours["design"] == 16.0 and hours["test"] == 2.0
    assert hours["build"] == 40.0   # factor (1000 + 0) / 12 clamped to 2


@pytest.mark.parametrize("goal, ep, why", [
    (GOAL, episode(similarity=0.79), "below the threshold"),
    (GOAL, episode(outcome="FAILED"), "not a success"),
    (GOAL, None, "nothing found"),
    (GOAL, dataclasses.replace(episode(), tasks=()), "no tasks"),
    (GOAL, dataclasses.replace(episode(), tasks=episode().tasks[1:]), "dangling dependency"),
    (dataclasses.replace(GOAL, tasks=(TaskSpec("a", "A", 1.0),)), episode(), "the author's own tasks"),
    (dataclasses.replace(GOAL, strategy="risk"), episode(), "a forced strategy"),
    (GOAL, episode(similarity=float("nan")), "not finite"),
])
def test_not_reused(goal, ep, why):
    assert memory.reuse(goal, ep, ReusePolicy(threshold=0.8)) is None, why


def test_on_goal_records_the_reuse_and_refines_the_planned_goal():
    r = memory.reuse(GOAL, episode())
    state, events = lifecycle.on_goal(None, GOAL, {}, CONFIG, received_at_ms=GOAL.created_at_ms, reuse=r)
    plan = events[0].plan
    assert plan.memory == r.use and plan.strategy == memory.STRATEGY
    assert {st.task.task_id: st.task.duration_hours for st in plan.tasks} == {
        s.task_id: s.duration_hours for s in r.goal.tasks}
    refine = [e for e in events if isinstance(e, lifecycle.RefineRequested)]
    assert refine and refine[0].goal == r.goal            # the refiner re-plans the same tasks
    # the digest is the original goal's: a replay of the goal is a duplicate, reuse or not
    again, ev = lifecycle.on_goal(state, GOAL, {}, CONFIG, received_at_ms=GOAL.created_at_ms)
    assert isinstance(ev[0], lifecycle.Ignored)
    # a refined version keeps saying where it came from
    better = lifecycle.refine(refine[0].goal, {}, CONFIG)
    if better is not None:
        _, ev = lifecycle.on_refined(state, plan.plan_id, 1, better, CONFIG)
        assert ev[0].plan.memory == r.use and ev[0].plan.strategy == memory.STRATEGY


def test_without_memory_the_plan_says_so():
    _, events = lifecycle.on_goal(None, GOAL, {}, CONFIG, received_at_ms=GOAL.created_at_ms)
    assert events[0].plan.memory is None and events[0].plan.strategy != memory.STRATEGY


def test_memory_field_round_trips_through_avro_and_old_records_read_as_none():
    r = memory.reuse(GOAL, episode())
    _, events = lifecycle.on_goal(None, GOAL, {}, CONFIG, received_at_ms=GOAL.created_at_ms, reuse=r)
    s = serde(T.PLANS_CREATED.name)
    back = codec.plan_from_record(s.decode(s.encode(codec.plan_record(events[0].plan))))
    assert back.memory == r.use
    old = codec.plan_record(events[0].plan)
    del old["memory"]                     # a record written before the field existed
    assert codec.plan_from_record(old).memory is None
