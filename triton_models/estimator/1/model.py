"""Triton Python-backend model: task duration quantiles and failure probability.

Inputs TEXT (bytes) and FEATURES (fp32, feature 0 = log template hours); outputs DURATION
(hours: low, median, high = the 10/50/90% quantiles) and FAILURE_P. A version folder holds
this file and, once trained, `head.pt`, `meta.json` and an optional LoRA `adapter/`; version 1
ships none of them and reproduces the template heuristic. The requests of a dynamic batch
are concatenated and run as one forward pass: that is what batching buys here.
"""
import json
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from estimator_net import Encoder, load_head


class TritonPythonModel:
    def initialize(self, args):
        torch.set_num_threads(max(1, torch.get_num_threads()))
        cfg = json.loads(args["model_config"])
        self.feature_dim = int(next(i for i in cfg["input"] if i["name"] == "FEATURES")["dims"][0])
        here = Path(args["model_repository"]) / args["model_version"]
        self.encoder = Encoder(adapter=here / "adapter")
        self.head, self.meta = load_head(here, self.feature_dim)
        pb_utils.Logger.log_info(f"estimator v{args['model_version']} ready: {self.meta}")

    def execute(self, requests):
        texts, feats, sizes = [], [], []
        for r in requests:
            t = pb_utils.get_input_tensor_by_name(r, "TEXT").as_numpy().reshape(-1)
            f = pb_utils.get_input_tensor_by_name(r, "FEATURES").as_numpy().reshape(len(t), -1)
            texts += [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in t]
            feats.append(f)
            sizes.append(len(t))
        with torch.inference_mode():
            emb = self.encoder.encode(texts)
            logq, logit = self.head(emb, torch.from_numpy(np.concatenate(feats).astype(np.float32)))
            hours = torch.exp(logq).numpy().astype(np.float32)
            p = torch.sigmoid(logit).numpy().astype(np.float32).reshape(-1, 1)
        out, i = [], 0
        for n in sizes:
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("DURATION", hours[i:i + n]),
                                                   pb_utils.Tensor("FAILURE_P", p[i:i + n])]))
            i += n
        return out
