"""Live plans never stall (pure, no Kafka): whatever sequence of decisions, feedback, lost
resources and ticks a plan went through, (1) a DUE tick at or after the plan's next due time
leaves it due strictly later (the worker's timer then never ticks a plan every second for
nothing), and (2) once the world is fair again (resources healthy, ledgers answer, executors
finish their work) every run moves and the plan ends.

The environment below plays what the wiring does: the timer's ticks (RESOURCE_LOST for a used
resource that is lost, DUE when next_due_ms has passed, RESUME for a plan held by a stop of
everything that was resumed) and the ledgers' answers to the requests the plan emitted."""
from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings, strategies as st

from processors import lifecycle as L
from processors.allocation import Resource, heartbeat_timeout_ms, usable
from processors.model import ApprovalState
from streams import codec, state as state_codec
from tests.unit.test_live import CFG, PID, T0, _goal_rec

TIMEOUT = heartbeat_timeout_ms(CFG)
TASKS = [{"task_id": "a", "name": "a", "duration_hours": 1, "capabilities": ["build"]},
         {"task_id": "b", "name": "b", "duration_hours": 2, "depends_on": ["a"], "capabilities": ["build"]},
         {"task_id": "c", "name": "c", "duration_hours": 1, "capabilities": ["build"]}]
# the e2e test's resources: two that stay, one cheap single-slot resource that goes silent
BASE = {"cheap": Resource("cheap", "agents", frozenset({"build"}), {"agents": 2.0}, {"agents": 2.0}, 1.0),
        "other": Resource("other", "agents", frozenset({"build"}), {"agents": 2.0}, {"agents": 2.0}, 2.0),
        "silent": Resource("silent", "agents", frozenset({"build"}), {"agents": 1.0}, {"agents": 1.0}, 0.5)}


