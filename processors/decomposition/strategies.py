"""The six decomposition strategies, plus explicit tasks.

Each strategy is a pure function (goal, template, options) -> tuple[Task, ...]. Task ids
are slugs built from template ids and objective text ("backend.implement",
"obj-user-login.verify", "gate.design", "mitigate.security"), so the same goal always
yields the same tasks and a re-plan keeps the ids of unchanged work.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Sequence

from ..execution import describe
from ..model import Estimate, Goal, Task, TaskSpec
from .select import (MAX_OBJECTIVE_GROUPS, MAX_UNITS, capacities_for, goal_text, hits,
                     normalize, order_units, ranked_risks, select_units, slug)
from .templates import Activity, DomainTemplate, RiskSpec, Unit

QUANTUM = 0.25           # estimates are rounded to this many hours
SCALABLE = ("cpu", "gpu", "agents")  # demands that can shrink by taking longer
POOL_KINDS = (("gpu", "GPU"), ("storage_gb", "storage"), ("memory_gb", "memory"), ("cpu", "CPU"))
AGENT_POOL = ("agents", "agent")


@dataclass(frozen=True)
class Options:
    max_task_hours: float = 8.0   # longer tasks are split by resource/hybrid strategies


def _q(x: float) -> float:
    return round(x / QUANTUM) * QUANTUM


def _dedupe(items: Iterable[str]) -> tuple[str, ...]:
    out = tuple(dict.fromkeys(items))
    return out if all(out) else tuple(i for i in out if i)


def _fmt(texts: Iterable[str], name: str) -> tuple[str, ...]:
    return tuple(t.replace("{name}", name) for t in texts)


def _leftover_objectives(goal: Goal) -> tuple[str, ...]:
    """Objectives beyond MAX_OBJECTIVE_GROUPS: checked by the goal's acceptance task."""
    return tuple(f"Objective met: {o}" for o in goal.objectives[MAX_OBJECTIVE_GROUPS:])


def _objective_name(obj: str) -> str:
    obj = " ".join(obj.split())
    return obj if len(obj) <= 80 else obj[:77].rstrip() + "..."


class Builder:
    """Accumulates tasks in insertion (topological) order with unique ids."""

    def __init__(self, goal: Goal, tpl: DomainTemplate) -> None:
        self.goal = goal
        self.tpl = tpl
        self.tasks: dict[str, Task] = {}
        self.kind: dict[str, str] = {}
        self.ref: dict[tuple[str, str], str] = {}   # (unit id, activity id) -> task id
        self.objective_ids: set[str] = set()
        self._caps = goal.constraints.capacities

    def unique(self, base: str) -> str:
        tid, n = base, 2
        while tid in self.tasks:
            tid, n = f"{base}-{n}", n + 1
        return tid

    def add(self, tid: str, act: Activity, unit: Unit | None = None, deps: Sequence[str] = (), *,
            phase: str | None = None, scale: bool = True, mitigation: bool = False,
            success: Sequence[str] = (), validation: Sequence[str] = ()) -> str:
        tid = self.unique(tid)
        uname = unit.name if unit else ""
        effort = unit.effort if (unit and scale) else 1.0
        eo, em, ep = act.estimate
        o, m, p = _q(eo * effort), _q(em * effort), _q(ep * effort)
        if unit and unit.resources:
            resources = {k: v for k, v in {**unit.resources, **act.resources}.items() if v > 0}
        else:
            resources = {k: v for k, v in act.resources.items() if v > 0}
        # Fit divisible demands to the goal's explicit capacities: fewer units, longer.
        caps = self._caps
        if caps:
            factor = 1.0
            for k in SCALABLE:
                cap = caps.get(k)
                if cap and cap > 0 and resources.get(k, 0) > cap:
                    factor = max(factor, resources[k] / cap)
                    resources[k] = float(cap)
            if factor > 1.0:
                o, m, p = _q(o * factor), _q(m * factor), _q(p * factor)
        o, m = max(o, 0.0), max(m, QUANTUM)
        o, p = min(o, m), max(p, m)
        capabilities = [*(unit.capabilities if unit else ()), *act.capabilities]
        if act.kind == "build":
            capabilities += list(self.goal.constraints.required_capabilities)
        name = act.name.replace("{name}", uname)
        succ = [x.replace("{name}", uname) for x in act.success]
        succ += success
        if unit and unit.id in self.objective_ids and act.kind in ("verify", "acceptance"):
            succ.append(f"Objective met: {uname}")
        vals = [x.replace("{name}", uname) for x in act.validation]
        vals += validation
        self.tasks[tid] = Task(
            tid, name, Estimate(o, m, p), _dedupe(deps), resources, _dedupe(capabilities),
            describe(name, act.kind, self.goal.title),
            phase or act.phase, unit.id if unit else "", _dedupe(succ), _dedupe(vals), mitigation)
        self.kind[tid] = "mitigation" if mitigation else act.kind
        if unit:
            self.ref[(unit.id, act.id)] = tid
        return tid

    def terminals(self, ids: Sequence[str]) -> list[str]:
        inner = {d for t in ids for d in self.tasks[t].depends_on}
        return [t for t in ids if t not in inner]

    def result(self) -> tuple[Task, ...]:
        return tuple(self.tasks.values())


