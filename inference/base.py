"""The one base for Triton model clients: async gRPC, a timeout, and a breaker.

Why: a planner must never wait on a dead server. Every call is bounded by `timeout_s`; a
failure (refused, late, bad answer) opens the breaker for `retry_after_s`, during which
calls return None at once without touching the network, and each one is counted in
`chimera_inference_fallbacks_total{model,reason}`. Subclasses turn domain objects into
inputs (`inputs`) and outputs into domain objects (`outputs`); each call is one request
holding a whole batch (Triton's dynamic batching then merges concurrent requests).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Generic, Sequence, TypeVar

from prometheus_client import Counter

log = logging.getLogger("chimera.inference")

FALLBACKS = Counter("chimera_inference_fallbacks_total",
                    "Calls answered by the heuristic fallback instead of Triton", ["model", "reason"])
CALLS = Counter("chimera_inference_requests_total", "Requests sent to Triton by result", ["model", "result"])

In = TypeVar("In")
Out = TypeVar("Out")


class TritonModelClient(Generic[In, Out]):
    """One served model. `await call(items)` -> (outputs, model version) or None (fall back)."""

    model: str = ""

    def __init__(self, url: str, *, model: str | None = None, timeout_s: float = 0.5,
                 retry_after_s: float = 5.0) -> None:
        self.url = url
        self.model = model or self.model
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self._client = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._open_until = 0.0
        self.version = ""          # the served version that answered last

    # -- to implement -------------------------------------------------------------------
    def inputs(self, items: Sequence[In]) -> list[Any]:
        raise NotImplementedError

    def outputs(self, items: Sequence[In], result) -> list[Out]:
        raise NotImplementedError

    # -- the call -----------------------------------------------------------------------
    def _grpc(self):
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:   # aio channels belong to one loop
            import tritonclient.grpc.aio as aio
            self._client, self._loop = aio.InferenceServerClient(self.url), loop
        return self._client

    def fallback(self, reason: str) -> None:
        FALLBACKS.labels(self.model, reason).inc()

    @property
    def open(self) -> bool:
        """The breaker is open: the server failed recently, do not ask."""
        return time.monotonic() < self._open_until

    async def call(self, items: Sequence[In]) -> tuple[list[Out], str] | None:
        if not items:
            return [], ""
        if not self.url:
            self.fallback("no_server")
            return None
        if self.open:
            self.fallback("breaker_open")
            return None
        try:
            client = self._grpc()
            result = await asyncio.wait_for(
                client.infer(self.model, self.inputs(items), client_timeout=self.timeout_s), self.timeout_s)
            out = self.outputs(items, result)
            version = result.get_response().model_version
        except asyncio.TimeoutError:
            return self._failed("timeout", None)
        except Exception as exc:  # refused, unavailable, model not ready, bad outputs: all fall back
            return self._failed("unavailable" if "unavailable" in str(exc).lower() else "error", exc)
        CALLS.labels(self.model, "ok").inc()
        return out, version

    def _failed(self, reason: str, exc: BaseException | None) -> None:
        from streams.metrics import INTEGRATION_ERRORS   # the seed metric counts every failed call to another system
        CALLS.labels(self.model, reason).inc()
        INTEGRATION_ERRORS.labels("inference").inc()
        self._open_until = time.monotonic() + self.retry_after_s
        self.fallback(reason)
        log.warning("%s at %s: %s (%s); heuristics for %.1fs", self.model, self.url, reason,
                    exc if exc is not None else f"over {self.timeout_s}s", self.retry_after_s)
        return None

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            try:
                await client.close()
            except Exception:
                pass
