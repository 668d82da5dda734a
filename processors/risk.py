"""Risk assessment: identify, score (probability x impact), prioritise, mitigate, reassess.

Five categories (model.RiskCategory). Inputs are plain values from the schedule, so this
module depends on no scheduler:

    assess(goal, scheduled_tasks, makespan_hours, critical_path,
           capacities=..., cost_total=..., config=..., progress=None) -> tuple[Risk, ...]
    alerts(risks, config) -> tuple[Risk, ...]

Deterministic: risk ids are f"{category}-{slug}" and the output is sorted by score
(descending) with a fixed tie-break (impact, category order, id).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from .config import SEVERITY_IMPACT_FLOOR, PlanningConfig
from .decomposition.select import goal_text, hits
from .decomposition.templates import DomainTemplate, resolve_domain
from .model import RESOURCE_KINDS, Goal, Risk, RiskCategory, ScheduledTask, Severity
from .resources import EPS, PeakUsage, peak_usage

# Score bands (score = probability * impact), highest first.
SEVERITY_BANDS: tuple[tuple[float, Severity], ...] = (
    (0.5, Severity.CRITICAL),
    (0.25, Severity.HIGH),
    (0.1, Severity.MEDIUM),
    (0.0, Severity.LOW),
)
_CATEGORY_ORDER = {c: i for i, c in enumerate(RiskCategory)}
_SEVERITY_RANK = {s: i for i, s in enumerate(Severity)}
WIDE_SPREAD = 2.0        # (pessimistic - optimistic) / most_likely at or above this is "wide"
FAN_IN = 4               # this many predecessors makes a task an integration point
MITIGATION_FACTOR = 0.6  # a planned mitigation task leaves this share of the probability


def severity_for(score: float) -> Severity:
    for floor, sev in SEVERITY_BANDS:
        if score >= floor:
            return sev
    return Severity.LOW


def _clamp(x: float, lo: float = 0.0, hi: float = 1.0) -> float:
    return max(lo, min(hi, x))


def make_risk(category: RiskCategory, slug: str, title: str, probability: float, impact: float, *,
              mitigations: Iterable[str] = (), task_ids: Iterable[str] = (), description: str = "") -> Risk:
    """A Risk with a deterministic id, clamped probability/impact and banded severity."""
    p, i = round(_clamp(probability), 4), round(_clamp(impact), 4)
    return Risk(
        risk_id=f"{category.value.lower()}-{slug}",
        category=category,
        title=title,
        probability=p,
        impact=i,
        severity=severity_for(p * i),
        mitigations=tuple(dict.fromkeys(m for m in mitigations if m)),
        task_ids=tuple(sorted(set(task_ids))),
        description=description,
    )


def prioritise(risks: Iterable[Risk]) -> tuple[Risk, ...]:
    """Highest score first; ties by impact, then category order, then id."""
    return tuple(sorted(risks, key=lambda r: (-round(r.score, 9), -r.impact,
                                              _CATEGORY_ORDER[r.category], r.risk_id)))


def overrun_probability(mean_hours: float, variance: float, limit_hours: float) -> float:
    """P(duration > limit) for a normal(mean, variance) duration (PERT approximation)."""
    if variance <= EPS:
        return 1.0 if mean_hours > limit_hours + EPS else 0.0
    z = (limit_hours - mean_hours) / math.sqrt(variance)
    return _clamp(0.5 * (1.0 - math.erf(z / math.sqrt(2.0))))


# ------------------------------------------------------------------ assessment

@dataclass(frozen=True)
class _Ctx:
    goal: Goal
    tasks: tuple[ScheduledTask, ...]
    by_id: dict[str, ScheduledTask]
    makespan: float
    critical: tuple[str, ...]
    capacities: dict[str, float]
    cost_total: float
    config: PlanningConfig
    progress: dict[str, float]
    template: DomainTemplate
    open: tuple[ScheduledTask, ...] = ()                      # tasks with work left
    usage: PeakUsage | None = None                            # peak_usage(open)

    def remaining(self, task_id: str) -> float:
        if not self.progress:
            return 1.0
        return 1.0 - _clamp(self.progress.get(task_id, 0.0))

    def open_tasks(self) -> tuple[ScheduledTask, ...]:
        return self.open


def _timeline(c: _Ctx) -> list[Risk]:
    out: list[Risk] = []
    crit = [c.by_id[t] for t in c.critical if t in c.by_id] or [st for st in c.tasks if st.critical]
    crit_ids = [st.task.task_id for st in crit]
    var = sum((st.task.estimate.stddev * c.remaining(st.task.task_id)) ** 2 for st in crit)
    shift = sum((st.task.estimate.expected - st.task.duration_hours) * c.remaining(st.task.task_id)
                for st in crit)
    mean = c.makespan + shift
    sigma = math.sqrt(var)
    deadline = c.goal.constraints.deadline_hours
    if deadline is not None:
        p = overrun_probability(mean, var, deadline)
        over = max(0.0, mean - deadline) / max(deadline, EPS)
        impact = _clamp(0.6 + over, hi=0.95) if p >= 0.5 else 0.6
        mitig = ["Start critical-path tasks first and protect them from interruptions",
                 "Add capacity to critical-path tasks or fast-track them where dependencies allow",
                 "Agree a reduced scope or a later deadline with the goal owner"]
        if c.makespan > deadline:
            mitig.insert(0, f"Cut {c.makespan - deadline:.1f} h from the critical path before starting")
        out.append(make_risk(
            RiskCategory.TIMELINE, "deadline", "Project may overrun its deadline", p, impact,
            mitigations=mitig, task_ids=crit_ids,
            description=(f"PERT: expected finish {mean:.1f} h (sigma {sigma:.1f} h) vs deadline "
                         f"{deadline:.1f} h; P(overrun) = {p:.2f}")))
    horizon = c.config.planning_horizon_days * 24.0
    if c.makespan > horizon + EPS:
        out.append(make_risk(
            RiskCategory.TIMELINE, "horizon", "Plan extends beyond the planning horizon", 0.9, 0.5,
            mitigations=["Split the goal into stages that fit the planning horizon",
                         "Re-plan the later stages when they come into the horizon"],
            description=f"makespan {c.makespan:.1f} h > horizon {horizon:.0f} h"))
    open_tasks = c.open_tasks()
    if len(open_tasks) >= 4:
        tight = [st for st in open_tasks if st.critical or st.slack_hours <= EPS]
        share = len(tight) / len(open_tasks)
        if share >= 0.5:
            out.append(make_risk(
                RiskCategory.TIMELINE, "no-float", "Little schedule float: most tasks are critical",
                0.3 + 0.5 * (share - 0.5), 0.4,
                mitigations=["Add buffers after risky critical-path tasks",
                             "Decouple dependencies to create parallel paths"],
                task_ids=[st.task.task_id for st in tight],
                description=f"{len(tight)} of {len(open_tasks)} open tasks have no slack"))
    return out


def _resource(c: _Ctx) -> list[Risk]:
    """`c.capacities` is what the plan may use, the safety buffer already held back
    (resources.effective_capacities); the capacity itself is that / (1 - buffer). Demand
    beyond the capacity itself is over-allocation; demand within it that eats into the
    held-back buffer is the buffer risk (the buffer is applied once, not again on top)."""
    out: list[Risk] = []
    caps = c.capacities
    buffer = c.config.resource_buffer_percentage
    keep = 1.0 - buffer
    open_tasks = c.open_tasks()
    peak, when, _ = c.usage
    for kind in RESOURCE_KINDS:
        cap = caps.get(kind)
        need = peak.get(kind, 0.0)
        if cap is None or need <= EPS:
            continue
        whole = cap / keep if keep > EPS else cap
        too_big = [st.task.task_id for st in open_tasks if st.task.resources.get(kind, 0.0) > whole + EPS]
        users = [st.task.task_id for st in open_tasks if st.task.resources.get(kind, 0.0) > 0]
        if too_big or need > whole + EPS:
            out.append(make_risk(
                RiskCategory.RESOURCE, f"{kind}-overallocated", f"{kind} demand exceeds capacity",
                1.0 if too_big else 0.9, 0.8,
                mitigations=[f"Increase {kind} capacity to at least {need:g}",
                             f"Level the schedule: delay non-critical tasks that use {kind}",
                             f"Split tasks that need more {kind} than is available"],
                task_ids=too_big or users,
                description=f"peak {need:g} {kind} at {when.get(kind, 0.0):.1f} h vs capacity {whole:g}"))
        elif whole > 0 and need > cap + EPS:
            used = need / whole
            p = 0.4 + 0.4 * _clamp((used - keep) / max(buffer, EPS))
            out.append(make_risk(
                RiskCategory.RESOURCE, f"{kind}-buffer", f"{kind} usage leaves less than the "
                f"{buffer:.0%} safety buffer", p, 0.5,
                mitigations=[f"Reserve {kind} capacity ahead of the peak",
                             f"Keep {buffer:.0%} of {kind} free by shifting non-critical work"],
                task_ids=users,
                description=f"peak {need:g} of {whole:g} {kind} ({used:.0%})"))
    gpu_tasks = [st for st in open_tasks if st.task.resources.get("gpu", 0.0) > 0]
    if gpu_tasks and not any(r.risk_id.startswith("resource-gpu") for r in out):
        on_crit = sum(1 for st in gpu_tasks if st.critical)
        cap = caps.get("gpu", 0.0)
        share = peak.get("gpu", 0.0) / cap if cap > 0 else 1.0
        out.append(make_risk(
            RiskCategory.RESOURCE, "gpu-availability", "GPU capacity may not be available when needed",
            0.2 + 0.4 * _clamp(share), 0.4 + (0.2 if on_crit else 0.0),
            mitigations=["Reserve GPUs for the scheduled windows", "Prepare a smaller-batch or CPU fallback"],
            task_ids=[st.task.task_id for st in gpu_tasks],
            description=f"{len(gpu_tasks)} tasks need GPUs ({on_crit} on the critical path)"))
    budget = c.goal.constraints.budget
    if budget is not None and budget > 0:
        # cost uncertainty follows duration uncertainty (coefficient of variation)
        ml = sum(st.task.duration_hours for st in c.tasks) or 1.0
        sd = math.sqrt(sum(st.task.estimate.stddev ** 2 for st in c.tasks))
        exp_ratio = sum(st.task.estimate.expected for st in c.tasks) / ml
        mean, sigma = c.cost_total * exp_ratio, c.cost_total * sd / ml
        p = overrun_probability(mean, sigma ** 2, budget)
        if p >= 0.05 or c.cost_total > budget:
            over = max(0.0, mean - budget) / budget
            out.append(make_risk(
                RiskCategory.RESOURCE, "budget", "Cost may exceed the budget", p,
                _clamp(0.5 + over, hi=0.95),
                mitigations=["Trim scope to the must-have objectives",
                             "Use cheaper resource options (spot/preemptible, smaller GPUs)",
                             f"Ask for a budget of at least {mean + sigma:.0f}"],
                description=f"estimated cost {c.cost_total:.2f} (expected {mean:.2f}) vs budget {budget:.2f}"))
    return out


def _technical(c: _Ctx) -> list[Risk]:
    wide = []
    open_tasks = c.open_tasks()
    for st in open_tasks:
        e = st.task.estimate
        spread = (e.pessimistic - e.optimistic) / max(e.most_likely, 0.25)
        if spread >= WIDE_SPREAD:
            wide.append(st)
    if not wide:
        return []
    crit = [st for st in wide if st.critical]
    return [make_risk(
        RiskCategory.TECHNICAL, "estimate-uncertainty", "Highly uncertain task estimates",
        min(0.9, 0.15 + 0.6 * len(wide) / len(open_tasks)), 0.3 + 0.4 * len(crit) / len(wide),
        mitigations=["Spike the widest-estimate tasks first",
                     "Break wide-estimate tasks into smaller, better-understood steps"],
        task_ids=[st.task.task_id for st in wide],
        description=f"{len(wide)} tasks with (pessimistic - optimistic) >= {WIDE_SPREAD:g} x most likely; "
                    f"{len(crit)} on the critical path")]


def _learned(c: _Ctx) -> list[Risk]:
    """Failure probabilities from the learned estimator (goal.estimates), for open tasks."""
    if not c.goal.estimates:
        return []
    from processors.estimates import failure_risks
    return failure_risks(c.open_tasks(), c.goal.estimates, c.config)


def _integration(c: _Ctx) -> list[Risk]:
    out: list[Risk] = []
    open_ids = {st.task.task_id for st in c.open_tasks()}
    fan = [st for st in c.tasks if st.task.task_id in open_ids and len(st.task.depends_on) >= FAN_IN]
    if fan:
        worst = max(len(st.task.depends_on) for st in fan)
        out.append(make_risk(
            RiskCategory.INTEGRATION, "fan-in", "Integration points join many streams of work",
            min(0.8, 0.2 + 0.05 * worst), 0.5,
            mitigations=["Integrate continuously instead of in one big-bang step",
                         "Contract-test interfaces between components early"],
            task_ids=[st.task.task_id for st in fan],
            description=f"{len(fan)} tasks wait on >= {FAN_IN} predecessors (max {worst})"))
    comp = {st.task.task_id: st.task.component for st in c.tasks}
    joins = sorted({st.task.task_id for st in c.tasks if st.task.task_id in open_ids and st.task.component
                    for d in st.task.depends_on if comp.get(d) and comp[d] != st.task.component})
    if len(joins) >= 3:
        out.append(make_risk(
            RiskCategory.INTEGRATION, "cross-component", "Work crosses component boundaries",
            min(0.7, 0.15 + 0.05 * len(joins)), 0.45,
            mitigations=["Agree interface contracts before build", "Shared staging environment from the start"],
            task_ids=joins, description=f"{len(joins)} tasks depend on another component's work"))
    return out


def _template_risks(c: _Ctx) -> list[Risk]:
    text = goal_text(c.goal)
    out: list[Risk] = []
    task_names = {st.task.name for st in c.tasks}
    ids = {st.task.task_id for st in c.tasks}
    if c.progress:
        done = sum(st.task.estimate.expected * (1 - c.remaining(st.task.task_id)) for st in c.tasks)
        total = sum(st.task.estimate.expected for st in c.tasks) or 1.0
        completion = done / total
    else:
        completion = 0.0    # nothing done yet
    for r in c.template.risks:
        h = hits(text, r.keywords)
        if not (r.always or h):
            continue
        related = [st.task.task_id for st in c.tasks if st.task.component in r.components]
        if related and c.progress and all(c.remaining(t) <= EPS for t in related):
            continue  # the exposed work is finished
        p = min(0.95, r.probability * (1 + 0.15 * min(h, 3)))
        mitigated = (f"mitigate.{r.id}" in ids
                     or (r.mitigation_task is not None and r.mitigation_task.name in task_names))
        if mitigated:
            p *= MITIGATION_FACTOR
        p *= 1 - 0.5 * completion
        mitigations = list(r.mitigations)
        if r.mitigation_task is not None and not mitigated:
            mitigations.insert(0, f"Add task: {r.mitigation_task.name}")
        out.append(make_risk(
            r.category, r.id, r.title, p, r.impact, mitigations=mitigations,
            task_ids=related + ([f"mitigate.{r.id}"] if f"mitigate.{r.id}" in ids else []),
            description=f"{c.template.name} template risk"
                        + (f"; goal mentions {h} trigger(s)" if h else "")
                        + ("; mitigation planned" if mitigated else "")))
    return out


def assess(goal: Goal, tasks: Sequence[ScheduledTask], makespan_hours: float, critical_path: Sequence[str],
           *, capacities: Mapping[str, float], cost_total: float, config: PlanningConfig,
           progress: Mapping[str, float] | None = None,
           template: DomainTemplate | None = None,
           usage: PeakUsage | None = None) -> tuple[Risk, ...]:
    """All risks of a scheduled plan, prioritised. `progress` (task id -> fraction done)
    reassesses a running plan: finished work stops contributing, remaining uncertainty
    shrinks. `capacities` is what the plan may use: `resources.effective_capacities(...)`,
    as the planner scheduled against it (`Problem.capacities`). `usage` is
    `peak_usage(tasks)` when the caller already has it (used only without progress, when
    every task is open)."""
    tasks = tuple(tasks)
    progress = dict(progress or {})
    if progress:
        open_tasks = tuple(st for st in tasks if 1.0 - _clamp(progress.get(st.task.task_id, 0.0)) > EPS)
        usage = peak_usage(open_tasks)
    else:
        open_tasks = tasks
        usage = usage if usage is not None else peak_usage(tasks)
    ctx = _Ctx(goal=goal, tasks=tasks, by_id={st.task.task_id: st for st in tasks},
               makespan=float(makespan_hours), critical=tuple(critical_path),
               capacities=dict(capacities), cost_total=float(cost_total),
               config=config, progress=progress,
               template=template or resolve_domain(goal.domain), open=open_tasks, usage=usage)
    found: dict[str, Risk] = {}
    for part in (_timeline, _resource, _technical, _integration, _template_risks, _learned):
        for r in part(ctx):
            if r.risk_id not in found or r.score > found[r.risk_id].score:
                found[r.risk_id] = r
    return prioritise(found.values())


def alerts(risks: Iterable[Risk], config: PlanningConfig) -> tuple[Risk, ...]:
    """Risks to raise: probability >= risk_threshold_probability and impact at or above
    the risk_threshold_impact level, or score >= alert_score_threshold."""
    floor = SEVERITY_IMPACT_FLOOR[config.risk_threshold_impact]
    return prioritise(
        r for r in risks
        if (r.probability >= config.risk_threshold_probability - EPS and r.impact >= floor - EPS)
        or r.score >= config.alert_score_threshold - EPS)


def is_low_risk(risks: Iterable[Risk], config: PlanningConfig) -> bool:
    """No risk reaches the configured alert thresholds and none is CRITICAL.

    HIGH risks below the thresholds are normal for decomposed plans (template estimates
    are wide on purpose); treating them as blockers would auto-approve nothing."""
    risks = tuple(risks)
    return not alerts(risks, config) and all(r.severity is not Severity.CRITICAL for r in risks)


@dataclass(frozen=True)
class RiskChanges:
    """How the risk picture moved between two assessments (for plans.updated / alerts)."""

    new: tuple[Risk, ...]
    resolved: tuple[Risk, ...]
    escalated: tuple[Risk, ...]     # severity went up
    reduced: tuple[Risk, ...]       # severity went down

    @property
    def changed(self) -> bool:
        return bool(self.new or self.resolved or self.escalated or self.reduced)


def reassess(previous: Iterable[Risk], current: Iterable[Risk]) -> RiskChanges:
    prev = {r.risk_id: r for r in previous}
    cur = {r.risk_id: r for r in current}
    return RiskChanges(
        new=prioritise(r for k, r in cur.items() if k not in prev),
        resolved=prioritise(r for k, r in prev.items() if k not in cur),
        escalated=prioritise(r for k, r in cur.items()
                             if k in prev and _SEVERITY_RANK[r.severity] > _SEVERITY_RANK[prev[k].severity]),
        reduced=prioritise(r for k, r in cur.items()
                           if k in prev and _SEVERITY_RANK[r.severity] < _SEVERITY_RANK[prev[k].severity]),
    )
