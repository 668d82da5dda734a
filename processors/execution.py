"""What an executor runs for an assignment: the task's kind, or the module it names (pure).

Today's `tasks.assigned` schema carries the planned task but no payload field, so:
- an explicit task names its module with `wasm: MODULE ARG...` as its name or a line of its
  description (arguments split on spaces), or a capability `wasm:MODULE`;
- otherwise the task's kind is the kind its template activity declares (ACTIVITY_KINDS), which
  the decomposer writes into the task's description (`describe`, read back by `declared_kind`:
  a field every planned task already carries, so no schema change);
- a task that declares none (an explicit task, an LLM plan's task, a pool's provision task)
  gets a kind read from its phase, name and capabilities (plus data and compute);
and the executor's registry maps the kind to a module.
When the assignment gets a payload field (issue 8 on top of issue 7), `task_ref` reads it
first; nothing else changes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

# The kinds a template activity may declare (processors/templates/*.toml `kind = ...`).
ACTIVITY_KINDS = ("analysis", "build", "verify", "acceptance", "deploy", "gate", "mitigation")
_DECLARED = re.compile(r"\((" + "|".join(ACTIVITY_KINDS) + r")\) for goal ")


def describe(name: str, kind: str, goal_title: str) -> str:
    """A template task's description; it carries the activity's declared kind (`declared_kind`)."""
    return f"{name} ({kind}) for goal {goal_title!r}"


def declared_kind(description: str) -> str | None:
    """The kind `describe` wrote into a description, else None."""
    m = _DECLARED.search(description or "")
    return m.group(1) if m else None


# For tasks that declare no kind. First match wins; words are matched as prefixes of the task's words.
_KIND_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("compute", ("compute", "benchmark", "simulat", "train")),
    ("verify", ("test", "verif", "qa", "validat", "check", "assert", "review", "audit")),
    ("acceptance", ("accept", "sign", "approv")),
    ("data", ("data", "csv", "ingest", "etl", "clean", "dataset")),
    ("deploy", ("deploy", "release", "rollout", "ship", "launch")),
    ("build", ("build", "implement", "integrat", "develop", "code", "compil", "package", "artefact", "artifact")),
)
DEFAULT_KIND = "analysis"


@dataclass(frozen=True)
class TaskRef:
    """The part of an assignment an executor needs."""
    plan_id: str
    task_id: str
    attempt: int
    name: str
    kind: str
    module: str | None = None          # an explicit module name, else None (the kind decides)
    args: tuple[str, ...] = ()
    description: str = ""
    success_criteria: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()
    assigned_to: str | None = None
    deadline_ms: int | None = None      # the attempt's deadline (tasks.assigned v3): the sandbox's wall time


def explicit_module(task: dict) -> tuple[str | None, tuple[str, ...]]:
    """`wasm: MODULE ARG...` as the task's name (a goal's explicit task has no description of
    its own), or as a line of its description; else a capability `wasm:MODULE`."""
    for line in [task.get("name") or ""] + (task.get("description") or "").splitlines():
        line = line.strip()
        if line.lower().startswith("wasm:"):
            parts = line[5:].split()
            if parts:
                return parts[0], tuple(parts[1:])
    for cap in task.get("capabilities") or ():
        if cap.lower().startswith("wasm:") and cap[5:].strip():
            return cap[5:].strip(), ()
    return None, ()


def task_kind(task: dict) -> str:
    """The kind of a planned task: the one its template activity declared, else read from its
    phase, then its name, then its capabilities."""
    return declared_kind(task.get("description") or "") or _kind(task.get("phase") or "", task.get("name") or "", " ".join(task.get("capabilities") or ()))


# One pattern per kind: a prefix at the start of a word (a run of [a-z] letters).
_KIND_PATTERNS = tuple((kind, re.compile(r"(?<![a-z])(?:" + "|".join(map(re.escape, prefixes)) + ")"))
                       for kind, prefixes in _KIND_WORDS)


@lru_cache(maxsize=4096)
def _kind(phase: str, name: str, capabilities: str) -> str:
    """Cached: every plan of a template repeats the same phases and task names (this ran for
    each assignment of each plan)."""
    for text in (phase, name, capabilities):
        low = text.lower()
        for kind, pattern in _KIND_PATTERNS:
            if pattern.search(low):
                return kind
    return DEFAULT_KIND


def task_ref(assignment: dict) -> TaskRef:
    """A TaskRef from a decoded `tasks.assigned` record."""
    task = assignment["task"]
    module, args = explicit_module(task)
    return TaskRef(
        plan_id=assignment["plan_id"], task_id=task["task_id"], attempt=int(assignment.get("attempt") or 1),
        name=task.get("name") or "", kind=task_kind(task), module=module, args=args,
        description=task.get("description") or "", success_criteria=tuple(task.get("success_criteria") or ()),
        capabilities=tuple(task.get("capabilities") or ()), assigned_to=assignment.get("assigned_to"),
        deadline_ms=assignment.get("deadline_ms"))
