"""`train estimator` end to end on a real Triton: a better candidate becomes version 2 and is
hot-loaded while requests keep flowing (none fails, answers switch from v1 to v2)."""
from __future__ import annotations

import json
import threading

import pytest

from inference.estimator import estimator_inputs

pytestmark = [pytest.mark.integration, pytest.mark.triton, pytest.mark.slow]


def _inputs(tasks):
    return estimator_inputs(tasks)


def test_train_writes_a_better_version_and_triton_hot_loads_it_under_load(tmp_path):
    import tritonclient.grpc as grpcclient
    from infra import containers
    from triton_models import history, repository, training

    repo = repository.prepare(tmp_path / "repo")
    examples = history.synthetic(60, seed=11)
    probe = [e.task for e in examples[:8]]
    seen: list[tuple[str, float]] = []
    errors: list[str] = []
    stop = threading.Event()

    with containers.triton(repo, models=("estimator",), log_dir=tmp_path / "log") as server:
        def traffic():
            c = grpcclient.InferenceServerClient(server.url)
            while not stop.is_set():
                try:
                    r = c.infer("estimator", _inputs(probe))
                    seen.append((r.get_response().model_version, float(r.as_numpy("DURATION")[0, 1])))
                except Exception as exc:   # any failed request during the swap fails the test
                    errors.append(repr(exc))
            c.close()

        t = threading.Thread(target=traffic, daemon=True)
        t.start()
        record = training.train_estimator(examples, repo, url=server.url, epochs=2, log=lambda *_: None)
        # keep the traffic going until answers come from the new version
        for _ in range(600):
            if any(v == "2" for v, _ in seen[-5:]):
                break
            stop.wait(0.05)
        n_after = len(seen)
        stop.wait(0.5)
        stop.set()
        t.join(10)
        assert len(seen) > n_after                       # requests kept flowing after the load

    assert record["accepted"] and record["new_version"] == 2 and record["loaded"] == server.url
    assert record["candidate"]["mae_hours"] < record["serving"]["mae_hours"]
    assert errors == []
    versions = [v for v, _ in seen]
    assert versions[0] == "1" and versions[-1] == "2"
    first_2 = versions.index("2")
    assert set(versions[first_2:]) == {"2"}               # swapped once, never back
    assert seen[0][1] == pytest.approx(probe[0].template_hours, rel=1e-4)   # v1: the heuristic
    assert seen[-1][1] != pytest.approx(probe[0].template_hours, rel=1e-3)  # v2: learned
    stored = [json.loads(x) for x in (repo / "estimator" / "evaluations.jsonl").read_text().splitlines()]
    assert stored[-1]["new_version"] == 2
    assert (repo / "estimator" / "2" / "adapter" / "adapter_config.json").exists()


def test_a_candidate_that_is_not_better_writes_nothing(tmp_path):
    from triton_models import history, repository, training
    repo = repository.prepare(tmp_path / "repo")
    examples = history.synthetic(40, seed=5)
    first = training.train_estimator(examples, repo, epochs=2, log=lambda *_: None)
    assert first["accepted"]
    # the same data, no training at all (0 epochs): the fresh head is the prior, worse than v2
    again = training.train_estimator(examples, repo, epochs=0, lora=False, log=lambda *_: None)
    assert not again["accepted"] and repository.versions(repo, "estimator") == [1, 2]
