"""Structured decoding: the model writes a task list's content, never its JSON syntax.

Why: a 135M model asked for 500-1,100 tokens of JSON drifts (a quote or a bracket missing is
a `not_json` rejection) and most of what it writes is syntax it cannot get wrong if it never
has to choose it. Here the answer's shape is fixed: `{"tasks":[{"task_id":"t1","name":"...",
"duration_hours":N,"depends_on":[...]}, ...]}`; the ids are numbered for it, the model chooses
only each name (tokens without quote, backslash or control characters), each duration (digits
that keep a JSON number), which *earlier* tasks each depends on (so no cycle, no unknown id)
and whether another task follows. Forced text is fed in one forward pass ("jump forward").

Training tokenises an answer the same way, one segment at a time (`segments`, `ids`), so the
adapter learns exactly the token sequences this decoder offers it. No JSON-schema library
expresses "depends only on earlier ids" or feeds forced spans at once; this is small and exact.
The validator (processors/llm_plan.py) still judges every answer. Pure torch: no chimera imports.
"""
from __future__ import annotations

import json
import re

import torch

MAX_TASKS = 64          # a hard cap on tasks per answer (the validator allows 200)
MAX_NAME_TOKENS = 48    # a name this long is closed by force
MAX_NUMBER_TOKENS = 8
_NUMBER_PREFIX = re.compile(r"(0|[1-9]\d{0,3})?|(0|[1-9]\d{0,3})\.\d{0,2}")
_NUMBER = re.compile(r"(0|[1-9]\d{0,3})(\.\d{1,2})?")


def head(k: int) -> str:
    """The forced text that opens task k (1-based), up to its name's opening quote."""
    return ('{"tasks":[' if k == 1 else ',') + '{"task_id":"t%d","name":"' % k


AFTER_NAME = '","duration_hours":'
AFTER_NUMBER = ',"depends_on":['
CLOSE_TASK = "]}"
END = "]}"


def dep(j: int, first: bool) -> str:
    return ('"t%d"' if first else ',"t%d"') % j


def finish_number(text: str) -> str:
    """What to append to a number cut short so that it is a positive JSON number ("" if it is)."""
    if _NUMBER.fullmatch(text) and float(text) > 0:
        return ""
    if "." in text:
        return "1"          # "3." -> "3.1", "0.0" -> "0.01"
    return ".1" if text else "1"


def number_text(x: float) -> str:
    """A duration as the decoder can write it: as json.dumps writes it, floats to two decimals."""
    return json.dumps(x if isinstance(x, int) and not isinstance(x, bool) else round(float(x), 2))


def segments(tasks: list[dict]) -> list[str]:
    """The answer as the decoder writes it, cut where it switches between forced text and the
    model's choices; ''.join(segments(t)) is the compact JSON answer. Tasks are numbered t1..tn
    in order and may depend only on earlier ones (as the training answers are)."""
    out: list[str] = []
    for k, t in enumerate(tasks, 1):
        if k == 1:
            out.append(head(1))
        out += [t["name"], AFTER_NAME, number_text(t["duration_hours"]), AFTER_NUMBER]
        out += [dep(int(d[1:]), i == 0) for i, d in enumerate(t.get("depends_on", []))]
        out.append(CLOSE_TASK + (head(k + 1) if k < len(tasks) else END))
    return out


def writable(tasks: list[dict]) -> bool:
    """Whether the decoder could write this answer (ids t1..tn in order, earlier dependencies
    only, names without quotes/backslashes/control characters, durations it can spell)."""
    for k, t in enumerate(tasks, 1):
        if t.get("task_id") != f"t{k}" or not isinstance(t.get("name"), str) or not t["name"] \
                or any(c in '"\\' or ord(c) < 32 for c in t["name"]):
            return False
        deps = t.get("depends_on", [])
        if len(set(deps)) != len(deps) or not all(re.fullmatch(r"t[1-9]\d*", d) and int(d[1:]) < k for d in deps):
            return False
        if not _NUMBER.fullmatch(number_text(t["duration_hours"])) or float(t["duration_hours"]) <= 0:
            return False
    return 0 < len(tasks) <= MAX_TASKS


def ids(tok, tasks: list[dict]) -> list[int]:
    """The answer's token ids, segment by segment (the decoder's own tokenisation)."""
    return [i for s in segments(tasks) for i in _enc(tok, s)]


