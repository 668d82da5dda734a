"""Domain templates: domain knowledge as data (processors/templates/*.toml).

Parsing is pure (`parse_template(text)`, `template_from_dict(d)`); the packaged TOML
files are static package data, read once per domain through importlib.resources.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
import importlib.resources as _pkg_resources
from typing import Any, Mapping

from ..execution import ACTIVITY_KINDS
from ..model import RESOURCE_KINDS, RiskCategory

BUILTIN_DOMAINS: tuple[str, ...] = ("software", "data_ml", "infrastructure", "research", "generic")
FALLBACK_DOMAIN = "generic"
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")


class TemplateError(ValueError):
    """A template that does not describe a usable domain."""


@dataclass(frozen=True)
class Activity:
    id: str
    name: str                      # may contain "{name}" (the component/function name)
    phase: str
    kind: str = "build"
    estimate: tuple[float, float, float] = (1.0, 2.0, 4.0)
    resources: dict[str, float] = field(default_factory=dict)
    capabilities: tuple[str, ...] = ()
    success: tuple[str, ...] = ()
    validation: tuple[str, ...] = ()


@dataclass(frozen=True)
class Unit:
    """A component (hierarchical) or a system function (functional)."""

    id: str
    name: str
    keywords: tuple[str, ...] = ()
    core: bool = False
    after: tuple[str, ...] = ()
    effort: float = 1.0
    capabilities: tuple[str, ...] = ()
    resources: dict[str, float] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class PhaseSpec:
    id: str
    name: str
    activities: tuple[Activity, ...] = ()


@dataclass(frozen=True)
class RiskSpec:
    id: str
    category: RiskCategory
    title: str
    probability: float
    impact: float
    keywords: tuple[str, ...] = ()
    always: bool = False
    components: tuple[str, ...] = ()
    mitigations: tuple[str, ...] = ()
    mitigation_task: Activity | None = None


@dataclass(frozen=True)
class DomainTemplate:
    name: str
    description: str
    aliases: tuple[str, ...]
    keywords: tuple[str, ...]
    preferred_strategy: str
    phases: tuple[PhaseSpec, ...]
    components: tuple[Unit, ...]
    component_activities: tuple[Activity, ...]
    functions: tuple[Unit, ...]
    function_activities: tuple[Activity, ...]
    risks: tuple[RiskSpec, ...] = ()

    def phase_index(self, phase_id: str) -> int:
        for i, p in enumerate(self.phases):
            if p.id == phase_id:
                return i
        raise KeyError(phase_id)

    def phase(self, phase_id: str) -> PhaseSpec:
        return self.phases[self.phase_index(phase_id)]


# ---------------------------------------------------------------- parsing (pure)

def _str(d: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    v = d.get(key, default)
    if not isinstance(v, str) or (default is None and not v):
        raise TemplateError(f"{where}: '{key}' must be a non-empty string")
    return v


def _strs(d: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    v = d.get(key, [])
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise TemplateError(f"{where}: '{key}' must be a list of strings")
    return tuple(v)


def _num(d: Mapping[str, Any], key: str, where: str, default: float) -> float:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TemplateError(f"{where}: '{key}' must be a number")
    return float(v)


def _resources(d: Mapping[str, Any], where: str) -> dict[str, float]:
    v = d.get("resources", {})
    if not isinstance(v, Mapping):
        raise TemplateError(f"{where}: 'resources' must be a table")
    out: dict[str, float] = {}
    for k, amount in v.items():
        if k not in RESOURCE_KINDS:
            raise TemplateError(f"{where}: unknown resource kind {k!r} (known: {', '.join(RESOURCE_KINDS)})")
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
            raise TemplateError(f"{where}: resource {k!r} must be a non-negative number")
        out[k] = float(amount)
    return out


def _estimate(d: Mapping[str, Any], where: str) -> tuple[float, float, float]:
    v = d.get("estimate")
    if (not isinstance(v, list) or len(v) != 3
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)):
        raise TemplateError(f"{where}: 'estimate' must be [optimistic, most_likely, pessimistic]")
    o, m, p = (float(x) for x in v)
    if not 0 <= o <= m <= p:
        raise TemplateError(f"{where}: estimate must satisfy 0 <= optimistic <= most_likely <= pessimistic")
    return (o, m, p)


def _id(d: Mapping[str, Any], where: str) -> str:
    v = _str(d, "id", where)
    if not _ID_RE.match(v):
        raise TemplateError(f"{where}: id {v!r} must be lowercase letters, digits and dashes")
    return v


def _activity(d: Any, where: str, phase: str | None = None, default_id: str | None = None) -> Activity:
    if not isinstance(d, Mapping):
        raise TemplateError(f"{where}: must be a table")
    aid = default_id if default_id is not None and "id" not in d else _id(d, where)
    kind = d.get("kind", "mitigation" if default_id else "build")
    if kind not in ACTIVITY_KINDS:
        raise TemplateError(f"{where}: unknown kind {kind!r}")
    return Activity(
        id=aid,
        name=_str(d, "name", where),
        phase=phase if phase is not None else _str(d, "phase", where),
        kind=kind,
        estimate=_estimate(d, where),
        resources=_resources(d, where),
        capabilities=_strs(d, "capabilities", where),
        success=_strs(d, "success", where),
        validation=_strs(d, "validation", where),
    )


def _unit(d: Any, where: str) -> Unit:
    if not isinstance(d, Mapping):
        raise TemplateError(f"{where}: must be a table")
    effort = _num(d, "effort", where, 1.0)
    if effort <= 0:
        raise TemplateError(f"{where}: effort must be > 0")
    return Unit(
        id=_id(d, where),
        name=_str(d, "name", where),
        keywords=tuple(k.lower() for k in _strs(d, "keywords", where)),
        core=bool(d.get("core", False)),
        after=_strs(d, "after", where),
        effort=effort,
        capabilities=_strs(d, "capabilities", where),
        resources=_resources(d, where),
        description=str(d.get("description", "")),
    )


def _risk(d: Any, where: str) -> RiskSpec:
    if not isinstance(d, Mapping):
        raise TemplateError(f"{where}: must be a table")
    rid = _id(d, where)
    try:
        category = RiskCategory(str(d.get("category", "")).upper())
    except ValueError:
        raise TemplateError(f"{where}: unknown risk category {d.get('category')!r}") from None
    p, i = _num(d, "probability", where, -1), _num(d, "impact", where, -1)
    if not (0 <= p <= 1 and 0 <= i <= 1):
        raise TemplateError(f"{where}: probability and impact must be within 0..1")
    mt = d.get("mitigation_task")
    return RiskSpec(
        id=rid, category=category, title=_str(d, "title", where), probability=p, impact=i,
        keywords=tuple(k.lower() for k in _strs(d, "keywords", where)),
        always=bool(d.get("always", False)),
        components=_strs(d, "components", where),
        mitigations=_strs(d, "mitigations", where),
        mitigation_task=None if mt is None else _activity(mt, f"{where}.mitigation_task", phase="mitigation",
                                                          default_id=f"mitigate-{rid}"),
    )


def _check_unique(items: tuple[Any, ...], where: str) -> None:
    seen: set[str] = set()
    for it in items:
        if it.id in seen:
            raise TemplateError(f"{where}: duplicate id {it.id!r}")
        seen.add(it.id)


def _check_units(units: tuple[Unit, ...], where: str) -> None:
    _check_unique(units, where)
    ids = {u.id for u in units}
    for u in units:
        for a in u.after:
            if a not in ids:
                raise TemplateError(f"{where}.{u.id}: 'after' names unknown {a!r}")
    # no cycles among units
    state: dict[str, int] = {}
    by_id = {u.id: u for u in units}

    def visit(uid: str, stack: tuple[str, ...]) -> None:
        if state.get(uid) == 2:
            return
        if state.get(uid) == 1:
            raise TemplateError(f"{where}: cyclic 'after': {' -> '.join(stack + (uid,))}")
        state[uid] = 1
        for a in by_id[uid].after:
            visit(a, stack + (uid,))
        state[uid] = 2

    for u in units:
        visit(u.id, ())


def template_from_dict(d: Mapping[str, Any]) -> DomainTemplate:
    """Build a DomainTemplate from a parsed TOML document; raises TemplateError."""
    if not isinstance(d, Mapping):
        raise TemplateError("template must be a table")
    name = _str(d, "name", "template")
    where = f"template {name!r}"
    phases = tuple(
        PhaseSpec(
            id=_id(p, f"{where}.phases[{i}]"),
            name=_str(p, "name", f"{where}.phases[{i}]", default=p.get("id", "")),
            activities=tuple(_activity(a, f"{where}.phases[{i}].activities[{j}]", phase=p["id"])
                             for j, a in enumerate(p.get("activities", []))),
        )
        for i, p in enumerate(d.get("phases", []))
    )
    if not phases:
        raise TemplateError(f"{where}: needs at least one phase")
    _check_unique(phases, f"{where}.phases")
    phase_ids = {p.id for p in phases}
    project_acts = tuple(a for p in phases for a in p.activities)
    _check_unique(project_acts, f"{where}.phases.activities")
    components = tuple(_unit(u, f"{where}.components[{i}]") for i, u in enumerate(d.get("components", [])))
    functions = tuple(_unit(u, f"{where}.functions[{i}]") for i, u in enumerate(d.get("functions", [])))
    comp_acts = tuple(_activity(a, f"{where}.component_activities[{i}]")
                      for i, a in enumerate(d.get("component_activities", [])))
    fn_acts = tuple(_activity(a, f"{where}.function_activities[{i}]")
                    for i, a in enumerate(d.get("function_activities", [])))
    if not components or not comp_acts:
        raise TemplateError(f"{where}: needs components and component_activities")
    if not functions or not fn_acts:
        raise TemplateError(f"{where}: needs functions and function_activities")
    _check_units(components, f"{where}.components")
    _check_units(functions, f"{where}.functions")
    for label, acts in (("component_activities", comp_acts), ("function_activities", fn_acts)):
        _check_unique(acts, f"{where}.{label}")
        for a in acts:
            if a.phase not in phase_ids:
                raise TemplateError(f"{where}.{label}.{a.id}: unknown phase {a.phase!r}")
    risks = tuple(_risk(r, f"{where}.risks[{i}]") for i, r in enumerate(d.get("risks", [])))
    _check_unique(risks, f"{where}.risks")
    preferred = d.get("preferred_strategy", "hierarchical")
    return DomainTemplate(
        name=name,
        description=str(d.get("description", "")),
        aliases=tuple(a.lower() for a in _strs(d, "aliases", where)) or (name,),
        keywords=tuple(k.lower() for k in _strs(d, "keywords", where)),
        preferred_strategy=str(preferred),
        phases=phases,
        components=components,
        component_activities=comp_acts,
        functions=functions,
        function_activities=fn_acts,
        risks=risks,
    )


def parse_template(text: str) -> DomainTemplate:
    """Parse a template from TOML text (pure)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise TemplateError(f"template is not valid TOML: {e}") from None
    return template_from_dict(data)


