"""Neo4j sink: the dependency and causality graph, over Bolt with the official driver.

Graph model (ids are unique, by constraint):
  (:Goal {id})-[:HAS_PLAN]->(:Plan {id: "<plan_id>:v<version>"})-[:REPLANNED_AS]->(:Plan next version)
  (:Plan)-[:HAS_TASK {start, finish}]->(:Task {id: "<plan_id>/<task_id>"})   (schedule per version)
  (:Task)-[:DEPENDS_ON]->(:Task)     (:Task)-[:ALLOCATED_TO {amount}]->(:Resource {id})
  (:Task)-[:EXECUTED_BY]->(:Executor {id})   (:Risk {id: "<plan_id>/<risk_id>"})-[:THREATENS]->(:Task|:Plan)
  (:Task)-[:FAILED_BECAUSE]->(:Feedback {id: event_id})  (a FAILED report; every report sets Task.status)

Every write is an UNWIND-batched MERGE on those ids, one transaction per batch, so a batch
delivered twice changes nothing. Task.status follows the latest report (by reported_at), so
late or repeated reports cannot move it back. Locally `infra.neo4j` runs a real Neo4j
Community; `NEO4J_URI` (+ NEO4J_USER / NEO4J_PASSWORD) points at another server.
"""
from __future__ import annotations

from collections import defaultdict

import neo4j

from sinks.base import PoisonRecord, Sink, SinkBatch, SinkRecord
from streams.settings import load_stores
from topics import registry as T

LOCAL_URI = "bolt://127.0.0.1:7687"   # Neo4j's own default, when [stores] names no server


def _target(uri: str | None, auth) -> tuple[str, tuple[str, str] | None]:
    """(uri, auth): the ones given, else [stores] neo4j_uri / neo4j_user+password, else LOCAL_URI."""
    stores = load_stores()
    return uri or stores.neo4j_uri or LOCAL_URI, auth if auth is not None else stores.neo4j_auth

LABELS = ("Goal", "Plan", "Task", "Resource", "Executor", "Risk", "Feedback")
MAX_ID_BYTES = 4000  # a range index key must stay under ~8 KB

CYPHER = {
    "goal": """UNWIND $rows AS r MERGE (g:Goal {id: r.id}) SET g += r.props""",
    "plan": """UNWIND $rows AS r
        MERGE (p:Plan {id: r.id}) SET p += r.props
        MERGE (g:Goal {id: r.goal_id}) MERGE (g)-[:HAS_PLAN]->(p)""",
    # a second statement (only for versions with a predecessor): two MERGEs on :Plan in one
    # query made the planner put an Eager barrier over every row
    "replan": """UNWIND $rows AS r
        MATCH (p:Plan {id: r.id}) MERGE (prev:Plan {id: r.prev_id}) MERGE (prev)-[:REPLANNED_AS]->(p)""",
    "task": """UNWIND $rows AS r
        MERGE (t:Task {id: r.id}) SET t += r.props
        MERGE (p:Plan {id: r.plan}) MERGE (p)-[h:HAS_TASK]->(t) SET h.start = r.start, h.finish = r.finish""",
    "depends": """UNWIND $rows AS r
        MERGE (a:Task {id: r.from}) MERGE (b:Task {id: r.to}) MERGE (a)-[:DEPENDS_ON]->(b)""",
    "alloc": """UNWIND $rows AS r
        MERGE (t:Task {id: r.task}) MERGE (x:Resource {id: r.resource})
        MERGE (t)-[a:ALLOCATED_TO]->(x) SET a.amount = r.amount""",
    "risk": """UNWIND $rows AS r
        MERGE (k:Risk {id: r.id}) SET k += r.props
        WITH k, r CALL (k, r) {
            UNWIND r.tasks AS tid MERGE (t:Task {id: tid}) MERGE (k)-[:THREATENS]->(t)
        }
        WITH k, r WHERE size(r.tasks) = 0
        MERGE (p:Plan {id: r.plan}) MERGE (k)-[:THREATENS]->(p)""",
    "assign": """UNWIND $rows AS r
        MERGE (t:Task {id: r.task}) MERGE (e:Executor {id: r.executor}) MERGE (t)-[:EXECUTED_BY]->(e)""",
    "feedback": """UNWIND $rows AS r
        MERGE (t:Task {id: r.task})
        SET t.status = CASE WHEN coalesce(t.status_at, -1) <= r.at THEN r.status ELSE t.status END,
            t.actual_hours = CASE WHEN coalesce(t.status_at, -1) <= r.at THEN r.actual_hours ELSE t.actual_hours END,
            t.status_at = CASE WHEN coalesce(t.status_at, -1) <= r.at THEN r.at ELSE t.status_at END
        WITH t, r WHERE r.status = 'FAILED'
        MERGE (f:Feedback {id: r.id}) SET f.message = r.message, f.at = r.at, f.status = r.status
        MERGE (t)-[:FAILED_BECAUSE]->(f)""",
    "resource": """UNWIND $rows AS r MERGE (x:Resource {id: r.id}) SET x += r.props""",
}
ORDER = ("goal", "resource", "plan", "replan", "task", "depends", "alloc", "risk", "assign", "feedback")

