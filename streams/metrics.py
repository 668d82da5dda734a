"""The seeds' Layer 2 metric names that are counted from what a worker publishes, and the
durations of the domain's stages.

Counting from the published records (Publisher.encode, the one door every output goes
through) keeps the domain (processors/) free of metrics; the decomposition and risk-assessment
durations are measured by wrapping the two domain functions once at worker start
(`instrument_domain`), not by clocks inside processors/.
"""
from __future__ import annotations

import functools
import time
from typing import Iterable

from prometheus_client import Counter, Gauge, Histogram

from topics import registry as T

RISKS_IDENTIFIED = Counter("layer2_risks_identified_total", "Risks in published plans and risk alerts", ["severity"])
ALLOCATIONS_OK = Counter("layer2_resource_allocations_successful_total", "Allocation requests granted by a ledger")
PROGRESS = Gauge("layer2_plan_progress_percentage", "Progress of each live plan (removed when it ends)", ["plan_id"])
DECOMPOSITION_SECONDS = Histogram("layer2_task_decomposition_duration_seconds", "Decomposition of a goal into tasks")
RISK_SECONDS = Histogram("layer2_risk_assessment_duration_seconds", "Risk assessment of a plan")
PLANNING_ERRORS = Counter("layer2_planning_errors_total", "Records the planner could not apply", ["reason"])
INTEGRATION_ERRORS = Counter("layer2_integration_errors_total",
                             "Failures talking to other systems (broker sends, memory, inference)", ["integration"])
CONSUMER_LAG = Gauge("chimera_consumer_lag", "Records not yet committed by this worker's consumer", ["topic"])
_ENDED = ("COMPLETED", "FAILED", "CANCELLED")


def observe_outputs(outs: Iterable) -> None:
    """Count what is about to be published (streams.codec.Out records)."""
    for o in outs:
        if o.topic == T.PLANS_CREATED.name:
            for r in o.value.get("risks", ()):
                RISKS_IDENTIFIED.labels(r["severity"]).inc()
        elif o.topic == T.RISKS_ALERTS.name:
            RISKS_IDENTIFIED.labels(o.value["risk"]["severity"]).inc()
        elif o.topic == T.PLANS_UPDATED.name:
            pid = o.value["plan"]["plan_id"]
            if o.value["status"] in _ENDED:
                try:
                    PROGRESS.remove(pid)
                except KeyError:
                    pass
            else:
                PROGRESS.labels(pid).set(o.value["progress_pct"])
        elif o.topic == T.RESOURCES_ALLOCATIONS.name and o.value.get("decision") == "GRANTED":
            ALLOCATIONS_OK.inc()


def _timed(fn, histogram: Histogram):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            histogram.observe(time.perf_counter() - started)
    wrapper.__chimera_timed__ = True
    return wrapper


def instrument_domain() -> None:
    """Time decomposition and risk assessment where the planner calls them (idempotent)."""
    from processors import planner, risk
    if not getattr(planner.decompose, "__chimera_timed__", False):
        planner.decompose = _timed(planner.decompose, DECOMPOSITION_SECONDS)
    if not getattr(risk.assess, "__chimera_timed__", False):
        risk.assess = _timed(risk.assess, RISK_SECONDS)
