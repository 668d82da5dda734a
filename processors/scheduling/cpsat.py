"""CP-SAT models for the RCPSP: a plain baseline and a warm-started anytime refinement.

Interval variables + AddCumulative per renewable resource, precedence as linear
constraints, start domains tightened by CPM earliest starts / latest starts relative to
the horizon, makespan bounded below by max(critical path, energy bound).
"""
from __future__ import annotations

import time

from ortools.sat.python import cp_model

from .project import Project, Schedule
from .sgs import _net, fast_schedule, justify

__all__ = ["cpsat", "refine"]


class _Model:
    def __init__(self, project: Project, horizon: int, lb: int, fixed=None, hint=None,
                 max_makespan: int | None = None) -> None:
        """`fixed`: optional {activity: start} pinned (for neighbourhood search)."""
        p = project
        n = p.n
        dur = p.durations
        es, lf, cp_len = p.times
        m = cp_model.CpModel()
        self.model = m
        ub = horizon if max_makespan is None else max_makespan
        self.starts = []
        intervals = []
        for j in range(n):
            lo = es[j]
            hi = ub - (cp_len - lf[j]) - dur[j]      # latest start for makespan <= ub
            if fixed is not None and j in fixed:
                lo = hi = fixed[j]
            s = m.NewIntVar(lo, max(lo, hi), f"s{j}")
            self.starts.append(s)
            intervals.append(m.NewFixedSizeIntervalVar(s, dur[j], f"i{j}"))
        for j, succ in enumerate(p.successors):
            for s in succ:
                m.Add(self.starts[s] >= self.starts[j] + dur[j])
        for k, cap in enumerate(p.capacities):
            iv = [intervals[j] for j in range(n) if p.demands[j][k] and dur[j]]
            dm = [p.demands[j][k] for j in range(n) if p.demands[j][k] and dur[j]]
            if iv and sum(dm) > cap:
                m.AddCumulative(iv, dm, cap)
        self.makespan = m.NewIntVar(lb, max(lb, ub), "makespan")
        for j in range(n):
            if not p.successors[j]:
                m.Add(self.makespan >= self.starts[j] + dur[j])
        m.Minimize(self.makespan)
        if hint is not None:
            for j in range(n):
                m.AddHint(self.starts[j], hint[j])
            m.AddHint(self.makespan, max(hint[j] + dur[j] for j in range(n)) if n else 0)

    def solve(self, budget_s: float, workers: int, seed: int = 0):
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = max(0.001, budget_s)
        solver.parameters.num_workers = workers
        solver.parameters.random_seed = seed
        status = solver.Solve(self.model)
        if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            st = [solver.Value(s) for s in self.starts]
            return status, st, solver.Value(self.makespan), int(solver.BestObjectiveBound())
        return status, None, None, int(solver.BestObjectiveBound()) if status != cp_model.INFEASIBLE else None


def cpsat(project: Project, *, budget_s: float, workers: int = 2) -> Schedule:
    """Plain CP-SAT baseline: no hint, horizon = sum of durations."""
    p = project
    n = p.n
    if n == 0:
        return Schedule((), 0, "cpsat-optimal", True, 0)
    lb = p.lower_bound
    horizon = sum(p.durations)
    mdl = _Model(p, horizon, p.times[2])
    status, st, ms, bound = mdl.solve(budget_s, workers)
    if st is None:
        # no solution within budget: fall back to the cheapest heuristic so callers get a plan
        s = fast_schedule(p, iterations=1)
        return Schedule(s.starts, s.makespan, "sgs", s.makespan <= lb, lb)
    opt = status == cp_model.OPTIMAL
    return Schedule(tuple(st), ms, "cpsat-optimal" if opt else "cpsat", opt, max(lb, bound))


def refine(project: Project, warm: Schedule, *, budget_s: float, workers: int = 2) -> Schedule:
    """Anytime improvement of `warm` within `budget_s` seconds; never worse than warm.

    CP-SAT gets the warm schedule as a solution hint and its makespan as the horizon
    (upper bound), plus the critical-path / energy lower bound.
    """
    p = project
    t0 = time.perf_counter()
    lb = max(p.lower_bound, warm.lower_bound)
    if warm.makespan <= lb:
        return Schedule(warm.starts, warm.makespan, warm.method, True, lb)
    left = budget_s - (time.perf_counter() - t0)
    mdl = _Model(p, warm.makespan, lb, hint=warm.starts)
    status, st, ms, bound = mdl.solve(left, workers)
    if bound is not None:
        lb = max(lb, bound)
    if st is not None and ms <= warm.makespan:
        opt = status == cp_model.OPTIMAL or ms <= lb
        return Schedule(tuple(st), ms, "cpsat-optimal" if opt else "cpsat", opt, lb)
    return Schedule(warm.starts, warm.makespan, warm.method, warm.makespan <= lb, lb)


def anytime(project: Project, *, budget_s: float, workers: int = 2, seed: int = 0) -> Schedule:
    """The planner's anytime path: fast_schedule, then refine with what is left of the budget."""
    t0 = time.perf_counter()
    warm = fast_schedule(project, seed=seed)
    return refine(project, warm, budget_s=budget_s - (time.perf_counter() - t0), workers=workers)
