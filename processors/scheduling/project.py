"""RCPSP instance (`Project`) and schedule value types.

Integer time units throughout. A `Project` validates itself on construction and
raises `processors.model.PlanningError` with a machine-readable reason code:
``negative_duration``, ``dangling_dependency``, ``cyclic_dependency``,
``infeasible_demand`` (and ``invalid_project`` for malformed shapes).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

from processors.model import PlanningError

__all__ = ["Project", "CpmResult", "Schedule", "is_feasible", "PlanningError"]


def _tup(xs) -> tuple:
    return tuple(int(x) for x in xs)


@dataclass(frozen=True)
class Project:
    """An RCPSP instance: durations, successor lists, per-resource demands, capacities."""

    durations: tuple[int, ...]
    successors: tuple[tuple[int, ...], ...]
    demands: tuple[tuple[int, ...], ...]
    capacities: tuple[int, ...]

    def __post_init__(self) -> None:
        # accept any sequences; store tuples of ints so the value is hashable and immutable
        sa = object.__setattr__
        sa(self, "durations", tuple(map(int, self.durations)))
        sa(self, "capacities", tuple(map(int, self.capacities)))
        succ, demands = self.successors, self.demands
        if not demands and self.durations and not self.capacities:
            demands = tuple(() for _ in self.durations)
        # fast path: already tuples of plain ints (the common case) -> keep as is
        if not (type(succ) is tuple and all([type(s) is tuple for s in succ])
                and set(map(type, [v for s in succ for v in s])) <= {int}):
            succ = tuple([tuple(map(int, s)) for s in succ])
        if not (type(demands) is tuple and all([type(d) is tuple for d in demands])
                and set(map(type, [v for d in demands for v in d])) <= {int}):
            demands = tuple([tuple(map(int, d)) for d in demands])
        sa(self, "successors", succ)
        sa(self, "demands", demands)
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        n = len(self.durations)
        caps = self.capacities
        nres = len(caps)
        if len(self.successors) != n or len(self.demands) != n:
            raise PlanningError(
                "invalid_project",
                f"{n} durations but {len(self.successors)} successor lists and {len(self.demands)} demand rows",
            )
        if n and min(self.durations) < 0:
            j = min(range(n), key=self.durations.__getitem__)
            raise PlanningError("negative_duration", f"activity {j} has duration {self.durations[j]}")
        if nres and min(caps) < 0:
            raise PlanningError("invalid_project", f"negative capacity in {caps}")
        flat = [s for succ in self.successors for s in succ]
        if flat and (min(flat) < 0 or max(flat) >= n):
            for j, succ in enumerate(self.successors):
                for s in succ:
                    if not 0 <= s < n:
                        raise PlanningError("dangling_dependency", f"activity {j} -> unknown activity {s}")
        rows = self.demands
        if any(len(row) != nres for row in rows):
            j = next(j for j, row in enumerate(rows) if len(row) != nres)
            raise PlanningError("invalid_project", f"activity {j} has {len(rows[j])} demands for {nres} resources")
        if nres and n:
            col_max = [max(col) for col in zip(*rows)]
            if min(map(min, rows)) < 0 or any(m > c for m, c in zip(col_max, caps)):
                for j, row in enumerate(rows):
                    for k, q in enumerate(row):
                        if q < 0:
                            raise PlanningError("invalid_project", f"activity {j} has negative demand {q} on resource {k}")
                        if q > caps[k]:
                            raise PlanningError(
                                "infeasible_demand",
                                f"activity {j} needs {q} of resource {k}, capacity is {caps[k]}",
                            )
        if len(self.topo_order) != n:
            done = set(self.topo_order)
            rest = [j for j in range(n) if j not in done]
            raise PlanningError("cyclic_dependency", f"cycle among activities {rest[:10]}")

    # ------------------------------------------------------------------ derived data
    @property
    def n(self) -> int:
        return len(self.durations)

    @cached_property
    def predecessors(self) -> tuple[tuple[int, ...], ...]:
        preds: list[list[int]] = [[] for _ in self.durations]
        for j, succ in enumerate(self.successors):
            for s in succ:
                preds[s].append(j)
        return tuple(tuple(sorted(set(p))) if len(p) > 1 else tuple(p) for p in preds)

    @cached_property
    def topo_order(self) -> tuple[int, ...]:
        """A topological order (Kahn's algorithm, FIFO); shorter than n iff there is a cycle."""
        n = len(self.durations)
        succs = [set(s) if len(s) > 1 else s for s in self.successors]
        indeg = [0] * n
        for succ in succs:
            for s in succ:
                indeg[s] += 1
        order = [j for j in range(n) if not indeg[j]]
        i = 0
        while i < len(order):
            for s in succs[order[i]]:
                indeg[s] -= 1
                if not indeg[s]:
                    order.append(s)
            i += 1
        return tuple(order)

    @cached_property
    def requests(self) -> tuple[tuple[tuple[int, int], ...], ...]:
        """Per activity, the (resource, demand) pairs with demand > 0."""
        return tuple([tuple([(k, q) for k, q in enumerate(row) if q]) for row in self.demands])

    @cached_property
    def times(self) -> tuple[list[int], list[int], int]:
        """(earliest starts, latest finishes, critical path length), resources ignored."""
        n = len(self.durations)
        dur = self.durations
        preds = self.predecessors
        succ = self.successors
        order = self.topo_order
        es = [0] * n
        for j in order:
            t = 0
            for p in preds[j]:
                f = es[p] + dur[p]
                if f > t:
                    t = f
            es[j] = t
        makespan = max([e + d for e, d in zip(es, dur)], default=0)
        lf = [makespan] * n
        for j in reversed(order):
            t = makespan
            for s in succ[j]:
                v = lf[s] - dur[s]
                if v < t:
                    t = v
            lf[j] = t
        return es, lf, makespan

    @cached_property
    def lower_bound(self) -> int:
        """max(critical path length, per-resource energy bound ceil(sum d*q / cap))."""
        lb = self.times[2]
        dur = self.durations
        for k, cap in enumerate(self.capacities):
            if cap > 0:
                energy = sum([d * row[k] for d, row in zip(dur, self.demands)])
                lb = max(lb, -(-energy // cap))
        return lb


@dataclass(frozen=True)
class CpmResult:
    es: tuple[int, ...]
    ef: tuple[int, ...]
    ls: tuple[int, ...]
    lf: tuple[int, ...]
    slack: tuple[int, ...]
    critical_path: tuple[int, ...]
    makespan: int


@dataclass(frozen=True)
class Schedule:
    starts: tuple[int, ...]
    makespan: int
    method: str
    optimal: bool = False
    lower_bound: int = 0


def is_feasible(project: Project, starts: Sequence[int]) -> bool:
    """True iff `starts` respects every precedence and every capacity at every time."""
    n = project.n
    if len(starts) != n:
        return False
    dur = project.durations
    if any(s < 0 for s in starts):
        return False
    for j, succ in enumerate(project.successors):
        fj = starts[j] + dur[j]
        for s in succ:
            if starts[s] < fj:
                return False
    # capacity: sweep events
    events: dict[int, list[int]] = {}
    nres = len(project.capacities)
    for j in range(n):
        if dur[j] == 0 or not project.requests[j]:
            continue
        for t in (starts[j], starts[j] + dur[j]):
            events.setdefault(t, [0] * nres)
        for k, q in project.requests[j]:
            events[starts[j]][k] += q
            events[starts[j] + dur[j]][k] -= q
    usage = [0] * nres
    for t in sorted(events):
        delta = events[t]
        for k in range(nres):
            usage[k] += delta[k]
            if usage[k] > project.capacities[k]:
                return False
    return True