# The three graph queries.
ROOT_CAUSE = """
MATCH (t:Task {id: $task})
MATCH path = (t)-[:DEPENDS_ON*0..]->(u:Task {status: 'FAILED'})
WHERE NOT EXISTS { MATCH (u)-[:DEPENDS_ON]->(:Task {status: 'FAILED'}) }
WITH u, path ORDER BY length(path) DESC LIMIT 1
OPTIONAL MATCH (u)-[:EXECUTED_BY]->(e:Executor)
OPTIONAL MATCH (u)-[:ALLOCATED_TO]->(x:Resource)
OPTIONAL MATCH (u)-[:FAILED_BECAUSE]->(f:Feedback)
RETURN [n IN nodes(path) | n.task_id] AS path, u.task_id AS root, e.id AS executor,
       collect(DISTINCT x.id) AS resources, collect(DISTINCT f.message) AS reasons"""

DECISION_IMPACT = """
MATCH (a:Plan {id: $plan + ':v' + toString($version)})-[:REPLANNED_AS]->(b:Plan)
OPTIONAL MATCH (a)-[ra:HAS_TASK]->(t:Task)<-[rb:HAS_TASK]-(b)
WITH a, b, t, ra, rb ORDER BY t.task_id
WITH a, b, [x IN collect({task: t.task_id, start_before: ra.start, start_after: rb.start,
                          shift: rb.finish - ra.finish}) WHERE x.task IS NOT NULL
            AND (x.shift <> 0 OR x.start_before <> x.start_after)] AS moved
OPTIONAL MATCH (b)-[:HAS_TASK]->(n:Task) WHERE NOT (a)-[:HAS_TASK]->(n)
WITH a, b, moved, collect(n.task_id) AS added
OPTIONAL MATCH (a)-[:HAS_TASK]->(o:Task) WHERE NOT (b)-[:HAS_TASK]->(o)
RETURN a.version AS before, b.version AS after, a.makespan_hours AS makespan_before,
       b.makespan_hours AS makespan_after, moved, added, collect(o.task_id) AS removed"""

CAPABILITIES = """
MATCH (t:Task)-[:EXECUTED_BY]->(e:Executor) WHERE t.status IN ['COMPLETED', 'FAILED']
UNWIND CASE WHEN size(coalesce(t.capabilities, [])) = 0 THEN [t.phase] ELSE t.capabilities END AS kind
WITH e.id AS executor, kind, count(*) AS tasks, sum(CASE WHEN t.status = 'COMPLETED' THEN 1 ELSE 0 END) AS succeeded
RETURN executor, kind, tasks, succeeded, toFloat(succeeded) / tasks AS success_rate
ORDER BY success_rate DESC, tasks DESC, executor, kind"""


def _task_id(plan_id: str, task_id: str) -> str:
    return f"{plan_id}/{task_id}"