class World:
    """One plan, its resources as the global table shows them, and what the plan asked for."""

    def __init__(self, tasks=TASKS) -> None:
        self.now = T0
        self.quiet: set[str] = set()        # resources whose heartbeats stopped
        self.busy: set[str] = set()         # resources reporting no free units
        self.halted = False
        self.requests: list[tuple[str, int, str]] = []   # (task, attempt, resource) as requested
        self.log: list[str] = []
        self.heard = {rid: T0 for rid in BASE}
        live = self.live()
        goal = codec.goal_from_record(_goal_rec(tasks=tasks))
        self.state, events = L.on_goal(None, goal, {"agents": 5.0}, CFG, received_at_ms=T0, live=live)
        self._saw(events)

    def live(self) -> L.Live:
        for rid in BASE:
            if rid not in self.quiet:
                self.heard[rid] = self.now
        rs = tuple(dataclasses.replace(r, heartbeat_ms=self.heard[rid],
                                       free={"agents": 0.0} if rid in self.busy else r.free)
                   for rid, r in BASE.items())
        return L.Live(self.now, rs, self.halted, {"agents": 5.0})

    def _saw(self, events) -> None:
        for e in events:
            if isinstance(e, L.AllocationRequested):
                q = e.request
                self.requests.append((q.task_id, q.attempt, q.resource_id))
        # the state survives its store (what the worker keeps between records)
        self.state = state_codec.decode(state_codec.encode(self.state, CFG))

    def apply(self, what: str, result) -> None:
        self.state, events = result
        self.log.append(f"{what} -> " + ", ".join(type(e).__name__ + (f"({e.reason})" if isinstance(e, L.Ignored)
                                                                       else "") for e in events))
        self._saw(events)

    @property
    def active(self) -> bool:
        return self.state.status is L.PlanStatus.ACTIVE

    def lost(self) -> frozenset[str]:
        live = self.live()
        return frozenset(r.resource_id for r in live.resources if not usable(r, self.now, TIMEOUT))

    # -- the timer -----------------------------------------------------------------
    def timer(self) -> None:
        """What streams.planner.tick would send this plan now (at most one tick)."""
        if not self.active:
            return
        using = set(L.resources_in_use(self.state)) & self.lost()
        due = L.next_due_ms(self.state, CFG)
        if using:
            self.apply(f"RESOURCE_LOST {sorted(using)} @{self.now - T0}",
                       L.on_tick(self.state, PID, "RESOURCE_LOST", CFG, self.live(), frozenset(using)))
        elif due is not None and due <= self.now:
            self.apply(f"DUE @{self.now - T0}", L.on_tick(self.state, PID, "DUE", CFG, self.live()))
            after = L.next_due_ms(self.state, CFG)
            assert after is None or after > self.now, (
                f"a DUE tick at {self.now - T0} left the plan due at {after - T0}: ticked every second for "
                f"nothing\n" + self.explain())
        elif L.held(self.state) and not self.halted:
            self.apply("RESUME", L.on_tick(self.state, PID, "RESUME", CFG, self.live()))

    # -- the ledgers and the executors ----------------------------------------------
    def decide(self, i: int, decision: str) -> None:
        if not self.requests or not self.active:
            return
        tid, attempt, rid = self.requests[i % len(self.requests)]
        waiting = decision == "QUEUED"
        d = L.Decision(PID, tid, attempt, rid, "REFUSED" if waiting else decision,
                       "insufficient_capacity" if waiting else ("" if decision == "GRANTED" else "breaker_open"),
                       waiting=waiting, cost_estimate=1.0)
        self.apply(f"{decision} {tid}#{attempt}@{rid}", L.on_allocation(self.state, d, CFG, self.live()))

    def report(self, i: int, status: str) -> None:
        out = sorted(t for t, r in self.state.runs.items() if r.status in L.OUT)
        if not out or not self.active:
            return
        tid = out[i % len(out)]
        run = self.state.runs[tid]
        if status == "STARTED" and run.status is L.RunStatus.STARTED:
            status = "PROGRESS"
        fb = L.Feedback(PID, tid, status, self.now, run.attempt, progress_pct=50.0,
                        feedback_id=f"{tid}-{run.attempt}-{status}-{self.now}")
        self.apply(f"{status} {tid}#{run.attempt}", L.on_feedback(self.state, fb, CFG, self.live()))

    def control(self, command: str) -> None:
        if self.active:
            self.apply(command, L.on_control(self.state, L.Control(command, PID, at_ms=self.now), CFG, self.live()))

    def approve(self) -> None:
        if self.active and self.state.plan.approval is ApprovalState.PENDING:
            a = L.Approval(PID, self.state.plan.version, "APPROVE", "pytest", decided_at_ms=self.now)
            self.apply("APPROVE", L.on_approval(self.state, a, CFG, self.live()))

    def edit(self, deadline_h: float) -> None:
        """The goal re-sent with another deadline: a replan, PENDING when the plan misses it."""
        if self.active:
            rec = _goal_rec(tasks=TASKS)
            rec["constraints"] = {"deadline_ms": T0 + round(deadline_h * 3_600_000)}
            self.apply(f"edit {deadline_h} h", L.on_goal(self.state, codec.goal_from_record(rec), {"agents": 5.0}, CFG,
                                                         received_at_ms=self.now, live=self.live()))

    def explain(self) -> str:
        runs = {t: (r.status.value, r.attempt, r.resource_id, r.tried,
                    None if r.due_ms is None else r.due_ms - T0) for t, r in self.state.runs.items()}
        return "\n".join(self.log[-40:] + [f"runs {runs}", f"approval {self.state.plan.approval.value} "
                                           f"v{self.state.plan.version} hold={self.state.hold!r} "
                                           f"stopped={self.state.stopped} halted={self.halted}"])

    # -- fair play --------------------------------------------------------------------
    def settle(self, steps: int = 400) -> None:
        """Every resource healthy and free, no stop, ledgers grant what is asked, executors
        complete what they get: the plan must end (a run stuck anywhere fails this)."""
        self.quiet.clear()
        self.busy.clear()
        self.halted = False
        if self.active and self.state.stopped:
            self.control("RESUME")
        for _ in range(steps):
            if not self.active:
                return
            if self.state.plan.approval is ApprovalState.PENDING:
                self.approve()   # a person decides (a replan of an edited goal may need one)
            waiting = [(t, r) for t, r in sorted(self.state.runs.items()) if r.status is L.RunStatus.WAITING]
            answered = False
            for t, r in waiting:
                if (t, r.attempt, r.resource_id) in self.requests:
                    self.decide(self.requests.index((t, r.attempt, r.resource_id)), "GRANTED")
                    answered = True
            for t in sorted(t for t, r in self.state.runs.items() if r.status in L.OUT):
                if self.active and t in self.state.runs and self.state.runs[t].status in L.OUT:
                    out = sorted(x for x, r in self.state.runs.items() if r.status in L.OUT)
                    self.report(out.index(t), "COMPLETED")
                    answered = True
            if not answered:
                due = L.next_due_ms(self.state, CFG) if self.active else None
                if due is None and self.active and not L.held(self.state):
                    raise AssertionError("an active plan with nothing due and nothing to answer: stuck\n"
                                         + self.explain())
                self.now = max(self.now + 1000, due or 0)
            self.timer()
        raise AssertionError(f"no end after {steps} fair steps\n" + self.explain())


