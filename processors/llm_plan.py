"""The decomposer's answer, judged like any explicit breakdown before it may become a plan.

Why pure and strict: an LLM's output is untrusted input. It must be a JSON object
`{"tasks": [...]}` (or a bare list) of TaskSpec records exactly as goals.created's explicit
tasks (task_id, name, duration_hours, depends_on, resources, capabilities); anything else
(prose, a code fence around prose, an unknown field, a cycle, an unknown dependency, a
non-finite or negative duration, an objective no task covers) is rejected with a reason
and never published. `parse` returns the specs in topological order.
"""
from __future__ import annotations

import json
import math
import re

from processors.dependencies import check_specs
from processors.model import Goal, PlanningError, TaskSpec

FIELDS = {"task_id": str, "name": str, "duration_hours": (int, float), "depends_on": list, "resources": dict,
          "capabilities": list}
REQUIRED = ("task_id", "name", "duration_hours")
MAX_TASKS = 200
_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*)\n\s*```\s*$", re.S)
_WORD = re.compile(r"[a-z0-9]+")


class Rejected(PlanningError):
    """Why a decomposer answer cannot be planned: `reason` is a short code, `detail` says more."""


def _json(text: str):
    m = _FENCE.match(text)
    body = m.group(1) if m else text
    try:
        return json.loads(body)
    except (json.JSONDecodeError, TypeError) as exc:
        raise Rejected("not_json", f"the answer is not JSON ({exc}): {text[:80]!r}") from None


def _spec(i: int, d) -> TaskSpec:
    if not isinstance(d, dict):
        raise Rejected("bad_task", f"task #{i} is not an object")
    unknown = sorted(set(d) - set(FIELDS))
    if unknown:
        raise Rejected("unknown_field", f"task #{i} has unknown fields {unknown}")
    missing = [k for k in REQUIRED if k not in d]
    if missing:
        raise Rejected("missing_field", f"task #{i} lacks {missing}")
    for k, v in d.items():
        if not isinstance(v, FIELDS[k]) or isinstance(v, bool):
            raise Rejected("wrong_type", f"task #{i} field {k!r} is {type(v).__name__}")
    if not all(isinstance(x, str) for x in d.get("depends_on", [])) or \
            not all(isinstance(x, str) for x in d.get("capabilities", [])):
        raise Rejected("wrong_type", f"task #{i}: depends_on and capabilities hold strings")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               for v in d.get("resources", {}).values()):
        raise Rejected("wrong_type", f"task #{i}: resources map to finite numbers")
    return TaskSpec(task_id=d["task_id"], name=d["name"], duration_hours=float(d["duration_hours"]),
                    depends_on=tuple(d.get("depends_on", ())), resources=dict(d.get("resources", {})),
                    capabilities=tuple(d.get("capabilities", ())))


def uncovered(goal: Goal, specs: tuple[TaskSpec, ...]) -> list[str]:
    """Objectives none of whose words (3+ letters) appear in any task name."""
    names = " ".join(s.name.lower() for s in specs)
    return [o for o in goal.objectives
            if not any(w in names for w in _WORD.findall(o.lower()) if len(w) >= 3)]


def parse(text: str, goal: Goal) -> tuple[TaskSpec, ...]:
    """The decomposer's answer as checked TaskSpecs (topological order), or Rejected."""
    data = _json(text)
    if isinstance(data, dict):
        extra = sorted(set(data) - {"tasks"})
        if extra:
            raise Rejected("unknown_field", f"top-level fields {extra}; only 'tasks'")
        data = data.get("tasks")
    if not isinstance(data, list) or not data:
        raise Rejected("no_tasks", "expected a non-empty list of tasks")
    if len(data) > MAX_TASKS:
        raise Rejected("too_many_tasks", f"{len(data)} tasks > {MAX_TASKS}")
    specs = tuple(_spec(i, d) for i, d in enumerate(data))
    try:
        ordered = check_specs(specs)
    except PlanningError as exc:
        raise Rejected(exc.reason, exc.detail) from None
    missing = uncovered(goal, ordered)
    if missing:
        raise Rejected("objectives_not_covered", f"no task covers {missing}")
    return ordered


# -- the decomposer's breakdown as a plan, and whether it beats the template plan ----------

STRATEGY = "llm"          # plan.strategy of a version planned from the decomposer's breakdown
REFINE_KIND = "decompose"  # the refine request / result kind that carries it


def goal_with(goal: Goal, specs: tuple[TaskSpec, ...]) -> Goal:
    """The goal as the LLM breakdown plans it: its tasks explicit, template estimates dropped
    (learned estimates are keyed by template task ids, and the answer has its own durations)."""
    import dataclasses
    return dataclasses.replace(goal, tasks=tuple(specs), estimates=(), strategy=None)


def candidate(text: str, goal: Goal, capacities, config, model: str, base_version: int):
    """The decomposer's answer planned like an explicit breakdown: (plan as version
    base_version + 1, the goal it planned), or Rejected (the answer, or planning it, failed)."""
    import dataclasses
    from processors.planner import plan_goal
    specs = parse(text, goal)
    planned = goal_with(goal, specs)
    try:
        plan, _ = plan_goal(planned, known_capacities=capacities, config=config)
    except PlanningError as exc:
        raise Rejected(exc.reason, exc.detail) from None
    plan = dataclasses.replace(plan, version=base_version + 1, strategy=STRATEGY, estimates_source=model,
                               reason=f"llm_decomposition: {model}")
    return plan, planned


def judge(goal: Goal, template, llm) -> tuple[bool, str]:
    """Whether the LLM's plan replaces the template plan, and why (pure; plans are processors.model.Plan).

    Objective coverage first, schedule second:
    - it covers objectives the template misses (an objective is covered when a task name holds
      one of its 3+ letter words, `uncovered`): wins, even if longer (a plan that misses an
      objective does not achieve the goal, however fast);
    - it misses an objective the template covers: loses (parse already rejects that);
    - same coverage: wins only if its makespan is strictly shorter and it has no more
      validation findings (violations) than the template. A tie keeps the template: the
      template's breakdown is known, the LLM's is not, and a new version is not free."""
    def specs_of(plan):
        return tuple(TaskSpec(st.task.task_id, st.task.name, 0.0) for st in plan.tasks)
    missed_t = set(uncovered(goal, specs_of(template)))
    missed_l = set(uncovered(goal, specs_of(llm)))
    if missed_l - missed_t:
        return False, f"not_better: misses objectives {sorted(missed_l - missed_t)} the template covers"
    if missed_t - missed_l:
        return True, f"covers objectives the template misses: {sorted(missed_t - missed_l)}"
    if len(llm.violations) > len(template.violations):
        return False, f"not_better: {len(llm.violations)} violations > {len(template.violations)}"
    if llm.makespan_hours < template.makespan_hours - 1e-9:
        return True, f"shorter: {llm.makespan_hours:.2f} h < {template.makespan_hours:.2f} h"
    return False, (f"not_better: same objectives covered and makespan {llm.makespan_hours:.2f} h "
                   f">= {template.makespan_hours:.2f} h")
