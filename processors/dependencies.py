"""Dependency checks: duplicates, dangling references, bad estimates, cycles.

`check_dependencies` returns the tasks in a deterministic topological order (Kahn's
algorithm, ties broken by the input order), or raises `PlanningError` with a reason:
duplicate_task, dangling_dependency, negative_duration, invalid_estimate,
cyclic_dependency (detail names the cycle, e.g. "a -> b -> a").
"""
from __future__ import annotations

import heapq
import math
from typing import Callable, Sequence, TypeVar

from .model import PlanningError, Task, TaskSpec

T = TypeVar("T")


def _check_ids(items: Sequence[T], key: Callable[[T], str], deps: Callable[[T], tuple[str, ...]]) -> None:
    seen: set[str] = set()
    for it in items:
        tid = key(it)
        if not tid:
            raise PlanningError("invalid_task", "task with an empty task_id")
        if tid in seen:
            raise PlanningError("duplicate_task", f"task id {tid!r} appears more than once")
        seen.add(tid)
    for it in items:
        for d in deps(it):
            if d not in seen:
                raise PlanningError("dangling_dependency",
                                    f"task {key(it)!r} depends on unknown task {d!r}")
            if d == key(it):
                raise PlanningError("cyclic_dependency", f"{d} -> {d}")


def _toposort(items: Sequence[T], key: Callable[[T], str], deps: Callable[[T], tuple[str, ...]]) -> list[T]:
    index = {key(it): i for i, it in enumerate(items)}
    # Fast path: every dependency comes earlier in the input (decomposition output always
    # does). Kahn's algorithm with smallest-index-first ties would return the input order
    # unchanged, so return it directly.
    for i, it in enumerate(items):
        for d in deps(it):
            if index.get(d, i) >= i:
                break
        else:
            continue
        break
    else:
        return list(items)
    indeg = [0] * len(items)
    succ: list[list[int]] = [[] for _ in items]
    for i, it in enumerate(items):
        for d in dict.fromkeys(deps(it)):  # ignore repeated mentions of one predecessor
            indeg[i] += 1
            succ[index[d]].append(i)
    ready = [i for i, n in enumerate(indeg) if n == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for j in succ[i]:
            indeg[j] -= 1
            if indeg[j] == 0:
                heapq.heappush(ready, j)
    if len(order) != len(items):
        remaining = {key(items[i]) for i, n in enumerate(indeg) if n > 0}
        raise PlanningError("cyclic_dependency", _find_cycle(items, key, deps, remaining))
    return [items[i] for i in order]


def _find_cycle(items: Sequence[T], key: Callable[[T], str], deps: Callable[[T], tuple[str, ...]],
                remaining: set[str]) -> str:
    """Name one cycle among `remaining` (nodes left after Kahn), as 'a -> b -> a'."""
    # Every remaining node has a remaining predecessor, so walking predecessors must loop.
    pred = {key(it): [d for d in deps(it) if d in remaining] for it in items if key(it) in remaining}
    start = next(key(it) for it in items if key(it) in remaining)
    path: list[str] = []
    pos: dict[str, int] = {}
    node = start
    while node not in pos:
        pos[node] = len(path)
        path.append(node)
        node = pred[node][0]
    cycle = path[pos[node]:]
    cycle.reverse()  # predecessor walk -> dependency direction (a runs before b)
    return " -> ".join(cycle + [cycle[0]])


def _check_number(tid: str, name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value) or math.isinf(value):
        raise PlanningError("invalid_estimate", f"task {tid!r}: {name} is not a finite number ({value!r})")


_NUMBER = (int, float)
_INF = math.inf


def check_estimate(task: Task) -> None:
    e = task.estimate
    o, m, p = e.optimistic, e.most_likely, e.pessimistic
    # fast path for the valid case (NaN fails the comparisons); errors come from below
    if (type(o) in _NUMBER and type(m) in _NUMBER and type(p) in _NUMBER and 0 <= o <= m <= p < _INF
            and _resources_ok(task.resources)):
        return
    for name in ("optimistic", "most_likely", "pessimistic"):
        _check_number(task.task_id, name, getattr(e, name))
    if e.optimistic < 0 or e.most_likely < 0 or e.pessimistic < 0:
        raise PlanningError("negative_duration",
                            f"task {task.task_id!r} has a negative estimate "
                            f"({e.optimistic}, {e.most_likely}, {e.pessimistic})")
    if not e.optimistic <= e.most_likely <= e.pessimistic:
        raise PlanningError("invalid_estimate",
                            f"task {task.task_id!r}: estimate must satisfy optimistic <= most_likely "
                            f"<= pessimistic, got ({e.optimistic}, {e.most_likely}, {e.pessimistic})")
    _check_resources(task.task_id, task.resources)


def _resources_ok(resources: dict[str, float]) -> bool:
    for amount in resources.values():
        if type(amount) not in _NUMBER or not amount >= 0:   # rejects NaN and bool
            return False
    return True


def _check_resources(tid: str, resources: dict[str, float]) -> None:
    for kind, amount in resources.items():
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or math.isnan(amount) or amount < 0:
            raise PlanningError("invalid_resources", f"task {tid!r}: resource {kind!r} = {amount!r}")


def check_dependencies(tasks: Sequence[Task]) -> tuple[Task, ...]:
    """Validate tasks and return them in topological order (stable w.r.t. input order)."""
    tasks = list(tasks)
    _check_ids(tasks, lambda t: t.task_id, lambda t: t.depends_on)
    for t in tasks:
        check_estimate(t)
    return tuple(_toposort(tasks, lambda t: t.task_id, lambda t: t.depends_on))


def check_specs(specs: Sequence[TaskSpec]) -> tuple[TaskSpec, ...]:
    """The same checks for explicit TaskSpecs; returns them in topological order."""
    specs = list(specs)
    _check_ids(specs, lambda s: s.task_id, lambda s: s.depends_on)
    for s in specs:
        _check_number(s.task_id, "duration_hours", s.duration_hours)
        if s.duration_hours < 0:
            raise PlanningError("negative_duration",
                                f"task {s.task_id!r} has a negative duration ({s.duration_hours})")
        _check_resources(s.task_id, s.resources)
    return tuple(_toposort(specs, lambda s: s.task_id, lambda s: s.depends_on))


def predecessors_closure(tasks: Sequence[Task]) -> dict[str, frozenset[str]]:
    """All transitive predecessors of each task (tasks must be acyclic)."""
    ordered = check_dependencies(tasks)
    out: dict[str, frozenset[str]] = {}
    for t in ordered:
        acc: set[str] = set(t.depends_on)
        for d in t.depends_on:
            acc |= out[d]
        out[t.task_id] = frozenset(acc)
    return out
