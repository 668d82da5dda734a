"""Progress %, earned value on hand-checked examples, coalescing, replanning triggers, and
replanning that never moves completed or running work."""
import dataclasses

import pytest

from processors import lifecycle as L
from processors.allocation import Resource
from processors.config import PlanningConfig
from processors.model import ApprovalState, Constraints, Estimate, Goal, Plan, ScheduledTask, Task, TaskSpec
from processors.planner import plan_goal
from processors.progress import (EarnedValue, TaskActual, coalesce, drift_trigger, earned_value,
                                 failed_after_retries, goal_changed_trigger, lost_capacity_trigger,
                                 lost_resources, progress_pct, reallocate, replan_keeping_done, task_costs)
from processors.retry import Breaker, BreakerState

H = 3_600_000
T0 = 1_700_000_000_000
CFG = PlanningConfig(refine_budget_seconds=0)


def _st(tid, start, finish, deps=()):
    d = finish - start
    return ScheduledTask(Task(tid, tid, Estimate(d, d, d), depends_on=deps), start, finish, start, start, 0.0, True)


# a: 0-4 h, b: 4-8 h after a; each costs 400
PLAN = Plan("p", "g", 1, "explicit", (_st("a", 0, 4), _st("b", 4, 8, ("a",))), ("a", "b"), 8.0, created_at_ms=T0)
COSTS = {"a": 400.0, "b": 400.0}


def test_progress_is_duration_weighted_and_counts_reported_percent():
    # a (4 h) done, b (4 h) started at 25 %: (4 x 1 + 4 x 0.25) / 8 = 62.5 %
    assert progress_pct(PLAN, {"a": TaskActual("COMPLETED"), "b": TaskActual("STARTED", 25)}) == 62.5
    # lifecycle's RunStatus values work as they are (str enum)
    assert progress_pct(PLAN, {"a": TaskActual(L.RunStatus.COMPLETED)}) == 50.0
    assert progress_pct(PLAN, {"a": TaskActual("FAILED", 80)}) == 0.0


def test_earned_value_hand_checked_behind_and_over_budget():
    actuals = {"a": TaskActual("COMPLETED", actual_hours=5, actual_cost=500),
               "b": TaskActual("STARTED", 25, actual_hours=1, actual_cost=100)}
    ev = earned_value(PLAN, actuals, T0 + 6 * H, COSTS, budget=1000)
    # at 6 h: PV = 400 (a) + 400 x (6-4)/4 (b half planned) = 600
    # EV = 400 (a done) + 400 x 0.25 = 500;  AC = 500 + 100 = 600;  BAC = 800
    assert (ev.at_hours, ev.bac, ev.pv, ev.ev, ev.ac) == (6.0, 800.0, 600.0, 500.0, 600.0)
    # SPI = 500/600, CPI = 500/600, SV = CV = -100
    assert ev.spi == pytest.approx(5 / 6) and ev.cpi == pytest.approx(5 / 6)
    assert ev.sv == -100 and ev.cv == -100
    # earned schedule: PV(t) = 400 + 100 (t - 4) = 500 at t = 5 -> variance 5 - 6 = -1 h (behind)
    assert ev.earned_schedule_hours == pytest.approx(5.0) and ev.variance_hours == pytest.approx(-1.0)
    # EAC = AC + (BAC - EV) / CPI = 600 + 300 / (5/6) = 960; budget variance 1000 - 960 = 40
    assert ev.eac == pytest.approx(960.0) and ev.budget_variance == pytest.approx(40.0)
    assert ev.progress_pct == 62.5


def test_earned_value_ahead_and_under():
    actuals = {"a": TaskActual("COMPLETED", actual_cost=300), "b": TaskActual("STARTED", 50, actual_cost=100)}
    ev = earned_value(PLAN, actuals, T0 + 4 * H, COSTS)
    # at 4 h: PV = 400; EV = 400 + 200 = 600; AC = 400 -> SPI 1.5, CPI 1.5
    assert (ev.pv, ev.ev, ev.ac) == (400.0, 600.0, 400.0) and ev.spi == 1.5 and ev.cpi == 1.5
    # PV(t) = 600 at t = 6: 2 h ahead; EAC = 400 + 200/1.5 = 533.33; no budget: BAC - EAC
    assert ev.variance_hours == pytest.approx(2.0) and ev.budget_variance == pytest.approx(800 - 400 - 200 / 1.5)


