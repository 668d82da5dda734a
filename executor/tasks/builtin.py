"""The built-in task modules, side by side. Inputs are derived from the task itself, so a
replayed assignment runs on the same bytes and produces the same outputs."""
from __future__ import annotations

import hashlib
from pathlib import Path

from executor.tasks.base import TaskModule, register
from processors.execution import TaskRef


def _seed(task: TaskRef) -> int:
    return int.from_bytes(hashlib.sha256(f"{task.plan_id}/{task.task_id}".encode()).digest()[:8], "big")


@register
class DataCheck(TaskModule):
    """Validates `input.csv` (written from the task: 200 rows of id,name,amount_num)."""
    name = "data-check"
    source = "data_check.c"
    kinds = ("data", "analysis")

    def prepare(self, task: TaskRef, workdir: Path) -> list[str]:
        if task.args:
            return list(task.args)
        seed = _seed(task)
        rows = ["id,name,amount_num"]
        for i in range(200):
            rows.append(f"{i},{task.task_id}-{i},{(seed >> (i % 48)) % 10_000}.{i % 100:02d}")
        (workdir / "input.csv").write_text("\n".join(rows) + "\n")
        return ["input.csv"]


@register
class BuildStep(TaskModule):
    """Builds `artefact.bin` from the task's inputs (its name, description and criteria)."""
    name = "build-step"
    source = "build_step.c"
    kinds = ("build", "deploy")

    def prepare(self, task: TaskRef, workdir: Path) -> list[str]:
        if task.args:
            return list(task.args)
        (workdir / "src").mkdir(exist_ok=True)
        (workdir / "src" / "task.txt").write_text(f"{task.task_id}\n{task.name}\n{task.description}\n")
        (workdir / "src" / "criteria.txt").write_text("\n".join(task.success_criteria) + "\n")
        return ["artefact.bin", "src/task.txt", "src/criteria.txt"]


@register
class TestRun(TaskModule):
    """Runs the assertions in `cases.txt` (derived from the task) and counts passes and fails."""
    name = "test-run"
    source = "test_run.c"
    kinds = ("verify", "acceptance", "gate", "mitigation")

    def prepare(self, task: TaskRef, workdir: Path) -> list[str]:
        if task.args:
            return list(task.args)
        n = 10 + _seed(task) % 20
        fib = [0, 1]
        while len(fib) <= n:
            fib.append(fib[-1] + fib[-2])
        (workdir / "cases.txt").write_text(
            f"add {n} 7 {n + 7}\nmul {n} 3 {n * 3}\nfib {n} 0 {fib[n]}\ngcd {n * 6} 24 {_gcd(n * 6, 24)}\n"
            f"pow 2 {n % 20} {2 ** (n % 20)}\n")
        return ["cases.txt"]


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


@register
class Compute(TaskModule):
    """CPU-heavy (a prime sieve), for benchmarks: argv N ROUNDS."""
    name = "compute"
    source = "compute.c"
    kinds = ("compute",)

    def prepare(self, task: TaskRef, workdir: Path) -> list[str]:
        return list(task.args) or ["2000000", "2"]


@register
class Noop(TaskModule):
    """Starts and returns at once: the trivial module of the benchmarks."""
    name = "noop"
    source = "noop.wat"
    kinds = ("noop",)
