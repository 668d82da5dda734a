import pytest

from processors.config import PlanningConfig
from processors.model import (Constraints, Estimate, Goal, RiskCategory, ScheduledTask, Severity,
                              Task)
from processors.resources import effective_capacities
from processors.risk import (alerts, assess, is_low_risk, make_risk, overrun_probability, prioritise,
                             reassess, severity_for)

CFG = PlanningConfig()
CAPS = {"cpu": 32.0, "gpu": 4.0, "memory_gb": 128.0, "storage_gb": 2000.0, "agents": 8.0}


def task(tid, o, m, p, *deps, component="", **res):
    return Task(task_id=tid, name=tid, estimate=Estimate(o, m, p), depends_on=deps,
                resources=res, component=component)


def schedule(tasks):
    """Hand-made ASAP schedule with unlimited resources (most-likely durations)."""
    start, finish = {}, {}
    for t in tasks:
        start[t.task_id] = max((finish[d] for d in t.depends_on), default=0.0)
        finish[t.task_id] = start[t.task_id] + t.estimate.most_likely
    makespan = max(finish.values())
    late_finish = {t.task_id: makespan for t in tasks}
    for t in reversed(tasks):
        for d in t.depends_on:
            late_finish[d] = min(late_finish[d], late_finish[t.task_id] - t.estimate.most_likely)
    out = []
    for t in tasks:
        ls = late_finish[t.task_id] - t.estimate.most_likely
        slack = ls - start[t.task_id]
        out.append(ScheduledTask(t, start[t.task_id], finish[t.task_id], start[t.task_id], ls, slack,
                                 abs(slack) < 1e-9))
    crit = [st.task.task_id for st in out if st.critical]
    return out, makespan, crit


CHAIN = [task("a", 2, 4, 8, cpu=1), task("b", 4, 8, 14, "a", cpu=1), task("c", 1, 2, 4, "b", cpu=1)]


def run(goal, tasks=CHAIN, cost=100.0, caps=CAPS, cfg=CFG, progress=None):
    sts, mk, crit = schedule(tasks)
    return assess(goal, sts, mk, crit, capacities=caps, cost_total=cost, config=cfg, progress=progress)


def find(risks, risk_id):
    return next((r for r in risks if r.risk_id == risk_id), None)


def test_score_and_severity_bands():
    r = make_risk(RiskCategory.TECHNICAL, "x", "X", 0.5, 0.8)
    assert r.score == pytest.approx(0.4) and r.risk_id == "technical-x"
    assert severity_for(0.0) == Severity.LOW
    assert severity_for(0.09) == Severity.LOW
    assert severity_for(0.1) == Severity.MEDIUM
    assert severity_for(0.25) == Severity.HIGH
    assert severity_for(0.5) == Severity.CRITICAL
    assert make_risk(RiskCategory.TECHNICAL, "y", "Y", 1.7, -1).probability == 1.0  # clamped


def test_prioritise_sorted_with_deterministic_ties():
    rs = [make_risk(RiskCategory.EXTERNAL, "e", "E", 0.5, 0.5),
          make_risk(RiskCategory.TECHNICAL, "t", "T", 0.5, 0.5),
          make_risk(RiskCategory.TIMELINE, "big", "B", 0.9, 0.9),
          make_risk(RiskCategory.RESOURCE, "r", "R", 0.25, 1.0)]
    out = prioritise(rs)
    assert [r.risk_id for r in out] == ["timeline-big", "resource-r", "technical-t", "external-e"]
    assert prioritise(reversed(rs)) == out


def test_overrun_probability_pert():
    assert overrun_probability(10, 4, 10) == pytest.approx(0.5)
    assert overrun_probability(10, 4, 14) == pytest.approx(0.0228, abs=1e-3)  # 2 sigma
    assert overrun_probability(10, 0, 9) == 1.0 and overrun_probability(10, 0, 11) == 0.0


def test_deadline_overrun_gives_high_timeline_risk():
    late = Goal("g", "t", 0, constraints=Constraints(deadline_hours=10.0))  # makespan 14
    r = find(run(late), "timeline-deadline")
    assert r is not None and r.category == RiskCategory.TIMELINE
    assert r.severity in (Severity.HIGH, Severity.CRITICAL)
    assert r.probability > 0.9 and set(r.task_ids) == {"a", "b", "c"}
    assert any("Cut" in m for m in r.mitigations)
    assert r in alerts(run(late), CFG)


