"""Concrete resources and their allocation to ready tasks (Layer 8), pure.

Capacity is double-booked when two deciders each believe it is free. So the decision is
made where the capacity is owned: one `ResourceLedger` per resource id, which the wiring
keeps in a table partitioned by resource id (`resources.allocations`, keyed by resource
id). A plan's partition only *proposes*: it picks a candidate (`choose_resource`, from
the possibly stale global view) and emits an `AllocationRequest` keyed by that resource
id; the ledger's owner decides (`ResourceLedger.allocate` -> `Granted` | `Refused`) and
the plan partition dispatches only on `Granted`. Every decision is a deterministic
function of the ledger and the requests, so a replay after a crash decides the same.

Times are epoch ms, passed in. Units are the model's resource kinds (model.RESOURCE_KINDS).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Iterable, Mapping, Sequence, Union

from .config import PlanningConfig
from .model import Plan, Priority, Task
from .resources import EPS
from .retry import Breaker, breaker_cooldown_ms

PRIORITY_RANK = {Priority.CRITICAL: 0, Priority.HIGH: 1, Priority.MEDIUM: 2, Priority.LOW: 3}


@dataclass(frozen=True)
class Resource:
    """One concrete resource as announced on resources.availability."""

    resource_id: str
    kind: str                                   # cpu | gpu | memory_gb | storage_gb | agents
    capabilities: frozenset[str] = frozenset()
    capacity: Mapping[str, float] = field(default_factory=dict)   # unit kind -> units Chimera may use
    free: Mapping[str, float] = field(default_factory=dict)       # as last reported (a hint)
    cost_per_hour: float = 0.0
    healthy: bool = True
    heartbeat_ms: int = 0


def is_lost(resource: Resource, now_ms: int, heartbeat_timeout_ms: int) -> bool:
    """Silent for longer than the timeout: its capacity is gone until it reports again."""
    return now_ms - resource.heartbeat_ms > heartbeat_timeout_ms


def usable(resource: Resource, now_ms: int, heartbeat_timeout_ms: int) -> bool:
    return resource.healthy and not is_lost(resource, now_ms, heartbeat_timeout_ms)


def demand(task: Task, resource: Resource) -> dict[str, float]:
    """Units a task takes on a resource: its positive `resources`; a task that names none
    takes one unit of the resource's own kind (one executor slot), so it is still counted."""
    need = {k: float(v) for k, v in task.resources.items() if v > 0}
    return need or {resource.kind: 1.0}


def fits(need: Mapping[str, float], available: Mapping[str, float]) -> bool:
    return all(available.get(k, 0.0) + EPS >= v for k, v in need.items())


def has_capabilities(resource: Resource, required: Iterable[str]) -> bool:
    return set(required) <= resource.capabilities


def choose_resource(task: Task, resources: Iterable[Resource], now_ms: int,
                    breaker_states: Mapping[str, Breaker], config: PlanningConfig = PlanningConfig()
                    ) -> Resource | None:
    """The candidate a plan partition asks for: has the task's capabilities, healthy and
    not lost, breaker closed or half-open (with its trial free), enough reported free
    capacity; cheapest cost per hour, then lowest id. None when nothing qualifies."""
    timeout = heartbeat_timeout_ms(config)
    cooldown = breaker_cooldown_ms(config)
    best: Resource | None = None
    for r in resources:
        if not (usable(r, now_ms, timeout) and has_capabilities(r, task.capabilities)):
            continue
        b = breaker_states.get(r.resource_id)
        if b is not None and not b.allows(now_ms, cooldown):
            continue
        if not fits(demand(task, r), r.free):
            continue
        if best is None or (r.cost_per_hour, r.resource_id) < (best.cost_per_hour, best.resource_id):
            best = r
    return best


def heartbeat_timeout_ms(config: PlanningConfig) -> int:
    return round(config.resource_heartbeat_timeout_seconds * 1000)


# ------------------------------------------------------------------ the two-step protocol

Key = tuple[str, str, int]          # (plan_id, task_id, attempt)


