"""Request bodies of the REST API: validated at the door (422 with the field and the problem).

Every model forbids unknown fields: an approval cannot smuggle in its own `by`, a goal
cannot choose its tenant. Bounds follow `[limits]` defaults; the planner checks them again.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConstraintsIn(Strict):
    deadline_ms: Optional[int] = Field(None, ge=0, description="absolute deadline, epoch ms")
    budget: Optional[float] = Field(None, ge=0)
    max_parallelism: Optional[int] = Field(None, ge=1, le=10000)
    capacities: dict[str, float] = Field(default_factory=dict, max_length=100)
    required_capabilities: list[str] = Field(default_factory=list, max_length=100)


class TaskIn(Strict):
    task_id: str = Field(..., pattern=ID)
    name: str = Field(..., min_length=1, max_length=500)
    duration_hours: float = Field(..., gt=0, le=100000)
    depends_on: list[str] = Field(default_factory=list, max_length=100)
    resources: dict[str, float] = Field(default_factory=dict, max_length=100)
    capabilities: list[str] = Field(default_factory=list, max_length=100)


class GoalIn(Strict):
    """A goal to plan. `goal_id` is optional (one is generated); it is scoped to the caller's tenant."""
    goal_id: Optional[str] = Field(None, pattern=ID)
    title: str = Field(..., min_length=1, max_length=500)
    description: str = Field("", max_length=10000)
    domain: str = Field("software", max_length=100)
    priority: Literal["LOW", "MEDIUM", "HIGH", "CRITICAL"] = "MEDIUM"
    objectives: list[str] = Field(default_factory=list, max_length=100)
    success_criteria: list[str] = Field(default_factory=list, max_length=100)
    constraints: ConstraintsIn = Field(default_factory=ConstraintsIn)
    strategy: Optional[Literal["hierarchical", "functional", "temporal", "resource", "risk", "hybrid"]] = None
    tasks: list[TaskIn] = Field(default_factory=list, max_length=500)


class FeedbackIn(Strict):
    """Execution feedback on one task of the plan (PUT /plans/{id})."""
    task_id: str = Field(..., pattern=ID)
    status: Literal["STARTED", "PROGRESS", "COMPLETED", "FAILED"]
    progress_pct: float = Field(0.0, ge=0, le=100)
    actual_hours: Optional[float] = Field(None, ge=0, le=100000)
    message: str = Field("", max_length=10000)
    attempt: Optional[int] = Field(None, ge=1, description="default: the task's current attempt")


class ApprovalIn(Strict):
    """A decision on a PENDING plan. The approver is the caller's key, never a field."""
    decision: Literal["APPROVE", "REJECT"] = "APPROVE"
    reason: str = Field("", max_length=2000)
    version: Optional[int] = Field(None, ge=1, description="default: the plan's current version")


class MitigateIn(Strict):
    plan_id: Optional[str] = Field(None, description="needed only when the risk id is in several plans")
    action: str = Field(..., min_length=1, max_length=2000, description="what is done about the risk")
    note: str = Field("", max_length=2000)