def test_relaxed_deadline_is_low():
    relaxed = Goal("g", "t", 0, constraints=Constraints(deadline_hours=40.0))
    r = find(run(relaxed), "timeline-deadline")
    assert r is not None and r.severity == Severity.LOW and r.probability < 0.01
    assert r not in alerts(run(relaxed), CFG)


def test_tight_deadline_uses_variance():
    # expected finish ~ 14.6 h with sigma ~ 1.9 h: a deadline at 16 h is possible but not sure
    g = Goal("g", "t", 0, constraints=Constraints(deadline_hours=16.0))
    r = find(run(g), "timeline-deadline")
    assert 0.1 < r.probability < 0.5


def test_no_deadline_no_deadline_risk():
    assert find(run(Goal("g", "t", 0)), "timeline-deadline") is None


def test_resource_overallocation_and_buffer():
    par = [task("x", 1, 2, 3, gpu=3), task("y", 1, 2, 3, gpu=3)]
    risks = run(Goal("g", "t", 0), par, caps={"gpu": 4.0})
    r = find(risks, "resource-gpu-overallocated")
    assert r is not None and r.severity == Severity.CRITICAL
    too_big = run(Goal("g", "t", 0), [task("x", 1, 2, 3, gpu=8)], caps={"gpu": 4.0})
    assert find(too_big, "resource-gpu-overallocated").task_ids == ("x",)
    # caps are what the plan may use, the buffer already held back (CFG keeps 10%: 32 of 35.6)
    assert CFG.resource_buffer_percentage == 0.1
    near = run(Goal("g", "t", 0), [task("x", 1, 2, 3, cpu=34)], caps={"cpu": 32.0})
    assert find(near, "resource-cpu-buffer") is not None and find(near, "resource-cpu-overallocated") is None
    within = run(Goal("g", "t", 0), [task("x", 1, 2, 3, cpu=30)], caps={"cpu": 32.0})
    assert not [r for r in within if r.category == RiskCategory.RESOURCE], "the buffer is not held back twice"
    over = run(Goal("g", "t", 0), [task("x", 1, 2, 3, cpu=36)], caps={"cpu": 32.0})
    assert find(over, "resource-cpu-overallocated").task_ids == ("x",)
    roomy = run(Goal("g", "t", 0), [task("x", 1, 2, 3, cpu=4)], caps={"cpu": 32.0})
    assert not [r for r in roomy if r.category == RiskCategory.RESOURCE]


def test_goal_capacity_caps_available_capacity():
    # risks are assessed against the plan's effective capacities, in which the goal's cap holds
    g = Goal("g", "t", 0, constraints=Constraints(capacities={"cpu": 0.5}))
    assert find(run(g, caps=effective_capacities(g, CAPS, CFG)), "resource-cpu-overallocated") is not None


def test_budget_risk():
    over = run(Goal("g", "t", 0, constraints=Constraints(budget=50.0)), cost=100.0)
    r = find(over, "resource-budget")
    assert r is not None and r.probability > 0.9 and r.severity in (Severity.HIGH, Severity.CRITICAL)
    under = run(Goal("g", "t", 0, constraints=Constraints(budget=1000.0)), cost=100.0)
    assert find(under, "resource-budget") is None


def test_technical_uncertainty_and_integration_fan_in():
    tasks = [task("s1", 1, 2, 3, component="a"), task("s2", 1, 2, 3, component="b"),
             task("s3", 1, 2, 3, component="c"), task("s4", 1, 2, 3, component="d"),
             task("join", 1, 2, 20, "s1", "s2", "s3", "s4", component="e")]
    risks = run(Goal("g", "t", 0), tasks)
    unc = find(risks, "technical-estimate-uncertainty")
    assert unc is not None and unc.task_ids == ("join",)
    fan = find(risks, "integration-fan-in")
    assert fan is not None and fan.task_ids == ("join",)
    assert find(risks, "integration-cross-component") is None  # one joining task only