@dataclass(frozen=True)
class AllocationRequest:
    """A plan partition asks the owner of `resource_id` for capacity for one task attempt."""

    plan_id: str
    task_id: str
    attempt: int
    resource_id: str
    demand: Mapping[str, float]
    capabilities: tuple[str, ...] = ()
    priority: Priority = Priority.MEDIUM
    slack_hours: float = 0.0        # critical-path slack: less slack goes first
    hours: float = 0.0              # estimated duration, for the cost estimate
    requested_at_ms: int = 0

    @property
    def key(self) -> Key:
        return (self.plan_id, self.task_id, self.attempt)


def request_for(plan: Plan, task_id: str, attempt: int, resource: Resource, priority: Priority,
                now_ms: int) -> AllocationRequest:
    """The request a plan partition emits for a ready task and its chosen resource."""
    st = plan.task(task_id)
    return AllocationRequest(plan.plan_id, task_id, attempt, resource.resource_id,
                             MappingProxyType(demand(st.task, resource)), tuple(st.task.capabilities),
                             priority, st.slack_hours, st.task.estimate.expected, now_ms)


def priority_key(req: AllocationRequest) -> tuple:
    """CRITICAL > HIGH > MEDIUM > LOW, then less slack, then plan id, task id, attempt."""
    return (PRIORITY_RANK[Priority(req.priority)], req.slack_hours, req.plan_id, req.task_id, req.attempt)


@dataclass(frozen=True)
class Booking:
    request: AllocationRequest
    booked_at_ms: int


@dataclass(frozen=True)
class Granted:
    """Capacity is booked: the plan partition may dispatch this attempt to `resource_id`."""

    request: AllocationRequest
    resource_id: str
    cost_estimate: float            # hours x cost per hour of this resource


@dataclass(frozen=True)
class Refused:
    """Not booked. `waiting` is True when only capacity is missing: the request stays in the
    ledger's queue and is granted (in priority order) when capacity is released, unless
    the plan withdraws it; otherwise the plan should choose another resource."""

    request: AllocationRequest
    reason: str
    waiting: bool = False


Decision = Union[Granted, Refused]