def test_earned_value_before_anything_is_planned_or_spent():
    ev = earned_value(PLAN, {}, T0, COSTS)
    assert (ev.pv, ev.ev, ev.ac, ev.spi, ev.cpi, ev.variance_hours) == (0, 0, 0, 1.0, 1.0, 0.0)


def test_task_costs_from_allocated_resource_or_planner_rates():
    r = Resource("gpu-1", "gpu", cost_per_hour=10.0)
    costs = task_costs(PLAN, CFG, {"a": r})
    # a: 4 h x 10/h = 40; b: 4 h x base rate 50/h = 200 (no resources)
    assert costs == {"a": 40.0, "b": 200.0}


def test_coalesce_at_most_one_per_interval_always_at_completion_or_failure():
    assert coalesce(None, T0, 5000, "STARTED")
    assert not coalesce(T0, T0 + 4999, 5000, "PROGRESS")
    assert coalesce(T0, T0 + 5000, 5000, "PROGRESS")
    assert coalesce(T0, T0 + 1, 5000, "COMPLETED") and coalesce(T0, T0 + 1, 5000, L.RunStatus.FAILED)


def test_trigger_failed_after_retries():
    cfg = PlanningConfig(max_task_attempts=3)
    assert failed_after_retries("a", 2, cfg) is None
    assert failed_after_retries("a", 3, cfg) == "task a failed after 3 attempt(s)"


def _ev(variance_hours=0.0, spi=1.0, pv=100.0):
    return EarnedValue(0, 0, pv, 0, 0, spi, 1, 0, 0, 0, variance_hours, 0, 0, 0)


def test_trigger_schedule_variance_and_spi():
    cfg = PlanningConfig(replan_variance_hours=4.0, replan_spi_threshold=0.8)
    assert drift_trigger(_ev(-3.9, 0.9), cfg) is None
    assert "schedule variance -4.50 h" in drift_trigger(_ev(-4.5), cfg)
    assert "schedule variance +5.00 h" in drift_trigger(_ev(5.0), cfg)
    assert drift_trigger(_ev(0, 0.7), cfg) == "SPI 0.70 below 0.8"
    assert drift_trigger(_ev(0, 0.0, pv=0.0), cfg) is None         # nothing planned yet


def test_trigger_lost_capacity():
    cfg = PlanningConfig(resource_heartbeat_timeout_seconds=30)
    plan = dataclasses.replace(PLAN, tasks=(dataclasses.replace(PLAN.tasks[0], task=dataclasses.replace(
        PLAN.tasks[0].task, capabilities=("cuda",))), PLAN.tasks[1]))
    now = T0 + 10 * H
    silent = Resource("r1", "agents", frozenset({"cuda"}), {"agents": 1}, {"agents": 1}, 1.0, True, now - 31_000)
    other = Resource("r2", "agents", frozenset(), {"agents": 1}, {"agents": 1}, 1.0, True, now)
    assert lost_resources([silent, other], now, cfg) == ("r1",)
    # a needs cuda and only the silent r1 has it: no one can take it -> replan
    assert lost_capacity_trigger(plan, ["a"], [silent, other], now, {}, cfg) == "lost capacity: no resource can take a"
    # b can move to r2
    placed, stuck = reallocate(plan, ["b"], [silent, other], now, {}, cfg)
    assert placed["b"].resource_id == "r2" and stuck == ()
    assert lost_capacity_trigger(plan, ["b"], [silent, other], now, {}, cfg) is None
    # ... unless r2's breaker is open
    assert lost_capacity_trigger(plan, ["b"], [silent, other], now, {"r2": Breaker(BreakerState.OPEN, 3, now)},
                                 cfg) is not None


def test_trigger_changed_goal():
    g = Goal("g", "title", T0)
    assert goal_changed_trigger(L.goal_digest(g), L.goal_digest(g)) is None
    assert goal_changed_trigger(L.goal_digest(g), L.goal_digest(dataclasses.replace(g, title="other"))) == "goal changed"


# ------------------------------------------------------------------ replanning

def _goal(**c):
    specs = (TaskSpec("a", "a", 2.0, resources={"agents": 1}), TaskSpec("b", "b", 3.0, ("a",), {"agents": 1}),
             TaskSpec("c", "c", 4.0, ("a",), {"agents": 1}), TaskSpec("d", "d", 2.0, ("b", "c"), {"agents": 1}),
             TaskSpec("e", "e", 1.0, (), {"agents": 1}))
    return Goal("g-replan", "replan me", T0, tasks=specs, constraints=Constraints(**c))


