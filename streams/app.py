"""The Faust app: topics wired to the planner handlers.

intake:    goals.created -> validate -> chimera.goals.by_plan (re-keyed by plan_id)
planner:   goals.by_plan + execution.feedback + plans.approvals + chimera.plans.refined
           -> plans.*, tasks.assigned, risks.alerts, chimera.plans.refine
refiner:   chimera.plans.refine -> CP-SAT (off the event loop) -> chimera.plans.refined
resources: resources.availability -> a global table of capacities every worker sees
Bad records go to <topic>.dlq with the reason and the source offset in headers.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

import faust
from prometheus_client import Counter, Histogram

from processors.dependencies import check_specs
from processors.ids import plan_id as derive_plan_id
from processors.model import PlanningError
from streams import codec, handlers, settings
from streams.dlq import dlq_headers, source_headers, source_of
from topics import registry as T
from topics.serde import SerdeError, serde

log = logging.getLogger("chimera.planner")
SETTINGS = settings.load()
CONFIG = SETTINGS.planning

GOALS_RECEIVED = Counter("layer2_goals_received_total", "Goals read from goals.created")
PLANS_CREATED = Counter("layer2_plans_created_total", "Plans published on plans.created")
PLANS_UPDATED = Counter("layer2_plans_updated_total", "Plan versions published on plans.updated")
DEAD_LETTERS = Counter("layer2_validation_errors_total", "Records sent to a dead-letter topic", ["topic", "reason"])
REFINE_FAILURES = Counter("layer2_refinement_errors_total", "Refinements that failed", ["error"])
PLANNING_SECONDS = Histogram("layer2_planning_duration_seconds", "Fast-path planning time per goal")

app = faust.App(
    SETTINGS.app_id,
    broker=f"kafka://{SETTINGS.bootstrap}",
    store="memory://",
    topic_partitions=T.PLAN_PARTITIONS,
    topic_allow_declare=True,
    topic_disable_leader=True,
    broker_session_timeout=6.0,
    broker_heartbeat_interval=1.0,
    consumer_auto_offset_reset="earliest",
    web_enabled=False,
    datadir=os.environ.get("CHIMERA_DATA_DIR") or str(settings.REPO / ".data" / "faust") + "/{conf.name}",
    key_serializer="json",      # tables; our topics say "raw" themselves
    value_serializer="json",
)


def _topic(spec: T.TopicSpec) -> faust.TopicT:
    return app.topic(spec.name, partitions=spec.partitions, key_type=bytes, value_type=bytes,
                     key_serializer="raw", value_serializer="raw")


goals_topic = _topic(T.GOALS_CREATED)
by_plan_topic = _topic(T.GOALS_BY_PLAN)
resources_topic = _topic(T.RESOURCES_AVAILABILITY)
refine_topic = _topic(T.PLANS_REFINE)
planner_inputs = app.topic(T.GOALS_BY_PLAN.name, T.EXECUTION_FEEDBACK.name, T.PLANS_APPROVALS.name,
                           T.PLANS_REFINED.name, key_type=bytes, value_type=bytes,
                           key_serializer="raw", value_serializer="raw")
out_topics = {s.name: _topic(s) for s in (T.PLANS_CREATED, T.PLANS_UPDATED, T.TASKS_ASSIGNED, T.RISKS_ALERTS,
                                          T.PLANS_REFINE, T.PLANS_REFINED)}

plans = app.Table("plans", default=None, partitions=T.PLAN_PARTITIONS)
resources = app.GlobalTable("resources", default=None, partitions=1)
_refiner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="refine")


async def dead_letter(event, topic: str, reason: str, detail: str) -> None:
    """Send the raw record to <topic>.dlq, keeping its key and saying why."""
    msg = event.message
    src_topic, partition, offset = source_of(msg.headers, msg.topic, msg.partition, msg.offset)
    DEAD_LETTERS.labels(topic, reason).inc()
    log.warning("dead letter %s[%s]@%s: %s: %s", src_topic, partition, offset, reason, detail)
    await app.topic(f"{topic}.dlq", key_serializer="raw", value_serializer="raw").send(
        key=msg.key, value=msg.value, headers=dlq_headers(reason, detail, src_topic, partition, offset))


async def publish(step: handlers.Step) -> None:
    for o in step.out:
        await out_topics[o.topic].send(key=o.key.encode(), value=serde(o.topic).encode(o.value))
        if o.topic == T.PLANS_CREATED.name:
            PLANS_CREATED.inc()
        elif o.topic == T.PLANS_UPDATED.name:
            PLANS_UPDATED.inc()


def known_capacities() -> dict[str, float]:
    """Sum of what available resources report (empty when none reported)."""
    total: dict[str, float] = {}
    for rec in resources.values():
        if rec and rec.get("available", True):
            for kind, units in rec["capacities"].items():
                total[kind] = total.get(kind, 0.0) + units
    return total


@app.agent(goals_topic)
async def intake(stream):
    """Validate goals and re-key them by plan id; the raw bytes travel on unchanged."""
    async for event in stream.events():
        GOALS_RECEIVED.inc()
        try:
            record = serde(T.GOALS_CREATED.name).decode(event.value)
            goal = codec.goal_from_record(record)
            if goal.tasks:
                check_specs(goal.tasks)
        except (SerdeError, PlanningError) as exc:
            await dead_letter(event, T.GOALS_CREATED.name, exc.reason, exc.detail)
            continue
        msg = event.message
        await by_plan_topic.send(key=derive_plan_id(goal.goal_id).encode(), value=event.value,
                                 headers=source_headers(msg.topic, msg.partition, msg.offset))


@app.agent(planner_inputs)
async def planner(stream):
    """One plan's state lives in one partition: goals, feedback and approvals for it arrive here."""
    async for event in stream.events():
        topic = event.message.topic
        source = T.GOALS_CREATED.name if topic == T.GOALS_BY_PLAN.name else topic
        try:
            record = serde(topic).decode(event.value)
            if topic == T.GOALS_BY_PLAN.name:
                await on_goal(record)
            elif topic == T.PLANS_APPROVALS.name:
                await apply(record["plan_id"], handlers.on_approval(record, plans.get(record["plan_id"]), CONFIG))
            elif topic == T.PLANS_REFINED.name:
                await apply(record["plan_id"], handlers.on_refined(record, plans.get(record["plan_id"]), CONFIG))
            else:
                await apply(record["plan_id"], handlers.on_feedback(record, plans.get(record["plan_id"]), CONFIG))
        except (SerdeError, PlanningError) as exc:
            await dead_letter(event, source, exc.reason, exc.detail)
        except Exception as exc:  # a bug must not stop the partition: keep the record, say why
            log.exception("planner failed on %s[%s]@%s", topic, event.message.partition, event.message.offset)
            await dead_letter(event, source, "internal_error", f"{type(exc).__name__}: {exc}")