# ------------------------------------------------------------------ shared pieces

def _split_phases(tpl: DomainTemplate, unit_acts: Sequence[Activity]):
    lo = min(tpl.phase_index(a.phase) for a in unit_acts)
    return tpl.phases[: lo + 1], tpl.phases[lo + 1:]


def _front(b: Builder, phases, entry: Sequence[str] = ()) -> list[str]:
    prev = list(entry)
    for p in phases:
        ids = [b.add(a.id, a, deps=prev) for a in p.activities if a.kind != "acceptance"]
        if ids:
            prev = ids
    return prev


def _units(b: Builder, units: Sequence[Unit], acts: Sequence[Activity], entry: Sequence[str],
           entry_for: Callable[[Unit], Sequence[str]] | None = None) -> dict[str, str]:
    """One chain of activities per unit; build activities wait for the same activity of
    the units named in `after`. Returns unit id -> last task id of its chain."""
    last: dict[str, str] = {}
    for u in order_units(tuple(units)):
        prev = [*entry, *(entry_for(u) if entry_for else ())]
        for a in acts:
            deps = list(prev)
            if a.kind == "build":
                deps += [b.ref[(v, a.id)] for v in u.after if (v, a.id) in b.ref]
            prev = [b.add(f"{u.id}.{a.id}", a, unit=u, deps=deps)]
        last[u.id] = prev[0]
    return last


CHECK_NAME = "Verify objective: "   # an objective's check task: its name is the objective's, not its work's


def _check_activity(phase: str) -> Activity:
    return Activity(id="verify", name=CHECK_NAME + "{name}", phase=phase, kind="acceptance",
                    estimate=(0.5, 1.0, 2.0), resources={"agents": 1.0}, capabilities=("qa",),
                    success=("Objective met: {name}",),
                    validation=("Objective demonstrated against its acceptance test",))


def _gate_activity(phase_id: str, phase_name: str) -> Activity:
    return Activity(id=f"gate-{phase_id}", name=f"Gate: {phase_name} complete", phase=phase_id,
                    kind="gate", estimate=(0.5, 1.0, 2.0), resources={"agents": 1.0},
                    capabilities=("review",),
                    success=(f"All {phase_name.lower()} work reviewed and accepted",),
                    validation=("Phase review sign-off",))


def _objective_checks(b: Builder, objectives: Sequence[Unit], phase: str, deps: Sequence[str]) -> list[str]:
    act = _check_activity(phase)
    return [b.add(f"{o.id}.verify", act, unit=Unit(id=o.id, name=o.name), deps=deps) for o in objectives]


def _back(b: Builder, phases, entry: Sequence[str], objectives: Sequence[Unit] = ()) -> list[str]:
    """Project-level closing phases; objective checks feed the acceptance activity,
    which carries the goal's own success criteria."""
    prev = list(entry)
    placed_checks = False
    for p in phases:
        others = [b.add(a.id, a, deps=prev) for a in p.activities if a.kind != "acceptance"]
        acc = [a for a in p.activities if a.kind == "acceptance"]
        ids = list(others)
        if acc:
            checks = _objective_checks(b, objectives, p.id, prev) if not placed_checks else []
            placed_checks = True
            for a in acc:
                ids.append(b.add(a.id, a, deps=checks or prev,
                                 success=(*b.goal.success_criteria, *_leftover_objectives(b.goal))))
        if ids:
            prev = ids
    if not placed_checks and objectives:
        last_phase = phases[-1].id if phases else b.tpl.phases[-1].id
        prev = _objective_checks(b, objectives, last_phase, prev) or prev
    return prev


