"""The planner's fast path (plan_goal) and refinement, end to end on pure values."""
import dataclasses

import pytest

from processors import risk, validation
from processors.config import PlanningConfig
from processors.model import Constraints, Goal, PlanningError, Priority, TaskSpec
from processors.planner import plan_goal, refine_plan
from processors.resources import effective_capacities
from processors.scheduling import is_feasible

CFG = PlanningConfig()
EPS = 1e-9

GOALS = {
    "software": Goal("g-sw", "Launch a customer-facing billing API", 0, domain="software",
                     priority=Priority.HIGH,
                     objectives=("Design the billing REST API", "Implement invoicing and payments",
                                 "Load test at 1k rps"),
                     success_criteria=("p99 latency < 200 ms",),
                     constraints=Constraints(deadline_hours=400.0, budget=5000.0, max_parallelism=4)),
    "data_ml": Goal("g-ml", "Train a churn prediction model", 0, domain="data_ml",
                    objectives=("Build the feature pipeline", "Train and evaluate a gradient-boosted model",
                                "Serve predictions"),
                    constraints=Constraints(deadline_hours=36.0, budget=15000.0)),
    "infrastructure": Goal("g-inf", "Migrate the message bus to a new Kafka cluster", 0,
                           domain="infrastructure", priority=Priority.CRITICAL,
                           objectives=("Provision the cluster", "Mirror topics", "Cut over producers and consumers"),
                           constraints=Constraints(deadline_hours=300.0, max_parallelism=3)),
    "research": Goal("g-res", "Literature review on resource-constrained scheduling", 0, domain="research",
                     priority=Priority.LOW, objectives=("Survey heuristics", "Reproduce two baselines on PSPLIB")),
}


def explicit_goal(*specs, **constraints):
    return Goal("g-x", "Explicit", 0, tasks=tuple(specs), constraints=Constraints(**constraints))


def spec(tid, hours, *deps, **res):
    return TaskSpec(task_id=tid, name=tid, duration_hours=hours, depends_on=deps, resources=res)


def assert_schedule_ok(goal, plan, known=None):
    by_id = {st.task.task_id: st for st in plan.tasks}
    # precedence
    for st in plan.tasks:
        assert st.start_hours >= -EPS
        assert st.finish_hours == pytest.approx(st.start_hours + st.task.duration_hours, abs=0.25)
        for d in st.task.depends_on:
            assert st.start_hours >= by_id[d].finish_hours - EPS, (st.task.task_id, d)
    # capacities (as the planner sees them) and parallelism, at every start instant
    caps = effective_capacities(goal, known or {}, CFG)
    slots = goal.constraints.max_parallelism or CFG.max_concurrent_tasks
    for t in sorted({st.start_hours for st in plan.tasks}):
        running = [st for st in plan.tasks if st.start_hours <= t + EPS < st.finish_hours]
        assert len(running) <= slots
        for kind, cap in caps.items():
            need = sum(st.task.resources.get(kind, 0.0) for st in running)
            biggest = max((st.task.resources.get(kind, 0.0) for st in running), default=0.0)
            assert need <= max(cap, biggest) + EPS, (kind, t, need, cap)
    assert plan.makespan_hours == pytest.approx(max(st.finish_hours for st in plan.tasks))


@pytest.mark.parametrize("domain", sorted(GOALS))
def test_plan_goal_per_domain(domain):
    goal = GOALS[domain]
    plan, problem = plan_goal(goal, config=CFG)
    assert plan.tasks and plan.version == 1 and plan.reason == "created"
    assert plan.strategy != "explicit"
    assert_schedule_ok(goal, plan)
    assert is_feasible(problem.project, [round(st.start_hours / problem.unit_hours) for st in plan.tasks])
    # CPM: makespan is at least the critical path length; critical tasks have no slack
    cpm_length = max(st.earliest_start_hours + st.task.duration_hours for st in plan.tasks)
    assert plan.makespan_hours >= cpm_length - 0.25
    assert plan.makespan_hours >= plan.lower_bound_hours - EPS
    by_id = {st.task.task_id: st for st in plan.tasks}
    assert plan.critical_path
    for tid in plan.critical_path:
        assert by_id[tid].slack_hours == 0 and by_id[tid].critical
    # phases cover every task exactly once; the last milestone is the end of the plan
    phase_ids = [tid for ph in plan.phases for tid in ph.task_ids]
    assert sorted(phase_ids) == sorted(by_id)
    assert plan.milestones[-1].at_hours == plan.makespan_hours
    assert plan.cost.total > 0
    # what the planner passed on (usage, dependencies already checked) changes nothing
    assert validation.validate(goal, plan, problem.capacities, CFG) == plan.violations
    assert risk.assess(goal, plan.tasks, plan.makespan_hours, plan.critical_path,
                       capacities=problem.capacities, cost_total=plan.cost.total, config=CFG) == plan.risks