@dataclass(frozen=True)
class ResourceLedger:
    """What is booked on one resource, by (plan_id, task_id, attempt), and what waits for it.

    Available = capacity - booked. The reported `free` units are not used here: they may
    already include Chimera's own bookings and would count them twice."""

    resource: Resource
    bookings: Mapping[Key, Booking] = field(default_factory=lambda: MappingProxyType({}))
    waiting: tuple[AllocationRequest, ...] = ()

    def booked(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for b in self.bookings.values():
            for k, v in b.request.demand.items():
                out[k] = out.get(k, 0.0) + v
        return out

    def available(self) -> dict[str, float]:
        used = self.booked()
        return {k: cap - used.get(k, 0.0) for k, cap in self.resource.capacity.items()}

    def with_resource(self, resource: Resource) -> "ResourceLedger":
        """A new announcement of the same resource (capacity or health may have changed;
        bookings stand: a shrunk capacity only stops new grants until enough is released)."""
        if resource.resource_id != self.resource.resource_id:
            raise ValueError(f"ledger of {self.resource.resource_id} got {resource.resource_id}")
        return dataclasses.replace(self, resource=resource)

    def _refusal(self, req: AllocationRequest, now_ms: int, timeout_ms: int) -> str | None:
        """Why `req` can never be granted here now (None: it could, given capacity)."""
        r = self.resource
        if req.resource_id != r.resource_id:
            return "wrong_resource"
        if not r.healthy:
            return "resource_unhealthy"
        if is_lost(r, now_ms, timeout_ms):
            return "resource_lost"
        if not has_capabilities(r, req.capabilities):
            return "missing_capabilities"
        if not fits(req.demand, r.capacity):
            return "exceeds_capacity"
        return None

    def allocate(self, requests: Sequence[AllocationRequest], now_ms: int,
                 heartbeat_timeout_ms: int = 30_000) -> tuple["ResourceLedger", tuple[Decision, ...]]:
        """Decide `requests` together with those already waiting: in priority order
        (`priority_key`), book each that fits what is still available (first fit: a
        smaller request behind a blocked one may go ahead). Never exceeds capacity.
        A repeated request for a booked key is granted again (idempotent); a request
        for a later attempt of the same task replaces the earlier attempt's booking.
        Returns the new ledger and one decision per new request and per newly granted
        waiting one."""
        bookings = dict(self.bookings)
        decisions: list[Decision] = []
        new_keys = {q.key for q in requests}
        pending: dict[Key, AllocationRequest] = {q.key: q for q in self.waiting}
        repeats: list[tuple[int, AllocationRequest]] = []   # decided once `latest` is known
        for q in requests:
            if q.key in bookings:
                repeats.append((len(decisions), q))
                continue
            reason = self._refusal(q, now_ms, heartbeat_timeout_ms)
            if reason is not None:
                decisions.append(Refused(q, reason))
                pending.pop(q.key, None)
                continue
            pending[q.key] = q
        latest: dict[tuple[str, str], int] = {}
        for k in (*pending, *bookings):
            latest[k[:2]] = max(latest.get(k[:2], 0), k[2])
        # an earlier attempt of a task that asks again is over: drop its booking or request
        for at, q in reversed(repeats):
            decisions.insert(at, self._granted(q) if q.key[2] >= latest[q.key[:2]] else Refused(q, "stale_attempt"))
        bookings = {k: b for k, b in bookings.items() if k[2] >= latest[k[:2]]}
        for k, q in pending.items():
            if k[2] < latest[k[:2]] and k in new_keys:
                decisions.append(Refused(q, "stale_attempt"))
        pending = {k: q for k, q in pending.items() if k[2] >= latest[k[:2]]}
        used = ResourceLedger(self.resource, bookings).booked()
        avail = {k: cap - used.get(k, 0.0) for k, cap in self.resource.capacity.items()}
        usable_now = usable(self.resource, now_ms, heartbeat_timeout_ms)
        still: list[AllocationRequest] = []
        for q in sorted(pending.values(), key=priority_key):
            if usable_now and fits(q.demand, avail):
                for k, v in q.demand.items():
                    avail[k] -= v
                bookings[q.key] = Booking(q, now_ms)
                decisions.append(self._granted(q))
            else:
                still.append(q)
                if q.key in new_keys:
                    decisions.append(Refused(q, "insufficient_capacity", waiting=True))
        ledger = ResourceLedger(self.resource, MappingProxyType(bookings), tuple(still))
        return ledger, tuple(decisions)

    def _granted(self, q: AllocationRequest) -> Granted:
        return Granted(q, self.resource.resource_id, task_cost(q.hours, self.resource))

    def release(self, plan_id: str, task_id: str, attempt: int, now_ms: int,
                heartbeat_timeout_ms: int = 30_000) -> tuple["ResourceLedger", tuple[Decision, ...]]:
        """Free an attempt's booking (completed, failed, timed out, cancelled) and grant
        waiting requests that now fit. Releasing what is not booked changes nothing."""
        key = (plan_id, task_id, attempt)
        waiting = tuple(q for q in self.waiting if q.key != key)
        if not waiting:
            # Nothing waits, so the freed capacity grants nothing, and the bookings left are
            # already only latest attempts (allocate keeps them so): what `allocate` would
            # return, without re-deciding over every booking (a feedback run released ~500
            # bookings per resource one by one: O(bookings) each was the worker's top cost).
            bookings = dict(self.bookings)
            bookings.pop(key, None)
            return ResourceLedger(self.resource, MappingProxyType(bookings), ()), ()
        bookings = {k: b for k, b in self.bookings.items() if k != key}
        return ResourceLedger(self.resource, MappingProxyType(bookings), waiting).allocate(
            (), now_ms, heartbeat_timeout_ms)

    def withdraw(self, plan_id: str, task_id: str | None = None) -> "ResourceLedger":
        """Drop waiting requests of a plan (or one of its tasks): it chose elsewhere or ended."""
        keep = tuple(q for q in self.waiting
                     if not (q.plan_id == plan_id and (task_id is None or q.task_id == task_id)))
        return dataclasses.replace(self, waiting=keep)

    def release_plan(self, plan_id: str, now_ms: int, heartbeat_timeout_ms: int = 30_000
                     ) -> tuple["ResourceLedger", tuple[Decision, ...]]:
        """A cancelled or finished plan gives back everything it holds or waits for here."""
        bookings = {k: b for k, b in self.bookings.items() if k[0] != plan_id}
        return ResourceLedger(self.resource, MappingProxyType(bookings), self.withdraw(plan_id).waiting
                              ).allocate((), now_ms, heartbeat_timeout_ms)


# ------------------------------------------------------------------ cost and budget

def task_cost(hours: float, resource: Resource) -> float:
    """Estimated (or, with actual hours, actual) cost of a task on a resource."""
    return round(hours * resource.cost_per_hour, 4)


def plan_cost_estimate(plan: Plan, allocated: Mapping[str, Resource], config: PlanningConfig = PlanningConfig(),
                       actual_costs: Mapping[str, float] | None = None) -> float:
    """The plan's cost: actual cost where a task reported one, else expected hours x the
    allocated resource's cost per hour, else (not allocated yet) the planner's rate-based
    estimate for the task."""
    from .planner import estimate_cost      # planner imports much; only needed here
    actual_costs = actual_costs or {}
    total = 0.0
    for st in plan.tasks:
        tid = st.task.task_id
        if tid in actual_costs:
            total += actual_costs[tid]
        elif tid in allocated:
            total += task_cost(st.task.estimate.expected, allocated[tid])
        else:
            total += estimate_cost([st.task], config).total
    return round(total, 2)


def budget_hold(plan_cost_estimate: float, budget: float | None) -> str | None:
    """Why a plan must be held (not dispatched, alerted), or None when within budget."""
    if budget is None or plan_cost_estimate <= budget + EPS:
        return None
    return f"estimated cost {plan_cost_estimate:.2f} exceeds the budget {budget:.2f}"


# ------------------------------------------------------------------ the ledger's owner

@dataclass(frozen=True)
class LedgerState:
    """What the partition owning a resource keeps for it: its bookings and its breaker
    (outcomes of the attempts it ran: one place decides both capacity and trust)."""

    ledger: ResourceLedger
    breaker: Breaker = Breaker()


@dataclass(frozen=True)
class Released:
    """A booking given back (completed, failed, lost, cancelled)."""

    request: AllocationRequest
    resource_id: str


def on_request(state: LedgerState | None, resource: Resource | None, req: AllocationRequest, now_ms: int,
               config: PlanningConfig) -> tuple[LedgerState | None, tuple[Released | Decision, ...]]:
    """Decide one request on the resource's ledger. An unknown resource or an open breaker
    refuses (not waiting: the plan chooses another resource)."""
    if resource is None:
        return state, (Refused(req, "unknown_resource"),)
    state = state or LedgerState(ResourceLedger(resource))
    ledger = state.ledger.with_resource(resource)
    cooldown = breaker_cooldown_ms(config)
    if req.key not in ledger.bookings and not state.breaker.allows(now_ms, cooldown):
        return dataclasses.replace(state, ledger=ledger), (Refused(req, "breaker_open"),)
    before = ledger.bookings
    ledger, decisions = ledger.allocate((req,), now_ms, heartbeat_timeout_ms(config))
    breaker = state.breaker
    for d in decisions:
        if isinstance(d, Granted) and d.request.key not in before:
            breaker = breaker.on_assigned(now_ms, cooldown)
    # a later attempt of a task replaced an earlier attempt's booking: say so
    replaced = tuple(Released(b.request, ledger.resource.resource_id) for k, b in before.items()
                     if k not in ledger.bookings)
    return LedgerState(ledger, breaker), replaced + decisions


def on_release(state: LedgerState | None, resource: Resource | None, key: Key, outcome: str, now_ms: int,
               config: PlanningConfig) -> tuple[LedgerState | None, tuple[Released | Decision, ...]]:
    """Give an attempt's booking back (a waiting request is dropped too) and grant what now
    fits; SUCCESS closes the resource's breaker, FAILURE counts towards opening it."""
    if state is None:
        return None, ()
    ledger = state.ledger if resource is None else state.ledger.with_resource(resource)
    booking = ledger.bookings.get(key)
    cooldown = breaker_cooldown_ms(config)
    breaker = state.breaker
    if booking is not None and outcome == "SUCCESS":
        breaker = breaker.on_success()
    elif booking is not None and outcome == "FAILURE":
        breaker = breaker.on_failure(now_ms, config.breaker_failure_threshold, cooldown, task=tuple(key[:2]))
    ledger, decisions = ledger.release(*key, now_ms, heartbeat_timeout_ms(config))
    for d in decisions:
        if isinstance(d, Granted):
            breaker = breaker.on_assigned(now_ms, cooldown)
    released = (Released(booking.request, ledger.resource.resource_id),) if booking is not None else ()
    return LedgerState(ledger, breaker), released + decisions
