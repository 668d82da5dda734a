"""The executor service: `tasks.assigned` in, tasks run in the sandbox, `execution.feedback` out.

Exactly once, per task: a task's terminal feedback (COMPLETED, FAILED or CANCELLED) and the consumed
offset of its assignment are committed in one Kafka transaction (consume-transform-produce
with `send_offsets_to_transaction`, fenced by the consumer group's generation). Tasks run
concurrently on a bounded pool of slots, so they finish out of order; a finished task's
terminal record is held until every earlier assignment of its partition has finished too,
and then that contiguous prefix is committed (records and offset together). A crash (even
`kill -9`) therefore loses only uncommitted work: the assignments after the committed offset
are consumed and run again, and nothing that was already committed is published twice.

STARTED and PROGRESS are informational: they go out at once through a second, idempotent,
non-transactional producer (they could not be seen before the task ends if they were in its
transaction), with deterministic event ids, so a task run again after a crash repeats them
with the same ids and consumers can deduplicate.

Backpressure: when every slot has been busy for `pause_after_s` the consumer pauses its
partitions and keeps polling (group membership stays alive); it resumes when a slot frees.
Nothing is buffered beyond librdkafka's fetch queue, bounded to 4 MB.

The executor is a resource: it announces itself on `resources.availability` (its id, kind
`agents`, capacity `agents` = slots plus any other units it offers, free slots, capabilities,
hourly rate, health, heartbeat) every `heartbeat_s`, again when its free slots change, and as
unavailable on a clean stop: `announcement()` is the one place that builds that record. The
planner's ledgers allocate tasks to it by id (`assigned_to`).

Routing: every executor reads all of `tasks.assigned` in its own consumer group
(`chimera-executor.<id>`) and runs only the assignments whose `assigned_to` is its id (with
`unassigned`, also those that name no executor: a planner without announced resources).
An executor of a pool (`pool`) also reads `tasks.assigned` in the pool's group
(`chimera-executor-pool.<pool>`, shared by its members) and runs the assignments whose
`assigned_to` is the pool: Kafka hands each of them to one member, and a member that dies hands
its partitions (and their uncommitted tasks) to the others. Two groups, two lanes: a lane is one
consumer and the transactional producer that commits its offsets (a transaction's offsets
belong to one group); both share the slots. Any assignment taken that needs a capability the
executor lacks is refused with a FAILED `missing_capability`. The attempt's `deadline_ms` is
the sandbox's wall-time limit.

Emergency stop: the executor folds `control.commands` from the beginning (STOP / RESUME of a
plan or of every plan, CANCEL of a plan). A STOP (or CANCEL) interrupts the running sandboxes of
that plan through their cancel event (the sandbox's epoch callback sees it within one 10 ms
tick) and reports them CANCELLED; an assignment of a stopped plan that arrives meanwhile is
answered CANCELLED at once, without running (the planner holds the new attempt until RESUME).

An assignment that cannot be read (not Avro, another schema, fields missing) is dead-lettered to
`tasks.assigned.dlq` with its reason and this executor's id, in the transaction that moves the
offset past it: never silently skipped, never blocking the partition.

Imports only the domain (processors/) and the contracts (topics/), never streams/.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import queue
import shutil
import signal
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import Counter, Histogram
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from executor.deadline import Deadline
from executor.sandbox import Limits, Outcome, Sandbox, SlotPool
from executor.tasks import module_for
from processors import ids
from processors.execution import TaskRef, task_ref
from topics import logs, probes, registry as T, security, tracing
from topics.dlq import CONSUMER, dlq_headers
from topics.serde import SerdeError, serde

log = logging.getLogger("chimera.executor")


@dataclass
class ExecutorConfig:
    bootstrap: str
    executor_id: str = field(default_factory=lambda: f"executor-{socket.gethostname()}")
    slots: int = 2
    capabilities: tuple[str, ...] = ("wasm",)
    hourly_rate: float = 0.0
    capacities: dict[str, float] = field(default_factory=dict)   # other units it offers (cpu, memory_gb)
    group: str | None = None            # None: its own consumer group, chimera-executor.<id>
    pool: str | None = None             # also run what is assigned to this pool (its members share a group)
    unassigned: bool = False            # also run assignments that name no executor
    heartbeat_s: float = 5.0
    work_root: Path = Path(".data/executor")
    limits: Limits = Limits()           # timeout_s: the wall time of a task without a deadline
    max_timeout_s: float = 6 * 3600.0   # the most wall time a deadline may give a task
    keep_workdirs: bool = False
    control: bool = True                # honour control.commands (emergency stop)
    commit_interval_s: float = 0.1      # finished tasks' feedback and offsets commit at most this often
    pause_after_s: float = 0.5          # every slot busy this long: pause the partitions (backpressure)
    # Finished (plan, task, attempt) tokens kept to skip a duplicate of an assignment this process
    # already ran. A duplicate is the planner sending the same attempt again after its own restart
    # (at-least-once: what it produced since its last commit, a few seconds of output, re-sent once
    # it is back, within a minute or two); an older one cannot come. 4,096 tokens (~1.4 MB) cover
    # about four minutes at the goal's 1,000 tasks/min even if every task were this executor's;
    # a duplicate past that runs again and repeats the same event ids. Before: 100,000 (~33 MB,
    # still growing after 10,000 tasks).
    recent_tasks: int = 4096
    # A Kafka call blocked past its timeout (executor/deadline.py): the service ends its process
    # for the supervisor to replace (main() sets this); an executor embedded in another process
    # (a test, a notebook) only says so and reports itself stuck, never ending its host.
    exit_when_stuck: bool = False

    @property
    def consumer_group(self) -> str:
        return self.group or f"chimera-executor.{self.executor_id}"

    @property
    def pool_group(self) -> str | None:
        return f"chimera-executor-pool.{self.pool}" if self.pool else None

    @property
    def offered_capabilities(self) -> tuple[str, ...]:
        """Its capabilities, and `pool:<pool>` for a pool member: announced, so a task that
        must run in a pool can say so and the planner allocates it to a member."""
        return (*self.capabilities, *((f"{POOL_CAPABILITY}{self.pool}",) if self.pool else ()))


POOL_CAPABILITY = "pool:"
LIVE_WITHIN_S = 60.0   # a loop turn takes milliseconds; a transaction commit waits at most 30 s


def now_ms() -> int:
    return int(time.time() * 1000)


def announcement(cfg: ExecutorConfig, *, available: bool = True, free_slots: int | None = None) -> dict:
    """This executor as a resource on resources.availability (v2): kind `agents` (a task that
    names no units takes one slot), capacity `agents` = slots and any other units it offers,
    free slots now (the other units are reported whole: only slots are tracked here), health
    and heartbeat."""
    now = now_ms()
    caps = {**{k: float(v) for k, v in cfg.capacities.items()}, "agents": float(cfg.slots)}
    free = dict(caps)
    free["agents"] = float(cfg.slots if free_slots is None else max(0, free_slots))
    return {"resource_id": cfg.executor_id, "kind": "agents", "capacities": caps,
            "capabilities": list(cfg.offered_capabilities), "available": available,
            "hourly_rate": float(cfg.hourly_rate), "updated_at_ms": now, "free": free,
            "health": "HEALTHY" if available else "UNHEALTHY", "heartbeat_ms": now}


class Stops:
    """What control.commands says now, folded in order: plans stopped (until RESUME), every plan
    stopped (STOP / RESUME with the key `*`), plans cancelled (for good)."""

    def __init__(self) -> None:
        self.plans: dict[str, str] = {}
        self.all: str | None = None
        self.cancelled: dict[str, str] = {}

    def apply(self, rec: dict) -> tuple[str, str | None] | None:
        """Fold one command; returns (why, plan id or None for every plan) when running work
        must be interrupted, else None."""
        cmd, pid = rec["command"], rec.get("plan_id")
        why = f"{cmd.lower()} by {rec.get('issued_by') or 'unknown'}" + (f": {rec['reason']}" if rec.get("reason") else "")
        if cmd == "STOP":
            if pid is None:
                self.all = why
            else:
                self.plans[pid] = why
            return why, pid
        if cmd == "RESUME":
            if pid is None:
                self.all = None
            else:
                self.plans.pop(pid, None)
            return None
        if cmd == "CANCEL" and pid is not None:
            self.cancelled[pid] = why
            return why, pid
        return None

    def blocks(self, plan_id: str) -> str | None:
        return self.cancelled.get(plan_id) or self.plans.get(plan_id) or self.all


def feedback(ref: TaskRef, status: str, *, pct: float = 0.0, message: str = "",
             actual_hours: float | None = None, produced: dict | None = None) -> dict:
    """A feedback record; its event id depends only on (plan, task, attempt, status[, pct])."""
    parts = ["execution.feedback", ref.plan_id, ref.task_id, ref.attempt, status]
    if status == "PROGRESS":
        parts.append(int(pct))
    return {"event_id": ids.event_id(*parts), "plan_id": ref.plan_id, "task_id": ref.task_id,
            "status": status, "progress_pct": float(pct), "actual_hours": actual_hours,
            "message": message[:2000], "reported_at_ms": now_ms(), "attempt": ref.attempt, "produced": produced}


def missing_capabilities(ref: TaskRef, cfg: ExecutorConfig) -> list[str]:
    """The task's capabilities this executor lacks. A `wasm:MODULE` capability names the module to
    run (processors.execution), not a skill: a module it does not have fails `module_not_found`."""
    have = set(cfg.offered_capabilities)
    return [c for c in ref.capabilities if c not in have and not c.lower().startswith("wasm:")]


def files_in(folder: Path) -> set[str]:
    """Every file under a task folder, as a path relative to it (what the module sees from `/`)."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


