"""executor/ imports only the domain (processors/) and the contracts (topics/) of ours."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OURS = {"streams", "sinks", "inference", "api", "infra", "bench", "tests"}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_executor_imports_no_streams():
    for path in (REPO / "executor").rglob("*.py"):
        assert not (_imports(path) & OURS), (path, _imports(path) & OURS)


def test_execution_domain_is_pure():
    assert _imports(REPO / "processors" / "execution.py") <= {"__future__", "re", "dataclasses", "functools"}
