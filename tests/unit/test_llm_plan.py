"""The decomposer's output is validated like any explicit breakdown: bad answers are rejected
with a reason (and so never planned or published)."""
from __future__ import annotations

import json

import pytest

from processors import llm_plan
from processors.model import Goal, TaskSpec

GOAL = Goal(goal_id="g-llm", title="Launch billing API", created_at_ms=1, objectives=("Design the API", "Build it"))


def _t(tid, name, hours=2.0, deps=(), **extra):
    return {"task_id": tid, "name": name, "duration_hours": hours, "depends_on": list(deps), **extra}


GOOD = [_t("b", "Build the billing service", 8, ["a"]), _t("a", "Design the API", 3)]


def test_a_valid_answer_becomes_ordered_task_specs():
    specs = llm_plan.parse(json.dumps({"tasks": GOOD}), GOAL)
    assert [s.task_id for s in specs] == ["a", "b"] and specs[1].depends_on == ("a",)
    fenced = "```json\n" + json.dumps(GOOD) + "\n```"
    assert llm_plan.parse(fenced, GOAL) == specs


@pytest.mark.parametrize("text, reason", [
    ("Sure! First design the API, then build it.", "not_json"),
    ("Here is the plan:\n```json\n" + json.dumps(GOOD) + "\n```\nGood luck!", "not_json"),
    (json.dumps({"tasks": [_t("a", "Design the API", 1, ["b"]), _t("b", "Build", 1, ["a"])]}), "cyclic_dependency"),
    (json.dumps({"tasks": [_t("a", "Design the API", priority="high"), _t("b", "Build")]}), "unknown_field"),
    (json.dumps({"tasks": GOOD, "notes": "extra"}), "unknown_field"),
    (json.dumps({"tasks": [_t("a", "Design the API"), _t("b", "Build", deps=["zz"])]}), "dangling_dependency"),
    (json.dumps({"tasks": [_t("a", "Design the API", -1), _t("b", "Build")]}), "negative_duration"),
    (json.dumps({"tasks": [{"task_id": "a", "name": "Design the API"}]}), "missing_field"),
    (json.dumps({"tasks": [_t("a", "Design the API", "3h")]}), "wrong_type"),
    (json.dumps({"tasks": []}), "no_tasks"),
    (json.dumps({"tasks": [_t("a", "Write docs"), _t("b", "Deploy")]}), "objectives_not_covered"),
    (json.dumps({"tasks": [_t("a", "Design the API"), _t("a", "Build")]}), "duplicate_task"),
])
def test_invalid_answers_are_rejected_with_a_reason(text, reason):
    with pytest.raises(llm_plan.Rejected) as info:
        llm_plan.parse(text, GOAL)
    assert info.value.reason == reason, info.value


def _specs(*names):
    return tuple(TaskSpec(f"t{i}", n, 1.0) for i, n in enumerate(names))


@pytest.mark.parametrize("objective, names, covered", [
    ("Design the API", ["Gather requirements"], False),        # "the" inside "gather" covered it once
    ("Design the API", ["Theorise", "Apiary tour"], False),    # parts of words are not words
    ("Build it", ["Submit the form"], False),                  # "it" is a stop-word, "build" is absent
    ("Design the API", ["Write the API spec"], True),          # a whole word in common
    ("Deploy to production", ["Deployment checklist"], True),  # one word the start of the other (4+ letters)
    ("Set up CI", ["Configure ci runners"], True),             # short words count when not stop-words
    ("Do it", ["Do it now"], False),                           # stop-words only: nothing to check
])
def test_an_objective_is_covered_by_whole_words_never_by_stop_words(objective, names, covered):
    goal = Goal(goal_id="g", title="t", created_at_ms=1, objectives=(objective,))
    assert llm_plan.uncovered(goal, _specs(*names)) == ([] if covered else [objective])


def test_stop_words_are_one_list_and_never_words():
    assert {"the", "and", "to", "it"} <= llm_plan.STOP_WORDS
    assert llm_plan.words("Design THE api, and the UI") == {"design", "api", "ui"}
