"""The automatic training trigger: every interval, train a model (the estimator, or the
decomposer: `decomposer_watch`) when enough new history has accumulated; no error ends it.

Why a loop that survives: it runs unattended next to the pipeline (`chimera up` with
`[triton] auto_train`, or `chimera train estimator --watch N`). Too little history, an
unreachable ClickHouse, a Triton that does not load the new version in time: each is logged,
counted (`chimera_train_runs_total{outcome}` and `Watch.counts`) and tried again at the next
interval. A version that was written but not loaded is loaded again first (Triton serves the
newest version on disk once asked), without training again.
"""
from __future__ import annotations

import threading
from collections import Counter as Tally
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from prometheus_client import Counter

from triton_models import training

RUNS = Counter("chimera_train_runs_total", "Automatic training intervals by outcome (trained, not_better, "
               "waiting: too little new history, error, load_error: written but not loaded)", ["model", "outcome"])


@dataclass
class Watch:
    """`examples()` reads the history (it may raise); `url` is the Triton to load new versions into.
    `train` (examples -> evaluation record) trains another model than the estimator; `size_key`
    is the record's history size (in `unit`s) against which new history is counted."""

    examples: Callable[[], list]
    repo: Path
    min_new: int
    url: str = ""
    epochs: int = 6
    lora: bool = True
    seed: int = 0
    log: Callable[[str], None] = print
    counts: Tally = field(default_factory=Tally)
    unloaded: int | None = None         # a version written whose load failed: loaded again next
    model: str = training.MODEL
    train: Callable[[list], dict] | None = None
    size_key: str = "tasks"
    unit: str = "tasks"

    def tick(self) -> str:
        """One interval: its outcome (never raises an Exception)."""
        try:
            outcome = self._load_again() if self.unloaded is not None else self._train()
        except Exception as exc:
            outcome = "error"
            self.log(f"training failed ({type(exc).__name__}: {exc}); trying again at the next interval")
        self.counts[outcome] += 1
        RUNS.labels(self.model, outcome).inc()
        return outcome

    def _train(self) -> str:
        ex = self.examples()
        new = len(ex) - training.seen(self.repo, self.model, self.size_key)
        if not ex or new < self.min_new:
            self.log(f"{self.model}: {len(ex)} {self.unit} of history, {new} new since the last training run: "
                     f"waiting for {self.min_new}")
            return "waiting"
        rec = self.train(ex) if self.train else training.train_estimator(
            ex, self.repo, url=self.url, epochs=self.epochs, lora=self.lora, seed=self.seed, log=self.log)
        if rec.get("load_error"):
            self.unloaded = rec["new_version"]
            return "load_error"
        return "trained" if rec["accepted"] else "not_better"

    def _load_again(self) -> str:
        try:
            training.load_in_triton(self.url, self.unloaded, model=self.model)
        except Exception as exc:
            self.log(f"{self.model} v{self.unloaded} still not loaded ({type(exc).__name__}: {exc}); "
                     "trying again at the next interval")
            return "load_error"
        self.log(f"{self.model} v{self.unloaded} loaded in Triton at {self.url}")
        self.unloaded = None
        return "trained"

    def run(self, interval_s: float, stop: threading.Event | None = None) -> None:
        """Tick every `interval_s` until `stop` is set (or KeyboardInterrupt)."""
        stop = stop or threading.Event()
        while not stop.is_set():
            self.tick()
            stop.wait(interval_s)


def decomposer_watch(history: Callable[[], list], repo: Path, min_new: int, *, want: int, url: str = "",
                     steps: int = 40, held_out: int = 16, seed: int = 0, log: Callable[[str], None] = print) -> Watch:
    """The watch for the decomposer: `history()` gives its pairs (one per plan completed within
    budget and schedule), counted as plans; each run tops them up with synthetic pairs to `want`."""
    from triton_models import decomposer_history, decomposer_training

    def train(pairs: list) -> dict:
        mixed, synthetic = decomposer_history.mixed(pairs, want, seed=seed)
        return decomposer_training.train_decomposer(mixed, repo, url=url, steps=steps, held_out=held_out, seed=seed,
                                                    synthetic=synthetic, log=log)
    return Watch(history, Path(repo), min_new, url=url, seed=seed, log=log, model=decomposer_training.MODEL,
                 train=train, size_key="history_pairs", unit="plans")
