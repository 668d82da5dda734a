"""The planner's decomposer client: goals -> the LLM's answer text, batched, bounded, or None.

Why: the decomposer (SmolLM2-135M + LoRA, triton_models/decomposer) takes seconds per answer
on a CPU, so the planner never waits for it: the template plan is published first and the
refiner agent asks here off the fast path (streams/planner.py). Concurrent `ask`s within
`batch_wait_s` (up to `max_batch`, the model's max_batch_size) go out as ONE request of
several goals; Triton's dynamic batching merges concurrent requests further. Every request is
bounded by `timeout_s`; a failure opens the base client's breaker, so while the server is
dead `ask` answers None at once (the template plan stands) without touching the network.
The answer is untrusted text: processors/llm_plan.py judges it.
"""
from __future__ import annotations

import asyncio
import json
from typing import Sequence

import numpy as np
from prometheus_client import Counter

from inference.base import TritonModelClient
from processors.model import Goal

OUTCOMES = Counter("layer2_llm_decompositions_total",
                   "LLM breakdowns by outcome (fallback: the decomposer did not answer, the template plan "
                   "stands; rejected: the answer did not validate; proposed: planned and sent to the planner; "
                   "accepted / ignored: the planner's judgement) and reason", ["outcome", "reason"])


def count(outcome: str, reason: str = "") -> None:
    OUTCOMES.labels(outcome, reason).inc()


def goal_json(goal: Goal) -> str:
    """What the decomposer is asked (decomposer_net.goal_text reads these keys)."""
    return json.dumps({"goal_id": goal.goal_id, "title": goal.title, "domain": goal.domain,
                       "objectives": list(goal.objectives)})


class DecomposerClient(TritonModelClient[str, str]):
    model = "decomposer"

    def __init__(self, url: str, *, max_batch: int = 8, batch_wait_s: float = 0.02, **kw) -> None:
        super().__init__(url, **kw)
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_s
        self.last_reason = ""
        self._pending: list[tuple[str, asyncio.Future]] = []
        self._flusher: asyncio.TimerHandle | None = None

    def fallback(self, reason: str) -> None:
        self.last_reason = reason
        super().fallback(reason)

    def inputs(self, items: Sequence[str]):
        import tritonclient.grpc.aio as aio
        t = aio.InferInput("GOAL", [len(items), 1], "BYTES")
        t.set_data_from_numpy(np.array([[s.encode()] for s in items], dtype=object))
        return [t]

    def outputs(self, items, result):
        out = result.as_numpy("TASKS")
        if out is None or out.shape[0] != len(items):
            raise ValueError(f"decomposer answered {getattr(out, 'shape', None)} for {len(items)} goals")
        return [(v.decode(errors="replace") if isinstance(v, bytes) else str(v)) for v in out.reshape(-1)]

    async def ask(self, goal: Goal) -> tuple[str, str] | None:
        """(answer text, served version) or None (no server, breaker open, timeout, error)."""
        if self.open or not self.url:       # a dead server costs nothing: no queue, no network
            self.fallback("breaker_open" if self.url else "no_server")
            return None
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((goal_json(goal), fut))
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif self._flusher is None:
            self._flusher = asyncio.get_running_loop().call_later(self.batch_wait_s, self._flush)
        return await fut

    def _flush(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
        if self._pending:
            self._flusher = asyncio.get_running_loop().call_later(0, self._flush)
        if batch:
            asyncio.ensure_future(self._send(batch))

    async def _send(self, batch: list[tuple[str, asyncio.Future]]) -> None:
        try:
            got = await self.call([g for g, _ in batch])
        except Exception:   # never leave an asker waiting (call itself catches what Triton raises)
            got = None
            self.fallback("error")
        for i, (_, f) in enumerate(batch):
            if not f.done():
                f.set_result(None if got is None else (got[0][i], got[1]))
