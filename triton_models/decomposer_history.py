"""What the decomposer learns from: goals whose plans the pipeline saw through to a good end.

Why this filter: a breakdown is worth imitating only if its plan ended COMPLETED (not FAILED,
CANCELLED or still running), within the goal's budget (the final version's planned cost and its
cost estimate, actual cost of what ran, both at most the budget) and within its schedule (the
final version's makespan within the deadline's hours, and the last task completed by the
deadline), as the `schedule_budget_variance` analytics query judges a plan. One SQL over the
ClickHouse sink's tables gives one row per task of each such plan's final version; `pairs` turns
rows into (goal, answer) pairs in the prompt's shape, and keeps only answers the planner's own
validator accepts. When history is short, `mixed` tops it up with synthetic pairs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

# the final version of each plan (FINAL: at-least-once duplicates collapsed) with its goal, its
# tasks and each task's observed hours (its last COMPLETED feedback); goal-level checks in SQL
HISTORY_SQL = """
SELECT p.plan_id, p.plan_version, p.goal_id, g.title, g.domain, g.objectives, t.task_id, t.name, t.depends_on,
       t.most_likely_hours, f.hours, t.start_hours
FROM (SELECT plan_id, plan_version, goal_id, status, makespan_hours, cost_total, cost_estimate
      FROM chimera.plans FINAL
      WHERE (plan_id, plan_version) IN (SELECT plan_id, max(plan_version) FROM chimera.plans FINAL GROUP BY plan_id)
     ) AS p
JOIN (SELECT goal_id, title, domain, objectives, deadline_ms, budget, toUnixTimestamp64Milli(created_at) AS created_ms
      FROM chimera.goals FINAL) AS g ON g.goal_id = p.goal_id
JOIN (SELECT plan_id, plan_version, task_id, name, depends_on, most_likely_hours, start_hours
      FROM chimera.tasks FINAL) AS t ON t.plan_id = p.plan_id AND t.plan_version = p.plan_version
LEFT JOIN (SELECT plan_id, task_id, argMax(actual_hours, reported_at) AS hours
           FROM chimera.feedback FINAL WHERE status = 'COMPLETED' GROUP BY plan_id, task_id) AS f
  ON f.plan_id = t.plan_id AND f.task_id = t.task_id
LEFT JOIN (SELECT plan_id, toUnixTimestamp64Milli(max(reported_at)) AS done_ms
           FROM chimera.feedback FINAL WHERE status = 'COMPLETED' GROUP BY plan_id) AS d ON d.plan_id = p.plan_id
WHERE p.status = 'COMPLETED'
  AND (g.budget IS NULL OR greatest(p.cost_total, p.cost_estimate) <= g.budget)
  AND (g.deadline_ms IS NULL OR (p.makespan_hours <= (g.deadline_ms - g.created_ms) / 3600000
                                 AND d.done_ms <= g.deadline_ms))
ORDER BY p.plan_id, t.start_hours, t.task_id
"""


@dataclass
class Rows:
    """One plan's final version as read: its goal and its tasks (id, name, deps, hours)."""
    plan_id: str
    version: int
    goal: dict
    tasks: list[tuple[str, str, list[str], float]]


def _hours(planned: float, observed: float | None) -> float:
    """Observed hours where the task reported them, else planned; halves of an hour, at least one half."""
    h = observed if observed is not None and math.isfinite(observed) and observed > 0 else planned
    return max(0.5, round(h * 2) / 2)


def by_plan(rows) -> list[Rows]:
    """Rows (HISTORY_SQL's columns, ordered by plan) grouped per plan."""
    out: list[Rows] = []
    for plan_id, version, goal_id, title, domain, objectives, task_id, name, deps, planned, observed, _ in rows:
        if not out or out[-1].plan_id != plan_id:
            out.append(Rows(plan_id, int(version), {"goal_id": goal_id, "title": title, "domain": domain,
                                                    "objectives": list(objectives)}, []))
        out[-1].tasks.append((task_id, name, list(deps), _hours(float(planned), observed)))
    return out


def answer(tasks: list[tuple[str, str, list[str], float]]) -> list[dict]:
    """The plan's tasks in the prompt's shape, renumbered t1..tn in their order (ids carry no meaning)."""
    ids = {tid: f"t{i}" for i, (tid, *_) in enumerate(tasks, 1)}
    return [{"task_id": ids[tid], "name": name, "duration_hours": hours,
             "depends_on": [ids[d] for d in deps if d in ids]} for tid, name, deps, hours in tasks]


def pairs(rows, log=print) -> list[tuple[dict, str]]:
    """(goal, answer JSON) per good plan, one per goal (its newest plan id wins a tie: the last);
    an answer the planner's validator rejects (llm_plan.parse), or that structured decoding could
    not write (net.writable), is left out and counted."""
    from processors import llm_plan
    from processors.model import Goal
    from triton_models.decomposer import decomposer_net as net
    per_goal: dict[str, tuple[dict, str]] = {}
    rejected: dict[str, int] = {}
    for p in by_plan(rows):
        text = net.answer_text(answer(p.tasks))
        g = p.goal
        try:
            llm_plan.parse(text, Goal(goal_id=g["goal_id"], title=g["title"], created_at_ms=0, domain=g["domain"],
                                      objectives=tuple(g["objectives"])))
        except llm_plan.Rejected as exc:
            rejected[exc.reason] = rejected.get(exc.reason, 0) + 1
            continue
        if not net.writable(text):   # e.g. a quote in a name: structured decoding could never write it
            rejected["not_writable"] = rejected.get("not_writable", 0) + 1
            continue
        per_goal[g["goal_id"]] = (g, text)
    if rejected:
        log(f"history: {sum(rejected.values())} completed plans left out, the validator rejects them: {rejected}")
    return list(per_goal.values())


def from_clickhouse(reader, log=print) -> list[tuple[dict, str]]:
    """Pairs from the ClickHouse sink's tables (`reader.query(sql) -> (columns, rows)`)."""
    return pairs(reader.query(HISTORY_SQL)[1], log=log)


def mixed(history: list[tuple[dict, str]], want: int, seed: int = 0) -> tuple[list[tuple[dict, str]], int]:
    """History first, then synthetic pairs up to `want` (a seed while history is short);
    returns the pairs and how many are synthetic."""
    from triton_models.decomposer_training import synthetic_pairs
    extra = max(0, want - len(history))
    return list(history) + synthetic_pairs(extra, seed=seed), extra


def split(pairs: list, held_out: int) -> tuple[list, list]:
    """(train, held out): `held_out` pairs spread evenly over the list, so a history-then-synthetic
    list holds out its share of each."""
    n = len(pairs)
    k = min(held_out, n - 1) if n > 1 else 0
    picked = {(i * n) // k for i in range(k)} if k else set()
    return [p for i, p in enumerate(pairs) if i not in picked], [p for i, p in enumerate(pairs) if i in picked]
