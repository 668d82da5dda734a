"""Avro schemas: loading, self-contained expansion, versions and compatibility.

One schema file per topic of the registry (topics.registry.TOPICS). Files may refer to
named types defined in other files (tasks.assigned uses chimera.PlannedTask from
plans.created); `ORDER` puts every file after the files whose types it uses, and
`expanded()` inlines them so every topic has a self-contained schema for a registry.
Released versions live in schemas/history/ and ids in schemas/manifest.json.
"""
from __future__ import annotations

import copy
import hashlib
import io
import json
from functools import lru_cache
from pathlib import Path

import fastavro
from fastavro.utils import generate_many

from topics.registry import TOPICS

SCHEMA_DIR = Path(__file__).parent / "schemas"
HISTORY_DIR = SCHEMA_DIR / "history"
MANIFEST = SCHEMA_DIR / "manifest.json"
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def _fullname(node: dict, namespace: str | None) -> str:
    name = node["name"]
    ns = node.get("namespace", namespace)
    return name if "." in name or not ns else f"{ns}.{name}"


def _collect(node, namespace, out: dict) -> None:
    """Record every named type defined in a raw schema, by full name."""
    if isinstance(node, list):
        for n in node:
            _collect(n, namespace, out)
    elif isinstance(node, dict):
        t = node.get("type")
        if t in ("record", "enum", "fixed"):
            full = _fullname(node, namespace)
            out[full] = node
            namespace = full.rsplit(".", 1)[0] if "." in full else namespace
        if t == "record":
            for f in node["fields"]:
                _collect(f["type"], namespace, out)
        elif t == "array":
            _collect(node["items"], namespace, out)
        elif t == "map":
            _collect(node["values"], namespace, out)
        elif isinstance(t, (dict, list)):
            _collect(t, namespace, out)


def _inline(node, namespace, known: dict, defined: set):
    """Replace references to types from other files by their definitions (once)."""
    if isinstance(node, str):
        if node in _PRIMITIVES:
            return node
        full = node if "." in node or not namespace else f"{namespace}.{node}"
        if full in known and full not in defined:
            defined.add(full)
            return _inline(copy.deepcopy(known[full]), namespace, known, defined)
        return node
    if isinstance(node, list):
        return [_inline(n, namespace, known, defined) for n in node]
    if isinstance(node, dict):
        t = node.get("type")
        if t in ("record", "enum", "fixed"):
            full = _fullname(node, namespace)
            defined.add(full)
            namespace = full.rsplit(".", 1)[0] if "." in full else namespace
        node = dict(node)
        if t == "record":
            node["fields"] = [dict(f, type=_inline(f["type"], namespace, known, defined)) for f in node["fields"]]
        elif t == "array":
            node["items"] = _inline(node["items"], namespace, known, defined)
        elif t == "map":
            node["values"] = _inline(node["values"], namespace, known, defined)
        elif isinstance(t, (dict, list, str)) and t not in ("record", "enum", "fixed", "array", "map"):
            node["type"] = _inline(t, namespace, known, defined)
        return node
    return node


def dependency_order(raws: dict[str, dict]) -> tuple[str, ...]:
    """The schema names of `raws` with every one after those whose named types it uses;
    otherwise in the given order. A cycle between files raises ValueError."""
    own: dict[str, dict] = {}
    owner: dict[str, str] = {}
    for name, raw in raws.items():
        _collect(raw, None, own.setdefault(name, {}))
        for full in own[name]:
            owner.setdefault(full, name)
    known = {full: node for types in own.values() for full, node in types.items()}
    uses: dict[str, set[str]] = {}
    for name, raw in raws.items():
        seen: set[str] = set()
        _inline(raw, None, known, seen)
        uses[name] = {owner[full] for full in seen if full not in own[name]} - {name}
    out: list[str] = []
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in out:
            return
        if name in visiting:
            raise ValueError(f"schema files use each other's types: {' -> '.join(visiting + [name])}")
        visiting.append(name)
        for dep in (n for n in raws if n in uses[name]):
            visit(dep)
        visiting.pop()
        out.append(name)

    for name in raws:
        visit(name)
    return tuple(out)


def _load_all() -> dict[str, dict]:
    """Every topic's schema file, in registry order (topics sharing a schema: once)."""
    names = dict.fromkeys(t.schema_name for t in TOPICS)
    return {name: json.loads((SCHEMA_DIR / f"{name}.avsc").read_text()) for name in names}


_RAW = _load_all()
ORDER: tuple[str, ...] = dependency_order(_RAW)


@lru_cache(maxsize=None)
def expanded(name: str) -> str:
    """The self-contained JSON of a schema, as a registry would store it."""
    raws = _RAW
    if name not in raws:
        raise KeyError(f"no schema {name!r}")
    known: dict = {}
    for other in ORDER[: ORDER.index(name)]:
        _collect(raws[other], None, known)
    return json.dumps(_inline(raws[name], None, known, set()), sort_keys=True)


@lru_cache(maxsize=None)
def parsed(schema_json: str):
    return fastavro.parse_schema(json.loads(schema_json))


def current(name: str):
    """The parsed current schema of a schema name (topic name)."""
    return parsed(expanded(name))


def fingerprint(schema_json: str) -> str:
    canonical = fastavro.schema.to_parsing_canonical_form(json.loads(schema_json))
    return hashlib.sha256(canonical.encode()).hexdigest()


def load_manifest() -> dict:
    return json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}


def history(name: str) -> list[tuple[int, int, str]]:
    """Released versions of a schema: (version, id, schema json), oldest first."""
    out = []
    for entry in load_manifest().get(name, []):
        path = HISTORY_DIR / f"{name}.v{entry['version']}.avsc"
        out.append((entry["version"], entry["id"], path.read_text()))
    return out


def incompatibility(old_json: str, new_json: str, samples: int = 64) -> str | None:
    """Why data written with `old` cannot be read with `new`, or None (backward compatible)."""
    old, new = parsed(old_json), parsed(new_json)
    try:
        for record in generate_many(old, samples):
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, old, record)
            buf.seek(0)
            fastavro.schemaless_reader(buf, old, new)
    except Exception as exc:  # fastavro raises several types for resolution failures
        return f"{type(exc).__name__}: {exc}"
    return None


def bump() -> list[str]:
    """Release every changed schema as a new version; refuse incompatible changes."""
    manifest = load_manifest()
    next_id = 1 + max((e["id"] for es in manifest.values() for e in es), default=0)
    released = []
    HISTORY_DIR.mkdir(exist_ok=True)
    for name in ORDER:
        now = expanded(name)
        versions = history(name)
        if versions and fingerprint(versions[-1][2]) == fingerprint(now):
            continue
        for version, _, old in versions:
            why = incompatibility(old, now)
            if why:
                raise ValueError(f"{name}: not backward compatible with v{version}: {why}")
        version = versions[-1][0] + 1 if versions else 1
        (HISTORY_DIR / f"{name}.v{version}.avsc").write_text(now + "\n")
        manifest.setdefault(name, []).append({"version": version, "id": next_id, "fingerprint": fingerprint(now)})
        released.append(f"{name} v{version} id={next_id}")
        next_id += 1
    MANIFEST.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return released


if __name__ == "__main__":  # python -m topics.schemas  -> release changed schemas
    for line in bump() or ["no schema changed"]:
        print(line)
