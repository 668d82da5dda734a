"""Expected vs actual (issue 8 §5, the CODITECT world model's consistency check), pure.

An assignment states what its task must produce (`expectation`: files in the task folder and
the exit status); the executor reports what the run actually produced (files created in the
task folder, exit status); `violations` compares them into categorised violations:
`missing_output` (an expected file was not produced), `wrong_status` (another exit status),
`unexpected_file` (a file nobody asked for). The planner raises them as a risk alert and fails
the attempt (retried like any failure).

What a task must produce follows from the module that runs it (processors.execution): the
build step writes its artefact (its first argument, `artefact.bin` by default); the other
built-in modules write nothing. Exit status 0 always.
"""
from __future__ import annotations

from dataclasses import dataclass

from .execution import explicit_module, task_kind

# module -> (files it must write by default, index of the argument that names the file instead)
_OUTPUTS: dict[str, tuple[tuple[str, ...], int | None]] = {"build-step": (("artefact.bin",), 0)}
# kind -> the module that runs it by default (the executor's registry agrees: a unit test checks)
KIND_MODULE = {"data": "data-check", "analysis": "data-check", "build": "build-step", "deploy": "build-step",
               "verify": "test-run", "acceptance": "test-run", "gate": "test-run", "mitigation": "test-run",
               "compute": "compute", "noop": "noop"}
CATEGORIES = ("missing_output", "wrong_status", "unexpected_file")


@dataclass(frozen=True)
class Expectation:
    files: tuple[str, ...] = ()
    exit_status: int = 0


@dataclass(frozen=True)
class Produced:
    files: tuple[str, ...] = ()
    exit_status: int | None = None


@dataclass(frozen=True)
class Violation:
    category: str            # one of CATEGORIES
    detail: str


def expectation(task: dict) -> Expectation:
    """What a task (a tasks.assigned `task`, or the same fields of a model Task) must produce."""
    module, args = explicit_module(task)
    module = module or KIND_MODULE.get(task_kind(task))
    files, arg = _OUTPUTS.get(module or "", ((), None))
    if arg is not None and len(args) > arg:
        files = (args[arg],)
    return Expectation(tuple(files), 0)


def violations(expected: Expectation, produced: Produced) -> tuple[Violation, ...]:
    """Categorised differences, in a stable order (missing, status, unexpected; files sorted)."""
    out = [Violation("missing_output", f"{f} was not produced") for f in sorted(set(expected.files) - set(produced.files))]
    if produced.exit_status is not None and produced.exit_status != expected.exit_status:
        out.append(Violation("wrong_status", f"exit status {produced.exit_status}, expected {expected.exit_status}"))
    out += [Violation("unexpected_file", f"{f} was not expected") for f in sorted(set(produced.files) - set(expected.files))]
    return tuple(out)


def task_fields(task) -> dict:
    """The fields `expectation` reads, from a model Task."""
    return {"name": task.name, "description": task.description, "phase": task.phase,
            "capabilities": list(task.capabilities)}