def _objective_id(objective: str, used: set[str]) -> str:
    """A stable id for an objective's tasks, unique among `used` (which it joins)."""
    uid, n = f"obj-{slug(objective)}", 2
    while uid in used:
        uid, n = f"obj-{slug(objective)}-{n}", n + 1
    used.add(uid)
    return uid


def objective_units(goal: Goal, pool: Sequence[Unit]) -> tuple[Unit, ...]:
    """One unit per objective (first MAX_OBJECTIVE_GROUPS), shaped like its best-matching
    template unit (capabilities, resources, effort)."""
    out: list[Unit] = []
    used: set[str] = set()
    for obj in goal.objectives[:MAX_OBJECTIVE_GROUPS]:
        best = _best_match(obj, pool)
        uid = _objective_id(obj, used)
        out.append(Unit(id=uid, name=_objective_name(obj), description=obj,
                        effort=best.effort if best else 1.0,
                        capabilities=best.capabilities if best else (),
                        resources=dict(best.resources) if best else {"agents": 1.0}))
    return tuple(out)


def _best_match(text: str, pool: Sequence[Unit]) -> Unit | None:
    t = normalize(text)
    scored = [(hits(t, u.keywords), -i, u) for i, u in enumerate(pool)]
    best = max(scored, key=lambda s: (s[0], s[1]), default=None)
    return best[2] if best and best[0] > 0 else None


def _components(goal: Goal, tpl: DomainTemplate) -> tuple[Unit, ...]:
    return order_units(select_units(tpl.components, goal_text(goal)))


def _with_objectives(b: Builder, goal: Goal, pool: Sequence[Unit]) -> tuple[Unit, ...]:
    objs = objective_units(goal, pool)
    b.objective_ids.update(o.id for o in objs)
    return objs


# ------------------------------------------------------------------ transforms

def split_long_tasks(tasks: Sequence[Task], max_hours: float) -> tuple[Task, ...]:
    """Split tasks whose most-likely duration exceeds `max_hours` into sequential parts."""
    if max_hours <= 0:
        return tuple(tasks)
    renamed: dict[str, str] = {}
    out: list[Task] = []
    for t in tasks:
        deps = tuple(renamed.get(d, d) for d in t.depends_on)
        n = math.ceil(t.estimate.most_likely / max_hours - 1e-9)
        if n <= 1:
            out.append(t if deps == t.depends_on else replace(t, depends_on=deps))
            continue
        e = t.estimate
        part = Estimate(_q(e.optimistic / n), max(_q(e.most_likely / n), QUANTUM), _q(e.pessimistic / n))
        part = Estimate(min(part.optimistic, part.most_likely), part.most_likely,
                        max(part.pessimistic, part.most_likely))
        prev = deps
        for k in range(1, n + 1):
            pid = f"{t.task_id}.p{k}"
            out.append(replace(t, task_id=pid, name=f"{t.name} (part {k}/{n})", estimate=part,
                               depends_on=prev,
                               success_criteria=t.success_criteria if k == n else
                               (f"Part {k} of {n} done and handed over",)))
            prev = (pid,)
        renamed[t.task_id] = f"{t.task_id}.p{n}"
    return tuple(out)


def resource_pool(demand: dict[str, float], capacities: dict[str, float]) -> str:
    """The resource kind that dominates a demand relative to capacity ('general' if none)."""
    best, ratio = "general", 0.05
    for kind, label in POOL_KINDS:
        need = demand.get(kind, 0.0)
        cap = capacities.get(kind, 0.0)
        r = need / cap if cap > 0 else (math.inf if need > 0 else 0.0)
        if r > ratio:
            best, ratio = label, r
    if best == "general" and demand.get("agents", 0.0) > 0:
        best = AGENT_POOL[1]  # only people/agent time: book them as a pool
    return best