def _plan_rows(out: dict, plan: dict, prev_version: int | None) -> None:
    pid, v = plan["plan_id"], plan["version"]
    pv = f"{pid}:v{v}"
    if prev_version and prev_version != v:
        out["replan"].append({"id": pv, "prev_id": f"{pid}:v{prev_version}"})
    out["plan"].append({"id": pv, "goal_id": plan["goal_id"],
                        "props": {"plan_id": pid, "version": v, "strategy": plan["strategy"],
                                  "approval": plan["approval"], "makespan_hours": plan["makespan_hours"],
                                  "cost": plan["cost"]["total"], "created_at": plan["created_at_ms"]}})
    for t in plan["tasks"]:
        tid = _task_id(pid, t["task_id"])
        out["task"].append({"id": tid, "plan": pv, "start": t["start_hours"], "finish": t["finish_hours"],
                            "props": {"task_id": t["task_id"], "plan_id": pid, "name": t["name"],
                                      "phase": t["phase"], "capabilities": list(t["capabilities"]),
                                      "planned_hours": t["estimate"]["most_likely"]}})
        out["depends"].extend({"from": tid, "to": _task_id(pid, d)} for d in t["depends_on"])
        out["alloc"].extend({"task": tid, "resource": r, "amount": a} for r, a in t["resources"].items())
    for r in plan["risks"]:
        out["risk"].append(_risk_row(pid, pv, r))


def _risk_row(pid: str, plan_vid: str, r: dict) -> dict:
    return {"id": f"{pid}/{r['risk_id']}", "plan": plan_vid, "tasks": [_task_id(pid, t) for t in r["task_ids"]],
            "props": {"category": r["category"], "severity": r["severity"], "title": r["title"],
                      "score": r["score"]}}


def rows_for(rec: SinkRecord) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    v = rec.value
    try:
        if rec.topic == T.GOALS_CREATED.name:
            out["goal"].append({"id": v["goal_id"], "props": {"title": v["title"], "domain": v["domain"],
                                                              "created_at": v["created_at_ms"]}})
        elif rec.topic == T.PLANS_CREATED.name:
            _plan_rows(out, v, None)
        elif rec.topic == T.PLANS_UPDATED.name:
            _plan_rows(out, v["plan"], v["previous_version"])
        elif rec.topic == T.TASKS_ASSIGNED.name:
            if v["assigned_to"]:
                out["assign"].append({"task": _task_id(v["plan_id"], v["task"]["task_id"]),
                                      "executor": v["assigned_to"]})
        elif rec.topic == T.RISKS_ALERTS.name:
            out["risk"].append(_risk_row(v["plan_id"], f"{v['plan_id']}:v{v['plan_version']}", v["risk"]))
        elif rec.topic == T.EXECUTION_FEEDBACK.name:
            out["feedback"].append({"id": v["event_id"], "task": _task_id(v["plan_id"], v["task_id"]),
                                    "status": v["status"], "at": v["reported_at_ms"], "message": v["message"],
                                    "actual_hours": v["actual_hours"]})
        elif rec.topic == T.RESOURCES_AVAILABILITY.name and v is None:   # a tombstone: the resource is gone
            out["resource"].append({"id": rec.key, "props": {"available": False, "removed": True}})
        elif rec.topic == T.RESOURCES_AVAILABILITY.name:
            out["resource"].append({"id": v["resource_id"], "props": {
                "kind": v["kind"], "available": v["available"], "hourly_rate": v["hourly_rate"],
                "capabilities": list(v["capabilities"])}})
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PoisonRecord("unstorable", f"{rec.topic}: {type(exc).__name__}: {exc}") from exc
    return out


