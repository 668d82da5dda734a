"""Named, parameterised analytics queries over the ClickHouse tables (infra/clickhouse/schema.sql).

Parameters use ClickHouse's server-side binding (`{name:Type}`), so values never go into
the SQL text. Each query reads with FINAL (duplicates collapsed) and, where plans have
versions, only each plan's latest version. Run one with `run(reader, name, **params)`;
`reader` is anything with `query(sql, parameters) -> (columns, rows)` (see
sinks.clickhouse.reader()). Times are epoch milliseconds.
"""
from __future__ import annotations

from dataclasses import dataclass

FAR_FUTURE_MS = 32503680000000  # year 3000


@dataclass(frozen=True)
class Query:
    name: str
    sql: str
    defaults: dict
    doc: str


_LATEST_PLANS = """
    SELECT plan_id, max(plan_version) AS latest_version, argMax(goal_id, plan_version) AS latest_goal,
           argMax(makespan_hours, plan_version) AS latest_makespan, argMax(cost_total, plan_version) AS latest_cost,
           argMax(task_count, plan_version) AS latest_tasks
    FROM chimera.plans FINAL GROUP BY plan_id"""

_QUERIES = [
    Query("planning_throughput", """
        SELECT toStartOfInterval(created_at, toIntervalSecond({bucket_s:UInt32})) AS bucket, count() AS plans
        FROM chimera.plans FINAL
        WHERE source = 'created'
          AND created_at >= fromUnixTimestamp64Milli({since_ms:Int64})
          AND created_at < fromUnixTimestamp64Milli({until_ms:Int64})
        GROUP BY bucket ORDER BY bucket""",
          {"bucket_s": 60, "since_ms": 0, "until_ms": FAR_FUTURE_MS},
          "First plans per time bucket."),
    Query("planning_latency", """
        SELECT count() AS plans, quantileExact(0.5)(latency_ms) AS p50_ms, quantileExact(0.99)(latency_ms) AS p99_ms,
               max(latency_ms) AS max_ms
        FROM (
            SELECT toInt64(p.planned_at) - toInt64(g.submitted_at) AS latency_ms
            FROM (SELECT plan_id, any(goal_id) AS goal_id, min(version) AS planned_at
                  FROM chimera.plans WHERE source = 'created' GROUP BY plan_id) AS p
            INNER JOIN (SELECT goal_id, min(version) AS submitted_at FROM chimera.goals GROUP BY goal_id) AS g
                ON p.goal_id = g.goal_id
            WHERE g.submitted_at > 0 AND p.planned_at > 0
              AND p.planned_at >= {since_ms:Int64} AND p.planned_at < {until_ms:Int64})""",
          {"since_ms": 0, "until_ms": FAR_FUTURE_MS},
          "Goal to first plan, in ms: the Kafka timestamp of the goal's first goals.created record to "
          "that of its plan's first plans.created record (the `version` columns; a plan carries its goal's "
          "created_at, so the rows' own times cannot tell). A replayed goal or plan keeps its first time."),
    Query("goal_achievement_rate", f"""
        SELECT countIf(f.failed = 0 AND f.done >= p.latest_tasks) AS achieved, countIf(f.failed > 0) AS failed,
               achieved + failed AS finished, if(finished = 0, 0, achieved / finished) AS rate
        FROM ({_LATEST_PLANS}) AS p
        INNER JOIN (SELECT plan_id, uniqExactIf(task_id, status = 'COMPLETED') AS done,
                           countIf(status = 'FAILED') AS failed
                    FROM chimera.feedback FINAL GROUP BY plan_id) AS f ON p.plan_id = f.plan_id""",
          {}, "Plans whose every task completed, against plans with a failed task."),
    Query("schedule_budget_variance", f"""
        SELECT p.plan_id AS plan_id, p.latest_goal AS goal_id, p.latest_makespan AS makespan_hours,
               (g.deadline_ms - toUnixTimestamp64Milli(g.created_at)) / 3600000 AS deadline_hours,
               p.latest_makespan - deadline_hours AS schedule_variance_hours,
               p.latest_cost AS cost, g.budget AS budget, p.latest_cost - g.budget AS budget_variance
        FROM ({_LATEST_PLANS}) AS p
        LEFT JOIN (SELECT goal_id, deadline_ms, budget, created_at FROM chimera.goals FINAL) AS g
            ON p.latest_goal = g.goal_id
        ORDER BY plan_id LIMIT {{limit:UInt32}}""",
          {"limit": 1000}, "Latest plan version against the goal's deadline and budget (positive: over)."),
    Query("risk_trends", """
        SELECT toStartOfInterval(raised_at, toIntervalSecond({bucket_s:UInt32})) AS bucket, category,
               count() AS risks, round(avg(score), 4) AS avg_score, countIf(severity IN ('HIGH', 'CRITICAL')) AS severe
        FROM chimera.risks FINAL
        GROUP BY bucket, category ORDER BY bucket, category""",
          {"bucket_s": 86400}, "Risks per category and time bucket."),
    Query("resource_utilisation", f"""
        SELECT a.resource AS resource, uniqExact(a.plan_id) AS plans, count() AS tasks,
               sum(a.amount * (a.finish_hours - a.start_hours)) AS busy_unit_hours,
               any(c.capacity) AS capacity,
               if(capacity > 0, busy_unit_hours / (capacity * any(m.total_makespan)), NULL) AS utilisation,
               any(k.cost) AS cost
        FROM chimera.allocations AS a FINAL
        INNER JOIN ({_LATEST_PLANS}) AS lp ON a.plan_id = lp.plan_id AND a.plan_version = lp.latest_version
        CROSS JOIN (SELECT sum(latest_makespan) AS total_makespan FROM ({_LATEST_PLANS})) AS m
        LEFT JOIN (SELECT name, sum(cap) AS capacity
                   FROM (SELECT capacities AS caps FROM chimera.resources FINAL WHERE available)
                   ARRAY JOIN mapKeys(caps) AS name, mapValues(caps) AS cap GROUP BY name) AS c ON a.resource = c.name
        LEFT JOIN (SELECT name, sum(v) AS cost
                   FROM (SELECT plan_id, argMax(cost_by_resource, plan_version) AS cbr FROM chimera.plans FINAL
                         GROUP BY plan_id)
                   ARRAY JOIN mapKeys(cbr) AS name, mapValues(cbr) AS v GROUP BY name) AS k ON a.resource = k.name
        GROUP BY resource ORDER BY resource""",
          {}, "Per resource over the latest plan versions: busy unit-hours, utilisation of the declared "
              "capacity over the summed makespans, planned cost."),
    Query("executor_performance", """
        SELECT a.executor_id AS executor, count() AS tasks, countIf(f.final_status = 'COMPLETED') AS completed,
               countIf(f.final_status = 'FAILED') AS failed,
               if(completed + failed = 0, 0, completed / (completed + failed)) AS success_rate,
               avgIf(f.actual / nullIf(a.planned, 0), f.final_status = 'COMPLETED') AS actual_vs_planned
        FROM (SELECT plan_id, task_id, argMax(assigned_to, assigned_at) AS executor_id,
                     argMax(planned_hours, assigned_at) AS planned
              FROM chimera.assignments FINAL WHERE assigned_to IS NOT NULL GROUP BY plan_id, task_id) AS a
        INNER JOIN (SELECT plan_id, task_id, argMax(status, reported_at) AS final_status,
                           argMax(actual_hours, reported_at) AS actual
                    FROM chimera.feedback FINAL WHERE status IN ('COMPLETED', 'FAILED')
                    GROUP BY plan_id, task_id) AS f
            ON a.plan_id = f.plan_id AND a.task_id = f.task_id
        GROUP BY executor ORDER BY executor""",
          {}, "Per executor: finished tasks, success rate, actual/planned hours of completed tasks."),
    Query("dlq_reasons", """
        SELECT dlq_topic, source_topic, reason, count() AS records
        FROM chimera.dead_letters FINAL
        GROUP BY dlq_topic, source_topic, reason ORDER BY records DESC, dlq_topic, source_topic, reason""",
          {}, "Dead letters by topic and reason."),
]

QUERIES: dict[str, Query] = {q.name: q for q in _QUERIES}


def run(reader, name: str, **params) -> tuple[list[str], list[tuple]]:
    """(columns, rows) of the named query; unknown parameters are refused."""
    q = QUERIES[name]
    unknown = set(params) - set(q.defaults)
    if unknown:
        raise TypeError(f"query {name} takes {sorted(q.defaults)}, not {sorted(unknown)}")
    return reader.query(q.sql, {**q.defaults, **params})


def run_dicts(reader, name: str, **params) -> list[dict]:
    cols, rows = run(reader, name, **params)
    return [dict(zip(cols, r)) for r in rows]
