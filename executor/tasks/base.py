"""The base and the registry of task modules."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from executor.build import MODULES, build
from processors.execution import TaskRef

REGISTRY: dict[str, "TaskModule"] = {}     # module name -> plug-in
_BY_KIND: dict[str, str] = {}              # task kind -> module name


class TaskModule:
    """One task module. Subclasses set `name`, `source` and `kinds` and write `prepare`."""
    name: ClassVar[str]
    source: ClassVar[str]                  # file under executor/modules/ (.c or .wat)
    kinds: ClassVar[tuple[str, ...]] = ()  # task kinds this module runs by default

    def wasm(self) -> Path:
        """The built module (built from source on first use)."""
        return build(MODULES / self.source)

    def prepare(self, task: TaskRef, workdir: Path) -> list[str]:
        """Write the task's inputs into `workdir` (the module's `/`); return its arguments.
        An explicit task may bring its own arguments (`task.args`); they replace the defaults."""
        return list(task.args)


def register(cls: type[TaskModule]) -> type[TaskModule]:
    inst = cls()
    if inst.name in REGISTRY:
        raise ValueError(f"task module {inst.name!r} registered twice")
    REGISTRY[inst.name] = inst
    for kind in cls.kinds:
        if kind in _BY_KIND:
            raise ValueError(f"task kind {kind!r} served by {_BY_KIND[kind]!r} and {inst.name!r}")
        _BY_KIND[kind] = inst.name
    return cls


def module_for(task: TaskRef) -> TaskModule | None:
    """The plug-in that runs `task`: the module it names, else the one for its kind."""
    name = task.module or _BY_KIND.get(task.kind)
    return REGISTRY.get(name) if name else None
