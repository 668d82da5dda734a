"""The decomposer's answer, judged like any explicit breakdown before it may become a plan.

Why pure and strict: an LLM's output is untrusted input. It must be a JSON object
`{"tasks": [...]}` (or a bare list) of TaskSpec records exactly as goals.created's explicit
tasks (task_id, name, duration_hours, depends_on, resources, capabilities); anything else
(prose, a code fence around prose, an unknown field, a cycle, an unknown dependency, a
non-finite or negative duration, an objective no task covers) is rejected with a reason
and never published. `parse` returns the specs in topological order.
"""
from __future__ import annotations

import dataclasses
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
# words that say nothing about what a task does: never evidence that it covers an objective
STOP_WORDS = frozenset("""
a an the and or nor but of to in on at by for with from into onto over under about as is are be been
it its this that these those all any each every some our your their my we you they he she them us
do does did done make made get got set up out off new so than then via per not no yes
""".split())
STEM = 4   # two words this long or longer match when one is the start of the other ("deploy", "deployment")


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


def words(text: str) -> frozenset[str]:
    """The words of `text` that can say what a task does: lower case, stop-words left out."""
    return frozenset(w for w in _WORD.findall(text.lower()) if len(w) >= 2 and w not in STOP_WORDS)


def _same(a: str, b: str) -> bool:
    short, long_ = sorted((a, b), key=len)
    return a == b or (len(short) >= STEM and long_.startswith(short))


def uncovered(goal: Goal, specs: tuple[TaskSpec, ...]) -> list[str]:
    """Objectives none of whose words is a word of any task name (whole words, or one the start
    of the other when both have 4+ letters; stop-words never count). An objective of stop-words
    only cannot be checked this way and counts as uncovered."""
    names = frozenset().union(*(words(s.name) for s in specs))
    return [o for o in goal.objectives if not any(_same(w, n) for w in words(o) for n in names)]


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
    """The goal as the LLM breakdown plans it: its tasks explicit (durations from `priced`),
    learned estimates dropped (they are keyed by template task ids and already in `priced`'s hours)."""
    return dataclasses.replace(goal, tasks=tuple(specs), estimates=(), strategy=None)


def priced(goal: Goal, specs: tuple[TaskSpec, ...], config) -> tuple[TaskSpec, ...]:
    """The LLM's tasks with the durations the template plan would give them, never the LLM's own.

    Why: the judge compares makespans; hours the LLM invented would let a breakdown win by
    promising less. Each LLM task takes the mean scheduled hours (most likely) of the template tasks (the goal's
    own decomposition, learned estimates applied where the estimator is confident, exactly as
    the template plan got them) that share most of its words (`words`, `_same`); a task that
    shares none takes the template tasks' median. An objective's check task matches by the words
    of its kind only ("Verify objective"): the objective's words name other work."""
    import statistics
    from processors import estimates
    from processors.decomposition import decompose
    from processors.decomposition.strategies import CHECK_NAME
    try:
        tasks = decompose(goal, max_task_hours=config.default_task_timeout_hours).tasks
    except PlanningError as exc:
        raise Rejected(exc.reason, exc.detail) from None
    if goal.estimates:
        tasks = estimates.apply(tasks, goal.estimates, config)[0]
    pool = [(words(CHECK_NAME) if t.name.startswith(CHECK_NAME) else words(t.name), t.duration_hours)
            for t in tasks]
    fallback = statistics.median(h for _, h in pool)

    def hours(spec: TaskSpec) -> float:
        mine = words(spec.name)
        shared = [sum(1 for w in mine if any(_same(w, n) for n in ws)) for ws, _ in pool]
        top = max(shared)
        return round(statistics.fmean(h for k, (_, h) in zip(shared, pool) if k == top) if top else fallback, 4)
    return tuple(dataclasses.replace(s, duration_hours=hours(s)) for s in specs)


def candidate(text: str, goal: Goal, capacities, config, model: str, base_version: int):
    """The decomposer's answer planned like an explicit breakdown, with the template's durations
    (`priced`): (plan as version base_version + 1, the goal it planned), or Rejected (the
    answer, or planning it, failed)."""
    from processors.planner import plan_goal
    specs = priced(goal, parse(text, goal), config)
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
      one of its words, stop-words aside, `uncovered`): wins, even if longer (a plan that misses an
      objective does not achieve the goal, however fast);
    - it misses an objective the template covers: loses (parse already rejects that);
    - same coverage: wins only if its makespan (durations from `priced`: the template's
      estimates, so like is compared with like) is strictly shorter and it has no more
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
