"""The scheduler's cost is bounded by the number of tasks, not by how long they are:
goals whose durations span too many time units are scheduled on a coarser grid."""
import pytest

from processors.config import PlanningConfig
from processors.model import Goal, TaskSpec
from processors.planner import MAX_TIME_UNITS, plan_goal, refine_plan
from processors.resources import effective_capacities, peak_usage
from processors.scheduling import is_feasible

CFG = PlanningConfig(resource_buffer_percentage=0)
REPORTED = {"cpu": 8.0}
EPS = 1e-6


def spec(tid, hours, *deps, cpu=0.0):
    return TaskSpec(task_id=tid, name=tid, duration_hours=hours, depends_on=deps,
                    resources={"cpu": cpu} if cpu else {})


HUGE = {
    "one 2.5e7 h task": (spec("a", 2.5e7),),
    "one 1e9 h task": (spec("a", 1e9),),
    "0.25 h then 1e6 h": (spec("a", 0.25), spec("b", 1e6, "a")),
    "0.25 h beside 2.5e7 h": (spec("a", 0.25), spec("b", 2.5e7), spec("c", 0.75, "a", "b")),
    "mixed chain and contention": (spec("a", 0.25, cpu=6), spec("b", 1e6, "a", cpu=6), spec("c", 1e9, cpu=6),
                                   spec("d", 2.5e7, "a", cpu=2), spec("e", 0.5, "b", "d", cpu=8),
                                   spec("f", 3.0, cpu=4)),
}


def _plan(specs):
    goal = Goal("g", "huge", 0, tasks=specs)
    return goal, *plan_goal(goal, known_capacities=REPORTED, config=CFG)


@pytest.mark.parametrize("name", sorted(HUGE))
def test_huge_durations_plan_on_a_bounded_grid(name):
    goal, plan, problem = _plan(HUGE[name])
    # the scheduler's time axis (the serial SGS profile, CP-SAT's domains) stays bounded
    assert sum(problem.project.durations) <= MAX_TIME_UNITS + problem.project.n
    assert is_feasible(problem.project, [round(st.start_hours / problem.unit_hours) for st in plan.tasks])
    _assert_valid(goal, plan)


def _assert_valid(goal, plan):
    """Hours as the goal states them: durations kept, precedence and capacity respected."""
    by_id = {st.task.task_id: st for st in plan.tasks}
    for st in plan.tasks:
        assert st.start_hours >= 0
        assert st.finish_hours == pytest.approx(st.start_hours + st.task.duration_hours, abs=0.25)
        assert st.earliest_start_hours <= st.start_hours + EPS
        for d in st.task.depends_on:
            assert st.start_hours >= by_id[d].finish_hours - EPS, (st.task.task_id, d)
    assert plan.makespan_hours == max(st.finish_hours for st in plan.tasks)
    assert plan.lower_bound_hours <= plan.makespan_hours + EPS
    caps = effective_capacities(goal, REPORTED, CFG)
    assert peak_usage(plan.tasks).peak.get("cpu", 0.0) <= caps["cpu"]
    assert not [v for v in plan.violations if "exceeded: task" in v or "starts at" in v]


def test_the_critical_path_is_exact_on_a_coarse_grid():
    # CPM works on the exact durations: the 0.25 h task's 0.75 h of float is not rounded away
    _, plan, problem = _plan((spec("a", 1e6), spec("b", 0.25), spec("c", 1.0, "a", "b"), spec("d", 1.0, "b")))
    assert problem.unit_hours > 1.0                      # coarsened
    by_id = {st.task.task_id: st for st in plan.tasks}
    assert plan.critical_path == ("a", "c")
    assert by_id["b"].slack_hours == pytest.approx(1e6 - 0.25)
    assert plan.lower_bound_hours == pytest.approx(1e6 + 1.0)


def test_goals_within_the_bound_keep_the_exact_grid():
    # quarter hours up to the bound: nothing is rounded
    n = 8
    hours = MAX_TIME_UNITS * 0.25 / n
    goal, plan, problem = _plan(tuple(spec(f"t{i}", hours if i else 0.25) for i in range(n)))
    assert problem.unit_hours == 0.25 and sum(problem.project.durations) <= MAX_TIME_UNITS
    assert all(st.finish_hours - st.start_hours == st.task.duration_hours for st in plan.tasks)


def test_refining_a_coarse_plan_stays_valid():
    goal, plan, problem = _plan(HUGE["mixed chain and contention"])
    better = refine_plan(goal, plan, problem, CFG, budget_s=0.5)
    assert better is None or better.makespan_hours < plan.makespan_hours
    if better is not None:
        _assert_valid(goal, better)
