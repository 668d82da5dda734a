"""Sample goals for the demo and `chimera produce goals --sample N`."""
from __future__ import annotations

import random

HOUR_MS = 3_600_000

_TEMPLATES = [
    {"title": "Launch a customer-facing billing API", "domain": "software", "priority": "HIGH",
     "objectives": ["Design the billing REST API", "Implement invoicing and payments", "Load test at 1k rps"],
     "success_criteria": ["p99 latency < 200 ms", "zero failed payments in staging"],
     "constraints": {"deadline_h": 400, "budget": 5000.0, "max_parallelism": 4}},
    {"title": "Train a churn prediction model", "domain": "data_ml", "priority": "MEDIUM",
     "objectives": ["Build the feature pipeline", "Train and evaluate a gradient-boosted model", "Serve predictions"],
     "success_criteria": ["AUC >= 0.85 on holdout"],
     "constraints": {"deadline_h": 36, "budget": 15000.0}},
    {"title": "Migrate the message bus to a new Kafka cluster", "domain": "infrastructure", "priority": "CRITICAL",
     "objectives": ["Provision the cluster", "Mirror topics", "Cut over producers and consumers"],
     "success_criteria": ["no message loss during cut-over"],
     "constraints": {"deadline_h": 300, "max_parallelism": 3}},
    {"title": "Literature review on resource-constrained scheduling", "domain": "research", "priority": "LOW",
     "objectives": ["Survey heuristics", "Reproduce two baselines on PSPLIB"],
     "success_criteria": ["written report with reproduced numbers"], "constraints": {}},
    {"title": "Nightly ETL for the sales warehouse", "domain": "data_ml", "priority": "MEDIUM",
     "objectives": ["Extract from three sources", "Load the warehouse"], "success_criteria": ["runs in < 1 h"],
     "constraints": {"deadline_h": 120},
     "tasks": [
         {"task_id": "extract-crm", "name": "Extract CRM", "duration_hours": 6, "resources": {"cpu": 2}},
         {"task_id": "extract-erp", "name": "Extract ERP", "duration_hours": 8, "resources": {"cpu": 2}},
         {"task_id": "extract-web", "name": "Extract web events", "duration_hours": 5, "resources": {"cpu": 4}},
         {"task_id": "transform", "name": "Transform and join", "duration_hours": 10,
          "depends_on": ["extract-crm", "extract-erp", "extract-web"], "resources": {"cpu": 8, "memory_gb": 32}},
         {"task_id": "load", "name": "Load warehouse", "duration_hours": 4, "depends_on": ["transform"]},
         {"task_id": "verify", "name": "Verify row counts", "duration_hours": 2, "depends_on": ["load"]}]},
]


def _contended_tasks(seed: int = 11, n: int = 16) -> list[dict]:
    """A seeded network of GPU jobs competing for 4 GPUs and 3 agents: the fast path leaves
    slack here that the CP-SAT refinement finds, so the demo shows a refined version."""
    rnd = random.Random(seed)
    tasks = []
    for i in range(n):
        deps = sorted(rnd.sample(range(i), k=min(i, rnd.choice([0, 1, 1, 2])))) if i else []
        tasks.append({"task_id": f"job-{i:02d}", "name": f"GPU evaluation job {i}",
                      "duration_hours": float(rnd.randint(1, 8)), "depends_on": [f"job-{d:02d}" for d in deps],
                      "resources": {"gpu": float(rnd.randint(0, 3)), "agents": float(rnd.randint(1, 2))}})
    return tasks


_TEMPLATES.append(
    {"title": "Evaluate model checkpoints on the GPU pool", "domain": "data_ml", "priority": "MEDIUM",
     "objectives": ["Score every checkpoint"], "success_criteria": ["all checkpoints scored"],
     "constraints": {"capacities": {"gpu": 4.0, "agents": 3.0}}, "tasks": _contended_tasks()})


def sample_goals(n: int, now_ms: int, prefix: str = "goal") -> list[dict]:
    """n goals cycling through the templates; ids are unique per (prefix, now_ms)."""
    goals = []
    for i in range(n):
        t = _TEMPLATES[i % len(_TEMPLATES)]
        c = t["constraints"]
        goals.append({
            "goal_id": f"{prefix}-{now_ms}-{i:04d}",
            "title": t["title"] if i < len(_TEMPLATES) else f"{t['title']} #{i // len(_TEMPLATES) + 1}",
            "description": t["title"], "domain": t["domain"], "priority": t["priority"],
            "objectives": t["objectives"], "success_criteria": t["success_criteria"],
            "constraints": {"deadline_ms": now_ms + c["deadline_h"] * HOUR_MS if "deadline_h" in c else None,
                            "budget": c.get("budget"), "max_parallelism": c.get("max_parallelism"),
                            "capacities": c.get("capacities", {}), "required_capabilities": []},
            "strategy": None, "tasks": t.get("tasks", []), "submitted_by": "demo", "created_at_ms": now_ms,
        })
    return goals
