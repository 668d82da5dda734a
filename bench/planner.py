"""Planner fast-path throughput: `processors.planner.plan_goal` on ~30-task goals, one core.

    python -m bench.planner                 # default: 40 goals per kind, 5 rounds
    python -m bench.planner --goals 80 --rounds 10 --json

Goal kinds (built deterministically, before any timing):

* ``software``, ``data_ml``, ``infrastructure``, ``research``: decomposed goals (objectives,
  priorities, deadlines, capacities and forced strategies varied by a seeded RNG), kept only
  when their decomposition has 26..34 tasks;
* ``explicit``: PSPLIB j30 instances (../shared/data/psplib/j30) as goals with exactly 30
  explicit tasks (super source/sink dropped; resources R1..R4 -> cpu, memory_gb,
  storage_gb, agents; the instance's capacities as the goal's capacities, which can only
  cap what resources.availability reports: the bench reports a pool as large as the largest
  instance's, see `reported_for`).

Every timed plan gets a goal with a unique goal_id and title (" #k"), so nothing keyed by
goal text can be reused between plans. By default the scheduler's per-Project cache
(`processors.scheduling.sgs._net`) is cleared before every call of both the planner and
the baseline (`--warm-caches` keeps it), i.e. every plan is a cold plan.

The baseline, measured in the same run on the same Projects the planner builds, is the
bare schedule: `Project(...)` + `lft_schedule` (single-pass serial SGS, LFT rule). The
ratio is planner plans/s / bare-schedule plans/s. Single process; warm-up first;
time.perf_counter around every call (median/p99) and around each whole loop (plans/s).
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import random
import statistics
import sys
import time
from pathlib import Path

from processors.config import PlanningConfig
from processors.model import Constraints, Goal, Priority, TaskSpec
from processors.planner import plan_goal
from processors.scheduling import Project, lft_schedule, parse_sm
from processors.scheduling import sgs as _sgs

REPO = Path(__file__).resolve().parents[1]
J30_DIRS = [REPO.parent / "shared" / "data" / "psplib" / "j30", Path("/work/shared/data/psplib/j30")]
TARGET = (26, 34)            # decomposed goals: task count window around 30
PSPLIB_KINDS = ("cpu", "memory_gb", "storage_gb", "agents")
CREATED_MS = 1_700_000_000_000

# Objective phrases per domain (they hit template keywords, so decompositions differ).
PHRASES: dict[str, tuple[str, ...]] = {
    "software": (
        "Design the billing REST API", "Implement invoicing and payments", "Load test at 1k rps",
        "Add login with SSO and role permissions", "Build the customer dashboard in React",
        "Store orders in Postgres with a clean schema", "Send email notifications via webhook",
        "Set up CI/CD pipeline with Docker", "Add monitoring, logging and alerts",
        "Migrate legacy user accounts", "Support GDPR data export", "Expose a public GraphQL endpoint",
        "Integrate Stripe payments", "Search records by customer", "Mobile portal for field staff",
    ),
    "data_ml": (
        "Build the feature pipeline", "Train and evaluate a gradient-boosted model", "Serve predictions",
        "Ingest clickstream from Kafka", "Label and clean the training data", "Fine-tune an LLM with LoRA",
        "Benchmark accuracy and fairness", "Monitor drift and retrain weekly", "Real-time inference endpoint",
        "Compute embeddings for the catalogue", "Forecast demand per store", "Batch scoring every night",
    ),
    "infrastructure": (
        "Provision the Kubernetes cluster", "Mirror topics to the new cluster", "Cut over producers and consumers",
        "Set up VPC, subnets and DNS", "Object storage buckets with backups", "IAM roles and secrets in Vault",
        "Prometheus and Grafana monitoring", "Terraform everything as infrastructure as code",
        "Multi-region failover for disaster recovery", "GPU node pool with autoscaling",
        "Zero downtime migration from legacy servers", "Load balancer and CDN in front of the apps",
    ),
    "research": (
        "Survey heuristics", "Reproduce two baselines on PSPLIB", "Run ablation experiments",
        "Collect a new dataset of field measurements", "User study with 20 participants",
        "Statistical analysis of significance", "Build a prototype tool", "Large-scale GPU simulation",
        "Write and publish the paper", "Interview domain experts", "Formal model of the problem",
        "Test the main hypothesis against a control",
    ),
}
TITLES = {
    "software": "Launch a customer-facing service", "data_ml": "Ship a machine learning model",
    "infrastructure": "Migrate the platform infrastructure", "research": "Research study on scheduling",
}
STRATEGY_CHOICES = (None, None, None, "hierarchical", "functional", "temporal", "resource", "risk", "hybrid")


def _decomposed_goal(domain: str, rng: random.Random, i: int) -> Goal:
    k = rng.randint(2, 6)
    objs = tuple(rng.sample(PHRASES[domain], k))
    caps: dict[str, float] = {}
    if rng.random() < 0.3:
        caps = {"gpu": float(rng.choice((1, 2))), "agents": float(rng.choice((2, 3, 4)))}
    return Goal(
        goal_id=f"bench-{domain}-{i}", title=f"{TITLES[domain]} {i}", created_at_ms=CREATED_MS,
        description=" and ".join(objs[:2]), domain=domain,
        priority=rng.choice(list(Priority)), objectives=objs,
        success_criteria=tuple(rng.sample(("p99 latency < 200 ms", "zero data loss", "report approved",
                                           "AUC >= 0.85", "runs in < 1 h"), rng.randint(0, 2))),
        constraints=Constraints(
            deadline_hours=rng.choice((None, 48.0, 120.0, 400.0)),
            budget=rng.choice((None, 5_000.0, 20_000.0)),
            max_parallelism=rng.choice((None, None, 3, 4, 6)),
            capacities=caps),
        strategy=rng.choice(STRATEGY_CHOICES))


def decomposed_goals(domain: str, n: int, config: PlanningConfig, seed: int = 0) -> list[Goal]:
    """n goals of `domain` whose decomposition has TARGET[0]..TARGET[1] tasks."""
    from processors.decomposition import decompose

    rng = random.Random(f"{domain}-{seed}")
    out: list[Goal] = []
    i = 0
    while len(out) < n and i < 200 * n:
        g = _decomposed_goal(domain, rng, i)
        i += 1
        if TARGET[0] <= len(decompose(g, max_task_hours=config.default_task_timeout_hours).tasks) <= TARGET[1]:
            out.append(g)
    if len(out) < n:
        raise SystemExit(f"only {len(out)} {domain} goals with {TARGET[0]}..{TARGET[1]} tasks")
    return out


def _j30_dir() -> Path:
    for d in J30_DIRS:
        if d.is_dir():
            return d
    raise SystemExit(f"no PSPLIB j30 folder in {', '.join(map(str, J30_DIRS))}")


def psplib_goal(project: Project, name: str, i: int) -> Goal:
    """A PSPLIB instance as a goal with its n-2 real jobs as explicit tasks (hours = periods)."""
    n = project.n
    real = range(1, n - 1)                   # drop super source (0) and super sink (n-1)
    preds = project.predecessors
    specs = tuple(
        TaskSpec(task_id=f"a{j:02d}", name=f"{name} job {j + 1}", duration_hours=float(project.durations[j]),
                 depends_on=tuple(f"a{p:02d}" for p in preds[j] if p != 0),
                 resources={PSPLIB_KINDS[k]: float(q) for k, q in enumerate(project.demands[j]) if q})
        for j in real)
    # the planner holds resource_buffer_percentage back: ask for enough that the integer
    # capacity it schedules against is exactly the instance's
    keep = 1.0 - PlanningConfig().resource_buffer_percentage
    caps = {PSPLIB_KINDS[k]: (c + 0.5) / keep for k, c in enumerate(project.capacities)}
    return Goal(goal_id=f"bench-j30-{i}", title=f"PSPLIB {name}", created_at_ms=CREATED_MS,
                domain="generic", constraints=Constraints(capacities=caps), tasks=specs)


def reported_for(kind: str, goals: list[Goal]) -> dict[str, float]:
    """The availability the bench reports: none for decomposed goals (config defaults
    apply); for PSPLIB goals a pool that every instance's own capacities cap."""
    if kind != "explicit":
        return {}
    return {k: max(g.constraints.capacities.get(k, 0.0) for g in goals) for k in PSPLIB_KINDS}


