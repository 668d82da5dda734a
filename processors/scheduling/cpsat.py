"""CP-SAT models for the RCPSP: a plain baseline and a warm-started anytime refinement.

Interval variables + AddCumulative per renewable resource, precedence as linear
constraints, start domains tightened by CPM earliest starts / latest starts relative to
the horizon, makespan bounded below by max(critical path, energy bound).
"""
from __future__ import annotations

import bisect
import random
import time

from ortools.sat.python import cp_model

from .project import Project, Schedule
from .sgs import fast_schedule, iterated_fbi

__all__ = ["cpsat", "refine"]


class _Model:
    def __init__(self, project: Project, horizon: int, lb: int, fixed=None, hint=None,
                 max_makespan: int | None = None, extra=()) -> None:
        """`fixed`: optional {activity: start} pinned; `extra`: additional (i, j)
        precedences (j starts after i finishes) -- both for neighbourhood search."""
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
        for i, j in extra:
            m.Add(self.starts[j] >= self.starts[i] + dur[i])
        for k, cap in enumerate(p.capacities):
            iv = [intervals[j] for j in range(n) if p.demands[j][k] and dur[j]]
            dm = [p.demands[j][k] for j in range(n) if p.demands[j][k] and dur[j]]
            if iv and sum(dm) > cap:
                m.AddCumulative(iv, dm, cap)
                # redundant disjunctive: activities needing more than half the capacity
                big = [i for i, q in zip(iv, dm) if 2 * q > cap]
                if len(big) > 1:
                    m.AddNoOverlap(big)
        self.makespan = m.NewIntVar(lb, max(lb, ub), "makespan")
        tail = [cp_len - f for f in lf]   # critical-path time still needed after j finishes
        for j in range(n):
            if not p.successors[j] or tail[j]:
                m.Add(self.makespan >= self.starts[j] + dur[j] + tail[j])
        m.Minimize(self.makespan)
        if hint is not None:
            for j in range(n):
                m.AddHint(self.starts[j], hint[j])
            m.AddHint(self.makespan, max(hint[j] + dur[j] for j in range(n)) if n else 0)

    def solve(self, budget_s: float, workers: int, seed: int = 0, lns_only: bool = False):
        solver = cp_model.CpSolver()
        solver.parameters.use_lns_only = lns_only
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


def refine(project: Project, warm: Schedule, *, budget_s: float, workers: int = 2,
           seed: int = 0) -> Schedule:
    """Anytime improvement of `warm` within `budget_s` seconds; never worse than warm.

    1. CP-SAT on the whole instance, warm schedule as solution hint, its makespan as the
       horizon (upper bound; minus one for <= 40 activities, i.e. only strictly better
       schedules), critical-path / energy bound as lower bound: the whole
       budget for <= 40 activities (j30 is usually proven optimal here), half for <= 70,
       a fifth above.
    2. Iterated forward-backward improvement (perturbed start order + SGS + FBI) on
       half of what is left.
    3. Large-neighbourhood search for the rest of the budget:
       free a window of activities, pin the past, keep the future's per-resource order,
       re-solve the window with CP-SAT (hinted); accept any not-worse schedule.
    """
    p = project
    t0 = time.perf_counter()
    lb = max(p.lower_bound, warm.lower_bound)
    if warm.makespan <= lb or p.n == 0:
        return Schedule(warm.starts, warm.makespan, warm.method, True, lb)
    starts, ms, method = list(warm.starts), warm.makespan, warm.method
    # small instances: ask only for a strictly better schedule (horizon = warm makespan - 1):
    # tighter start windows pay off more than a feasible hint (the hint is still given, CP-SAT
    # repairs it); infeasible then proves warm optimal. Large ones keep the hint feasible, so
    # CP-SAT's own LNS has a solution to start from.
    tight = p.n <= 40
    mdl = _Model(p, warm.makespan - 1 if tight else warm.makespan, lb, hint=warm.starts)
    # small instances: CP-SAT on the whole model is the strongest use of the budget;
    # large ones: a fifth of it, then heuristics + neighbourhood search
    share = 1.0 if p.n <= 40 or budget_s <= 0.5 else (0.5 if p.n <= 70 else 0.2)
    first = budget_s * share - (time.perf_counter() - t0)
    status, st, new_ms, bound = mdl.solve(first, workers, seed=seed)
    if bound is not None:
        lb = max(lb, bound)
    if status == cp_model.INFEASIBLE:      # nothing better than warm exists: warm is optimal
        lb = max(lb, warm.makespan)
    if st is not None and new_ms <= ms:
        starts, ms, method = st, new_ms, "cpsat"
    if ms <= lb or status == cp_model.OPTIMAL:
        return Schedule(tuple(starts), ms, "cpsat-optimal" if method == "cpsat" else method, True, max(lb, ms) if status == cp_model.OPTIMAL else lb)
    # 2. iterated forward-backward improvement (cheap, pure Python) on about half of what is left
    left = budget_s - (time.perf_counter() - t0)
    if left > 0.1:
        r = iterated_fbi(p, Schedule(tuple(starts), ms, method, False, lb), budget_s=0.5 * left, seed=seed)
        if r.makespan < ms:
            starts, ms, method = list(r.starts), r.makespan, r.method
    # 3. CP-SAT large-neighbourhood search for the rest
    left = budget_s - (time.perf_counter() - t0)
    if left > 0.1 and ms > lb:
        r = lns(p, Schedule(tuple(starts), ms, method, False, lb), budget_s=left, workers=workers, seed=seed)
        if r.makespan < ms:
            starts, ms, method = list(r.starts), r.makespan, "cpsat-lns"
    return Schedule(tuple(starts), ms, method, ms <= lb, lb)


