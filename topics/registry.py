"""Every Chimera topic in one place: name, key, partitions, configs, schema.

Plan-keyed topics share one partition count so that a plan's goal, feedback and
approvals land in the same partition of the same worker (co-partitioning).
"""
from __future__ import annotations

from dataclasses import dataclass, field

PLAN_PARTITIONS = 4
WEEK_MS = 7 * 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str                       # the field the record key holds
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    is_input: bool = False         # inputs get a <name>.dlq
    internal: bool = False         # written and read only by Chimera's workers
    executed: bool = False         # read by the executors: what they cannot read gets a <name>.dlq
    schema: str = ""               # schema file stem; defaults to the topic name

    @property
    def schema_name(self) -> str:
        return self.schema or self.name

    @property
    def has_dlq(self) -> bool:
        """Every topic a worker or an executor consumes (inputs, internal topics, assignments)
        can dead-letter."""
        return self.is_input or self.internal or self.executed

    @property
    def dlq(self) -> str:
        return f"{self.name}.dlq"


_RETAIN = {"cleanup.policy": "delete", "retention.ms": str(4 * WEEK_MS)}
_COMPACT = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1"}

GOALS_CREATED = TopicSpec("goals.created", "goal_id", PLAN_PARTITIONS, _RETAIN, is_input=True)
RESOURCES_AVAILABILITY = TopicSpec("resources.availability", "resource_id", 1, _COMPACT, is_input=True)
EXECUTION_FEEDBACK = TopicSpec("execution.feedback", "plan_id", PLAN_PARTITIONS, _RETAIN, is_input=True)
PLANS_APPROVALS = TopicSpec("plans.approvals", "plan_id", PLAN_PARTITIONS, _RETAIN, is_input=True)
PLANS_CREATED = TopicSpec("plans.created", "plan_id", PLAN_PARTITIONS, _RETAIN)
PLANS_UPDATED = TopicSpec("plans.updated", "plan_id", PLAN_PARTITIONS, _RETAIN)
TASKS_ASSIGNED = TopicSpec("tasks.assigned", "plan_id", PLAN_PARTITIONS, _RETAIN, executed=True)
RISKS_ALERTS = TopicSpec("risks.alerts", "plan_id", PLAN_PARTITIONS, _RETAIN)
# Goals re-keyed by plan_id so the planner's state is co-partitioned with feedback.
GOALS_BY_PLAN = TopicSpec(
    "chimera.goals.by_plan", "plan_id", PLAN_PARTITIONS, _RETAIN, internal=True, schema="goals.created"
)
# Anytime refinement runs beside the planner, so a slow CP-SAT call never holds up new goals.
PLANS_REFINE = TopicSpec("chimera.plans.refine", "plan_id", PLAN_PARTITIONS, _RETAIN, internal=True)
PLANS_REFINED = TopicSpec("chimera.plans.refined", "plan_id", PLAN_PARTITIONS, _RETAIN, internal=True)
# Finished plans' state expires through the partition that owns it (a table is written
# only from its own partition's events).
PLANS_EXPIRE = TopicSpec("chimera.plans.expire", "plan_id", PLAN_PARTITIONS, _RETAIN, internal=True)
# Live plans (issue 7). Emergency stop / resume / cancel: keyed by plan id, or ALL_PLANS for every plan.
CONTROL_COMMANDS = TopicSpec("control.commands", "plan_id", PLAN_PARTITIONS, _RETAIN, is_input=True)
# Allocation is decided where the capacity is owned: requests (and releases) keyed by resource id
# reach the one partition whose ledger owns that resource; its decisions are published keyed by
# resource id (every booking and release of a resource, in order, in one partition) and routed
# back, keyed by plan id, to the partition that owns the plan.
ALLOCATION_REQUESTS = TopicSpec("chimera.allocations.requests", "resource_id", PLAN_PARTITIONS, _RETAIN,
                                internal=True)
RESOURCES_ALLOCATIONS = TopicSpec("resources.allocations", "resource_id", PLAN_PARTITIONS, _RETAIN)
ALLOCATION_DECISIONS = TopicSpec("chimera.allocations.decisions", "plan_id", PLAN_PARTITIONS, _RETAIN,
                                 internal=True, schema="resources.allocations")
# Work a worker's timers found due (retries, timeouts, lost resources, a resume of all plans),
# sent to the partition that owns the plan (a table is written only from its own partition's events).
PLANS_TICK = TopicSpec("chimera.plans.tick", "plan_id", PLAN_PARTITIONS, _RETAIN, internal=True)
# STOP / RESUME of every plan, forwarded from control.commands to one partition whose agent
# sets the flag in a global table that every worker reads.
CONTROL_GLOBAL = TopicSpec("chimera.control.global", "plan_id", 1, _RETAIN, internal=True, schema="control.commands")
# Every write through the REST API (issue 11): who, what, when. Keyed by tenant; written only by the API.
API_AUDIT = TopicSpec("api.audit", "tenant", 1, _RETAIN)
ALL_PLANS = "*"   # control.commands key (and null plan_id) that means every plan

TOPICS: tuple[TopicSpec, ...] = (
    GOALS_CREATED, RESOURCES_AVAILABILITY, EXECUTION_FEEDBACK, PLANS_APPROVALS,
    PLANS_CREATED, PLANS_UPDATED, TASKS_ASSIGNED, RISKS_ALERTS, GOALS_BY_PLAN, PLANS_REFINE, PLANS_REFINED,
    PLANS_EXPIRE, CONTROL_COMMANDS, ALLOCATION_REQUESTS, RESOURCES_ALLOCATIONS, ALLOCATION_DECISIONS, PLANS_TICK,
    CONTROL_GLOBAL, API_AUDIT,
)
BY_NAME = {t.name: t for t in TOPICS}
DLQ_CONFIG = {"cleanup.policy": "delete", "retention.ms": str(4 * WEEK_MS)}
# Records the sinks (ClickHouse, Neo4j, Chroma) cannot store: raw value, reason and source in
# headers (topics/dlq.py), plus `chimera.dlq.sink`. Not in TOPICS: it has no schema.
SINKS_DLQ = TopicSpec("chimera.sinks.dlq", "event_id", 1, DLQ_CONFIG, internal=True)


def all_topic_names() -> list[str]:
    """Every topic Chimera needs, dead-letter topics included."""
    names = [t.name for t in TOPICS]
    names += [t.dlq for t in TOPICS if t.has_dlq]
    return names + [SINKS_DLQ.name]


def spec(name: str) -> TopicSpec:
    """The spec of a topic or of a dead-letter topic (one partition, no schema)."""
    if name in BY_NAME:
        return BY_NAME[name]
    if name == SINKS_DLQ.name:
        return SINKS_DLQ
    if name.endswith(".dlq") and name[:-4] in BY_NAME and BY_NAME[name[:-4]].has_dlq:
        return TopicSpec(name, BY_NAME[name[:-4]].key, 1, DLQ_CONFIG)
    raise KeyError(f"unknown topic {name!r}; known: {', '.join(all_topic_names())}")