ACTION = st.one_of(
    st.tuples(st.just("decide"), st.integers(0, 20), st.sampled_from(["GRANTED", "REFUSED", "QUEUED"])),
    st.tuples(st.just("report"), st.integers(0, 5), st.sampled_from(["STARTED", "COMPLETED", "FAILED"])),
    st.tuples(st.just("silence"), st.sampled_from(sorted(BASE)), st.booleans()),
    st.tuples(st.just("busy"), st.sampled_from(sorted(BASE)), st.booleans()),
    st.tuples(st.just("wait"), st.sampled_from([100, 1000, 4000, 6000, 61_000]), st.just(0)),
    st.tuples(st.just("control"), st.sampled_from(["STOP", "RESUME", "HALT", "UNHALT"]), st.just(0)),
    st.tuples(st.just("edit"), st.sampled_from([1.0, 2.0, 100.0]), st.just(0)),
    st.tuples(st.just("approve"), st.just(0), st.just(0)),
)


def play(actions) -> World:
    w = World()
    for kind, x, y in actions:
        if not w.active:
            break
        if kind == "decide":
            w.decide(x, y)
        elif kind == "report":
            w.report(x, y)
        elif kind == "silence":
            (w.quiet.add if y else w.quiet.discard)(x)
        elif kind == "busy":
            (w.busy.add if y else w.busy.discard)(x)
        elif kind == "wait":
            w.now += x
        elif kind == "edit":
            w.edit(x)
        elif kind == "approve":
            w.approve()
        elif x in ("HALT", "UNHALT"):
            w.halted = x == "HALT"
        else:
            w.control(x)
        w.timer()
    w.settle()
    return w


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ACTION, max_size=40))
def test_random_histories_never_stall_a_plan(actions):
    play(actions)


def test_the_e2e_history_queued_on_a_resource_that_goes_silent_is_requested_elsewhere():
    """tests/e2e/test_live_plans.py's stalled plans: a and c queued at the cheap single-slot
    resource, which goes silent; released from it, they must be requested from the others."""
    w = World()
    assert sorted(w.requests) == [("a", 1, "silent"), ("c", 1, "silent")]
    w.decide(0, "QUEUED")
    w.decide(1, "QUEUED")
    w.quiet.add("silent")
    w.now += TIMEOUT + 1
    w.timer()
    assert w.log[-1].startswith("RESOURCE_LOST")
    assert {(t, a, r) for t, a, r in w.requests[2:]} == {("a", 2, "cheap"), ("c", 2, "cheap")}
    w.settle()
    assert w.state.status is L.PlanStatus.COMPLETED


def _edited_goal(deadline_ms: int):
    rec = _goal_rec(tasks=TASKS)
    rec["constraints"] = {"deadline_ms": deadline_ms}
    return codec.goal_from_record(rec)


def test_a_plan_waiting_for_a_person_is_not_ticked_for_placements_it_cannot_make():
    """A replan that needs a person's approval (here: an edited goal whose deadline the plan
    now misses) keeps a retry due; until the approval nothing can be placed, so no DUE tick
    may find it due (it was ticked every second for nothing), and the approval places it."""
    w = World()
    w.decide(0, "GRANTED")
    w.report(0, "FAILED")                      # a: RETRY, due after the backoff
    assert w.state.runs["a"].status is L.RunStatus.RETRY
    w.apply("goal edited", L.on_goal(w.state, _edited_goal(T0 + 3_600_000), {"agents": 5.0}, CFG,
                                     received_at_ms=w.now, live=w.live()))
    assert w.state.plan.approval is ApprovalState.PENDING and w.state.plan.violations
    w.now += 60_000
    w.timer()                                  # asserts a DUE tick leaves the plan due later
    due = L.next_due_ms(w.state, CFG)
    assert due is None or due > w.now
    n = len(w.requests)
    w.apply("approved", L.on_approval(w.state, L.Approval(PID, w.state.plan.version, "APPROVE", "pytest",
                                                          decided_at_ms=w.now), CFG, w.live()))
    assert ("a", 2) in [(t, a) for t, a, _ in w.requests[n:]] and w.state.runs["a"].status is L.RunStatus.WAITING


def test_a_retry_due_while_held_over_budget_is_not_ticked_until_resumed():
    w = World()
    w.decide(0, "GRANTED")
    w.report(0, "FAILED")
    w.apply("hold", (dataclasses.replace(w.state, hold="over budget"), ()))
    w.now += 60_000
    w.timer()
    assert L.next_due_ms(w.state, CFG) is None or L.next_due_ms(w.state, CFG) > w.now
    n = len(w.requests)
    w.control("RESUME")
    assert ("a", 2) in [(t, a) for t, a, _ in w.requests[n:]]