CAPS = {"agents": 2.0}


def _plan(**c):
    plan, _ = plan_goal(_goal(**c), known_capacities=CAPS, config=CFG)
    return plan


def test_replan_keeps_completed_and_running_work_fixed():
    plan = _plan()
    now = T0 + int(3.5 * H)            # a done (0-2), b running, c/d/e left
    new = replan_keeping_done(plan, _goal(), done={"a"}, running={"b"}, now_ms=now, capacities=CAPS,
                              config=CFG, reason="task x failed after 3 attempt(s)")
    assert new.version == plan.version + 1 and new.reason == "replanned: task x failed after 3 attempt(s)"
    assert new.task("a") == plan.task("a") and new.task("b") == plan.task("b")
    for tid in ("c", "d", "e"):
        st = new.task(tid)
        assert st.start_hours >= 3.5 - 1e-9               # nothing remaining starts in the past
        for dep in st.task.depends_on:
            assert st.start_hours >= new.task(dep).finish_hours - 1e-9
    assert [st.task.task_id for st in new.tasks] == [st.task.task_id for st in plan.tasks]
    assert new.makespan_hours == max(st.finish_hours for st in new.tasks)
    assert not new.violations


def test_replan_respects_capacity_held_by_running_tasks():
    plan = _plan()
    now = T0 + 1 * H
    # a and e run (2 agents busy): nothing else may start before one of them ends
    new = replan_keeping_done(plan, _goal(), done=(), running={"a", "e"}, now_ms=now, capacities=CAPS,
                              config=CFG, reason="SPI 0.50 below 0.8")
    assert new.task("a") == plan.task("a") and new.task("e") == plan.task("e")
    busy_until = min(plan.task("a").finish_hours, plan.task("e").finish_hours)
    assert all(new.task(t).start_hours >= busy_until - 1e-9 for t in ("b", "c", "d"))
    assert not new.violations


def test_replan_after_a_late_running_task_waits_for_it():
    plan = _plan()
    now = T0 + 5 * H                   # a (0-2 h) is still running, 3 h late
    new = replan_keeping_done(plan, _goal(), done=(), running={"a"}, now_ms=now, capacities=CAPS,
                              config=CFG, reason="schedule variance -3.00 h beyond +/-4 h")
    assert new.task("a") == plan.task("a")
    assert new.task("b").start_hours > 5.0 and new.task("c").start_hours > 5.0
    assert new.task("e").start_hours >= 5.0


def test_replan_keeps_a_persons_approval_and_every_done_task():
    plan = dataclasses.replace(_plan(), approval=ApprovalState.APPROVED)
    done = {"a", "b", "c", "e"}
    new = replan_keeping_done(plan, _goal(), done=done, running=(), now_ms=T0 + 20 * H, capacities=CAPS,
                              config=CFG, reason="goal changed")
    assert new.approval is ApprovalState.APPROVED
    assert all(new.task(t) == plan.task(t) for t in done)
    assert new.task("d").start_hours == 20.0


def test_replan_with_everything_done_changes_no_task():
    plan = _plan()
    ids = {st.task.task_id for st in plan.tasks}
    new = replan_keeping_done(plan, _goal(), done=ids, running=(), now_ms=T0 + 50 * H, capacities=CAPS,
                              config=CFG, reason="r")
    assert new.tasks == plan.tasks


def test_replan_after_lost_capacity_schedules_after_all_running_work():
    plan = _plan()
    now = T0 + 1 * H
    # capacity dropped to 1 agent while a and e both run: the scheduler cannot place both
    # stand-ins at once, so the rest waits for every running task
    new = replan_keeping_done(plan, _goal(), done=(), running={"a", "e"}, now_ms=now, capacities={"agents": 1.0},
                              config=CFG, reason="lost capacity: no resource can take a")
    assert new.task("a") == plan.task("a") and new.task("e") == plan.task("e")
    last = max(plan.task("a").finish_hours, plan.task("e").finish_hours, 1.0 + CFG.time_unit_hours)
    assert all(new.task(t).start_hours >= last - 1e-9 for t in ("b", "c", "d"))
