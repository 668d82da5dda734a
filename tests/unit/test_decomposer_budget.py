"""The decomposer's answer budget: room for the longest answer it learned, and the same budget
when served as when judged."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


class CountTok:
    """One token per character (the tokenizer call shape answer_budget uses)."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": list(range(len(text)))}


def test_the_answer_budget_fits_the_longest_answer_learned():
    """Answers as long as the planner's own plans get room (+25%); short ones keep the default."""
    from triton_models.decomposer import decomposer_net as net
    assert net.answer_budget(CountTok(), ["x" * 10, "y" * 40]) == net.DEFAULT_NEW_TOKENS
    assert net.answer_budget(CountTok(), ["x" * 1000, "y" * 40]) == 1258
    assert net.answer_budget(CountTok(), []) == net.DEFAULT_NEW_TOKENS


def test_a_version_is_served_with_the_budget_it_was_judged_with(tmp_path):
    """Training writes meta.json with max_new_tokens; the served model reads it back (a version
    without one, or with a broken one, is served with the default)."""
    import json

    from triton_models.decomposer import decomposer_net as net
    assert net.served_budget(tmp_path) == net.DEFAULT_NEW_TOKENS
    (tmp_path / "meta.json").write_text(json.dumps({"max_new_tokens": 1458, "accepted": True}))
    assert net.served_budget(tmp_path) == 1458
    (tmp_path / "meta.json").write_text("{not json")
    assert net.served_budget(tmp_path) == net.DEFAULT_NEW_TOKENS
