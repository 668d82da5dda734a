-- Chimera's analytics tables (ClickHouse; chdb in process by default). Applied by
-- sinks/clickhouse.py at start, statement by statement (`;` ends one), idempotently.
--
-- Duplicates collapse twice over: every insert carries an `insert_deduplication_token`
-- derived from (table, topic, partition, first..last offset), so a re-delivered batch is
-- dropped at insert (non_replicated_deduplication_window keeps the last 10,000 tokens);
-- and every table is a ReplacingMergeTree whose ORDER BY is the row's identity (the
-- event_id for events, the natural key for entities), so what slips past the window
-- (a replay weeks later) collapses on merge. Read with FINAL (or argMax) for exact counts.
-- `version` columns are the Kafka record timestamp in ms: the latest record wins.

CREATE DATABASE IF NOT EXISTS chimera;

-- Every record of every topic, as JSON.
CREATE TABLE IF NOT EXISTS chimera.events (
    topic LowCardinality(String),
    partition UInt16,
    offset UInt64,
    event_id String,
    key String,
    ts DateTime64(3),
    payload String,
    trace_id String DEFAULT ''
) ENGINE = ReplacingMergeTree
ORDER BY (topic, event_id)
TTL toDateTime(ts) + INTERVAL 180 DAY
SETTINGS non_replicated_deduplication_window = 10000;

-- the W3C trace id of the record's traceparent header (tables made before it had none)
ALTER TABLE chimera.events ADD COLUMN IF NOT EXISTS trace_id String DEFAULT '';

CREATE TABLE IF NOT EXISTS chimera.goals (
    goal_id String,
    event_id String,
    title String,
    description String,
    domain LowCardinality(String),
    priority LowCardinality(String),
    objectives Array(String),
    deadline_ms Nullable(Int64),
    budget Nullable(Float64),
    max_parallelism Nullable(Int32),
    submitted_by String,
    created_at DateTime64(3),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY goal_id
TTL toDateTime(created_at) + INTERVAL 365 DAY
SETTINGS non_replicated_deduplication_window = 10000;

-- One row per plan version (plans.created and plans.updated).
CREATE TABLE IF NOT EXISTS chimera.plans (
    plan_id String,
    plan_version UInt32,
    event_id String,
    goal_id String,
    source LowCardinality(String),
    strategy LowCardinality(String),
    approval LowCardinality(String),
    schedule_method LowCardinality(String),
    makespan_hours Float64,
    lower_bound_hours Float64,
    previous_makespan_hours Nullable(Float64),
    cost_total Float64,
    currency LowCardinality(String),
    cost_by_resource Map(String, Float64),
    task_count UInt32,
    risk_count UInt32,
    progress_pct Float64,
    variance_hours Float64,
    created_at DateTime64(3),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (plan_id, plan_version)
TTL toDateTime(created_at) + INTERVAL 365 DAY
SETTINGS non_replicated_deduplication_window = 10000;

-- how the version left the plan (plans.updated's status: ACTIVE .. COMPLETED, FAILED, CANCELLED;
-- '' for plans.created) and its cost estimate (actual cost of what ran, planned cost of the rest):
-- the decomposer learns from plans that ended COMPLETED within budget (triton_models/decomposer_history.py)
ALTER TABLE chimera.plans ADD COLUMN IF NOT EXISTS status LowCardinality(String) DEFAULT '';
ALTER TABLE chimera.plans ADD COLUMN IF NOT EXISTS cost_estimate Float64 DEFAULT 0;

CREATE TABLE IF NOT EXISTS chimera.tasks (
    plan_id String,
    plan_version UInt32,
    task_id String,
    name String,
    phase LowCardinality(String),
    component String,
    depends_on Array(String),
    optimistic_hours Float64,
    most_likely_hours Float64,
    pessimistic_hours Float64,
    start_hours Float64,
    finish_hours Float64,
    slack_hours Float64,
    critical UInt8,
    capabilities Array(String),
    created_at DateTime64(3),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (plan_id, plan_version, task_id)
TTL toDateTime(created_at) + INTERVAL 365 DAY
SETTINGS non_replicated_deduplication_window = 10000;

-- What each task of a plan version takes from each resource, and when.
CREATE TABLE IF NOT EXISTS chimera.allocations (
    plan_id String,
    plan_version UInt32,
    task_id String,
    resource String,
    amount Float64,
    start_hours Float64,
    finish_hours Float64,
    created_at DateTime64(3),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (plan_id, plan_version, task_id, resource)
TTL toDateTime(created_at) + INTERVAL 365 DAY
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS chimera.risks (
    plan_id String,
    plan_version UInt32,
    risk_id String,
    event_id String,
    category LowCardinality(String),
    severity LowCardinality(String),
    title String,
    probability Float64,
    impact Float64,
    score Float64,
    raised_at DateTime64(3),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (plan_id, plan_version, risk_id)
TTL toDateTime(raised_at) + INTERVAL 365 DAY
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS chimera.assignments (
    event_id String,
    plan_id String,
    goal_id String,
    plan_version UInt32,
    task_id String,
    assigned_to Nullable(String),
    planned_hours Float64,
    assigned_at DateTime64(3)
) ENGINE = ReplacingMergeTree
ORDER BY (plan_id, task_id, event_id)
TTL toDateTime(assigned_at) + INTERVAL 365 DAY
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS chimera.feedback (
    event_id String,
    plan_id String,
    task_id String,
    status LowCardinality(String),
    progress_pct Float64,
    actual_hours Nullable(Float64),
    message String,
    reported_at DateTime64(3)
) ENGINE = ReplacingMergeTree
ORDER BY (plan_id, task_id, event_id)
TTL toDateTime(reported_at) + INTERVAL 365 DAY
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS chimera.resources (
    resource_id String,
    kind LowCardinality(String),
    capacities Map(String, Float64),
    capabilities Array(String),
    available UInt8,
    hourly_rate Float64,
    updated_at DateTime64(3),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY resource_id
SETTINGS non_replicated_deduplication_window = 10000;

-- Dead letters of every DLQ topic (the planner's <topic>.dlq and the sinks' chimera.sinks.dlq).
CREATE TABLE IF NOT EXISTS chimera.dead_letters (
    dlq_topic LowCardinality(String),
    source_topic LowCardinality(String),
    source_partition Int32,
    source_offset Int64,
    sink LowCardinality(String),
    reason LowCardinality(String),
    detail String,
    ts DateTime64(3)
) ENGINE = ReplacingMergeTree
ORDER BY (dlq_topic, source_topic, source_partition, source_offset, sink)
TTL toDateTime(ts) + INTERVAL 90 DAY
SETTINGS non_replicated_deduplication_window = 10000;