def anytime(project: Project, *, budget_s: float, workers: int = 2, seed: int = 0) -> Schedule:
    """The planner's anytime path: fast_schedule, then refine with what is left of the budget."""
    t0 = time.perf_counter()
    warm = fast_schedule(project, seed=seed)
    return refine(project, warm, budget_s=budget_s - (time.perf_counter() - t0), workers=workers)


def _lns_step(p: Project, starts: list[int], ms: int, lb: int, rng, limit_s: float, workers: int,
              frac: float):
    """Free a window of activities (consecutive in start order, or the users of one
    resource around a random time); pin what finishes before the window; keep the rest
    in their current order on each resource (partial-order schedule), so the tail can
    still move left. Returns (starts, makespan) or None."""
    n = p.n
    dur = p.durations
    by_start = sorted(range(n), key=lambda j: (starts[j], j))
    size = max(6, int(n * frac))
    if rng.random() < 0.5 or not p.capacities:
        i0 = rng.randrange(0, max(1, n - size + 1))
        free = set(by_start[i0:i0 + size])
    else:
        k = rng.randrange(len(p.capacities))
        users = [j for j in by_start if p.demands[j][k] and dur[j]] or by_start
        i0 = rng.randrange(0, max(1, len(users) - size + 1))
        free = set(users[i0:i0 + size])
    a = min(starts[j] for j in free)
    fixed = {j: starts[j] for j in range(n) if j not in free and starts[j] + dur[j] <= a}
    rest = [j for j in range(n) if j not in free and j not in fixed]
    extra = []
    for k in range(len(p.capacities)):
        users = sorted((j for j in rest if p.demands[j][k] and dur[j]), key=lambda j: starts[j] + dur[j])
        fins = [starts[j] + dur[j] for j in users]
        for j in users:
            pos = bisect.bisect_right(fins, starts[j]) - 1
            if pos >= 0 and users[pos] != j:
                extra.append((users[pos], j))
    mdl = _Model(p, ms, lb, fixed=fixed, hint=starts, max_makespan=ms, extra=extra)
    status, st, new_ms, _ = mdl.solve(limit_s, workers, seed=rng.randrange(1 << 30))
    if st is None:
        return None
    return st, new_ms


def lns(project: Project, warm: Schedule, *, budget_s: float, workers: int = 2, seed: int = 0,
        step_s: float = 0.3, frac=(0.3, 0.5), stats=None) -> Schedule:
    t0 = time.perf_counter()
    p = project
    lb = max(p.lower_bound, warm.lower_bound)
    starts, ms = list(warm.starts), warm.makespan
    if p.n <= 8:
        frac = (1.0, 1.0)
    rng = random.Random(seed)
    while ms > lb:
        left = budget_s - (time.perf_counter() - t0)
        if left < 0.05:
            break
        r = _lns_step(p, starts, ms, lb, rng, min(left, step_s), workers,
                      frac[0] + (frac[1] - frac[0]) * rng.random())
        if stats is not None:
            stats.append(None if r is None else r[1])
        if r is not None and r[1] <= ms:
            starts, ms = r
    return Schedule(tuple(starts), ms, "cpsat-lns", ms <= lb, lb)