def test_plan_goal_is_deterministic():
    for goal in GOALS.values():
        a, pa = plan_goal(goal, config=CFG)
        b, pb = plan_goal(dataclasses.replace(goal), config=CFG)   # an equal, distinct goal object
        assert a == b
        assert pa.project == pb.project


def test_explicit_chain_hand_checked():
    plan, problem = plan_goal(explicit_goal(spec("a", 2), spec("b", 3, "a")), config=CFG)
    assert plan.strategy == "explicit"
    assert plan.makespan_hours == 5.0
    assert [(st.task.task_id, st.start_hours, st.finish_hours) for st in plan.tasks] == [
        ("a", 0.0, 2.0), ("b", 2.0, 5.0)]
    assert plan.critical_path == ("a", "b")
    assert all(st.slack_hours == 0 for st in plan.tasks)
    assert plan.lower_bound_hours == 5.0
    assert problem.project.durations == (2, 3) and problem.unit_hours == 1.0   # whole hours: hour grid


def test_explicit_quarter_hours_and_parallel_branches():
    # a(0.25) -> {b(1.5), c(0.75)} -> d(1): makespan 0.25 + 1.5 + 1 = 2.75; c has 0.75 h slack
    plan, _ = plan_goal(explicit_goal(spec("a", 0.25), spec("b", 1.5, "a"), spec("c", 0.75, "a"),
                                      spec("d", 1, "b", "c")), config=CFG)
    assert plan.makespan_hours == 2.75
    by_id = {st.task.task_id: st for st in plan.tasks}
    assert by_id["d"].start_hours == 1.75
    assert by_id["c"].slack_hours == 0.75 and not by_id["c"].critical
    assert plan.critical_path == ("a", "b", "d")


def test_explicit_capacity_serialises_tasks():
    # each needs 6 cpu; the goal allows 8, of which the planner holds 10 % back: one at a time
    goal = explicit_goal(spec("x", 2, cpu=6), spec("y", 3, cpu=6), spec("z", 1, cpu=1),
                         capacities={"cpu": 8.0})
    plan, _ = plan_goal(goal, config=CFG)
    assert plan.makespan_hours == 5.0
    assert_schedule_ok(goal, plan)
    by_id = {st.task.task_id: st for st in plan.tasks}
    x, y = by_id["x"], by_id["y"]
    assert x.finish_hours <= y.start_hours or y.finish_hours <= x.start_hours


def test_max_parallelism_respected():
    goal = explicit_goal(*(spec(f"t{i}", 1) for i in range(6)), max_parallelism=2)
    plan, _ = plan_goal(goal, config=CFG)
    assert plan.makespan_hours == 3.0
    assert_schedule_ok(goal, plan)


def test_refine_plan_never_worse():
    # refine only ever returns a strictly shorter, feasible new version, or None
    specs = [spec("s1", 3, cpu=4), spec("s2", 2, cpu=4), spec("s3", 4, "s1", cpu=3),
             spec("s4", 1, "s2", cpu=5), spec("s5", 2, "s3", "s4", cpu=2), spec("s6", 3, "s2", cpu=3)]
    goal = explicit_goal(*specs, capacities={"cpu": 8.0})
    plan, problem = plan_goal(goal, config=CFG)
    better = refine_plan(goal, plan, problem, CFG, budget_s=0.5)
    if better is not None:
        assert better.makespan_hours < plan.makespan_hours
        assert better.version == plan.version + 1 and better.reason.startswith("refined")
        assert_schedule_ok(goal, better)
    assert refine_plan(goal, plan, problem, CFG, budget_s=0) is None


def test_refine_plan_on_decomposed_goal():
    goal = GOALS["software"]
    plan, problem = plan_goal(goal, config=CFG)
    better = refine_plan(goal, plan, problem, CFG, budget_s=0.5)
    assert better is None or better.makespan_hours < plan.makespan_hours
    if better is not None:
        assert_schedule_ok(goal, better)


def test_cyclic_dependency_is_rejected():
    with pytest.raises(PlanningError) as e:
        plan_goal(explicit_goal(spec("a", 1, "b"), spec("b", 1, "a")), config=CFG)
    assert e.value.reason == "cyclic_dependency"
    assert "a" in e.value.detail and "b" in e.value.detail


def test_other_bad_goals():
    with pytest.raises(PlanningError) as e:
        plan_goal(explicit_goal(spec("a", 1, "ghost")), config=CFG)
    assert e.value.reason == "dangling_dependency"
    with pytest.raises(PlanningError) as e:
        plan_goal(explicit_goal(spec("a", -1)), config=CFG)
    assert e.value.reason == "negative_duration"
    with pytest.raises(PlanningError) as e:
        plan_goal(Goal("g", "", 0), config=CFG)
    assert e.value.reason == "missing_field"
    with pytest.raises(PlanningError) as e:
        plan_goal(dataclasses.replace(GOALS["software"], strategy="nonsense"), config=CFG)
    assert e.value.reason == "unknown_strategy"