DEAD = Counter("chimera_executor_dead_letters_total", "Unreadable assignments sent to tasks.assigned.dlq",
               ["reason"])
TASKS = Counter("chimera_executor_tasks_total", "Assignments this executor ended, by outcome", ["status"])
SANDBOX_SECONDS = Histogram("chimera_executor_sandbox_seconds", "Wall time of a task's module in the sandbox")


@dataclass
class _Lane:
    """One consumer group on tasks.assigned and the transactional producer that commits its
    offsets: the executor's own (`takes` its id), and a pool member's pool lane (`takes` the pool)."""
    index: int
    group: str
    takes: frozenset                    # the `assigned_to` values it runs (None: unassigned)
    consumer: Consumer
    tx_config: dict
    tx: Producer | None = None
    paused: bool = False
    renew: bool = False                 # its brokers went away: a fresh producer before the next commit


@dataclass
class _Entry:
    offset: int
    done: bool = False
    records: list = field(default_factory=list)   # (topic, key, value bytes, headers) for the transaction
    cancel: threading.Event | None = None
    ref: TaskRef | None = None
    stop_cause: str | None = None       # interrupted by a control command: reported CANCELLED
    traceparent: str | None = None      # the assignment's trace: its feedback continues it
    abandoned: bool = False             # interrupted by our own shutdown: not reported, runs again


