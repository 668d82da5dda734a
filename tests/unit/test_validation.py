from processors.config import PlanningConfig
from processors.model import Constraints, Cost, Estimate, Goal, Plan, ScheduledTask, Task
from processors.resources import effective_capacities
from processors.validation import validate

CFG = PlanningConfig()
CAPS = {"cpu": 8.0, "gpu": 2.0, "memory_gb": 64.0, "agents": 4.0}


def st(tid, start, dur, *deps, **res):
    t = Task(task_id=tid, name=tid, estimate=Estimate(dur, dur, dur), depends_on=deps, resources=res)
    return ScheduledTask(t, start, start + dur, start, start, 0.0, True)


def plan(*sts, cost=0.0):
    mk = max((s.finish_hours for s in sts), default=0.0)
    return Plan(plan_id="p", goal_id="g", version=1, strategy="explicit", tasks=tuple(sts),
                critical_path=tuple(s.task.task_id for s in sts if s.critical), makespan_hours=mk,
                cost=Cost(cost))


GOAL = Goal("g", "t", 0)
OK = plan(st("a", 0, 4, cpu=2), st("b", 4, 4, "a", gpu=1), st("c", 4, 2, "a", cpu=4))


def test_valid_plan_has_no_findings():
    assert validate(GOAL, OK, CAPS, CFG) == ()


def test_deadline_and_budget():
    g = Goal("g", "t", 0, constraints=Constraints(deadline_hours=6.0, budget=100.0))
    v = validate(g, plan(*OK.tasks, cost=150.0), CAPS, CFG)
    assert any(f.startswith("deadline exceeded") and "8 h" in f and "6 h" in f for f in v)
    assert any(f.startswith("budget exceeded") and "150.00" in f for f in v)
    assert len(v) == 2


def test_task_demand_over_capacity():
    v = validate(GOAL, plan(st("a", 0, 1, gpu=3)), CAPS, CFG)
    assert v == ("capacity exceeded: task a needs 3 gpu but capacity is 2",)


def test_peak_usage_over_capacity():
    p = plan(st("a", 0, 4, cpu=5), st("b", 2, 4, cpu=5), st("c", 4, 1, cpu=3))
    v = validate(GOAL, p, CAPS, CFG)
    assert len(v) == 1 and "peak cpu usage 10 > capacity 8 at 2 h" in v[0]
    # back-to-back tasks are not concurrent
    assert validate(GOAL, plan(st("a", 0, 4, cpu=5), st("b", 4, 4, cpu=5)), CAPS, CFG) == ()


def test_goal_capacity_constraint_caps_capacity():
    # validation checks against the plan's effective capacities, in which the goal's cap holds
    g = Goal("g", "t", 0, constraints=Constraints(capacities={"cpu": 1.0}))
    v = validate(g, OK, effective_capacities(g, CAPS, PlanningConfig(resource_buffer_percentage=0)), CFG)
    assert any("task a needs 2 cpu but capacity is 1" in f for f in v)


def test_max_parallelism():
    many = plan(*(st(f"t{i}", 0, 1) for i in range(4)))
    assert validate(GOAL, many, CAPS, CFG) == ()
    v = validate(GOAL, many, CAPS, PlanningConfig(max_concurrent_tasks=3))
    assert v == ("max parallelism exceeded: 4 tasks run at once > max_concurrent_tasks 3",)
    g = Goal("g", "t", 0, constraints=Constraints(max_parallelism=2))
    assert "goal max_parallelism 2" in validate(g, many, CAPS, CFG)[0]


def test_horizon():
    long = plan(st("a", 0, 800))
    v = validate(GOAL, long, CAPS, CFG)
    assert len(v) == 1 and v[0].startswith("horizon exceeded") and "30 days" in v[0]


def test_cycles_and_dangling_reported():
    cyc = plan(st("a", 0, 1, "b"), st("b", 1, 1, "a"))
    v = validate(GOAL, cyc, CAPS, CFG)
    assert v[0] in ("cyclic_dependency: a -> b -> a", "cyclic_dependency: b -> a -> b")
    dang = plan(st("a", 0, 1, "zz"))
    assert validate(GOAL, dang, CAPS, CFG)[0].startswith("dangling_dependency")


def test_precedence_violation():
    p = plan(st("a", 0, 4), st("b", 2, 2, "a"))
    v = validate(GOAL, p, CAPS, CFG)
    assert v == ("task b starts at 2 h before its dependency a finishes at 4 h",)


def test_unknown_resource_kind_without_capacity_is_ignored():
    assert validate(GOAL, plan(st("a", 0, 1, storage_gb=10_000)), CAPS, CFG) == ()
