"""Matching goal text against domain knowledge (choice.py picks the strategy from it).

Everything here is a pure function of the goal and the template.
"""
from __future__ import annotations

import re
from dataclasses import replace
from functools import lru_cache

from ..config import DEFAULT_CAPACITIES
from ..model import Goal
from .templates import DomainTemplate, RiskSpec, Unit

MAX_UNITS = 6            # components/functions per goal
MAX_OBJECTIVE_GROUPS = 6  # objectives that get their own task group (the rest: acceptance criteria)


_NON_WORD = re.compile(r"[^a-z0-9&/+\-]+")
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")


def normalize(text: str) -> str:
    return " " + _NON_WORD.sub(" ", text.lower()).strip() + " "


@lru_cache(maxsize=1024)
def _goal_text(parts: tuple[str, ...]) -> str:
    return normalize(" ".join(parts))


def goal_text(goal: Goal) -> str:
    # cached per goal text: one plan asks for it several times (strategy choice, units, risks)
    return _goal_text((goal.title, goal.description, *goal.objectives, *goal.success_criteria))


@lru_cache(maxsize=512)
def _keywords(keywords: tuple[str, ...]) -> tuple[str, ...]:
    """Normalized, non-empty keywords (templates are static: once per keyword set)."""
    return tuple(k for k in (normalize(kw).strip() for kw in keywords) if k)


def _occurs(text: str, k: str) -> bool:
    """`k` occurs in `text` where the preceding character is not [a-z0-9] (a word prefix)."""
    if " " + k in text:           # the common case in normalized text
        return True
    i = text.find(k)
    while i != -1:
        if i == 0 or text[i - 1] not in _ALNUM:
            return True
        i = text.find(k, i + 1)
    return False


@lru_cache(maxsize=4096)
def _hits(text: str, keywords: tuple[str, ...]) -> int:
    return sum(1 for k in _keywords(keywords) if _occurs(text, k))


def hits(text: str, keywords: tuple[str, ...]) -> int:
    """How many keywords occur in normalized `text`, each as a word prefix.

    Cached per (text, keyword set): a plan matches the same goal text against the same
    template keywords several times (strategy choice, units, risks, risk assessment)."""
    return _hits(text, keywords if type(keywords) is tuple else tuple(keywords))


_NON_SLUG = re.compile(r"[^a-z0-9]+")


def slug(text: str, max_len: int = 24) -> str:
    s = _NON_SLUG.sub("-", text.lower()).strip("-")
    if len(s) > max_len:
        s = s[:max_len].rsplit("-", 1)[0] if "-" in s[:max_len] else s[:max_len]
    return s.strip("-") or "x"


def select_units(units: tuple[Unit, ...], text: str, limit: int = MAX_UNITS) -> tuple[Unit, ...]:
    """Core units plus those whose keywords the goal mentions, in template order.

    Over `limit`, keep core units and the most-mentioned others (ties: template order).
    `after` references to units not selected are dropped.
    """
    scored = [(hits(text, u.keywords), i, u) for i, u in enumerate(units)]
    chosen = [(h, i, u) for h, i, u in scored if u.core or h > 0]
    if not chosen:
        chosen = scored[:3]
    if len(chosen) > limit:
        core = [c for c in chosen if c[2].core]
        others = sorted((c for c in chosen if not c[2].core), key=lambda c: (-c[0], c[1]))
        chosen = sorted(core[:limit] + others[: max(0, limit - len(core))], key=lambda c: c[1])
    ids = {u.id for _, _, u in chosen}
    out = []
    for _, _, u in chosen:
        after = tuple(a for a in u.after if a in ids)
        out.append(u if after == u.after else replace(u, after=after))
    return tuple(out)


def order_units(units: tuple[Unit, ...]) -> tuple[Unit, ...]:
    """Topological order by `after`, stable w.r.t. the given order."""
    done: list[Unit] = []
    placed: set[str] = set()
    pending = list(units)
    while pending:
        for u in pending:
            if all(a in placed for a in u.after):
                done.append(u)
                placed.add(u.id)
                pending.remove(u)
                break
        else:  # cycle (templates are checked, so only via hand-built units): keep order
            done.extend(pending)
            break
    return tuple(done)


def matched_risks(goal: Goal, tpl: DomainTemplate) -> tuple[tuple[RiskSpec, int], ...]:
    """(risk, keyword hits) for template risks that apply to the goal: always-on or mentioned."""
    text = goal_text(goal)
    out = []
    for r in tpl.risks:
        h = hits(text, r.keywords)
        if r.always or h > 0:
            out.append((r, h))
    return tuple(out)


def ranked_risks(goal: Goal, tpl: DomainTemplate) -> tuple[RiskSpec, ...]:
    """Applicable risks by exposure: score, boosted by how often the goal mentions them."""
    ms = matched_risks(goal, tpl)
    order = {r.id: i for i, r in enumerate(tpl.risks)}

    def exposure(item: tuple[RiskSpec, int]) -> tuple[float, int]:
        r, h = item
        return (-min(1.0, r.probability * (1 + 0.15 * min(h, 3))) * r.impact, order[r.id])

    return tuple(r for r, _ in sorted(ms, key=exposure))


def peak_unit_demand(units: tuple[Unit, ...]) -> dict[str, float]:
    peak: dict[str, float] = {}
    for u in units:
        for k, v in u.resources.items():
            peak[k] = max(peak.get(k, 0.0), v)
    return peak


def scarce_resources(goal: Goal, units: tuple[Unit, ...]) -> tuple[str, ...]:
    """Resource kinds the goal caps below twice the largest single demand (so work must queue)."""
    caps = goal.constraints.capacities
    if not caps:
        return ()
    peak = peak_unit_demand(units)
    return tuple(sorted(k for k, need in peak.items()
                        if need > 0 and k in caps and caps[k] < 2 * need))


def capacities_for(goal: Goal) -> dict[str, float]:
    return {**DEFAULT_CAPACITIES, **goal.constraints.capacities}
