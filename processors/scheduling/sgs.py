"""Serial schedule generation scheme (SGS), priority rules, forward-backward
improvement (justification) and biased random sampling. Pure Python.

An *activity list* is a precedence-feasible order of all activities; the serial SGS
places each activity, in list order, at its earliest precedence- and resource-feasible
start. Backward passes run the same SGS on the reversed network.
"""
from __future__ import annotations

import heapq
import random
from functools import lru_cache

from .project import Project, Schedule

__all__ = [
    "serial_sgs",
    "priority_list",
    "lft_schedule",
    "justify",
    "fast_schedule",
]


class _Net:
    """Flat lists for the hot loops (one per project, cached)."""

    __slots__ = ("n", "dur", "preds", "succs", "req", "caps", "horizon", "lft", "ls", "rank", "lb",
                 "packed", "guard", "full")

    def __init__(self, p: Project) -> None:
        self.n = p.n
        self.dur = list(p.durations)
        self.preds = p.predecessors
        self.succs = [tuple(sorted(set(x))) if len(x) > 1 else x for x in p.successors]
        self.req = p.requests
        self.caps = list(p.capacities)
        self.horizon = sum(self.dur) + 1
        _es, lf, _ = p.times
        self.lft = lf
        self.ls = [f - d for f, d in zip(lf, self.dur)]
        rank = [0] * self.n
        for i, j in enumerate(p.topo_order):
            rank[j] = i
        self.rank = rank
        self.lb = p.lower_bound
        self.packed, self.guard, self.full = _pack(self.req, self.caps)


def _pack(req, caps):
    """SWAR encoding of the resource profile: one int per time unit holds every
    resource's free capacity in its own bit field (width: capacity bits + 1 guard bit).
    `(slot | guard) - demand` keeps every guard bit set iff the demand fits, and placing
    an activity is one subtraction per time unit, whatever the number of resources."""
    w = max([1, *caps]).bit_length() + 1
    guard = sum(1 << (w * k + w - 1) for k in range(len(caps)))
    full = sum(c << (w * k) for k, c in enumerate(caps))
    packed = [sum(q << (w * k) for k, q in r) for r in req]
    return packed, guard, full


@lru_cache(maxsize=256)
def _net(p: Project) -> _Net:
    return _Net(p)


def _sgs(order, dur, preds, packed, guard, full, horizon):
    """Serial SGS on the packed profile (see `_pack`); returns (starts, makespan).
    `preds` are the predecessors in the direction being scheduled (successors for a
    backward pass)."""
    n = len(dur)
    a = [full] * horizon
    start = [0] * n
    finish = [0] * n
    for j in order:
        t = 0
        for p in preds[j]:
            f = finish[p]
            if f > t:
                t = f
        d = dur[j]
        q = packed[j]
        if q and d:
            # earliest window [t, t+d) where every slot has room: restart after a full slot
            e = t + d
            i = t
            while i < e:
                if ((a[i] | guard) - q) & guard != guard:
                    t = i + 1
                    e = t + d
                i += 1
            for i in range(t, e):
                a[i] -= q
            start[j] = t
            finish[j] = e
        else:
            start[j] = t
            finish[j] = t + d
    return start, max(finish, default=0)


def serial_sgs(order, dur, preds, req, caps, horizon):
    """Place activities in `order` at their earliest precedence- and resource-feasible
    start; returns (starts, makespan). `req[j]` is activity j's (resource, demand) pairs."""
    packed, guard, full = _pack(req, list(caps))
    return _sgs(order, dur, preds, packed, guard, full, horizon)


def priority_list(net: _Net, keys) -> list[int]:
    """Precedence-feasible list: among eligible activities take the smallest key."""
    n = net.n
    preds = net.preds
    succs = net.succs
    left = [len(preds[j]) for j in range(n)]
    heap = [(keys[j], j) for j in range(n) if not left[j]]
    heapq.heapify(heap)
    out = []
    push, pop = heapq.heappush, heapq.heappop
    while heap:
        _, j = pop(heap)
        out.append(j)
        for s in succs[j]:
            left[s] -= 1
            if not left[s]:
                push(heap, (keys[s], s))
    return out


def _forward(net: _Net, order):
    return _sgs(order, net.dur, net.preds, net.packed, net.guard, net.full, net.horizon)


