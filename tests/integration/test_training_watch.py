"""The automatic training trigger (triton_models/watch.py) on real small histories: too little
history and a Triton that cannot be reached are logged, counted and tried again; nothing ends
the loop, and a version written but not loaded is not trained again."""
from __future__ import annotations

import json
import socket
import threading

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _runs(outcome: str) -> float:
    from triton_models.watch import RUNS
    return RUNS.labels("estimator", outcome)._value.get()


def test_the_watch_survives_too_little_history_and_a_failed_load(tmp_path):
    from triton_models import history, repository
    from triton_models.watch import Watch
    repo = repository.prepare(tmp_path / "repo", ("estimator",))
    tiny, enough = history.synthetic(1, seed=3), history.synthetic(40, seed=5)
    feed = iter([tiny, enough, enough, enough])
    logs: list[str] = []
    errors_before = _runs("error")
    w = Watch(lambda: next(feed), repo, min_new=10, url=f"127.0.0.1:{_closed_port()}", epochs=2, log=logs.append)

    assert w.tick() == "error" and "not enough history" in logs[-1]          # one goal: nothing to hold out
    assert _runs("error") == errors_before + 1
    assert w.tick() == "load_error"                                           # trained, written, not loaded
    assert repository.versions(repo, "estimator") == [1, 2]
    last = json.loads((repo / "estimator" / "evaluations.jsonl").read_text().splitlines()[-1])
    assert last["accepted"] and last["new_version"] == 2 and "load_error" in last and "loaded" not in last
    assert w.tick() == "load_error" and "still not loaded" in logs[-1]        # the load again, no new training
    assert repository.versions(repo, "estimator") == [1, 2] and w.unloaded == 2
    assert Watch(lambda: enough, repo, min_new=10).tick() == "waiting"        # nothing new since that run
    assert w.counts == {"error": 1, "load_error": 2}


def test_run_keeps_ticking_through_errors_until_stopped(tmp_path):
    from triton_models import history, repository
    from triton_models.watch import Watch
    repo = repository.prepare(tmp_path / "repo", ("estimator",))
    tiny = history.synthetic(1, seed=3)
    w = Watch(lambda: tiny, repo, min_new=1, log=lambda *_: None)
    stop = threading.Event()
    t = threading.Thread(target=w.run, args=(0.01, stop), daemon=True)
    t.start()
    for _ in range(500):
        if w.counts["error"] >= 3:
            break
        stop.wait(0.02)
    stop.set()
    t.join(10)
    assert not t.is_alive() and w.counts["error"] >= 3 and set(w.counts) == {"error"}


def test_auto_train_starts_the_watch_in_its_own_process_and_it_survives_errors(tmp_path, monkeypatch):
    """[triton] auto_train as `chimera up` uses it: off, nothing starts; on, `train estimator
    --watch` runs in its own process, an unreadable history (an empty chdb folder: no tables) is
    logged at each interval and the process lives on, until the stack stops it."""
    import time
    from contextlib import ExitStack

    from streams import cli
    monkeypatch.setenv("TRITON_REPOSITORY", str(tmp_path / "repo"))
    monkeypatch.setenv("TRITON_TRAIN_INTERVAL_S", "0.5")
    log = tmp_path / "train.log"
    with ExitStack() as stack:
        assert cli._auto_train(stack, tmp_path / "clickhouse", log) is None and not log.exists()   # off by default
    monkeypatch.setenv("TRITON_AUTO_TRAIN", "true")
    with ExitStack() as stack:
        proc = cli._auto_train(stack, tmp_path / "clickhouse", log)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and log.read_text().count("trying again at the next interval") < 2:
            time.sleep(0.5)
        text = log.read_text()
        assert text.count("trying again at the next interval") >= 2, text[-2000:]
        assert proc.poll() is None                               # still running after its errors
    assert proc.poll() is not None and "every 0.5 s" in text    # stopped with the stack


def test_auto_train_with_the_decomposer_on_starts_its_watch_too(tmp_path, monkeypatch):
    """[triton] decompose on: `train decomposer --watch` runs beside the estimator's, with its own
    log; an unreadable history is logged at each interval there too."""
    import time
    from contextlib import ExitStack

    from streams import cli
    for k, v in {"TRITON_REPOSITORY": str(tmp_path / "repo"), "TRITON_TRAIN_INTERVAL_S": "0.5",
                 "TRITON_AUTO_TRAIN": "true", "TRITON_DECOMPOSE": "true"}.items():
        monkeypatch.setenv(k, v)
    log, dlog = tmp_path / "train.log", tmp_path / "train-decomposer.log"
    with ExitStack() as stack:
        proc = cli._auto_train(stack, tmp_path / "clickhouse", log)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (dlog.exists() and "trying again" in dlog.read_text()):
            time.sleep(0.5)
        text = dlog.read_text() if dlog.exists() else ""
        assert "training decomposer every 0.5 s" in text and "trying again at the next interval" in text, text[-2000:]
        assert proc.poll() is None
