"""The decomposer on a real Triton: SmolLM2 from the wheel answers goals, and whatever it says goes through the planner's validator: a plan only from an
answer that validates, a rejection with a reason otherwise."""
from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from processors import llm_plan
from processors.model import Goal

pytestmark = [pytest.mark.integration, pytest.mark.triton, pytest.mark.slow]

GOALS = [{"goal_id": "d1", "title": "Launch billing API", "domain": "software",
          "objectives": ["Design the API", "Build the service"]},
         {"goal_id": "d2", "title": "Churn model", "domain": "data_ml",
          "objectives": ["Collect data", "Train the model", "Evaluate it"]}]


@pytest.mark.timeout(900)
def test_decomposer_answers_are_served_batched_and_validated(triton_repository, tmp_path):
    import tritonclient.grpc as grpcclient
    import tritonclient.grpc.aio as aio
    from infra import containers

    with containers.triton(triton_repository, models=("decomposer",), log_dir=tmp_path) as server:
        c = grpcclient.InferenceServerClient(server.url)
        meta = c.get_model_metadata("decomposer")
        assert [i.name for i in meta.inputs] == ["GOAL"] and [o.name for o in meta.outputs] == ["TASKS"]

        async def ask():
            a = aio.InferenceServerClient(server.url)
            try:
                async def one(g):
                    i = aio.InferInput("GOAL", [1, 1], "BYTES")
                    i.set_data_from_numpy(np.array([[json.dumps(g).encode()]], dtype=object))
                    r = await a.infer("decomposer", [i], client_timeout=600)  # SmolLM2 on a loaded 2-core CPU: minutes
                    return r.as_numpy("TASKS")[0, 0].decode()
                return await asyncio.gather(*(one(g) for g in GOALS))
            finally:
                await a.close()

        answers = asyncio.run(ask())
        stats = c.get_inference_statistics("decomposer").model_stats[0]
        c.close()
    assert stats.inference_count == 2
    assert all(isinstance(a, str) and a for a in answers)
    for text, g in zip(answers, GOALS):
        goal = Goal(goal_id=g["goal_id"], title=g["title"], created_at_ms=0, objectives=tuple(g["objectives"]))
        try:
            specs = llm_plan.parse(text, goal)
        except llm_plan.Rejected as exc:          # the base model mostly answers prose or code
            assert exc.reason and exc.detail, exc
        else:
            assert specs and all(s.task_id for s in specs)
