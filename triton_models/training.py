"""`chimera train estimator`: LoRA + head on the CPU, judged against the serving version.

Why this loop: a retrained model must earn its place. The candidate (a peft LoRA adapter on
MiniLM's attention projections plus a fresh head) is trained on the history minus a
held-out set of goals; the serving version (the newest on disk) is scored on the same
held-out tasks; only a candidate with lower duration MAE and lower quantile (pinball) loss
becomes the next version folder, and Triton is asked to load it (explicit model control;
`version_policy latest 1` swaps versions while requests keep being served). Every
evaluation is appended to `<repository>/estimator/evaluations.jsonl`.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from inference import features as F
from triton_models import repository
from triton_models.estimator import estimator_net as net
from triton_models.history import Example

MODEL = "estimator"


@dataclass(frozen=True)
class Evaluation:
    n: int
    mae_hours: float              # |median - actual|
    pinball: float                # mean quantile loss in log hours (0.1, 0.5, 0.9)
    coverage: float               # share of actuals inside [low, high] (the 80% interval)
    failure_logloss: float
    heuristic_mae_hours: float    # the template estimate's MAE on the same tasks
    heuristic_coverage: float     # the template's [optimistic, pessimistic] coverage


def _embed(tokenizer, model, texts: list[str], grad: bool) -> torch.Tensor:
    """Mean-pooled embeddings, each distinct text encoded once."""
    uniq = list(dict.fromkeys(texts))
    tok = tokenizer(uniq, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.set_grad_enabled(grad):
        emb = net.mean_pool(model(**tok).last_hidden_state, tok["attention_mask"])
    index = {t: i for i, t in enumerate(uniq)}
    return emb[torch.tensor([index[t] for t in texts])]


def _tensors(examples: list[Example]):
    texts, feats = F.batch([e.task for e in examples])
    y = torch.tensor([math.log(max(e.actual_hours, 1e-3)) for e in examples], dtype=torch.float32)
    failed = torch.tensor([float(e.failed) for e in examples], dtype=torch.float32)
    return texts, torch.from_numpy(feats), y, failed


@torch.inference_mode()
def predict(tokenizer, model, head, examples: list[Example], batch: int = 512):
    texts, feats, _, _ = _tensors(examples)
    qs, ps = [], []
    for i in range(0, len(texts), batch):
        emb = _embed(tokenizer, model, texts[i:i + batch], grad=False)
        q, logit = head(emb, feats[i:i + batch])
        qs.append(q)
        ps.append(torch.sigmoid(logit))
    return torch.cat(qs), torch.cat(ps)


def evaluate(tokenizer, model, head, examples: list[Example]) -> Evaluation:
    logq, p = predict(tokenizer, model, head, examples)
    _, _, y, failed = _tensors(examples)
    actual = torch.exp(y)
    hours = torch.exp(logq)
    tmpl = torch.tensor([e.task.template_hours for e in examples])
    lo = torch.tensor([e.task.optimistic or e.task.template_hours for e in examples])
    hi = torch.tensor([e.task.pessimistic or e.task.template_hours for e in examples])
    p = p.clamp(1e-6, 1 - 1e-6)
    return Evaluation(
        n=len(examples),
        mae_hours=float((hours[:, 1] - actual).abs().mean()),
        pinball=float(net.pinball(logq, y)),
        coverage=float(((hours[:, 0] <= actual) & (actual <= hours[:, 2])).float().mean()),
        failure_logloss=float(-(failed * p.log() + (1 - failed) * (1 - p).log()).mean()),
        heuristic_mae_hours=float((tmpl - actual).abs().mean()),
        heuristic_coverage=float(((lo <= actual) & (actual <= hi)).float().mean()))


def load_version(folder: Path):
    """(tokenizer, encoder with the version's adapter merged, head) of a version folder."""
    encoder = net.Encoder(adapter=folder / "adapter")
    head, _ = net.load_head(folder, F.FEATURE_DIM)
    return encoder.tokenizer, encoder.model, head


def fit(train: list[Example], *, epochs: int = 6, batch: int = 256, lora_r: int = 8, lora: bool = True,
        seed: int = 0, log=print):
    """A LoRA adapter on MiniLM (query/value projections) and a new head, trained together."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel, AutoTokenizer
    torch.manual_seed(seed)
    path = net.base_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path)
    if lora:
        model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.0,
                                                 target_modules=["query", "value"]))
    else:
        model.requires_grad_(False)
    head = net.Head(F.FEATURE_DIM)
    groups = [{"params": head.parameters(), "lr": 5e-3}]
    adapter_params = [p for p in model.parameters() if p.requires_grad]
    if adapter_params:
        groups.append({"params": adapter_params, "lr": 5e-4})
    opt = torch.optim.AdamW(groups, weight_decay=1e-4)
    texts, feats, y, failed = _tensors(train)
    n = len(texts)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, batch):
            idx = order[i:i + batch]
            emb = _embed(tokenizer, model, [texts[j] for j in idx], grad=bool(adapter_params))
            q, logit = head(emb, feats[idx])
            loss = net.pinball(q, y[idx]) + 0.5 * torch.nn.functional.binary_cross_entropy_with_logits(
                logit, failed[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        log(f"  epoch {epoch + 1}/{epochs}: loss {total / n:.4f}")
    model.eval()
    head.eval()
    return tokenizer, model, head


def better(candidate: Evaluation, serving: Evaluation) -> bool:
    return candidate.mae_hours < serving.mae_hours and candidate.pinball < serving.pinball


def write_version(repo: Path, model, head, evaluation: Evaluation, serving_version: int, extra: dict) -> int:
    """The next version folder: model.py (version 1's), head.pt, meta.json, adapter/."""
    version = max(repository.versions(repo, MODEL) or [0]) + 1
    tmp = repo / MODEL / f".{version}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copy2(repo / MODEL / "1" / "model.py", tmp / "model.py")
    torch.save(head.state_dict(), tmp / "head.pt")
    if hasattr(model, "save_pretrained") and hasattr(model, "peft_config"):
        model.save_pretrained(str(tmp / "adapter"))
    (tmp / "meta.json").write_text(json.dumps({"version": version, "previous": serving_version,
                                               "evaluation": asdict(evaluation), **extra}, indent=2))
    tmp.rename(repo / MODEL / str(version))      # Triton never sees a half-written version
    return version


def load_in_triton(url: str, version: int, timeout_s: float = 300.0, model: str = MODEL) -> None:
    """Ask Triton to (re)load `model` (explicit control) and wait until `version` serves."""
    import tritonclient.grpc as grpcclient
    client = grpcclient.InferenceServerClient(url)
    try:
        client.load_model(model)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if client.is_model_ready(model, str(version)):
                return
            time.sleep(0.2)
        raise TimeoutError(f"{model} v{version} not ready in Triton after {timeout_s:.0f}s")
    finally:
        client.close()


def train_estimator(examples: list[Example], repo: Path | str, *, url: str = "", epochs: int = 6,
                    lora: bool = True, seed: int = 0, log=print) -> dict:
    """The whole loop; returns the evaluation record (also appended to evaluations.jsonl). A
    better version that Triton did not load is still written and recorded (`load_error`)."""
    from triton_models.history import split
    repo = Path(repo)
    repository.prepare(repo, (MODEL,))
    train, held = split(examples, seed=seed)
    if not train or not held:
        raise ValueError(f"not enough history to train and evaluate ({len(examples)} tasks)")
    serving_version = max(repository.versions(repo, MODEL))
    log(f"history: {len(examples)} tasks ({len(train)} train, {len(held)} held-out); "
        f"serving {MODEL} v{serving_version}")
    serving = evaluate(*load_version(repo / MODEL / str(serving_version)), held)
    t0 = time.monotonic()
    tokenizer, model, head = fit(train, epochs=epochs, lora=lora, seed=seed, log=log)
    train_s = time.monotonic() - t0
    candidate = evaluate(tokenizer, model, head, held)
    accepted = better(candidate, serving)
    record = {"at_ms": int(time.time() * 1000), "serving_version": serving_version,
              "serving": asdict(serving), "candidate": asdict(candidate), "accepted": accepted,
              "train_seconds": round(train_s, 1), "lora": lora, "epochs": epochs, "tasks": len(examples)}
    if accepted:
        record["new_version"] = write_version(repo, model, head, candidate, serving_version,
                                              {"train_seconds": record["train_seconds"], "lora": lora})
        if url:
            try:
                load_in_triton(url, record["new_version"])
                record["loaded"] = url
            except Exception as exc:   # written all the same: the next load (or a restart) serves it
                record["load_error"] = f"{type(exc).__name__}: {exc}"
    with open(repo / MODEL / "evaluations.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n")
    log(report(record))
    return record


def last_evaluation(repo: Path | str, model: str = MODEL) -> dict | None:
    path = Path(repo) / model / "evaluations.jsonl"
    if not path.exists():
        return None
    lines = [x for x in path.read_text().splitlines() if x.strip()]
    return json.loads(lines[-1]) if lines else None


def due(repo: Path | str, tasks_now: int, min_new: int, model: str = MODEL, key: str = "tasks") -> bool:
    """Enough new history since the last training run (its `key`: the history size it saw) to train again?"""
    return tasks_now - seen(repo, model, key) >= min_new


def seen(repo: Path | str, model: str = MODEL, key: str = "tasks") -> int:
    """The history size the last training run of `model` saw (0: never trained)."""
    last = last_evaluation(repo, model)
    return int(last.get(key, 0)) if last else 0


def report(r: dict) -> str:
    s, c = r["serving"], r["candidate"]
    rows = [("duration MAE (h)", "mae_hours"), ("pinball (log h)", "pinball"), ("80% coverage", "coverage"),
            ("failure logloss", "failure_logloss")]
    lines = [f"{'held-out tasks: ' + str(c['n']):<24}{'serving v' + str(r['serving_version']):>14}{'candidate':>12}"]
    lines += [f"{name:<24}{s[k]:>14.4f}{c[k]:>12.4f}" for name, k in rows]
    lines.append(f"{'template heuristic MAE':<24}{c['heuristic_mae_hours']:>14.4f}   "
                 f"(candidate / heuristic = {c['mae_hours'] / c['heuristic_mae_hours']:.3f})")
    lines.append(f"{'template opt..pess cov.':<24}{c['heuristic_coverage']:>14.4f}")
    verdict = (f"better: wrote {MODEL} v{r['new_version']}" + (f", loaded in Triton at {r['loaded']}"
                                                                if r.get("loaded") else "")
               + (f", but Triton did not load it: {r['load_error']}" if r.get("load_error") else "")
               if r["accepted"] else "not better: the serving version stays")
    return "\n".join(lines + [verdict])