# ------------------------------------------------------------------ strategies

def hierarchical(goal: Goal, tpl: DomainTemplate, opts: Options) -> tuple[Task, ...]:
    """Top-down by component: front matter, a design/build/test chain per component
    (build waits for the components it needs), integration, per-objective checks,
    acceptance, release."""
    b = Builder(goal, tpl)
    units = _components(goal, tpl)
    acts = tpl.component_activities
    front, back = _split_phases(tpl, acts)
    entry = _front(b, front)
    last = _units(b, units, acts, entry)
    _back(b, back, list(last.values()), _with_objectives(b, goal, units))
    return b.result()


def functional_units(goal: Goal, tpl: DomainTemplate) -> tuple[Unit, ...]:
    """System functions: each objective is a function (shaped like the template function
    it mentions); template functions not covered by an objective support them."""
    fns = tpl.functions
    covered: dict[str, str] = {}
    objs: list[tuple[Unit, Unit | None]] = []
    used: set[str] = set()
    for obj in goal.objectives[:MAX_OBJECTIVE_GROUPS]:
        best = _best_match(obj, fns)
        uid = _objective_id(obj, used)
        if best is not None and best.id not in covered:
            covered[best.id] = uid
        objs.append((Unit(id=uid, name=_objective_name(obj), description=obj,
                          effort=best.effort if best else 1.0,
                          capabilities=best.capabilities if best else fns[0].capabilities,
                          resources=dict(best.resources if best else fns[0].resources)), best))
    room = max(2, MAX_UNITS - len(objs))
    supporting = [f for f in select_units(fns, goal_text(goal)) if f.id not in covered][:room]
    mapping = {**{f.id: f.id for f in supporting}, **covered}
    units = [replace(f, after=_dedupe(mapping[a] for a in f.after if a in mapping)) for f in supporting]
    for u, best in objs:
        after = () if best is None else _dedupe(mapping[a] for a in best.after
                                                 if a in mapping and mapping[a] != u.id)
        units.append(replace(u, after=after))
    return order_units(tuple(units))


def functional(goal: Goal, tpl: DomainTemplate, opts: Options) -> tuple[Task, ...]:
    """By system function: a specify/build/verify group per function (one per objective),
    build steps following the data/control flow between functions."""
    b = Builder(goal, tpl)
    units = functional_units(goal, tpl)
    b.objective_ids.update(u.id for u in units if u.id.startswith("obj-"))
    acts = tpl.function_activities
    front, back = _split_phases(tpl, acts)
    entry = _front(b, front)
    last = _units(b, units, acts, entry)
    _back(b, back, list(last.values()))
    return b.result()


def temporal(goal: Goal, tpl: DomainTemplate, opts: Options) -> tuple[Task, ...]:
    """By time phase: every phase's work runs in parallel and ends in a review gate that
    the next phase waits for. Work streams are the objectives (or the components)."""
    b = Builder(goal, tpl)
    comps = _components(goal, tpl)
    objs = _with_objectives(b, goal, comps)
    units = objs or comps
    acts = tpl.component_activities
    by_phase: dict[str, list[Activity]] = {}
    for a in acts:
        by_phase.setdefault(a.phase, []).append(a)
    busy = [p for p in tpl.phases if p.activities or (units and by_phase.get(p.id))]
    prev: list[str] = []
    placed_checks = False
    for i, p in enumerate(busy):
        ids = [b.add(a.id, a, deps=prev) for a in p.activities if a.kind != "acceptance"]
        start = list(ids) or list(prev)
        for u in units:
            chain = list(start)
            for a in by_phase.get(p.id, []):
                chain = [b.add(f"{u.id}.{a.id}", a, unit=u, deps=chain)]
                ids.extend(chain)
        acc = [a for a in p.activities if a.kind == "acceptance"]
        if acc:
            checks = _objective_checks(b, objs, p.id, prev) if not placed_checks else []
            placed_checks = True
            ids.extend(checks)
            for a in acc:
                ids.append(b.add(a.id, a, deps=checks or prev,
                                 success=(*goal.success_criteria, *_leftover_objectives(goal))))
        if not ids:
            continue
        ends = b.terminals(ids)
        if i < len(busy) - 1:
            prev = [b.add(f"gate.{p.id}", _gate_activity(p.id, p.name), deps=ends)]
        else:
            prev = ends
    return b.result()


