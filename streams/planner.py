"""The planner worker: its agents and tables, wired to the domain's plan lifecycle.

intake:    goals.created -> limits, validation -> chimera.goals.by_plan (re-keyed by plan_id)
planner:   goals.by_plan + execution.feedback + plans.approvals + chimera.plans.refined + control.commands
           + chimera.allocations.decisions + chimera.plans.tick
           -> plans.*, tasks.assigned, risks.alerts, chimera.plans.refine, chimera.allocations.requests
refiner:   chimera.plans.refine -> CP-SAT (off the event loop) -> chimera.plans.refined
resources: resources.availability -> validated (dead letters); the view every worker keeps is
           its own tail of the topic (follow_resources): a Faust GlobalTable is filled on
           the one worker that runs this agent and was seen to stop updating on the other
           (every resource then looked silent there: nothing was allocated, plans stalled)
ledger:    chimera.allocations.requests (keyed by resource id) -> the resource's ledger decides
           -> resources.allocations (keyed by resource id) + chimera.allocations.decisions (by plan id)
halt:      chimera.control.global -> a global table with the "everything stopped" flag
timers:    plans due (retries, timeouts, placements), on lost resources, or held by a stop of
           everything that was resumed -> chimera.plans.tick, to the partition owning the plan

Each record is handled whole or not at all: its outputs and the new state are encoded
first; a record that cannot apply goes to <topic>.dlq with the reason. The planner and ledger
agents store their states in batches (streams/staging.py): outputs acknowledged, then states
stored, then records acknowledged.
"""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import itertools
import logging
import io
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Awaitable, Callable

import faust
from aiokafka.partitioner import murmur2
from prometheus_client import Counter, Histogram

from processors import allocation, lifecycle, limits, llm_plan
from processors.dependencies import check_specs
from processors.ids import plan_id as derive_plan_id
from processors.model import Goal, PlanningError
from streams import codec, memory, staging, state as state_codec, tail, timers, watchdog
from topics import tracing
from streams.metrics import INTEGRATION_ERRORS, PLANNING_ERRORS, instrument_domain
from streams.app import Publisher, create_app, ignored
from topics.dlq import source_headers
from streams.settings import Settings
from topics import registry as T
from topics.serde import SerdeError, serde

log = logging.getLogger("chimera.planner")

GOALS_RECEIVED = Counter("layer2_goals_received_total", "Goals read from goals.created")
PLANS_CREATED = Counter("layer2_plans_created_total", "Plans published on plans.created")
PLANS_UPDATED = Counter("layer2_plans_updated_total", "Plan versions published on plans.updated")
REFINE_FAILURES = Counter("layer2_refinement_errors_total", "Refinements that failed", ["error"])
FORWARD_FAILURES = Counter("chimera_goal_forward_failures_total", "Goals whose re-keyed copy the broker did not take")
STATES_EXPIRED = Counter("chimera_plan_states_expired_total", "Finished plans whose state was dropped")
PLANNING_SECONDS = Histogram("layer2_planning_duration_seconds", "Fast-path planning time per goal")
_COUNTED = {T.PLANS_CREATED.name: PLANS_CREATED, T.PLANS_UPDATED.name: PLANS_UPDATED}
# RocksDB's defaults (Faust's) let a worker's memory grow with its table: up to 3 x 64 MB of
# memtables and a 2 GB block cache per DB. Faust opens one DB per table and partition (plans
# and ledgers x 4 partitions = 8) and gives each its own block cache, so per-DB sizes add up
# 8 times: 8 MB memtables and a 32 MB cache each let RSS climb 200 -> 406 MB over 100,000
# goals as the caches filled. Bounded now: 8 x (2 x 2 MB memtables + 4 MB cache) = 64 MB.
ROCKSDB_OPTIONS = {"write_buffer_size": 2 * 2**20, "max_write_buffer_number": 2,
                   "block_cache_size": 4 * 2**20, "block_cache_compressed_size": 1 * 2**20}
PLAN_KEYED = (T.GOALS_BY_PLAN, T.EXECUTION_FEEDBACK, T.PLANS_APPROVALS, T.PLANS_REFINED, T.PLANS_EXPIRE,
              T.CONTROL_COMMANDS, T.ALLOCATION_DECISIONS, T.PLANS_TICK)
SOURCES = tuple(s.name for s in (T.GOALS_CREATED, T.PLANS_REFINE, T.RESOURCES_AVAILABILITY, T.ALLOCATION_REQUESTS,
                                 T.CONTROL_GLOBAL) + PLAN_KEYED)
ALLOCATION_SECONDS = Histogram("chimera_allocation_decision_seconds", "Ledger decision time per allocation message",
                               buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1))
