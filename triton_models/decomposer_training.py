"""`chimera train decomposer`: a LoRA adapter that teaches SmolLM2 the breakdown format.

Why: the base model answers a goal with prose or code, which the validator rejects; the
pipeline's successful plans are (goal -> explicit tasks) pairs to learn from. Pairs come from
the ClickHouse history of plans that completed within budget and schedule
(triton_models/decomposer_history.py), topped up while it is short by a synthetic history of
goals that completed (each objective a task, chained, then a review). The candidate is judged
on held-out goals (each source's share) by the share of answers `processors.llm_plan.parse`
accepts, against the serving version; only a better one becomes the next version folder (and
is loaded by Triton when asked).
"""
from __future__ import annotations

import json
import random
import shutil
import time
import zlib
from pathlib import Path

import torch

from processors import llm_plan
from processors.model import Goal
from triton_models import repository
from triton_models.decomposer import decomposer_net as net

MODEL = "decomposer"
VERBS = ["Design", "Build", "Test", "Document", "Deploy", "Review", "Migrate", "Measure", "Train", "Collect",
         "Clean", "Evaluate", "Secure", "Monitor", "Benchmark", "Integrate"]
THINGS = ["the API", "the billing service", "the data pipeline", "the churn model", "the dashboard",
          "the cluster", "the survey", "the schema", "the login flow", "the search index", "the report",
          "the alerting rules", "the feature store", "the mobile app", "the backups", "the load balancer"]
DOMAINS = ["software", "data_ml", "infrastructure", "research"]


def synthetic_pairs(n: int, seed: int = 0) -> list[tuple[dict, str]]:
    """(goal, answer JSON) pairs of goals that completed: one task per objective, chained, then a review."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        objectives = [f"{rng.choice(VERBS)} {rng.choice(THINGS)}" for _ in range(rng.randint(2, 4))]
        objectives = list(dict.fromkeys(objectives))
        goal = {"goal_id": f"dec-{seed}-{i}", "title": f"{objectives[0]} for team {rng.randint(1, 99)}",
                "domain": rng.choice(DOMAINS), "objectives": objectives}
        tasks, prev = [], []
        for k, o in enumerate(objectives, 1):
            hours = 2 + zlib.crc32(o.encode()) % 14
            tasks.append({"task_id": f"t{k}", "name": o, "duration_hours": hours, "depends_on": prev})
            prev = [f"t{k}"]
        tasks.append({"task_id": f"t{len(objectives) + 1}", "name": "Review and sign off", "duration_hours": 2,
                      "depends_on": prev})
        out.append((goal, net.answer_text(tasks)))
    return out


def valid_rate(answers: list[str], goals: list[dict]) -> tuple[float, dict[str, int]]:
    """Share of answers the planner's validator accepts, and the rejection reasons."""
    ok, reasons = 0, {}
    for text, g in zip(answers, goals):
        goal = Goal(goal_id=g["goal_id"], title=g["title"], created_at_ms=0, domain=g["domain"],
                    objectives=tuple(g["objectives"]))
        try:
            llm_plan.parse(text, goal)
            ok += 1
        except llm_plan.Rejected as exc:
            reasons[exc.reason] = reasons.get(exc.reason, 0) + 1
    return ok / max(1, len(goals)), reasons


def _batch(tok, pairs):
    """Input ids with labels only on the answer (and the end-of-turn token); the answer tokenised
    as structured decoding writes it (net.answer_ids), so the adapter learns the choices it is offered."""
    ids, labels = [], []
    end = tok("<|im_end|>", add_special_tokens=False)["input_ids"]
    for goal, answer in pairs:
        p = tok(net.prompt(tok, goal), add_special_tokens=False)["input_ids"]
        a = net.answer_ids(tok, answer) + end
        ids.append(p + a)
        labels.append([-100] * len(p) + a)
    width = max(len(x) for x in ids)
    pad = tok.pad_token_id
    input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
    mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
    lab = torch.tensor([y + [-100] * (width - len(y)) for y in labels])
    return input_ids, mask, lab