class Executor:
    def __init__(self, cfg: ExecutorConfig) -> None:
        self.cfg = cfg
        self.sandbox = Sandbox(cfg.work_root / "tasks", cache_dir=cfg.work_root / "cwasm")
        self.pool = SlotPool(cfg.slots)
        self.fb = serde(T.EXECUTION_FEEDBACK.name)
        self.assigned = serde(T.TASKS_ASSIGNED.name)
        self.resources = serde(T.RESOURCES_AVAILABILITY.name)
        sec = security.confluent()   # KAFKA_SECURITY_* (SASL, TLS)
        common = {"bootstrap.servers": cfg.bootstrap, "partitioner": "murmur2_random", **sec,
                  "acks": "all", "enable.idempotence": True, "linger.ms": 5}
        self.side = Producer({**common, "client.id": f"{cfg.executor_id}-side"})
        own = {cfg.executor_id} | ({None} if cfg.unassigned and not cfg.pool else set())
        routes = [(cfg.consumer_group, own, "")]
        if cfg.pool:                    # unassigned work goes to the pool's shared group, never twice
            routes.append((cfg.pool_group, {cfg.pool} | ({None} if cfg.unassigned else set()), ".pool"))
        self.lanes = [_Lane(i, group, frozenset(takes), Consumer({
            **sec, "bootstrap.servers": cfg.bootstrap, "group.id": group, "client.id": cfg.executor_id + suffix,
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "isolation.level": "read_committed", "session.timeout.ms": 10_000,
            "queued.max.messages.kbytes": 4096, "fetch.wait.max.ms": 50,
            "max.poll.interval.ms": 300_000}),
            {**common, "transactional.id": f"chimera-executor-{cfg.executor_id}{suffix}",
             "transaction.timeout.ms": 60_000, "client.id": f"{cfg.executor_id}{suffix}-tx"})
            for i, (group, takes, suffix) in enumerate(routes)]
        for lane in self.lanes:
            lane.tx = self._tx_producer(lane)
        self.stuck: str | None = None       # the Kafka call found blocked past its timeout, if any
        self.deadline = Deadline(on_stuck=None if cfg.exit_when_stuck else self._stuck)
        # (lane index, topic, partition) -> its unfinished and uncommitted assignments, in offset order
        self.inflight: dict[tuple[int, str, int], OrderedDict[int, _Entry]] = {}
        self.done_q: queue.Queue = queue.Queue()
        self._full_since: float | None = None
        self.counts = {"completed": 0, "failed": 0, "cancelled": 0, "skipped": 0, "not_mine": 0, "dead_lettered": 0}
        self.stops = Stops()
        self.commits = [0, 0.0]             # transactions, seconds spent committing
        self.control = Consumer({
            **sec, "bootstrap.servers": cfg.bootstrap, "group.id": f"{cfg.consumer_group}.control",
            "client.id": f"{cfg.executor_id}-control", "enable.auto.commit": False,
            "auto.offset.reset": "earliest"}) if cfg.control else None
        self.control_serde = serde(T.CONTROL_COMMANDS.name)
        self._control_parts: list[int] = []
        self._announced_free: int | None = None
        self._announced_at = 0.0
        self._recent: OrderedDict[tuple, None] = OrderedDict()   # finished (plan, task, attempt), bounded
        self.beat = time.monotonic()        # the loop's last turn (liveness)
        self.owned: frozenset = frozenset()  # (lane index, topic, partition) assigned now (readiness)

    # -- Kafka plumbing --------------------------------------------------------------------
    def _announce(self, available: bool = True) -> None:
        free = self.pool.free
        rec = announcement(self.cfg, available=available, free_slots=free)
        self._announced_free, self._announced_at = free, time.monotonic()
        self.side.produce(T.RESOURCES_AVAILABILITY.name, key=rec["resource_id"].encode(),
                          value=self.resources.encode(rec))

    def _side_feedback(self, ref: TaskRef, status: str, pct: float = 0.0, traceparent: str | None = None) -> None:
        """STARTED / PROGRESS at once; they continue the assignment's trace as the terminal record does."""
        rec = feedback(ref, status, pct=pct)
        try:
            self.side.produce(T.EXECUTION_FEEDBACK.name, key=ref.plan_id.encode(), value=self.fb.encode(rec),
                              headers=tracing.kafka_headers("executor.feedback", traceparent) or None)
        except BufferError:
            log.warning("feedback queue full: %s %s dropped", status, ref.task_id)

    @property
    def paused(self) -> bool:
        return any(lane.paused for lane in self.lanes)

    def _on_assign(self, lane: _Lane, consumer, partitions) -> None:
        self.owned = self.owned | {(lane.index, tp.topic, tp.partition) for tp in partitions}
        for tp in partitions:
            self.inflight.setdefault((lane.index, tp.topic, tp.partition), OrderedDict())
        if lane.paused:
            consumer.pause(partitions)

    def _on_revoke(self, lane: _Lane, consumer, partitions) -> None:
        self.owned = self.owned - {(lane.index, tp.topic, tp.partition) for tp in partitions}
        self._drain_done()
        self._commit_ready()
        for tp in partitions:
            entries = self.inflight.pop((lane.index, tp.topic, tp.partition), None) or {}
            for e in entries.values():
                if e.cancel is not None:
                    e.cancel.set()      # its new owner runs it again; free the slot now
                if e.ref is not None and e.records:   # finished, not committed: to run again if it comes back
                    self._recent.pop((e.ref.plan_id, e.ref.task_id, e.ref.attempt), None)

    # -- tasks -----------------------------------------------------------------------------
    def _handle(self, lane: _Lane, msg) -> None:
        key = (lane.index, msg.topic(), msg.partition())
        entries = self.inflight.setdefault(key, OrderedDict())
        entry = entries[msg.offset()] = _Entry(msg.offset(), traceparent=tracing.parent_of(msg.headers()))
        try:
            rec = self.assigned.decode(msg.value())
            ref = task_ref(rec)
        except (SerdeError, KeyError, TypeError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, SerdeError) else "bad_assignment"
            detail = exc.detail if isinstance(exc, SerdeError) else f"{type(exc).__name__}: {exc}"
            log.warning("unreadable assignment at %s@%d: %s", key, msg.offset(), exc)
            headers = {**dlq_headers(reason, detail, msg.topic(), msg.partition(), msg.offset()),
                       CONSUMER: self.cfg.executor_id.encode()}
            entry.records.append((T.TASKS_ASSIGNED.dlq, msg.key(), msg.value(), list(headers.items())))
            entry.done = True       # dead-lettered in the transaction that moves the offset past it
            self.counts["dead_lettered"] += 1
            DEAD.labels(reason).inc()
            return
        if (ref.assigned_to or None) not in lane.takes:
            entry.done = True       # another executor's (pool's) task: it reads the same records in its group
            self.counts["not_mine"] += 1
            return
        entry.ref = ref
        token = (ref.plan_id, ref.task_id, ref.attempt)
        if token in self._recent:
            entry.done = True       # a byte-identical replay of an assignment we already finished
            self.counts["skipped"] += 1
            return
        missing = missing_capabilities(ref, self.cfg)
        if missing:                 # whoever it was meant for: this executor cannot run it
            self._finish(key, entry, ref, None, f"missing_capability: {', '.join(missing)} "
                                                f"(has {', '.join(self.cfg.offered_capabilities) or 'none'})")
            return
        why = self.stops.blocks(ref.plan_id)
        if why:                     # maybe stale: a RESUME may be on its way by the other consumer
            self._catch_up_control(5)
            why = self.stops.blocks(ref.plan_id)
        if why:                     # stopped: not started; the planner holds its next attempt until RESUME
            entry.stop_cause = why
            self._finish(key, entry, ref, None, None)
            return
        limits = self.cfg.limits
        if ref.deadline_ms is not None:
            left = (ref.deadline_ms - now_ms()) / 1000
            if left <= 0:
                self._finish(key, entry, ref, None, f"timeout: the attempt's deadline passed {-left:.1f} s "
                                                    "before it could start")
                return
            limits = dataclasses.replace(limits, timeout_s=min(left, self.cfg.max_timeout_s))
        entry.cancel = threading.Event()
        fut = self.pool.submit(self._run_task, key, entry, ref, limits)
        if fut is None:             # cannot happen: we only poll with a free slot
            raise RuntimeError("no free slot")

    def _run_task(self, key, entry: _Entry, ref: TaskRef, limits: Limits) -> None:
        """On a slot thread."""
        self._side_feedback(ref, "STARTED", traceparent=entry.traceparent)
        plugin = module_for(ref)
        if plugin is None:
            self.done_q.put((key, entry, ref, None, f"module_not_found: no module {ref.module!r} "
                             f"for kind {ref.kind!r}" if ref.module else
                             f"module_not_found: no module for kind {ref.kind!r}"))
            return
        wd = self.sandbox.workdir(f"{ref.plan_id}-{ref.task_id}-{ref.attempt}")
        try:
            shutil.rmtree(wd, ignore_errors=True)   # a re-run starts from a clean folder
            wd.mkdir(parents=True)
            try:
                args = plugin.prepare(ref, wd)
            except Exception as exc:
                self.done_q.put((key, entry, ref, None, f"bad_payload: {exc}"))
                return
            before = files_in(wd)
            out = self.sandbox.run(plugin.wasm(), args, wd, limits=limits, program=plugin.name,
                                   cancel=entry.cancel,
                                   on_progress=lambda pct: pct < 100 and self._side_feedback(
                                       ref, "PROGRESS", pct, traceparent=entry.traceparent))
            # the summary is read here, before the folder and its logs are removed
            produced = {"files": sorted(files_in(wd) - before)[:200], "exit_status": out.exit_code}
            self.done_q.put((key, entry, ref, (plugin.name, out, out.last_line(300), produced), None))
        except Exception as exc:  # a bug here must still end the task
            log.exception("task %s failed in the executor", ref.task_id)
            self.done_q.put((key, entry, ref, None, f"trap: executor error {type(exc).__name__}: {exc}"))
        finally:
            if not self.cfg.keep_workdirs:
                shutil.rmtree(wd, ignore_errors=True)
                shutil.rmtree(wd.parent / (wd.name + ".logs"), ignore_errors=True)

    def _finish(self, key, entry: _Entry, ref: TaskRef, result, error: str | None) -> None:
        if entry.stop_cause is not None and (result is None or not result[1].ok):
            ran = f", after {result[1].wall_s:.3f} s in module {result[0]}" if result is not None else ", not started"
            rec = feedback(ref, "CANCELLED", message=f"cancelled: {entry.stop_cause} "
                                                     f"(executor {self.cfg.executor_id}{ran})")
        elif result is not None:
            name, out, summary, produced = result
            out: Outcome
            if out.ok:
                rec = feedback(ref, "COMPLETED", pct=100.0, actual_hours=out.wall_s / 3600, produced=produced,
                               message=json.dumps({"executor": self.cfg.executor_id, "module": name,
                                                   "summary": summary, "wall_s": round(out.wall_s, 4),
                                                   "fuel": out.fuel_used, "memory_bytes": out.memory_bytes}))
            else:
                rec = feedback(ref, "FAILED", actual_hours=out.wall_s / 3600, produced=produced,
                               message=f"{out.reason}: {out.detail} (executor {self.cfg.executor_id}, module {name})")
        else:
            rec = feedback(ref, "FAILED", message=f"{error} (executor {self.cfg.executor_id})")
        self.counts[rec["status"].lower()] += 1
        TASKS.labels(rec["status"]).inc()
        if result is not None:
            SANDBOX_SECONDS.observe(result[1].wall_s)
        entry.records.append((T.EXECUTION_FEEDBACK.name, ref.plan_id.encode(), self.fb.encode(rec),
                              tracing.kafka_headers("executor.feedback", entry.traceparent)))
        entry.done = True
        self._recent[(ref.plan_id, ref.task_id, ref.attempt)] = None
        while len(self._recent) > self.cfg.recent_tasks:
            self._recent.popitem(last=False)

    def _drain_done(self, wait: float = 0.0) -> None:
        while True:
            try:
                key, entry, ref, result, error = (self.done_q.get(timeout=wait) if wait > 0
                                                  else self.done_q.get_nowait())
            except queue.Empty:
                return
            wait = 0.0
            if self.inflight.get(key, {}).get(entry.offset) is not entry:
                continue            # its partition was revoked meanwhile: the new owner reruns it
            self._finish(key, entry, ref, result, error)

    def _commit_ready(self) -> int:
        """One transaction per lane: the terminal records of every contiguous finished prefix of
        its partitions, and the offsets just past them. Returns how many assignments it covered."""
        return sum(self._commit_lane(lane) for lane in self.lanes)

    def _tx_producer(self, lane: _Lane) -> Producer:
        def on_error(err: KafkaError, lane: _Lane = lane) -> None:
            if err.code() == KafkaError._ALL_BROKERS_DOWN:
                lane.renew = True
        return Producer({**lane.tx_config, "error_cb": on_error})

    def _renew_tx(self, lane: _Lane) -> bool:
        """After every broker went away, the transactional producer can keep a stale coordinator
        and block in send_offsets_to_transaction for ever (librdkafka#5456/#5511): the next
        commit goes through a fresh producer of the same transactional id (which fences the old
        one). False while the broker cannot init it yet: the commit waits for the next round."""
        fresh = self._tx_producer(lane)
        try:
            with self.deadline.within("init_transactions", 30):
                fresh.init_transactions(30)
        except KafkaException as exc:
            log.warning("executor %s: transactional producer not renewed yet: %s", self.cfg.executor_id, exc)
            return False
        lane.tx, lane.renew = fresh, False
        log.info("executor %s: transactional producer of group %s renewed after its brokers went away",
                 self.cfg.executor_id, lane.group)
        return True

    def _commit_lane(self, lane: _Lane) -> int:
        records, offsets, popped = [], [], []
        for (index, topic, part), entries in self.inflight.items():
            if index != lane.index:
                continue
            nxt = None
            while entries:
                first = next(iter(entries.values()))
                if not first.done:
                    break
                entries.popitem(last=False)
                popped.append(((index, topic, part), first))
                records += first.records
                nxt = first.offset + 1
            if nxt is not None:
                offsets.append(TopicPartition(topic, part, nxt))
        if not offsets:
            return 0
        lane.tx.poll(0)                 # its error callback says whether its brokers went away
        if lane.renew and not self._renew_tx(lane):
            self._put_back(popped)
            return 0
        t0 = time.perf_counter()
        try:
            lane.tx.begin_transaction()
            for topic, k, v, headers in records:
                lane.tx.produce(topic, key=k, value=v, headers=headers)
            with self.deadline.within("send_offsets_to_transaction", 30):
                lane.tx.send_offsets_to_transaction(offsets, lane.consumer.consumer_group_metadata(), 30)
            with self.deadline.within("commit_transaction", 30):
                lane.tx.commit_transaction(30)
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.txn_requires_abort():
                log.warning("transaction aborted, will retry: %s", err)
                with self.deadline.within("abort_transaction", 30):
                    lane.tx.abort_transaction(30)
                self._put_back(popped)
                return 0
            raise                   # fatal (fenced by a newer instance): exit, the supervisor restarts
        self.commits[0] += 1
        self.commits[1] += time.perf_counter() - t0
        return len(popped)

    def _put_back(self, popped: list) -> None:
        """Finished entries taken for a transaction that did not commit, back in offset order."""
        for key, e in reversed(popped):
            if key in self.inflight:
                self.inflight[key][e.offset] = e
                self.inflight[key].move_to_end(e.offset, last=False)

    # -- emergency stop --------------------------------------------------------------------
    def _start_control(self) -> None:
        """Read control.commands from its beginning and fold it (bounded wait), before any task."""
        if self.control is None:
            return
        topic = T.CONTROL_COMMANDS.name
        parts = self.control.list_topics(topic, timeout=10).topics[topic].partitions
        self.control.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(parts)])
        self._control_parts = sorted(parts)
        self._catch_up_control(15)
        log.info("executor %s: control folded (stopped plans %d, all stopped: %s)", self.cfg.executor_id,
                 len(self.stops.plans), self.stops.all is not None)

    def _catch_up_control(self, within_s: float) -> None:
        """Fold control.commands up to its end as of now (bounded wait). Control and assignments
        are separate topics read by separate consumers: a new attempt sent after a RESUME can
        reach us before the RESUME does, so a stop is checked against the topic's end."""
        if self.control is None:
            return
        topic = T.CONTROL_COMMANDS.name
        ends = {p: self.control.get_watermark_offsets(TopicPartition(topic, p), timeout=5, cached=False)[1]
                for p in self._control_parts}
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            pos = {tp.partition: tp.offset for tp in self.control.position(
                [TopicPartition(topic, p) for p in self._control_parts])}
            if all(ends[p] == 0 or pos.get(p, -1) >= ends[p] for p in self._control_parts):
                return
            self._poll_control(0.1)

    def _poll_control(self, timeout: float = 0.0) -> None:
        if self.control is None:
            return
        for msg in self.control.consume(200, timeout):
            if msg.error() or msg.value() is None:
                continue
            try:
                rec = self.control_serde.decode(msg.value())
            except SerdeError as exc:
                log.warning("unreadable control command: %s", exc)
                continue
            hit = self.stops.apply(rec)
            if hit is not None:
                self._interrupt(*hit)

    def _interrupt(self, why: str, plan_id: str | None) -> None:
        """Interrupt the running sandboxes of a plan (None: of every plan): reported CANCELLED."""
        n = 0
        for entries in self.inflight.values():
            for e in entries.values():
                if (not e.done and e.cancel is not None and e.ref is not None
                        and (plan_id is None or e.ref.plan_id == plan_id)):
                    e.stop_cause = why
                    e.cancel.set()
                    n += 1
        if n:
            log.info("executor %s: %s: %d running task(s) interrupted", self.cfg.executor_id, why, n)

    def _backpressure(self) -> None:
        """Pause the partitions once every slot has been busy for `pause_after_s`, resume when
        one frees. Not at once: a pause drops librdkafka's prefetched records and a resume
        fetches them again (a broker round trip), so pausing around every short task would cap
        throughput at a few tasks per round trip. Meanwhile the prefetch is bounded
        (`queued.max.messages.kbytes`), and nothing is taken from it without a free slot."""
        now = time.monotonic()
        if self.pool.free > 0:
            self._full_since = None
            for lane in self.lanes:
                if lane.paused:
                    lane.consumer.resume(lane.consumer.assignment())
                    lane.paused = False
            return
        if self._full_since is None:
            self._full_since = now
        if now - self._full_since >= self.cfg.pause_after_s:
            for lane in self.lanes:
                if not lane.paused:
                    lane.consumer.pause(lane.consumer.assignment())
                    lane.paused = True

    # -- probes (topics/probes.py; read from the probe server's thread) ------------------------
    def _stuck(self, what: str) -> None:  # the deadline's thread
        self.stuck = what
        log.critical("%s is blocked past its timeout (librdkafka#5456): this embedded executor is stuck "
                     "(a service would exit for its supervisor to replace it)", what)

    def liveness(self) -> str | None:
        if self.stuck is not None:
            return f"{self.stuck} is blocked past its timeout"
        idle = time.monotonic() - self.beat
        return None if idle <= LIVE_WITHIN_S else f"its loop has not turned for {idle:.0f} s"

    def readiness(self) -> str | None:
        """Ready once its own group's consumer owns partitions of tasks.assigned (transactions
        initialised, group joined). A member of a shared --group left without a partition runs
        nothing, and says so. A pool's group is not asked: more members than partitions is fine."""
        if any(index == 0 for index, _, _ in self.owned):
            return None
        return f"owns no partition of {T.TASKS_ASSIGNED.name} in group {self.lanes[0].group} (yet)"

    # -- the loop ----------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        probes.register("executor", live=self.liveness, ready=self.readiness)
        try:
            self._run(stop)
        finally:
            probes.unregister("executor", self.liveness)   # else the registry keeps this executor alive

    def _run(self, stop: threading.Event) -> None:
        for lane in self.lanes:
            with self.deadline.within("init_transactions", 30):
                lane.tx.init_transactions(30)
        self._start_control()
        for lane in self.lanes:
            lane.consumer.subscribe([T.TASKS_ASSIGNED.name],
                                    on_assign=lambda c, ps, lane=lane: self._on_assign(lane, c, ps),
                                    on_revoke=lambda c, ps, lane=lane: self._on_revoke(lane, c, ps))
        self._announce()
        next_beat = time.monotonic() + self.cfg.heartbeat_s
        log.info("executor %s: %d slots, groups %s", self.cfg.executor_id, self.cfg.slots,
                 ", ".join(lane.group for lane in self.lanes))
        last_commit = 0.0
        try:
            while not stop.is_set():
                self.beat = time.monotonic()
                if time.monotonic() >= next_beat:
                    self._announce()
                    next_beat = time.monotonic() + self.cfg.heartbeat_s
                self._poll_control()
                # every slot busy: wait for one to finish (not for the broker), else just collect
                self._drain_done(wait=0.05 if self.pool.free == 0 else 0.0)
                if time.monotonic() - last_commit >= self.cfg.commit_interval_s:
                    self._commit_ready()    # one transaction for everything finished meanwhile
                    last_commit = time.monotonic()
                self._backpressure()
                if self.pool.free != self._announced_free and time.monotonic() - self._announced_at >= 0.25:
                    self._announce()    # free slots changed: tell the planner soon, not at the next beat
                self.side.poll(0)
                for lane in self.lanes:
                    free = self.pool.free
                    if free == 0:
                        break
                    running = free < self.cfg.slots
                    wait = (0.005 if running else 0.05) / len(self.lanes)
                    for msg in lane.consumer.consume(free, wait):
                        if msg.error():
                            if msg.error().code() != KafkaError._PARTITION_EOF:
                                log.warning("consumer: %s", msg.error())
                            continue
                        self._handle(lane, msg)
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        for entries in self.inflight.values():
            for e in entries.values():
                if e.cancel is not None and not e.done and e.stop_cause is None:
                    e.abandoned = True
                    e.cancel.set()   # unfinished work is run again by whoever owns the partition next
        self.pool.shutdown(wait=True)
        try:
            self._drain_done()
            for entries in self.inflight.values():   # abandoned tasks are not reported: they rerun
                for off in [o for o, e in entries.items() if e.abandoned]:
                    for later in [o for o in entries if o >= off]:
                        entries.pop(later, None)
                    break
            self._commit_ready()
            self._announce(available=False)
            self.side.flush(10)
        finally:
            for lane in self.lanes:
                lane.consumer.close()
            if self.control is not None:
                self.control.close()
            self.sandbox.close()
            self.deadline.close()