# ---------------------------------------------------------------- packaged templates

@lru_cache(maxsize=None)
def builtin_template(name: str) -> DomainTemplate:
    """One of BUILTIN_DOMAINS, read once from the package's templates/ folder."""
    if name not in BUILTIN_DOMAINS:
        raise KeyError(name)
    text = _pkg_resources.files("processors").joinpath("templates", f"{name}.toml").read_text(encoding="utf-8")
    return parse_template(text)


def builtin_templates() -> tuple[DomainTemplate, ...]:
    return tuple(builtin_template(n) for n in BUILTIN_DOMAINS)


def _norm_domain(domain: str) -> str:
    return re.sub(r"[\s_]+", "_", (domain or "").strip().lower())


def resolve_domain(domain: str, templates: tuple[DomainTemplate, ...] | None = None) -> DomainTemplate:
    """Template for a goal's domain: by name or alias (case/space-insensitive), else generic."""
    if templates is None:
        return _resolve_builtin(domain)
    return _resolve(domain, templates)


@lru_cache(maxsize=256)
def _resolve_builtin(domain: str) -> DomainTemplate:
    return _resolve(domain, builtin_templates())


def _resolve(domain: str, templates: tuple[DomainTemplate, ...]) -> DomainTemplate:
    want = _norm_domain(domain)
    for t in templates:
        if want == _norm_domain(t.name) or want in {_norm_domain(a) for a in t.aliases}:
            return t
    want_dash = want.replace("_", "-")
    for t in templates:
        if want_dash in {a.replace("_", "-") for a in t.aliases}:
            return t
    for t in templates:
        if t.name == FALLBACK_DOMAIN:
            return t
    return templates[-1]
