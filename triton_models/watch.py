"""The automatic training trigger: every interval, train the estimator when enough new history
has accumulated; no error ends it.

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
    """`examples()` reads the history (it may raise); `url` is the Triton to load new versions into."""

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

    def tick(self) -> str:
        """One interval: its outcome (never raises an Exception)."""
        try:
            outcome = self._load_again() if self.unloaded is not None else self._train()
        except Exception as exc:
            outcome = "error"
            self.log(f"training failed ({type(exc).__name__}: {exc}); trying again at the next interval")
        self.counts[outcome] += 1
        RUNS.labels(training.MODEL, outcome).inc()
        return outcome

    def _train(self) -> str:
        ex = self.examples()
        if not ex or not training.due(self.repo, len(ex), self.min_new):
            last = training.last_evaluation(self.repo)
            self.log(f"{len(ex)} tasks of history, {len(ex) - (last['tasks'] if last else 0)} new since the last "
                     f"training run: waiting for {self.min_new}")
            return "waiting"
        rec = training.train_estimator(ex, self.repo, url=self.url, epochs=self.epochs, lora=self.lora,
                                       seed=self.seed, log=self.log)
        if rec.get("load_error"):
            self.unloaded = rec["new_version"]
            return "load_error"
        return "trained" if rec["accepted"] else "not_better"

    def _load_again(self) -> str:
        try:
            training.load_in_triton(self.url, self.unloaded)
        except Exception as exc:
            self.log(f"{training.MODEL} v{self.unloaded} still not loaded ({type(exc).__name__}: {exc}); "
                     "trying again at the next interval")
            return "load_error"
        self.log(f"{training.MODEL} v{self.unloaded} loaded in Triton at {self.url}")
        self.unloaded = None
        return "trained"

    def run(self, interval_s: float, stop: threading.Event | None = None) -> None:
        """Tick every `interval_s` until `stop` is set (or KeyboardInterrupt)."""
        stop = stop or threading.Event()
        while not stop.is_set():
            self.tick()
            stop.wait(interval_s)