def _enc(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


class Vocab:
    """Which tokens may continue a name or a number, worked out once per tokenizer."""

    _cache: dict[int, tuple[object, "Vocab"]] = {}

    def __init__(self, tok):
        n = len(tok)
        special = set(getattr(tok, "all_special_ids", []))
        texts = [tok.decode([i]) for i in range(n)]
        name = torch.zeros(n, dtype=torch.bool)
        self.digits: dict[int, str] = {}
        for i, s in enumerate(texts):
            if i in special or not s or "\ufffd" in s:
                continue
            if not any(c in '"\\' or ord(c) < 32 or ord(c) == 127 for c in s):
                name[i] = True
            if all(c in "0123456789." for c in s):
                self.digits[i] = s
        self.name = name

    @classmethod
    def of(cls, tok) -> "Vocab":
        hit = cls._cache.get(id(tok))
        if hit is None or hit[0] is not tok:
            hit = cls._cache[id(tok)] = (tok, cls(tok))
        return hit[1]


class _Decoder:
    """One answer: feeds forced tokens, asks the model only where it has a choice."""

    def __init__(self, tok, model, prompt_ids: list[int], budget: int):
        self.tok, self.model, self.budget = tok, model, budget
        self.vocab = Vocab.of(tok)
        self.pending = list(prompt_ids)
        self.cache = None
        self.written: list[int] = []
        self._ids: dict[str, list[int]] = {}

    def enc(self, text: str) -> list[int]:
        got = self._ids.get(text)
        if got is None:
            got = self._ids[text] = _enc(self.tok, text)
        return got

    def closing(self) -> bool:
        return len(self.written) >= self.budget

    def _logits(self) -> torch.Tensor:
        out = self.model(input_ids=torch.tensor([self.pending]), past_key_values=self.cache, use_cache=True)
        self.cache, self.pending = out.past_key_values, []
        return out.logits[0, -1]

    def _take(self, toks: list[int]) -> None:
        self.pending += toks
        self.written += toks

    def force(self, text: str) -> None:
        self._take(self.enc(text))

    def choose(self, options: list[str]) -> int:
        """Which of `options` (texts) the model writes, walking their tokens as a trie."""
        seqs = [self.enc(o) for o in options]
        live = list(range(len(seqs)))
        pos = 0
        while True:
            done = [i for i in live if len(seqs[i]) == pos]
            if done:
                return done[0]
            nxt = {seqs[i][pos] for i in live}
            if len(nxt) == 1:
                t = nxt.pop()
            else:
                logits = self._logits()
                cand = torch.tensor(sorted(nxt))
                t = int(cand[int(torch.argmax(logits[cand]))])
            self._take([t])
            live = [i for i in live if seqs[i][pos] == t]
            pos += 1

    def name(self) -> None:
        """Name tokens until the model closes the name (writes AFTER_NAME's first token); a name
        has at least one token."""
        end = self.enc(AFTER_NAME)
        for n in range(MAX_NAME_TOKENS):
            if self.closing():
                if n == 0:
                    self.force("Task")
                break
            logits = self._logits()
            allowed = self.vocab.name.clone()
            allowed[end[0]] = n > 0
            t = int(torch.argmax(torch.where(allowed, logits, torch.tensor(float("-inf")))))
            if n > 0 and t == end[0]:
                self._take(end)
                return
            self._take([t])
        self.force(AFTER_NAME)

    def number(self) -> None:
        """Digits while they keep a JSON number (at most four before the point, two after); then
        AFTER_NUMBER once the model writes its first token and the number is a positive one."""
        end = self.enc(AFTER_NUMBER)
        text = ""
        for _ in range(MAX_NUMBER_TOKENS):
            complete = bool(_NUMBER.fullmatch(text)) and float(text) > 0
            if self.closing():
                break
            cand = [i for i, s in self.vocab.digits.items() if _NUMBER_PREFIX.fullmatch(text + s)]
            if complete:
                cand.append(end[0])
            if not cand:
                break
            logits = self._logits()
            c = torch.tensor(cand)
            t = int(c[int(torch.argmax(logits[c]))])
            if complete and t == end[0]:
                self._take(end)
                return
            self._take([t])
            text += self.vocab.digits[t]
        self.force(finish_number(text) + AFTER_NUMBER)

    def task(self, k: int) -> bool:
        """Task k after its head; True when another task follows."""
        self.name()
        self.number()
        chosen: list[int] = []
        while True:
            more = k < MAX_TASKS and not self.closing()
            ends = [CLOSE_TASK + head(k + 1)] if more else []
            ends.append(CLOSE_TASK + END)
            deps = [] if self.closing() else [j for j in range(1, k) if j not in chosen]
            pick = self.choose(ends + [dep(j, not chosen) for j in deps])
            if pick < len(ends):
                return more and pick == 0
            chosen.append(deps[pick - len(ends)])


@torch.inference_mode()
def answer(tok, model, prompt_ids: list[int], budget: int) -> str:
    """The model's task list for one prompt, always JSON of the answer's shape; past `budget`
    new tokens every open field and the list are closed at once."""
    d = _Decoder(tok, model, prompt_ids, budget)
    d.force(head(1))
    k = 1
    while d.task(k):
        k += 1
    return tok.decode(d.written, skip_special_tokens=True)