def _risk_mitigations(b: Builder, risks: Sequence[RiskSpec]) -> dict[str, str]:
    out = {}
    for r in risks:
        if r.mitigation_task is None:
            continue
        out[r.id] = b.add(
            f"mitigate.{r.id}", r.mitigation_task, phase="mitigation", mitigation=True,
            success=(f"Risk reduced: {r.title}",),
            validation=tuple(f"In place: {m}" for m in r.mitigations[:2]) or
            ("Risk owner confirms the mitigation",))
    return out


def _mitigations_for(risks: Sequence[RiskSpec], mit: dict[str, str]) -> Callable[[Unit], list[str]]:
    def entry_for(u: Unit) -> list[str]:
        return [mit[r.id] for r in risks if r.id in mit and (not r.components or u.id in r.components)]
    return entry_for


def risk(goal: Goal, tpl: DomainTemplate, opts: Options) -> tuple[Task, ...]:
    """By risk mitigation: mitigation tasks for the riskiest applicable risks come first;
    exposed components wait for them, get an extra risk-control check, and a risk review
    gates the closing phases."""
    b = Builder(goal, tpl)
    risks = [r for r in ranked_risks(goal, tpl) if r.mitigation_task][:4]
    mit = _risk_mitigations(b, risks)
    units = _components(goal, tpl)
    exposure = {u.id: sum(r.probability * r.impact for r in risks if u.id in r.components) for u in units}
    units = order_units(tuple(sorted(units, key=lambda u: -exposure[u.id])))  # riskiest first
    acts = tpl.component_activities
    front, back = _split_phases(tpl, acts)
    entry = _front(b, front)
    last = _units(b, units, acts, entry, _mitigations_for(risks, mit))
    ends = []
    check_phase = acts[-1].phase
    for u in units:
        linked = [r for r in risks if u.id in r.components]
        if linked:
            act = Activity(id="risk-check", name="Verify risk controls: {name}", phase=check_phase,
                           kind="verify", estimate=(1.0, 2.0, 4.0), resources={"agents": 1.0},
                           capabilities=("qa",),
                           success=tuple(f"{{name}} verified against risk: {r.title}" for r in linked),
                           validation=("Risk control evidence attached",))
            ends.append(b.add(f"{u.id}.risk-check", act, unit=u, deps=[last[u.id]], scale=False))
        else:
            ends.append(last[u.id])
    review = Activity(id="risk-review", name="Risk review before integration", phase=check_phase,
                      kind="gate", estimate=(0.5, 1.0, 2.0), resources={"agents": 1.0},
                      capabilities=("review",), success=("Residual risks accepted by the goal owner",),
                      validation=("Risk register updated",))
    gate = b.add("risk-review", review, deps=ends + list(mit.values()))
    _back(b, back, [gate], _with_objectives(b, goal, units))
    return b.result()


