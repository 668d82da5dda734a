"""One meaning of capacity: reported availability is the truth, defaults fill the gaps,
a goal can only cap, the buffer is held back."""
import pytest

from processors.config import PlanningConfig
from processors.model import Constraints, Estimate, Goal, ScheduledTask, Task, TaskSpec
from processors.planner import plan_goal
from processors.resources import effective_capacities, peak_usage

EXACT = PlanningConfig(resource_buffer_percentage=0)


def goal(**caps):
    return Goal("g", "t", 0, constraints=Constraints(capacities=caps))


def test_reported_availability_is_the_truth():
    caps = effective_capacities(goal(), {"gpu": 1.0, "cpu": 64.0}, EXACT)
    assert caps["gpu"] == 1.0 and caps["cpu"] == 64.0


def test_defaults_apply_to_kinds_nobody_reported():
    caps = effective_capacities(goal(), {"gpu": 1.0}, EXACT)
    assert {k: v for k, v in caps.items() if k != "gpu"} == {
        k: v for k, v in EXACT.default_capacities.items() if k != "gpu"}


def test_a_goal_caps_a_kind():
    assert effective_capacities(goal(gpu=2.0), {"gpu": 6.0}, EXACT)["gpu"] == 2.0
    assert effective_capacities(goal(cpu=4.0), {}, EXACT)["cpu"] == 4.0          # caps a default too


def test_a_goal_cannot_raise_a_kind():
    assert effective_capacities(goal(gpu=16.0), {"gpu": 2.0}, EXACT)["gpu"] == 2.0
    default_gpu = EXACT.default_capacities["gpu"]
    assert effective_capacities(goal(gpu=default_gpu * 10), {}, EXACT)["gpu"] == default_gpu


def test_a_goal_limit_on_a_kind_nobody_offers_is_the_only_limit():
    config = PlanningConfig(resource_buffer_percentage=0, default_capacities={"gpu": 2.0})
    assert effective_capacities(goal(agents=3.0), {}, config) == {"gpu": 2.0, "agents": 3.0}


def test_the_buffer_is_held_back_from_each_kind():
    config = PlanningConfig(resource_buffer_percentage=0.25)
    caps = effective_capacities(goal(gpu=2.0), {"cpu": 8.0}, config)
    assert caps["cpu"] == 6.0 and caps["gpu"] == 1.5
    assert caps["agents"] == pytest.approx(config.default_capacities["agents"] * 0.75)


def test_the_planner_schedules_against_reported_capacity_not_the_goals_wish():
    # two 4-cpu tasks; the goal asks for 8 cpu but only 4 were reported: they run one after the other
    tasks = tuple(TaskSpec(task_id=t, name=t, duration_hours=2.0, resources={"cpu": 4.0}) for t in "ab")
    g = Goal("g", "t", 0, tasks=tasks, constraints=Constraints(capacities={"cpu": 8.0}))
    plan, problem = plan_goal(g, known_capacities={"cpu": 4.0}, config=EXACT)
    assert problem.capacities["cpu"] == 4.0 and plan.makespan_hours == 4.0
    roomy, _ = plan_goal(g, known_capacities={"cpu": 16.0}, config=EXACT)
    assert roomy.makespan_hours == 2.0


def _st(tid, start, finish, **res):
    t = Task(task_id=tid, name=tid, estimate=Estimate(1, 1, 1), resources=res)
    return ScheduledTask(t, start, finish, start, start, 0.0, True)


def test_peak_usage_counts_overlaps_only():
    usage = peak_usage((_st("a", 0, 4, cpu=2), _st("b", 2, 6, cpu=3), _st("c", 4, 5, cpu=1, gpu=1)))
    assert usage.peak == {"cpu": 5.0, "gpu": 1.0} and usage.when == {"cpu": 2, "gpu": 4}
    assert usage.running == 2          # a finishes at 4 as c starts: not concurrent
    peak, when, running = usage       # still unpacks as the (peak, when, running) triple
    assert running == 2