TICK_INTERVAL_S = 0.25
BATCH_MAX = 256   # records the planner agent handles before it waits for their outputs (streams/staging.py)
BATCH_IDLE_S = 0.05   # a batch left by an agent waiting for records is flushed by the timer this late
GC_GEN0 = 50_000   # allocations between young collections (see on_started; as sinks/base.py)
LIVE_CACHE_S = 0.25   # resources announced by other workers' partitions reach a plan this late at most


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2), as every producer of a keyed record uses."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def check_resource(key: bytes | None, record: dict, lim: limits.Limits) -> None:
    """A resource record fit for the capacity table: keyed by its id, finite numbers."""
    if key is None or key.decode(errors="replace") != record["resource_id"]:
        raise PlanningError("wrong_key", f"key {key!r} is not the resource_id {record['resource_id']!r}")
    limits.resource(record, lim)


def admit_goal(raw: bytes | None, lim: limits.Limits) -> Goal:
    """The intake's door: a goals.created value that decodes, fits the limits and whose
    explicit tasks form a valid network, as a Goal; else SerdeError/PlanningError."""
    limits.record_size(len(raw or b""), lim)
    goal = codec.goal_from_record(serde(T.GOALS_CREATED.name).decode(raw))
    limits.check_goal(goal, lim)
    if goal.tasks:
        check_specs(goal.tasks)
    return goal