def resource(goal: Goal, tpl: DomainTemplate, opts: Options) -> tuple[Task, ...]:
    """By resource requirement: component work grouped into resource pools (GPU, storage,
    memory, CPU) that are provisioned before and released after their work; demands are
    fitted to the goal's capacities and long tasks split into timeout-sized parts."""
    b = Builder(goal, tpl)
    units = _components(goal, tpl)
    acts = tpl.component_activities
    front, back = _split_phases(tpl, acts)
    entry = _front(b, front)
    before = set(b.tasks)
    last = _units(b, units, acts, entry)
    unit_tasks = [t for t in b.tasks if t not in before]
    _back(b, back, list(last.values()), _with_objectives(b, goal, units))
    caps = capacities_for(goal)
    # A component's work stays in one pool: the one its peak demand dominates.
    by_unit: dict[str, list[str]] = {}
    for tid in unit_tasks:
        by_unit.setdefault(b.tasks[tid].component, []).append(tid)
    pools: dict[str, list[str]] = {}
    for members in by_unit.values():
        peak: dict[str, float] = {}
        for tid in members:
            for k, v in b.tasks[tid].resources.items():
                peak[k] = max(peak.get(k, 0.0), v)
        pools.setdefault(resource_pool(peak, caps), []).extend(members)
    first_phase = acts[0].phase
    release_phase = tpl.phases[-1].id
    tasks = dict(b.tasks)
    extra: list[Task] = []
    for kind, label in (*POOL_KINDS, AGENT_POOL):
        members = pools.get(label)
        if not members:
            continue
        peak = max(tasks[t].resources.get(kind, 0.0) for t in members)
        pid, rid = f"pool-{slug(label)}.provision", f"pool-{slug(label)}.release"
        extra.append(Task(task_id=pid, name=f"Provision {label} capacity",
                          estimate=Estimate(0.5, 1.0, 3.0), depends_on=tuple(entry),
                          resources={"agents": 1.0}, capabilities=("ops",), phase=first_phase,
                          component=f"pool-{slug(label)}",
                          description=f"Reserve {peak:g} {kind} for {len(members)} tasks",
                          success_criteria=(f"{label} capacity reserved for the pool's peak demand",),
                          validation=("Reservation confirmed by the resource manager",)))
        for t in members:
            tasks[t] = replace(tasks[t], name=f"[{label}] {tasks[t].name}",
                               depends_on=_dedupe([*tasks[t].depends_on, pid]),
                               description=f"{tasks[t].description}; pool: {label}")
        extra.append(Task(task_id=rid, name=f"Release {label} capacity",
                          estimate=Estimate(0.25, 0.5, 1.0), depends_on=tuple(members),
                          resources={"agents": 1.0}, capabilities=("ops",), phase=release_phase,
                          component=f"pool-{slug(label)}",
                          description=f"Return {kind} to the pool and reconcile its cost",
                          success_criteria=(f"{label} capacity released; usage reconciled",),
                          validation=("Usage report matches the plan",)))
    provisions = [t for t in extra if t.task_id.endswith(".provision")]
    releases = [t for t in extra if t.task_id.endswith(".release")]
    ordered = [*[tasks[t] for t in tasks if t in before], *provisions,
               *[tasks[t] for t in tasks if t not in before], *releases]
    return split_long_tasks(ordered, opts.max_task_hours)


def hybrid(goal: Goal, tpl: DomainTemplate, opts: Options) -> tuple[Task, ...]:
    """Combined: the top risks mitigated first (risk), components as design/build/test
    chains (hierarchical), a gate before integration (temporal), per-objective checks
    (functional) and long tasks split to the timeout (resource)."""
    b = Builder(goal, tpl)
    risks = [r for r in ranked_risks(goal, tpl)
             if r.mitigation_task and r.probability * r.impact >= 0.2][:2]
    mit = _risk_mitigations(b, risks)
    units = _components(goal, tpl)
    acts = tpl.component_activities
    front, back = _split_phases(tpl, acts)
    entry = _front(b, front)
    last = _units(b, units, acts, entry, _mitigations_for(risks, mit))
    gate_phase = tpl.phase(acts[-1].phase)
    gate = b.add("gate.build", _gate_activity(gate_phase.id, "Build and test"),
                 deps=list(last.values()) + list(mit.values()))
    _back(b, back, [gate], _with_objectives(b, goal, units))
    return split_long_tasks(b.result(), opts.max_task_hours)


def explicit(specs: Sequence[TaskSpec], goal: Goal) -> tuple[Task, ...]:
    """The goal's own tasks: a fixed duration is a zero-width three-point estimate."""
    return tuple(
        Task(task_id=s.task_id, name=s.name,
             estimate=Estimate(s.duration_hours, s.duration_hours, s.duration_hours),
             depends_on=tuple(s.depends_on), resources=dict(s.resources),
             capabilities=tuple(s.capabilities), description=f"{s.name} (explicit) for goal {goal.title!r}")
        for s in specs
    )


BUILDERS: dict[str, Callable[[Goal, DomainTemplate, Options], tuple[Task, ...]]] = {
    "hierarchical": hierarchical,
    "functional": functional,
    "temporal": temporal,
    "resource": resource,
    "risk": risk,
    "hybrid": hybrid,
}