class Neo4jSink(Sink):
    name = "neo4j"
    topics = (T.GOALS_CREATED.name, T.RESOURCES_AVAILABILITY.name, T.PLANS_CREATED.name, T.PLANS_UPDATED.name,
              T.TASKS_ASSIGNED.name, T.RISKS_ALERTS.name, T.EXECUTION_FEEDBACK.name)
    tombstone_topics = (T.RESOURCES_AVAILABILITY.name,)   # a deleted resource stays in the graph, marked removed

    def __init__(self, uri: str | None = None, auth: tuple[str, str] | None = None) -> None:
        self.uri, self.auth = _target(uri, auth)
        self.driver: neo4j.Driver | None = None

    def setup(self) -> None:
        if self.driver is None:
            self.driver = neo4j.GraphDatabase.driver(self.uri, auth=self.auth, connection_timeout=5,
                                                     max_transaction_retry_time=5, notifications_min_severity="OFF")
        self.driver.verify_connectivity()
        with self.driver.session() as s:
            for label in LABELS:
                s.run(f"CREATE CONSTRAINT {label.lower()}_id IF NOT EXISTS FOR (n:{label}) REQUIRE n.id IS UNIQUE")
            s.run("CREATE INDEX task_status IF NOT EXISTS FOR (t:Task) ON (t.status)")

    def prepare(self, record: SinkRecord) -> dict[str, list[dict]]:
        rows = rows_for(record)
        for kind, rs in rows.items():
            for r in rs:
                for key in ("id", "task", "goal_id", "plan", "resource", "executor", "from", "to"):
                    v = r.get(key)
                    if isinstance(v, str) and (not v or len(v.encode()) > MAX_ID_BYTES):
                        raise PoisonRecord("bad_id", f"{record.topic}: {kind}.{key} is empty or longer than "
                                                     f"{MAX_ID_BYTES} bytes (Neo4j cannot index it)")
        return rows

    def is_transient(self, exc: BaseException) -> bool:
        if isinstance(exc, (neo4j.exceptions.ServiceUnavailable, neo4j.exceptions.SessionExpired,
                            neo4j.exceptions.TransientError, ConnectionError, OSError)):
            return True
        return bool(getattr(exc, "is_retryable", lambda: False)())

    def write(self, batch: SinkBatch) -> None:
        rows: dict[str, list[dict]] = defaultdict(list)
        for item in batch.items:
            for k, r in item.items():
                rows[k].extend(r)
        self.write_rows(rows)

    def write_rows(self, rows: dict[str, list[dict]], chunk: int = 5000) -> None:
        def tx(t):
            for k in ORDER:
                for i in range(0, len(rows.get(k, ())), chunk):
                    t.run(CYPHER[k], rows=rows[k][i:i + chunk]).consume()
        if self.driver is None:
            self.setup()
        with self.driver.session() as s:
            s.execute_write(tx)

    def close(self) -> None:
        if self.driver is not None:
            self.driver.close()
            self.driver = None


class Graph:
    """The graph queries (root cause, decision impact, capability discovery) and counts."""

    def __init__(self, uri: str | None = None, auth=None) -> None:
        uri, auth = _target(uri, auth)
        self.driver = neo4j.GraphDatabase.driver(uri, auth=auth, notifications_min_severity="OFF")

    def _read(self, cypher: str, **params) -> list[dict]:
        records, _, _ = self.driver.execute_query(cypher, params, routing_=neo4j.RoutingControl.READ)
        return [r.data() for r in records]

    def root_cause(self, plan_id: str, task_id: str) -> dict | None:
        """From a failed task back through DEPENDS_ON to the first failure, with its executor and resources."""
        rows = self._read(ROOT_CAUSE, task=_task_id(plan_id, task_id))
        return rows[0] if rows else None

    def decision_impact(self, plan_id: str, version: int) -> dict | None:
        """What the replan after `version` changed: tasks moved, added, removed; makespan before/after."""
        rows = self._read(DECISION_IMPACT, plan=plan_id, version=version)
        return rows[0] if rows else None

    def capabilities(self) -> list[dict]:
        """Which executors succeed at which task kinds (capabilities, else phase), best first."""
        return self._read(CAPABILITIES)

    def count(self, cypher: str, **params) -> int:
        return self._read(cypher, **params)[0]["n"]

    def close(self) -> None:
        self.driver.close()
