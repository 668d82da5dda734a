"""The decomposer's generation stops an answer once the validator must reject it as not_json
(decomposer_net.NotJson): prose or a non-JSON fence at the start, or text after a complete JSON
value; an answer that may still be valid JSON goes on."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


class CharTok:
    """One token per character: decode is the characters back."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(int(i)) for i in ids)


def ids(text: str, prompt: str = "PROMPT"):
    return [ord(c) for c in prompt + text]


@pytest.mark.parametrize("text,stop", [
    ("", False), ("  ", False), ("{", False), ('{"tasks": [{"task_id": "t1"', False), ('{"tasks": []}', False),
    ('{"tasks": []}\n', False), ("[", False), ("`", False), ("```", False), ("```js", False),
    ('```json\n{"tasks": []}\n```', False),
    ("Here is the plan", True), ("```python\nimport x", True), ("Sure! {", True),
    ('{"tasks": []} This plan covers', True), ('```json\n{"tasks": []}\n```\nNote: ', True),
])
def test_an_answer_stops_only_once_it_cannot_be_json(text, stop):
    from triton_models.decomposer import decomposer_net as net
    crit = net.NotJson(CharTok(), start=len("PROMPT"))
    rows = torch.tensor([ids(text), ids("{" * max(1, len(text)))[:len("PROMPT") + max(1, len(text))]]) \
        if text else torch.tensor([ids(text)])
    got = crit(rows, None)
    assert bool(got[0]) is stop
    if len(got) > 1:
        assert not bool(got[1])   # per answer: the other row of the batch goes on


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
