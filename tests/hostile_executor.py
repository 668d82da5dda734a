"""The real executor service with the hostile test modules of tests/wasm/ registered as task
modules, so the end-to-end tests can assign them through Kafka: `python -m tests.hostile_executor
ARGS` takes `chimera executor`'s arguments. The service code is the production one; only the
registry has six more entries (a deployment never sees these modules)."""
from __future__ import annotations

from pathlib import Path

from executor.tasks.base import TaskModule, register

WASM = Path(__file__).resolve().parent / "wasm"
HOSTILE = {"loop": "loop.wat", "membomb": "membomb.c", "recursion": "recursion.c", "escape": "escape.c",
           "unknown-import": "unknown_import.wat", "spew": "spew.c"}

for _name, _src in HOSTILE.items():   # argv: the task's own arguments (`wasm: escape /some/path`)
    register(type(f"Hostile_{_name.replace('-', '_')}", (TaskModule,), {"name": _name, "source": str(WASM / _src)}))


if __name__ == "__main__":
    from executor.service import main
    raise SystemExit(main())
