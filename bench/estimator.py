"""The learned estimator: accuracy after `train estimator`, and throughput via Triton.

    python -m bench.estimator [--goals 300] [--noise 0.25] [--epochs 6] [--seconds 5] [--json]

One run, one machine, every figure against a baseline measured in the same run:

* accuracy, on held-out goals of a synthetic history with known true durations (per task
  kind, domain and executor, log-normal noise `--noise`): the trained version's duration MAE
  as served by Triton / the template heuristic's MAE (goal <= 0.70), and the share of actuals
  inside the served 80% interval (goal 0.75-0.85) next to the template's [optimistic,
  pessimistic] coverage. The oracle's MAE ratio (the true median, the best any model can do
  at that noise) is printed too: it bounds the ratio from below.
* throughput: task estimates/s through Triton (gRPC aio, `--concurrency` requests in flight,
  `--batch` tasks each, Triton's dynamic batching merging them) against one task per request
  sequentially (the unbatched baseline), and against the goal of 5,000/s.
* planning: goals planned per second in process with the estimator client on (one request
  per goal; then with its answer cache) / with the heuristic fallback (goal >= 0.70).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def _served(url: str, tasks, batch: int = 256):
    """(low, median, high) hours and failure p for each task, from Triton."""
    from inference.estimator import EstimatorClient

    async def go():
        c = EstimatorClient(url, timeout_s=60)
        out = []
        for i in range(0, len(tasks), batch):
            got = await c.estimate([(str(j), t) for j, t in enumerate(tasks[i:i + batch])])
            assert got is not None, "Triton did not answer"
            out += got
        await c.close()
        return out, c.version
    return asyncio.run(go())


def accuracy(url: str, held) -> dict:
    from triton_models.history import true_factor
    est, version = _served(url, [e.task for e in held])
    actual = np.array([e.actual_hours for e in held])
    med = np.array([e.median for e in est])
    lo, hi = np.array([e.low for e in est]), np.array([e.high for e in est])
    tmpl = np.array([e.task.template_hours for e in held])
    t_lo = np.array([e.task.optimistic or e.task.template_hours for e in held])
    t_hi = np.array([e.task.pessimistic or e.task.template_hours for e in held])
    oracle = np.array([e.task.template_hours * true_factor(e.task.kind, e.task.domain, e.task.executor)
                       for e in held])
    mae, base = float(np.abs(med - actual).mean()), float(np.abs(tmpl - actual).mean())
    return {"served_version": version, "held_out_tasks": len(held), "mae_learned_h": mae, "mae_template_h": base,
            "mae_ratio": mae / base, "mae_oracle_ratio": float(np.abs(oracle - actual).mean()) / base,
            "coverage_learned": float(((lo <= actual) & (actual <= hi)).mean()),
            "coverage_template": float(((t_lo <= actual) & (actual <= t_hi)).mean())}


def throughput(url: str, tasks, seconds: float, concurrency: int, batch: int) -> dict:
    import tritonclient.grpc.aio as aio

    from inference.estimator import estimator_inputs as inputs

    batches = [inputs(tasks[i:i + batch]) for i in range(0, len(tasks) - batch + 1, batch)]
    singles = [inputs([t]) for t in tasks[:256]]

    async def run(work, inflight):
        c = aio.InferenceServerClient(url)
        done = 0
        deadline = time.perf_counter() + seconds

        async def loop(k):
            nonlocal done
            i = k
            while time.perf_counter() < deadline:
                r = await c.infer("estimator", work[i % len(work)])
                done += r.as_numpy("DURATION").shape[0]
                i += inflight
        for ins in work[:inflight]:                        # warm-up (and the embedding cache)
            await c.infer("estimator", ins)
        t0 = time.perf_counter()
        await asyncio.gather(*(loop(k) for k in range(inflight)))
        rate = done / (time.perf_counter() - t0)
        await c.close()
        return rate

    def stats():
        import tritonclient.grpc as g
        c = g.InferenceServerClient(url)
        s = [m for m in c.get_inference_statistics("estimator").model_stats if m.inference_count]
        c.close()
        return sum(m.inference_count for m in s), sum(m.execution_count for m in s)

    base = asyncio.run(run(singles, 1))
    i0, e0 = stats()
    rate = asyncio.run(run(batches, concurrency))
    i1, e1 = stats()
    # cold: every text new to the server's embedding cache, so MiniLM runs for each task
    import dataclasses
    fresh = [dataclasses.replace(t, name=f"{t.name} #{i}") for i, t in enumerate(tasks * 4)]
    cold = asyncio.run(run([inputs(fresh[i:i + batch]) for i in range(0, len(fresh) - batch + 1, batch)],
                           concurrency))
    return {"estimates_per_s": rate, "unbatched_per_s": base, "ratio_vs_unbatched": rate / base,
            "cold_text_per_s": cold,
            "ratio_vs_goal_5000": rate / 5000.0, "tasks_per_execution": (i1 - i0) / max(1, e1 - e0)}


def planning(url: str, n_goals: int) -> dict:
    from inference.estimator import EstimatorClient
    from processors import lifecycle
    from processors.config import PlanningConfig
    from streams import codec, samples
    config = PlanningConfig(refine_budget_seconds=0)
    goals = [codec.goal_from_record(g) for g in samples.sample_goals(n_goals, 1_800_000_000_000, prefix="bench")]

    async def run(client_url, ttl=0.0):
        c = EstimatorClient(client_url, timeout_s=5, cache_ttl_s=ttl)
        for g in goals[:5]:
            await c.for_goal(g, config)
        t0 = time.perf_counter()
        sources = []
        for g in goals:
            est = await c.for_goal(g, config)
            _, ev = lifecycle.on_goal(None, g, {}, config, received_at_ms=g.created_at_ms,
                                      estimates=est.estimates if est else (),
                                      estimates_source=est.source if est else None)
            sources.append(ev[0].plan.estimates_source)
        rate = len(goals) / (time.perf_counter() - t0)
        await c.close()
        return rate, sources

    on, src_on = asyncio.run(run(url))
    cached, _ = asyncio.run(run(url, 30.0))
    off, src_off = asyncio.run(run(""))
    return {"goals": n_goals, "plans_per_s_triton": on, "plans_per_s_fallback": off, "ratio": on / off,
            "plans_per_s_triton_cached": cached, "ratio_cached": cached / off,
            "learned_plans": sum(1 for s in src_on if s.startswith("estimator/")),
            "fallback_plans": sum(1 for s in src_off if s == "heuristic:fallback")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.estimator")
    p.add_argument("--goals", type=int, default=300)
    p.add_argument("--noise", type=float, default=0.25)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--plan-goals", type=int, default=200)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    from infra.tritonserver import TritonServer
    from triton_models import history, repository, training
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="chimera-bench-est-") as tmp:
        repo = repository.prepare(Path(tmp) / "repo")
        examples = history.synthetic(a.goals, seed=7, noise=a.noise)
        rec = training.train_estimator(examples, repo, epochs=a.epochs, log=lambda *_: None)
        out["training"] = {k: rec[k] for k in ("accepted", "train_seconds", "tasks", "epochs")}
        _, held = history.split(examples)
        with TritonServer(repo, models=("estimator",), log_dir=Path(tmp) / "log") as server:
            out["accuracy"] = accuracy(server.url, held)
            out["throughput"] = throughput(server.url, [e.task for e in examples], a.seconds, a.concurrency,
                                           a.batch)
            out["planning"] = planning(server.url, a.plan_goals)
    out["noise"] = a.noise
    if a.json:
        print(json.dumps(out))
        return 0
    acc, thr, pl = out["accuracy"], out["throughput"], out["planning"]
    print(f"training: {rec['tasks']} tasks, {rec['epochs']} epochs, {rec['train_seconds']} s, accepted={rec['accepted']}")
    print(f"accuracy (held-out {acc['held_out_tasks']} tasks, served v{acc['served_version']}, noise {a.noise}):")
    print(f"  MAE learned / template   {acc['mae_learned_h']:.3f} h / {acc['mae_template_h']:.3f} h = "
          f"{acc['mae_ratio']:.3f}   (goal <= 0.70; oracle {acc['mae_oracle_ratio']:.3f})")
    print(f"  80% interval coverage    learned {acc['coverage_learned']:.3f}  (goal 0.75-0.85)  "
          f"template [opt,pess] {acc['coverage_template']:.3f}")
    print(f"throughput: {thr['estimates_per_s']:,.0f} estimates/s ({a.concurrency} x {a.batch}-task requests, "
          f"{thr['tasks_per_execution']:.0f} tasks per model execution)")
    print(f"  every text new (MiniLM runs per task): {thr['cold_text_per_s']:,.0f} estimates/s")
    print(f"  vs unbatched (1 task/request, sequential) {thr['unbatched_per_s']:,.0f}/s: "
          f"x{thr['ratio_vs_unbatched']:.1f};  vs goal 5,000/s: x{thr['ratio_vs_goal_5000']:.2f}")
    print(f"planning in process: {pl['plans_per_s_triton']:.1f} plans/s with Triton ({pl['learned_plans']} of "
          f"{pl['goals']} learned) vs {pl['plans_per_s_fallback']:.1f} fallback = {pl['ratio']:.2f} (goal >= 0.70)")
    print(f"  with the client's answer cache (30 s): {pl['plans_per_s_triton_cached']:.1f} plans/s = "
          f"{pl['ratio_cached']:.2f} of the fallback")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