class PlannerWorker:
    """The planner's Faust app: build it from Settings, then `app.main()`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        instrument_domain()
        self.config = settings.planning
        self.limits = settings.limits
        self.app = app = create_app(settings)
        self.out = Publisher(app, settings)
        self.plans = app.Table("plans", default=None, partitions=T.PLAN_PARTITIONS, key_type=str,
                               value_type=bytes,  # value: streams.state bytes
                               options=ROCKSDB_OPTIONS)
        self.resources: dict[str, dict] = {}   # resource id -> valid record, this worker's own tail
        self.resources_known = asyncio.Event()   # set once the tail has caught up with the topic
        self.halt_known = asyncio.Event()        # the same for the stop-everything flag
        self.ledgers = app.Table("ledgers", default=None, partitions=T.PLAN_PARTITIONS, key_type=str,
                                 value_type=bytes, options=ROCKSDB_OPTIONS)   # value: state.encode_ledger bytes
        # handled, not yet stored: each agent's table is written in batches (streams/staging.py)
        self.plan_writes = staging.Writer("planner", self.plans, self._plan_stored, max_records=BATCH_MAX,
                                          idle_s=BATCH_IDLE_S)
        self.ledger_writes = staging.Writer("ledger", self.ledgers, max_records=BATCH_MAX, idle_s=BATCH_IDLE_S)
        self._halted = False   # a STOP of every plan is in force (follow_halt)
        self._ticked: dict[str, float] = {}
        self.watch = timers.Watchlist()            # what the timers look at (streams/timers.py)
        self._watching: frozenset[int] | None = None  # the partitions it was built for
        self._sweeping = None                         # the sweep's place in the table (see _sweep)
        self._next_round_ms = 0
        self._live: tuple[float, tuple, dict] | None = None  # (until, resources, capacities): see live()
        self._stored: bytes | None = None  # see _state
        self._refiner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="refine")
        self.memory = memory.MemoryLookup.from_settings(settings.memory)
        self.estimator = None    # learned durations from Triton (inference/estimator.py), [triton] enabled
        if settings.triton.enabled:
            from inference.estimator import EstimatorClient
            self.estimator = EstimatorClient(settings.triton.url, model=settings.triton.model,
                                             timeout_s=settings.triton.timeout_s,
                                             retry_after_s=settings.triton.retry_after_s,
                                             cache_ttl_s=settings.triton.cache_ttl_s)
        self.decomposer = None   # the LLM's breakdowns from Triton (inference/decomposer.py), [triton] decompose
        self._decomposing = asyncio.Semaphore(64)   # LLM requests in flight (the refiner waits beyond)
        if settings.triton.decompose:
            from inference.decomposer import DecomposerClient
            t = settings.triton
            self.decomposer = DecomposerClient(t.url, model=t.decompose_model, timeout_s=t.decompose_timeout_s,
                                               retry_after_s=t.retry_after_s, max_batch=t.decompose_max_batch,
                                               batch_wait_s=t.decompose_batch_ms / 1000)
        self._handlers: dict[str, Callable[[dict, object], Awaitable[None]]] = {
            T.GOALS_BY_PLAN.name: self.on_goal,
            T.EXECUTION_FEEDBACK.name: self.on_feedback,
            T.PLANS_APPROVALS.name: self.on_approval,
            T.PLANS_REFINED.name: self.on_refined,
            T.PLANS_EXPIRE.name: self.on_expire,
            T.CONTROL_COMMANDS.name: self.on_control,
            T.ALLOCATION_DECISIONS.name: self.on_allocation,
            T.PLANS_TICK.name: self.on_tick,
        }
        app.agent(self.out.topic(T.GOALS_CREATED.name), name="intake")(self.intake)
        app.agent(self.out.sources([s.name for s in PLAN_KEYED]), name="planner")(self.planner)
        app.agent(self.out.topic(T.PLANS_REFINE.name), name="refiner")(self.refiner)
        app.agent(self.out.topic(T.RESOURCES_AVAILABILITY.name), name="resources")(self.resource_updates)
        app.agent(self.out.topic(T.ALLOCATION_REQUESTS.name), name="ledger")(self.ledger)
        app.agent(self.out.topic(T.CONTROL_GLOBAL.name), name="halt")(self.halt)
        app.timer(interval=TICK_INTERVAL_S, on_leader=False)(self.tick)
        app.timer(interval=BATCH_IDLE_S, on_leader=False)(self.flush_idle)   # both agents' batches
        app.task(self.on_started)
        app.task(self.follow_resources)
        app.task(self.follow_halt)
        watchdog.install(app, SOURCES, interval_s=settings.worker.watchdog_interval_s,
                         stall_s=settings.worker.watchdog_stall_s)

    async def on_started(self) -> None:
        """Everything imported and built is long-lived: keep it out of the collector's way.
        A goal allocates thousands of short-lived objects (its plan, records, dicts for Avro):
        with the default young collection every 700 allocations, rescanning what a batch holds,
        the collector took ~7% of the worker's CPU; young collections now run every GC_GEN0
        allocations (never lowered below what the process set; cycles are still collected)."""
        gc.collect()
        gc.freeze()
        t0, t1, t2 = gc.get_threshold()
        if t0 and t0 < GC_GEN0:
            gc.set_threshold(GC_GEN0, t1, t2)
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, _dump_tasks)

    # -- agents -----------------------------------------------------------------------

    async def intake(self, stream) -> None:
        """Limits and validation at the door; valid goals are re-keyed by plan id, bytes
        unchanged, through librdkafka without waiting: each goal's offset is acknowledged
        (may be committed) only once the broker has its re-keyed copy."""
        manual = stream.noack()
        async for event in manual.events():
            GOALS_RECEIVED.inc()
            try:
                goal = admit_goal(event.value, self.limits)
            except (SerdeError, PlanningError) as exc:
                await self.out.dead_letter(event, exc.reason, exc.detail)   # Faust flushes it before a commit
                await manual.ack(event)
                continue
            msg = event.message
            headers = source_headers(msg.topic, msg.partition, msg.offset, msg.key)
            headers.update(tracing.kafka_headers("planner.intake", tracing.parent_of(msg.headers)))
            sent = self.out.producer.send(T.GOALS_BY_PLAN.name, derive_plan_id(goal.goal_id).encode(), event.value,
                                          headers)
            sent.add_done_callback(functools.partial(self._forwarded, manual, event))

    @staticmethod
    def _forwarded(stream, event, sent: asyncio.Future) -> None:
        """A goal's copy reached the broker: its offset may be committed. One that did not
        stays unacknowledged, so nothing after it is committed and the watchdog restarts the
        worker, which reads the goal again (never lost)."""
        if sent.cancelled() or sent.exception() is not None:
            FORWARD_FAILURES.inc()
            INTEGRATION_ERRORS.labels("kafka").inc()
            log.error("could not forward goal %s[%s]@%s: %s", event.message.topic, event.message.partition,
                      event.message.offset, "cancelled" if sent.cancelled() else sent.exception())
            return
        asyncio.ensure_future(stream.ack(event))

    async def planner(self, stream) -> None:
        """One plan's state lives in one partition: goals, feedback, approvals and refinements
        for it arrive here, each handled by the lifecycle handler of its topic. Records are
        handled one by one and stored in batches (streams/staging.py): the batch is flushed
        when no record is waiting in the agent's buffer or after BATCH_MAX records."""
        await self.plan_writes.run(stream, self._handle)

    async def flush_idle(self) -> None:
        await self.plan_writes.flush_idle()
        await self.ledger_writes.flush_idle()

    def _plan_stored(self, pid: str, data: bytes | None, state) -> None:
        if data is None:
            self.watch.set(pid, None, 0)
        else:
            self.watch.set(pid, timers.watch_of(state, self.config), int(time.time() * 1000))

    async def _handle(self, event) -> None:
        """One record through its lifecycle handler, or to its dead-letter topic."""
        if not (self.resources_known.is_set() and self.halt_known.is_set()):
            # the first record waits (the agent itself is already iterating) until this
            # worker's views have caught up: else a restart would hand tasks out
            # unallocated, or during a stop of everything
            log.info("planner waits for the resource and stop views")
            await self.resources_known.wait()
            await self.halt_known.wait()
            log.info("planner's views are ready")
        msg = event.message
        tracing.CURRENT.set(tracing.parent_of(msg.headers))
        try:
            limits.record_size(len(event.value or b""), self.limits)
            record = serde(msg.topic).decode(event.value)
            self._check_key(msg, derive_plan_id(record["goal_id"]) if msg.topic == T.GOALS_BY_PLAN.name
                            else record["plan_id"] or T.ALL_PLANS)
            await self._handlers[msg.topic](record, event)
        except (SerdeError, PlanningError) as exc:
            PLANNING_ERRORS.labels(exc.reason).inc()
            await self.out.dead_letter(event, exc.reason, exc.detail)
        except Exception as exc:  # a bug must not stop the partition: keep the record, say why
            PLANNING_ERRORS.labels("internal_error").inc()
            log.exception("planner failed on %s[%s]@%s", msg.topic, msg.partition, msg.offset)
            await self.out.dead_letter(event, "internal_error", f"{type(exc).__name__}: {exc}")

    async def refiner(self, stream) -> None:
        """Anytime CP-SAT refinement; its results go back to the planner, which owns the plan state."""
        loop = asyncio.get_running_loop()
        async for event in stream.events():
            tracing.CURRENT.set(tracing.parent_of(event.message.headers))
            try:
                request = serde(T.PLANS_REFINE.name).decode(event.value)
                goal = codec.goal_from_record(request["goal"])
                if request.get("estimates"):
                    goal = dataclasses.replace(goal, estimates=codec.estimates_from_records(request["estimates"]))
                limits.check_goal(goal, self.limits)
                limits.capacities(request["known_capacities"], "known_capacities", self.limits)
            except (SerdeError, PlanningError) as exc:
                await self.out.dead_letter(event, exc.reason, exc.detail)
                continue
            if request.get("kind") == llm_plan.REFINE_KIND:
                if self.decomposer is None:
                    continue            # a request from a worker with decompose on: this one leaves it
                await self._decomposing.acquire()   # bounded; each request runs on its own
                asyncio.ensure_future(self._decompose(request, goal)).add_done_callback(
                    lambda _: self._decomposing.release())
                continue
            try:
                better = await loop.run_in_executor(self._refiner, lifecycle.refine, goal,
                                                    request["known_capacities"], self.config)
                if better is not None:
                    await self.out.send(self.out.encode([codec.refined_record(better, request["base_version"])]))
            except Exception as exc:  # refinement is optional: the published plan stands
                log.exception("refinement failed for %s", event.key)
                REFINE_FAILURES.labels(type(exc).__name__).inc()

    async def _decompose(self, request: dict, goal: Goal) -> None:
        """Ask the decomposer (batched with concurrent asks, bounded by its timeout, None at
        once while the server is dead), plan its answer off the event loop and send the plan
        to the planner, which judges it (lifecycle.on_decomposed). An answer that does not
        validate is counted by reason and never sent: the template plan stands."""
        from inference import decomposer as D
        try:
            got = await self.decomposer.ask(goal)
            if got is None:
                D.count("fallback", self.decomposer.last_reason)
                return
            text, version = got
            model = f"{self.decomposer.model}/{version}"
            try:
                plan, _ = await asyncio.get_running_loop().run_in_executor(
                    self._refiner, llm_plan.candidate, text, goal, request["known_capacities"], self.config, model,
                    request["base_version"])
            except llm_plan.Rejected as exc:
                D.count("rejected", exc.reason)
                log.info("LLM breakdown for %s rejected (%s): %s", request["plan_id"], exc.reason, exc.detail)
                return
            await self.out.send(self.out.encode([codec.refined_record(plan, request["base_version"],
                                                                      llm_plan.REFINE_KIND, text)]))
            D.count("proposed", model)
        except Exception as exc:  # the LLM is optional: the published plan stands
            log.exception("decomposition failed for %s", request.get("plan_id"))
            REFINE_FAILURES.labels(type(exc).__name__).inc()

    async def resource_updates(self, stream) -> None:
        """Dead letters for invalid resource records (one worker of the group reads each
        partition; every worker's view is kept by follow_resources)."""
        async for event in stream.events():
            if event.value is None:
                continue
            try:
                self._valid_resource(event.message.key, event.value)
            except (SerdeError, PlanningError) as exc:
                await self.out.dead_letter(event, exc.reason, exc.detail)

    def _valid_resource(self, key: bytes | None, value: bytes) -> dict:
        limits.record_size(len(value), self.limits)
        record = serde(T.RESOURCES_AVAILABILITY.name).decode(value)
        check_resource(key, record, self.limits)
        return record

    def see_resource(self, key: bytes | None, value: bytes | None) -> None:
        """One resources.availability record into this worker's view: a valid record
        replaces the resource, a tombstone deletes it, an invalid one is skipped."""
        if value is None:
            if key is not None:
                self.resources.pop(key.decode(errors="replace"), None)
                self._live = None
            return
        try:
            record = self._valid_resource(key, value)
        except (SerdeError, PlanningError):
            return   # the resources agent dead-letters it
        self.resources[record["resource_id"]] = record
        self._live = None

    async def follow_resources(self) -> None:
        """Every worker's own view of every resource (streams/tail.py): allocation and loss
        detection need each resource's latest heartbeat within a second on every worker."""
        await tail.follow(self.settings.bootstrap, T.RESOURCES_AVAILABILITY.name, self.see_resource,
                          self.resources_known)

    async def follow_halt(self) -> None:
        """Every worker's own view of the stop-everything flag (streams/tail.py)."""
        await tail.follow(self.settings.bootstrap, T.CONTROL_GLOBAL.name, self.see_halt, self.halt_known)

    async def ledger(self, stream) -> None:
        """The owner of each resource's capacity: requests and releases keyed by resource id
        reach the one partition whose ledger decides (never two deciders for one resource).
        Stored in batches like the plans (streams/staging.py)."""
        await self.ledger_writes.run(stream, self._ledger_record)

    async def _ledger_record(self, event) -> None:
        if not self.resources_known.is_set():   # decide with every resource known (agent already iterating)
            await self.resources_known.wait()
        msg = event.message
        tracing.CURRENT.set(tracing.parent_of(msg.headers))
        try:
            limits.record_size(len(event.value or b""), self.limits)
            record = serde(T.ALLOCATION_REQUESTS.name).decode(event.value)
            rid = record["resource_id"]
            if (msg.key or b"") != rid.encode():
                raise PlanningError("wrong_key", f"key {(msg.key or b'')[:100]!r} is not the resource_id {rid!r}")
            started = time.perf_counter()
            self._decide(rid, record)
            ALLOCATION_SECONDS.observe(time.perf_counter() - started)
        except (SerdeError, PlanningError) as exc:
            await self.out.dead_letter(event, exc.reason, exc.detail)
        except Exception as exc:
            log.exception("ledger failed on %s[%s]@%s", msg.topic, msg.partition, msg.offset)
            await self.out.dead_letter(event, "internal_error", f"{type(exc).__name__}: {exc}")

    def _decide(self, rid: str, record: dict) -> None:
        """Decide, send the decisions and stage the ledger (stored with its batch)."""
        resource = self.resource(rid)
        announced = resource or allocation.Resource(rid, "", healthy=False)
        staged = self.ledger_writes.staged(rid)
        if staged is not None:
            held = staged[1]
            held = dataclasses.replace(held, ledger=held.ledger.with_resource(announced))
        else:
            stored = self.ledgers.get(rid)
            held = None if stored is None else state_codec.decode_ledger(stored, announced)
        now = int(time.time() * 1000)
        if record["kind"] == "REQUEST":
            new, decisions = allocation.on_request(held, resource, codec.request_from_record(record), now, self.config)
        elif record["kind"] == "RELEASE":
            key = (record["plan_id"], record["task_id"], record["attempt"])
            new, decisions = allocation.on_release(held, resource, key, record["outcome"], now, self.config)
        else:
            raise PlanningError("unknown_kind", f"allocation message kind {record['kind']!r}")
        ledger = new.ledger if new is not None else None
        encoded = self.out.encode(codec.decision_records(decisions, ledger, resource, now))
        self.ledger_writes.batch.outputs(self.out.send_nowait(encoded))
        if new is not None and new is not held:   # encoded when its batch is stored: once per batch
            self.ledger_writes.batch.stage(rid, functools.partial(state_codec.encode_ledger, new), new)

    async def halt(self, stream) -> None:
        """Dead letters for STOP / RESUME records of every plan that cannot apply (one worker
        of the group reads the topic; every worker's flag is kept by follow_halt)."""
        async for event in stream.events():
            try:
                self._global_command(event.value)
            except (SerdeError, PlanningError) as exc:
                await self.out.dead_letter(event, exc.reason, exc.detail)

    @staticmethod
    def _global_command(value: bytes | None) -> dict:
        record = serde(T.CONTROL_GLOBAL.name).decode(value)
        if record["command"] not in ("STOP", "RESUME") or record.get("plan_id") is not None:
            raise PlanningError("unknown_command", f"{record['command']} cannot apply to every plan")
        return record

    def see_halt(self, key: bytes | None, value: bytes | None) -> None:
        """A STOP / RESUME of every plan: the flag every worker reads before it dispatches."""
        try:
            record = self._global_command(value)
        except (SerdeError, PlanningError):
            return   # the halt agent dead-letters it
        self._halted = record["command"] == "STOP"
        log.warning("control: %s of every plan by %s", record["command"], record.get("issued_by") or "unknown")

    def halted(self) -> bool:
        return self._halted

    def resource(self, rid: str) -> allocation.Resource | None:
        rec = self.resources.get(rid)
        return None if not rec else codec.resource_from_record(rec)

    def live(self) -> lifecycle.Live:
        """Now, every announced resource, the stop-everything flag, the capacities for replans."""
        now = time.monotonic()
        if self._live is None or self._live[0] < now:   # decoding every resource per record cost more than planning
            resources = tuple(codec.resource_from_record(r) for r in self.resources.values() if r)
            self._live = (now + LIVE_CACHE_S, resources, self.known_capacities())
        _, resources, capacities = self._live
        return lifecycle.Live(int(time.time() * 1000), resources, self.halted(), capacities)

    # -- handlers: decode, run the lifecycle, publish -------------------------------------

    def _check_key(self, msg, plan_id: str) -> None:
        """A plan's records must reach the partition that holds its state."""
        key = msg.key or b""
        if key != plan_id.encode():
            raise PlanningError("wrong_key", f"key {key[:100]!r} is not the record's plan_id {plan_id!r}")
        want = partition_for(key, T.PLAN_PARTITIONS)
        if msg.partition != want:
            raise PlanningError("wrong_partition", f"{plan_id} belongs on partition {want}, "
                                                   f"arrived on {msg.partition}")

    def _state(self, plan_id: str) -> lifecycle.PlanState | None:
        """The plan's state (None when there is none: nothing to decode), staged by this batch
        or else stored; its bytes are kept in self._stored for `_apply`, which then need not
        read them a second time."""
        staged = self._staged(plan_id)
        if staged is not None:
            self._stored, state = staged
            return state
        self._stored = data = self.plans.get(plan_id)
        return None if data is None else state_codec.decode(data)

    def _staged(self, plan_id: str) -> tuple | None:
        """(bytes, state) of the plan's latest staged state, not stored yet; None: see the table."""
        return self.plan_writes.staged(plan_id)

    def _known(self, plan_id: str) -> bool:
        """Whether the plan has a state (staged or stored)."""
        staged = self._staged(plan_id)
        return self.plans.get(plan_id) is not None if staged is None else staged[0] is not None

    async def _apply(self, plan_id: str, result: lifecycle.Result) -> None:
        """Encode the records and the state (all or nothing), then send the records and stage
        the state (stored when the batch is flushed: see planner). Called right after
        `_state(plan_id)` (no await in between), whose bytes are self._stored."""
        new, events = result
        stored, self._stored = self._stored, None
        if new is None and not events:  # the plan's state is dropped
            self.plan_writes.batch.stage(plan_id, None, None)
            STATES_EXPIRED.inc()
            return
        for e in events:
            if isinstance(e, lifecycle.Ignored):
                ignored(e.reason, e.detail)
        encoded = self.out.encode(codec.records(events))
        data = None
        if new is not None:
            if (events and isinstance(events[0], lifecycle.PlanCreated) and events[0].plan is new.plan
                    and encoded[0][0] == T.PLANS_CREATED.name):
                # the state stores these very bytes (compressed): encode the plan once, not twice
                state_codec.remember_encoded(new.plan, encoded[0][2])
            data = state_codec.encode(new, self.config)
            limits.state_size(len(data), plan_id, self.limits)
        self.plan_writes.batch.outputs(self.out.send_nowait(encoded))
        for topic, _, _ in encoded:
            if topic in _COUNTED:
                _COUNTED[topic].inc()
        if data is not None and data != stored:
            self.plan_writes.batch.stage(plan_id, data, new)

    async def on_goal(self, record: dict, event) -> None:
        goal = codec.goal_from_record(record)
        pid = derive_plan_id(goal.goal_id)
        # episodic memory (streams/memory.py): off the event loop, bounded by [memory] timeout_s
        reuse = await self.memory.reuse(goal, record) if self.memory and not self._known(pid) else None
        # learned estimates (inference/estimator.py): one bounded request; a dead server answers None at once
        est = None
        if self.estimator is not None and reuse is None and not self._known(pid):
            est = await self.estimator.for_goal(goal, self.config)
        started = time.perf_counter()
        live = self.live()
        result = lifecycle.on_goal(self._state(pid), goal, live.capacities, self.config,
                                   received_at_ms=int(event.message.timestamp * 1000), live=live, reuse=reuse,
                                   estimates=est.estimates if est else (),
                                   estimates_source=est.source if est else None,
                                   decompose=self._ask_decomposer(goal, pid))
        if self.estimator is not None and not self._known(pid):
            from inference.estimator import count_plan
            count_plan(est.source if est else None)
        PLANNING_SECONDS.observe(time.perf_counter() - started)
        await self._apply(pid, result)
        memory.count_plans(result[1])

    async def on_feedback(self, record: dict, event) -> None:
        fb = codec.feedback_from_record(record)
        limits.finite(fb.progress_pct, "progress_pct", high=100.0)
        limits.finite(fb.actual_hours, "actual_hours", high=self.limits.max_task_hours)
        await self._apply(fb.plan_id, lifecycle.on_feedback(self._state(fb.plan_id), fb, self.config, self.live()))

    async def on_approval(self, record: dict, event) -> None:
        decision = codec.approval_from_record(record)
        await self._apply(decision.plan_id, lifecycle.on_approval(self._state(decision.plan_id), decision,
                                                                  self.config, self.live()))

    def _ask_decomposer(self, goal: Goal, pid: str) -> bool:
        """Whether a new goal's plan asks the LLM too: decompose on, no explicit tasks, a new
        plan, and the decomposer not known dead (else counted as a fallback at once: the
        template plan is the plan, nothing waits)."""
        if self.decomposer is None or goal.tasks or self._known(pid):
            return False
        if self.decomposer.open or not self.decomposer.url:
            from inference.decomposer import count
            self.decomposer.fallback(reason := "breaker_open" if self.decomposer.url else "no_server")
            count("fallback", reason)
            return False
        return True

    async def on_refined(self, record: dict, event) -> None:
        plan = codec.plan_from_record(record["plan"])
        if record.get("kind") == llm_plan.REFINE_KIND:
            from inference.decomposer import count
            result = lifecycle.on_decomposed(self._state(record["plan_id"]), record["plan_id"],
                                             record["base_version"], plan, record.get("answer") or "", self.config,
                                             self.live())
            first = result[1][0] if result[1] else None
            if isinstance(first, lifecycle.Ignored):
                count("ignored", first.reason)
            else:
                count("accepted", plan.estimates_source)
            await self._apply(record["plan_id"], result)
            return
        await self._apply(record["plan_id"], lifecycle.on_refined(self._state(record["plan_id"]), record["plan_id"],
                                                                  record["base_version"], plan, self.config,
                                                                  self.live()))

    async def on_control(self, record: dict, event) -> None:
        """STOP / RESUME / CANCEL of one plan here; of every plan: forwarded to the halt agent."""
        if record.get("plan_id") is None:
            await self.out.send([(T.CONTROL_GLOBAL.name, T.ALL_PLANS.encode(), event.value)])
            return
        c = codec.control_from_record(record)
        await self._apply(c.plan_id, lifecycle.on_control(self._state(c.plan_id), c, self.config, self.live()))

    async def on_allocation(self, record: dict, event) -> None:
        d = codec.decision_from_record(record)
        await self._apply(d.plan_id, lifecycle.on_allocation(self._state(d.plan_id), d, self.config, self.live()))

    async def on_tick(self, record: dict, event) -> None:
        pid = record["plan_id"]
        await self._apply(pid, lifecycle.on_tick(self._state(pid), pid, record["kind"], self.config, self.live(),
                                                 frozenset(record.get("resources") or ())))

    def known_capacities(self) -> dict[str, float]:
        """Sum of what available resources report (empty when none reported)."""
        total: dict[str, float] = {}
        for rec in self.resources.values():
            if rec and rec.get("available", True):
                for kind, units in rec["capacities"].items():
                    total[kind] = total.get(kind, 0.0) + units
        return total

    async def on_expire(self, record: dict, event) -> None:
        pid = record["plan_id"]
        await self._apply(pid, lifecycle.on_expire(self._state(pid), pid, record["finished_at_ms"]))

    def _sweep(self, now_ms: int) -> list[tuple[str, int]] | None:
        """Read the next stored headers (streams/timers.py): far-off due times come into the
        watchlist as they come near, and finished plans whose state may go are returned.
        None while partitions move or tables recover (the table is not whole then); when the
        worker's partitions changed, the watchlist starts again from an empty list."""
        if self.app.rebalancing or getattr(self.app, "in_recovery", False):
            return None
        actives = frozenset(tp.partition for tp in self.app.assignor.assigned_actives()
                            if tp.topic == T.GOALS_BY_PLAN.name)
        if actives != self._watching:
            self.watch.clear()
            self._sweeping, self._watching, self._next_round_ms = None, actives, 0
        if self._sweeping is None:
            if now_ms < self._next_round_ms:
                return []
            self._sweeping, self._next_round_ms = iter(self.plans.items()), now_ms + timers.ROUND_EVERY_MS
        ttl, stale, read = self.settings.worker.state_ttl_hours, [], 0
        for key, data in itertools.islice(self._sweeping, timers.SWEEP_PER_TICK):
            read += 1
            if not data:
                continue
            h = state_codec.header(data)
            self.watch.set(key, timers.watch_of_header(h), now_ms)
            if lifecycle.expiry_due(h.get("f"), now_ms, ttl):
                stale.append((key, h["f"]))
        if read < timers.SWEEP_PER_TICK:   # the round is over: the next tick starts another
            self._sweeping = None
        return stale

    async def tick(self) -> None:
        """Send a tick, on its own partition, to each plan with work due (retries, deadlines,
        placements, drift checks), each plan using a lost resource, and each plan held by a
        stop of everything that has been resumed; and ask the partitions of plans finished
        longer than state_ttl_hours ago to drop their state (a table is written only from its
        own partition's events). Costs what is due plus a slice of the sweep, not O(plans)."""
        now = int(time.time() * 1000)
        stale = self._sweep(now)
        if stale is None:
            return
        wl = self.watch
        timeout = allocation.heartbeat_timeout_ms(self.config)
        lost = [rid for rid in wl.resources()
                if (r := self.resource(rid)) is None or not allocation.usable(r, now, timeout)]
        kinds: dict[str, tuple[str, list[str]]] = {pid: ("RESOURCE_LOST", sorted(rids))
                                                   for pid, rids in wl.using(lost).items()}
        for pid in wl.due(now):
            kinds.setdefault(pid, ("DUE", []))
        if not self.halted():
            for pid in wl.held():
                kinds.setdefault(pid, ("RESUME", []))
        outs = []
        for key, (kind, rids) in kinds.items():
            if now - self._ticked.get(key, 0) < 1000:   # one tick per plan per second at most
                continue
            self._ticked[key] = now
            outs.append(codec.Out(T.PLANS_TICK.name, key, {"plan_id": key, "kind": kind, "at_ms": now,
                                                            "resources": rids}))
        if len(self._ticked) > 10_000:
            self._ticked = {k: v for k, v in self._ticked.items() if now - v < 1000}
        outs += [codec.Out(T.PLANS_EXPIRE.name, key, {"plan_id": key, "finished_at_ms": at}) for key, at in stale]
        if outs:
            await self.out.send(self.out.encode(outs))
        if stale:
            log.info("asked to expire the state of %d finished plans", len(stale))