def fit(pairs, *, steps: int = 40, batch: int = 8, lr: float = 1e-3, r: int = 8, seed: int = 0, log=print):
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(seed)
    tok, model = net.load()
    tok.padding_side = "right"
    model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0,
                                             target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    rng = random.Random(seed)
    model.train()
    for step in range(steps):
        ids, mask, lab = _batch(tok, rng.sample(pairs, min(batch, len(pairs))))
        loss = model(input_ids=ids, attention_mask=mask, labels=lab).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0 or step == steps - 1:
            log(f"  step {step + 1}/{steps}: loss {loss.item():.4f}")
    tok.padding_side = "left"
    return tok, model.eval()


def train_decomposer(pairs, repo: Path | str, *, url: str = "", steps: int = 40, held_out: int = 20,
                     seed: int = 0, synthetic: int = 0, batch: int = 8, max_new_tokens: int = 0,
                     log=print) -> dict:
    """The whole loop on `pairs` (the last `synthetic` of them synthetic); returns the evaluation
    record (also appended to evaluations.jsonl). A better version Triton did not load is still
    written and recorded (`load_error`), as the estimator's. `max_new_tokens` bounds each held-out
    answer (both models alike; 0: net.answer_budget of the pairs' answers, as the planner's own
    plans need far more than the base model's 200); a new version is served with it (meta.json)."""
    from triton_models.decomposer_history import split
    repo = Path(repo)
    repository.prepare(repo, (MODEL,))
    train, held = split(pairs, held_out)
    if not train or not held:
        raise ValueError(f"not enough pairs to train and evaluate ({len(pairs)})")
    log(f"pairs: {len(pairs) - synthetic} from history, {synthetic} synthetic ({len(train)} train, "
        f"{len(held)} held-out)")
    goals = [g for g, _ in held]
    serving_version = max(repository.versions(repo, MODEL))
    tok, base = net.load(repo / MODEL / str(serving_version) / "adapter")
    if not max_new_tokens:
        max_new_tokens = net.answer_budget(tok, [a for _, a in pairs])
        log(f"answers up to {max_new_tokens} new tokens (the longest answer + 25%)")
    serving_rate, serving_why = valid_rate(net.generate(tok, base, goals, max_new_tokens), goals)
    del base
    log(f"serving {MODEL} v{serving_version}: {serving_rate:.0%} of {len(goals)} held-out answers validate "
        f"({serving_why})")
    t0 = time.monotonic()
    tok, model = fit(train, steps=steps, batch=batch, seed=seed, log=log)
    train_s = time.monotonic() - t0
    cand_rate, cand_why = valid_rate(net.generate(tok, model, goals, max_new_tokens), goals)
    log(f"candidate: {cand_rate:.0%} validate ({cand_why}); trained {train_s:.0f} s")
    record = {"at_ms": int(time.time() * 1000), "serving_version": serving_version, "serving_valid": serving_rate,
              "candidate_valid": cand_rate, "candidate_rejections": cand_why, "serving_rejections": serving_why,
              "accepted": cand_rate > serving_rate, "train_seconds": round(train_s, 1), "steps": steps, "batch": batch,
              "max_new_tokens": max_new_tokens,
              "pairs": len(pairs), "history_pairs": len(pairs) - synthetic, "synthetic_pairs": synthetic,
              "held_out": len(held)}
    if record["accepted"]:
        version = max(repository.versions(repo, MODEL)) + 1
        tmp = repo / MODEL / f".{version}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        shutil.copy2(repo / MODEL / "1" / "model.py", tmp / "model.py")
        model.save_pretrained(str(tmp / "adapter"))
        (tmp / "meta.json").write_text(json.dumps(record, indent=2))
        tmp.rename(repo / MODEL / str(version))
        record["new_version"] = version
        if url:
            from triton_models.training import load_in_triton
            try:
                load_in_triton(url, version, model=MODEL)
                record["loaded"] = url
            except Exception as exc:   # written all the same: the next load (or a restart) serves it
                record["load_error"] = f"{type(exc).__name__}: {exc}"
    with open(repo / MODEL / "evaluations.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n")
    return record