def justify(net: _Net, starts, ms, max_rounds: int = 50):
    """Forward-backward improvement: alternate right- and left-justification until the
    makespan stops improving. Never returns a worse schedule."""
    dur, rank = net.dur, net.rank
    n = net.n
    idx = range(n)
    H = net.horizon + 1
    for _ in range(max_rounds):
        # backward pass: latest finish first (ties: later start, later topological rank)
        kb = [((s + d) * H + s) * n + r for s, d, r in zip(starts, dur, rank)]
        order = sorted(idx, key=kb.__getitem__, reverse=True)
        bst, bms = _sgs(order, dur, net.succs, net.packed, net.guard, net.full, net.horizon)
        # forward times of the right-justified schedule: start = bms - (b + d);
        # sort by (start, finish, rank) ascending == (-(b+d), -b, rank)
        kf = [((H - b - d) * H + (H - b)) * n + r for b, d, r in zip(bst, dur, rank)]
        order = sorted(idx, key=kf.__getitem__)
        nst, nms = _sgs(order, dur, net.preds, net.packed, net.guard, net.full, net.horizon)
        if nms < ms:
            starts, ms = nst, nms
            if ms <= net.lb:
                break
        else:
            if nms == ms:
                starts = nst
            break
    return starts, ms


def lft_schedule(project: Project) -> Schedule:
    """Single-pass serial SGS with the LFT priority rule (the classic baseline)."""
    net = _net(project)
    st, ms = _forward(net, priority_list(net, [(net.lft[j], j) for j in range(net.n)]))
    return Schedule(tuple(st), ms, "sgs", ms <= net.lb, net.lb)


def fast_schedule(project: Project, *, iterations: int = 40, seed: int = 0, fbi: bool = True) -> Schedule:
    """LFT schedule + forward-backward improvement, then `iterations - 1` more runs of
    serial SGS + one forward-backward round: the first half biased random samples (LFT
    keys plus wide uniform noise), the second half an iterated local search (the current
    schedule's start times plus noise of 5-30 % of its makespan, accepting not-worse
    schedules, starting from the best sample). Best wins; stops at the lower bound.

    Deterministic for a given seed. `iterations=1` is the cheap mode (one LFT pass + FBI).
    """
    net = _net(project)
    n = net.n
    if n == 0:
        return Schedule((), 0, "sgs", True, 0)
    lb = net.lb
    lft = net.lft
    best_st, best_ms = _forward(net, priority_list(net, [(lft[j], j) for j in range(n)]))
    if fbi and best_ms > lb:
        best_st, best_ms = justify(net, best_st, best_ms, 1 if iterations <= 1 else 50)
    rng = random.Random(seed)
    rnd = rng.random
    span = max(1, max(lft) - min(lft))
    n_random = (iterations - 1) // 2 if fbi else iterations - 1
    cur_st, cur_ms = best_st, best_ms
    it = 1
    while it < iterations and best_ms > lb:
        it += 1
        if it - 1 <= n_random:
            w = span * (0.3 + 1.2 * rnd())
            keys = [(lft[j] + w * rnd(), j) for j in range(n)]
        else:
            sc = (0.1 + 0.4 * rnd()) * cur_ms
            keys = [(cur_st[j] + sc * rnd(), j) for j in range(n)]
        st, ms = _forward(net, priority_list(net, keys))
        if fbi:
            st, ms = justify(net, st, ms, 1)
        if ms < best_ms:
            best_st, best_ms = st, ms
        if it - 1 > n_random:
            if ms <= cur_ms:
                cur_st, cur_ms = st, ms
        elif it - 1 == n_random:        # last random sample: the local search starts from the best
            cur_st, cur_ms = best_st, best_ms
    method = "sgs+fbi" if fbi else "sgs"
    return Schedule(tuple(best_st), best_ms, method, best_ms <= lb, lb)


def iterated_fbi(project: Project, warm: Schedule, *, budget_s: float, seed: int = 0,
                 max_iterations: int | None = None) -> Schedule:
    """Iterated forward-backward improvement (a simple iterated local search): perturb the
    current schedule's start order with small random noise, run serial SGS + FBI, accept
    any schedule that is not worse. Pure Python; never worse than `warm`."""
    import time

    net = _net(project)
    n = net.n
    lb = max(net.lb, warm.lower_bound)
    best_st, best_ms = list(warm.starts), warm.makespan
    cur_st, cur_ms = best_st, best_ms
    rng = random.Random(seed)
    rnd = rng.random
    t0 = time.perf_counter()
    it = 0
    while best_ms > lb and time.perf_counter() - t0 < budget_s:
        if max_iterations is not None and it >= max_iterations:
            break
        it += 1
        sc = (0.01 + 0.05 * rnd()) * cur_ms
        keys = [(cur_st[j] + sc * rnd(), j) for j in range(n)]
        st, ms = _forward(net, priority_list(net, keys))
        st, ms = justify(net, st, ms)
        if ms <= cur_ms:
            cur_st, cur_ms = st, ms
            if ms < best_ms:
                best_st, best_ms = st, ms
    if best_ms < warm.makespan:
        return Schedule(tuple(best_st), best_ms, "sgs+ils", best_ms <= lb, lb)
    return Schedule(warm.starts, warm.makespan, warm.method, warm.makespan <= lb, lb)
