"""The planning domain: Goal in, Plan out.

Plain frozen dataclasses so the domain stays pure (no Kafka, no I/O) and cheap to
copy between plan versions. Times inside a plan are hours relative to the plan's
start (the goal's `created_at`), which keeps every computation deterministic.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class PlanningError(ValueError):
    """A goal that cannot be planned; `reason` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class Priority(str, Enum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"


class RiskCategory(str, Enum):
    TECHNICAL = "TECHNICAL"
    RESOURCE = "RESOURCE"
    TIMELINE = "TIMELINE"
    INTEGRATION = "INTEGRATION"
    EXTERNAL = "EXTERNAL"


class Severity(str, Enum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"


class ApprovalState(str, Enum):
    PENDING = "PENDING"          # waits for `chimera approve` or the approvals topic
    APPROVED = "APPROVED"        # approved by a person
    AUTO_APPROVED = "AUTO_APPROVED"  # low risk, auto_approve_low_risk_plans
    REJECTED = "REJECTED"        # failed validation or rejected by a person


# Resource kinds a task may need; capacities use the same keys.
RESOURCE_KINDS = ("cpu", "gpu", "memory_gb", "storage_gb", "agents")


@dataclass(frozen=True)
class Constraints:
    """What a goal allows: all optional."""

    deadline_hours: float | None = None   # hours after the goal's created_at
    budget: float | None = None           # in the plan's currency
    max_parallelism: int | None = None    # tasks running at once
    capacities: dict[str, float] = field(default_factory=dict)  # resource kind -> units
    required_capabilities: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaskSpec:
    """A task the goal's author already named (explicit work breakdown)."""

    task_id: str
    name: str
    duration_hours: float
    depends_on: tuple[str, ...] = ()
    resources: dict[str, float] = field(default_factory=dict)
    capabilities: tuple[str, ...] = ()


@dataclass(frozen=True)
class LearnedEstimate:
    """A learned model's view of one task (inference/, served by Triton): the 10/50/90%
    quantiles of its duration in hours and the probability that it fails."""

    task_id: str
    low: float
    median: float
    high: float
    failure_p: float


@dataclass(frozen=True)
class Goal:
    goal_id: str
    title: str
    created_at_ms: int
    description: str = ""
    domain: str = "software"
    priority: Priority = Priority.MEDIUM
    objectives: tuple[str, ...] = ()
    success_criteria: tuple[str, ...] = ()
    constraints: Constraints = field(default_factory=Constraints)
    strategy: str | None = None           # force a decomposition strategy
    tasks: tuple[TaskSpec, ...] = ()      # explicit tasks: skip decomposition
    submitted_by: str = ""
    # learned estimates for the tasks decomposition yields (processors.estimates decides
    # which replace the template's); not part of goals.created: the planner attaches them
    estimates: tuple[LearnedEstimate, ...] = ()


@dataclass(frozen=True)
class Estimate:
    """Three-point (PERT) duration estimate in hours."""

    optimistic: float
    most_likely: float
    pessimistic: float

    @property
    def expected(self) -> float:
        return (self.optimistic + 4 * self.most_likely + self.pessimistic) / 6

    @property
    def stddev(self) -> float:
        return (self.pessimistic - self.optimistic) / 6


@dataclass(frozen=True)
class Task:
    task_id: str
    name: str
    estimate: Estimate
    depends_on: tuple[str, ...] = ()
    resources: dict[str, float] = field(default_factory=dict)
    capabilities: tuple[str, ...] = ()
    description: str = ""
    phase: str = ""
    component: str = ""
    success_criteria: tuple[str, ...] = ()
    validation: tuple[str, ...] = ()
    risk_mitigation: bool = False          # a task added to reduce a risk

    @property
    def duration_hours(self) -> float:
        return self.estimate.most_likely


@dataclass(frozen=True)
class ScheduledTask:
    task: Task
    start_hours: float
    finish_hours: float
    earliest_start_hours: float
    latest_start_hours: float
    slack_hours: float
    critical: bool


@dataclass(frozen=True)
class Phase:
    name: str
    start_hours: float
    finish_hours: float
    task_ids: tuple[str, ...]


@dataclass(frozen=True)
class Milestone:
    name: str
    at_hours: float
    task_ids: tuple[str, ...]


@dataclass(frozen=True)
class Risk:
    risk_id: str
    category: RiskCategory
    title: str
    probability: float        # 0..1
    impact: float             # 0..1
    severity: Severity
    mitigations: tuple[str, ...] = ()
    task_ids: tuple[str, ...] = ()
    description: str = ""

    @property
    def score(self) -> float:
        return self.probability * self.impact


@dataclass(frozen=True)
class Cost:
    total: float
    currency: str = "USD"
    by_resource: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class MemoryUse:
    """A plan built from episodic memory: which past goal's decomposition was reused, how
    similar it was, and how its durations were corrected (observed actual / planned hours)."""

    source_goal_id: str
    similarity: float
    duration_factor: float           # actual / planned work hours of the reused episode
    tasks_reused: int                # tasks taken over from the episode
    tasks_observed: int              # of which had an observed actual duration


@dataclass(frozen=True)
class Plan:
    plan_id: str
    goal_id: str
    version: int
    strategy: str
    tasks: tuple[ScheduledTask, ...]
    critical_path: tuple[str, ...]
    makespan_hours: float
    phases: tuple[Phase, ...] = ()
    milestones: tuple[Milestone, ...] = ()
    risks: tuple[Risk, ...] = ()
    cost: Cost = field(default_factory=lambda: Cost(0.0))
    approval: ApprovalState = ApprovalState.PENDING
    schedule_method: str = "fast"        # fast | cpsat | cpsat-optimal | explicit
    lower_bound_hours: float = 0.0
    reason: str = "created"             # why this version exists
    violations: tuple[str, ...] = ()     # validation findings
    created_at_ms: int = 0
    memory: MemoryUse | None = None      # set when the plan reused a past episode (processors.memory)
    # where the durations came from: "heuristic" (templates), "heuristic:fallback" (the
    # estimator was asked and did not answer), or "<model>/<version>" when learned estimates
    # replaced at least one template duration
    estimates_source: str = "heuristic"

    def task(self, task_id: str) -> ScheduledTask:
        for st in self.tasks:
            if st.task.task_id == task_id:
                return st
        raise KeyError(task_id)