def explicit_goals(n: int) -> list[Goal]:
    files = sorted(_j30_dir().glob("*.sm"))
    files = [files[i * len(files) // n] for i in range(min(n, len(files)))]
    return [psplib_goal(parse_sm(f.read_text()), f.stem, i) for i, f in enumerate(files)]


def _unique(goals: list[Goal], rounds: int) -> list[Goal]:
    """rounds x goals, each copy with its own goal_id and title (no cross-plan text reuse)."""
    out = []
    k = 0
    for _ in range(rounds):
        for g in goals:
            k += 1
            out.append(dataclasses.replace(g, goal_id=f"{g.goal_id}-{k}", title=f"{g.title} #{k}"))
    return out


def _timed(fn, items, cold: bool) -> tuple[float, list[float]]:
    """(total seconds for the loop, per-call seconds)."""
    clear = _sgs._net.cache_clear
    per: list[float] = []
    pc = time.perf_counter
    gc.collect()
    t_start = pc()
    for it in items:
        if cold:
            clear()
        t0 = pc()
        fn(it)
        per.append(pc() - t0)
    return pc() - t_start, per


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def run_kind(kind: str, goals: list[Goal], rounds: int, config: PlanningConfig, cold: bool) -> dict:
    caps = reported_for(kind, goals)
    plans = [plan_goal(g, known_capacities=caps, config=config) for g in goals]   # warm-up + shapes
    raw = [(p.project.durations, p.project.successors, p.project.demands, p.project.capacities)
           for _, p in plans]
    ntasks = [len(p.tasks) for _, p in plans]
    quality = [pl.makespan_hours / max(pl.lower_bound_hours, 1e-9) for pl, _ in plans]
    work = _unique(goals, rounds)
    _timed(lambda g: plan_goal(g, known_capacities=caps, config=config), work[: len(goals)], cold)  # warm-up
    total, per = _timed(lambda g: plan_goal(g, known_capacities=caps, config=config), work, cold)
    base_items = raw * rounds
    _timed(lambda r: lft_schedule(Project(*r)), base_items[: len(raw)], cold)
    btotal, bper = _timed(lambda r: lft_schedule(Project(*r)), base_items, cold)
    rate, brate = len(work) / total, len(base_items) / btotal
    return {
        "kind": kind, "goals": len(goals), "plans": len(work),
        "tasks_avg": round(statistics.mean(ntasks), 1), "tasks_min": min(ntasks), "tasks_max": max(ntasks),
        "plans_per_s": round(rate), "median_ms": round(statistics.median(per) * 1e3, 3),
        "p99_ms": round(_pct(per, 0.99) * 1e3, 3),
        "baseline": "Project + lft_schedule", "baseline_plans_per_s": round(brate),
        "baseline_median_ms": round(statistics.median(bper) * 1e3, 3),
        "ratio_vs_baseline": round(rate / brate, 3),
        "makespan_over_lb_avg": round(statistics.mean(quality), 4),
        "cold_caches": cold,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.planner", description=__doc__.split("\n\n")[0])
    ap.add_argument("--goals", type=int, default=40, help="distinct goals per kind (default 40)")
    ap.add_argument("--rounds", type=int, default=5, help="timed passes over the goals (default 5)")
    ap.add_argument("--kinds", nargs="*", default=["software", "data_ml", "infrastructure", "research",
                                                   "explicit"])
    ap.add_argument("--warm-caches", action="store_true",
                    help="keep the scheduler's per-Project cache between plans")
    ap.add_argument("--json", action="store_true", help="one JSON object per kind (and one for all)")
    a = ap.parse_args(argv)
    config = PlanningConfig()
    cold = not a.warm_caches
    rows = []
    for kind in a.kinds:
        goals = explicit_goals(a.goals) if kind == "explicit" else decomposed_goals(kind, a.goals, config)
        rows.append(run_kind(kind, goals, a.rounds, config, cold))
        if not a.json:
            r = rows[-1]
            print(f"{kind:15s} {r['plans']:5d} plans  tasks {r['tasks_avg']:5.1f} ({r['tasks_min']}-{r['tasks_max']})  "
                  f"{r['plans_per_s']:6d} plans/s  median {r['median_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  | "
                  f"bare schedule {r['baseline_plans_per_s']:6d}/s  ratio {r['ratio_vs_baseline']:.3f}  "
                  f"makespan/LB {r['makespan_over_lb_avg']:.3f}", flush=True)
    plans = sum(r["plans"] for r in rows)
    total_s = sum(r["plans"] / r["plans_per_s"] for r in rows)
    btotal_s = sum(r["plans"] / r["baseline_plans_per_s"] for r in rows)
    overall = {"kind": "all", "plans": plans, "plans_per_s": round(plans / total_s),
               "baseline_plans_per_s": round(plans / btotal_s),
               "ratio_vs_baseline": round(btotal_s / total_s, 3), "cold_caches": cold}
    if a.json:
        for r in rows + [overall]:
            print(json.dumps(r))
    else:
        print(f"{'all':15s} {plans:5d} plans  {overall['plans_per_s']:6d} plans/s  | bare schedule "
              f"{overall['baseline_plans_per_s']}/s  ratio {overall['ratio_vs_baseline']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