def build(settings: Settings) -> faust.App:
    return PlannerWorker(settings).app


if os.environ.get("CHIMERA_FAULT_STALL_GOAL"):  # a named fault for the watchdog's test, never set otherwise
    _stall_goal = os.environ["CHIMERA_FAULT_STALL_GOAL"]
    _original_on_goal = PlannerWorker.on_goal

    async def _stalling_on_goal(self, record, event):
        if record["goal_id"] == _stall_goal:
            log.warning("FAULT INJECTION: stalling the planner agent on goal %s", _stall_goal)
            await asyncio.Event().wait()
        await _original_on_goal(self, record, event)

    PlannerWorker.on_goal = _stalling_on_goal


def _dump_tasks() -> None:
    """`kill -USR2 <pid>`: every asyncio task's await chain into the log, to see where a
    stuck worker waits (thread dumps do not show coroutines)."""
    for task in asyncio.all_tasks():
        chain, aw = [], task.get_coro()
        while aw is not None:
            frame = getattr(aw, "cr_frame", None) or getattr(aw, "ag_frame", None) or getattr(aw, "gi_frame", None)
            if frame is not None:
                chain.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
            nxt = getattr(aw, "cr_await", None) or getattr(aw, "ag_await", None) or getattr(aw, "gi_yieldfrom", None)
            if nxt is None and frame is None:
                chain.append(repr(aw)[:300])
            aw = nxt
        log.warning("task %s:\n  %s", task.get_name(), "\n  ".join(chain))