async def apply(plan_id: str, step: handlers.Step) -> None:
    if step.ignored:
        log.info("%s: %s", plan_id, step.ignored)
    await publish(step)
    if step.state is not None:
        plans[plan_id] = step.state


async def on_goal(record: dict) -> None:
    goal = codec.goal_from_record(record)
    pid = derive_plan_id(goal.goal_id)
    started = time.perf_counter()
    step = handlers.on_goal(goal, record, plans.get(pid), known_capacities(), CONFIG)
    PLANNING_SECONDS.observe(time.perf_counter() - started)
    await apply(pid, step)


@app.agent(refine_topic)
async def refiner(stream):
    """Anytime CP-SAT refinement; its results go back to the planner, which owns the plan state."""
    loop = asyncio.get_running_loop()
    async for event in stream.events():
        try:
            request = serde(T.PLANS_REFINE.name).decode(event.value)
            result = await loop.run_in_executor(_refiner, handlers.refine, request, CONFIG)
        except Exception as exc:  # refinement is optional: the published plan stands
            log.exception("refinement failed for %s", event.key)
            REFINE_FAILURES.labels(type(exc).__name__).inc()
            continue
        if result is not None:
            await publish(handlers.Step(None, [result]))


@app.agent(resources_topic)
async def resource_updates(stream):
    async for event in stream.events():
        try:
            record = serde(T.RESOURCES_AVAILABILITY.name).decode(event.value)
        except SerdeError as exc:
            await dead_letter(event, T.RESOURCES_AVAILABILITY.name, exc.reason, exc.detail)
            continue
        resources[record["resource_id"]] = record