def test_template_risks_external_and_mitigation_discount():
    g = Goal("g", "Public API", 0, description="handles payments and personal data; GDPR")
    risks = run(g)
    sec = find(risks, "external-security")
    comp = find(risks, "external-compliance")
    assert sec is not None and comp is not None
    assert any(m.startswith("Add task:") for m in sec.mitigations)
    mitigated = CHAIN + [task("mitigate.security", 1, 2, 4)]
    sec2 = find(run(g, mitigated), "external-security")
    assert sec2.probability < sec.probability and not any(m.startswith("Add task:") for m in sec2.mitigations)


def test_categories_covered_and_sorted():
    g = Goal("g", "Public payment API", 0, description="third-party provider, migrating legacy data",
             constraints=Constraints(deadline_hours=12.0, budget=10.0))
    tasks = [task("s1", 1, 2, 9, component="a", gpu=1), task("s2", 1, 2, 3, component="b"),
             task("s3", 1, 2, 3, component="c"), task("s4", 1, 2, 3, "s1", component="d"),
             task("j", 1, 2, 3, "s1", "s2", "s3", "s4", component="e"),
             task("k", 1, 2, 3, "j", "s2", component="f")]
    risks = run(g, tasks)
    assert {r.category for r in risks} == set(RiskCategory)
    assert list(risks) == sorted(risks, key=lambda r: -r.score) and prioritise(risks) == risks
    assert len({r.risk_id for r in risks}) == len(risks)
    assert run(g, tasks) == risks  # deterministic


def test_progress_reassessment():
    g = Goal("g", "t", 0, constraints=Constraints(deadline_hours=15.0))
    before = find(run(g), "timeline-deadline")
    after = find(run(g, progress={"a": 1.0, "b": 1.0}), "timeline-deadline")
    assert after.probability < before.probability  # less uncertainty left
    changes = reassess(run(g), run(g, progress={"a": 1.0, "b": 1.0, "c": 1.0}))
    assert changes.changed


def test_reassess_diff():
    a = make_risk(RiskCategory.TECHNICAL, "a", "A", 0.2, 0.2)
    b = make_risk(RiskCategory.TIMELINE, "b", "B", 0.3, 0.3)
    b_up = make_risk(RiskCategory.TIMELINE, "b", "B", 0.9, 0.9)
    c = make_risk(RiskCategory.EXTERNAL, "c", "C", 0.5, 0.5)
    ch = reassess([a, b], [b_up, c])
    assert ch.new == (c,) and ch.resolved == (a,) and ch.escalated == (b_up,) and ch.reduced == ()
    assert not reassess([a], [a]).changed


def test_alert_thresholds():
    cfg = PlanningConfig(risk_threshold_probability=0.7, risk_threshold_impact="HIGH", alert_score_threshold=0.5)
    likely_high = make_risk(RiskCategory.TIMELINE, "a", "A", 0.7, 0.6)     # p & impact thresholds
    likely_low = make_risk(RiskCategory.TIMELINE, "b", "B", 0.9, 0.3)      # impact too low, score .27
    big_score = make_risk(RiskCategory.RESOURCE, "c", "C", 0.6, 0.9)       # score .54
    small = make_risk(RiskCategory.EXTERNAL, "d", "D", 0.2, 0.9)
    got = alerts([small, likely_low, likely_high, big_score], cfg)
    assert [r.risk_id for r in got] == ["resource-c", "timeline-a"]
    strict = PlanningConfig(risk_threshold_impact="CRITICAL", alert_score_threshold=0.9)
    assert alerts([likely_high, big_score], strict) == ()
    loose = PlanningConfig(risk_threshold_probability=0.5, risk_threshold_impact="LOW")
    assert likely_low in alerts([likely_low], loose)


def test_is_low_risk():
    assert is_low_risk([make_risk(RiskCategory.TECHNICAL, "a", "A", 0.3, 0.3)], CFG)
    assert is_low_risk([make_risk(RiskCategory.TECHNICAL, "a", "A", 0.6, 0.6)], CFG)  # HIGH, below alert
    assert not is_low_risk([make_risk(RiskCategory.TECHNICAL, "a", "A", 0.8, 0.7)], CFG)  # alert-level
    assert is_low_risk([], CFG)