def config_from_args(argv: list[str] | None = None) -> ExecutorConfig:
    """The service's configuration from its command line (and EXECUTOR_* variables)."""
    ap = argparse.ArgumentParser(prog="chimera executor", description=__doc__.split("\n")[0])
    ap.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    ap.add_argument("--id", dest="executor_id", default=os.environ.get("EXECUTOR_ID"))
    ap.add_argument("--slots", type=int, default=int(os.environ.get("EXECUTOR_SLOTS", "2")))
    ap.add_argument("--capability", action="append", default=None)
    ap.add_argument("--capacity", action="append", default=[], metavar="KIND=UNITS",
                    help="other units offered besides the slots (cpu=8, memory_gb=16)")
    ap.add_argument("--hourly-rate", type=float, default=0.0)
    ap.add_argument("--group", default=os.environ.get("EXECUTOR_GROUP") or None,
                    help="consumer group (default: its own, chimera-executor.<id>)")
    ap.add_argument("--pool", default=os.environ.get("EXECUTOR_POOL") or None,
                    help="also run what is assigned to this pool, sharing it with the pool's other members")
    ap.add_argument("--unassigned", action="store_true",
                    help="also run assignments that name no executor (with --pool: shared by the pool; "
                         "else on one executor or one shared --group only)")
    ap.add_argument("--max-timeout-s", type=float, default=ExecutorConfig.max_timeout_s)
    ap.add_argument("--no-control", action="store_true", help="ignore control.commands")
    ap.add_argument("--heartbeat-s", type=float, default=5.0)
    ap.add_argument("--work-root", type=Path, default=Path(os.environ.get("EXECUTOR_WORK", ".data/executor")))
    ap.add_argument("--timeout-s", type=float, default=Limits.timeout_s)
    ap.add_argument("--memory-mb", type=int, default=Limits.memory_bytes >> 20)
    ap.add_argument("--fuel", type=int, default=Limits.fuel)
    a = ap.parse_args(argv)
    caps = {k: float(v) for k, v in (c.split("=", 1) for c in a.capacity)}
    cfg = ExecutorConfig(bootstrap=a.bootstrap, slots=a.slots, hourly_rate=a.hourly_rate, group=a.group, pool=a.pool,
                         heartbeat_s=a.heartbeat_s, work_root=a.work_root, capacities=caps,
                         unassigned=a.unassigned, max_timeout_s=a.max_timeout_s, control=not a.no_control,
                         capabilities=tuple(a.capability or ("wasm",)),
                         limits=Limits(fuel=a.fuel, memory_bytes=a.memory_mb << 20, timeout_s=a.timeout_s),
                         exit_when_stuck=True)
    if a.executor_id:
        cfg.executor_id = a.executor_id
    return cfg


def main(argv: list[str] | None = None) -> int:
    cfg = config_from_args(argv)
    logs.setup("executor", default="text")
    probes.serve_from_env()   # /metrics, /healthz and /readyz, as every worker kind
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    ex = Executor(cfg)
    ex.run(stop)
    log.info("executor %s stopped: %s; %d transactions, %.1f ms each", cfg.executor_id, ex.counts,
             ex.commits[0], ex.commits[1] / max(1, ex.commits[0]) * 1000)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
