"""The logit-lens baseline: the model's final LayerNorm and head applied to the residual stream after
a block (last position); the last block's is the model's own softmax."""
from __future__ import annotations

import numpy as np
import torch

from model.gpt import GPT

from .common import Prediction, as_prompts


@torch.inference_mode()
def logit_lens(model: GPT, prompts_ids, device: str = "cpu", batch: int = 256) -> np.ndarray:
    """(B, T) ids -> (L, B, V) float64: softmax(head(ln_f(residual after block i))) at the last
    position, for every block i. The last block's is the model's own next-character softmax
    (computed exactly as the model computes it: float32 LayerNorm and head, softmax in float64).
    Uses the residual streams the forward pass records (:meth:`model.gpt.GPT.read_last`)."""
    ids = np.atleast_2d(np.asarray(prompts_ids)).astype(np.int64)
    model.eval()
    out = []
    for a in range(0, len(ids), batch):
        idx = torch.from_numpy(ids[a:a + batch]).to(device)
        _, resid = model.read_last(idx, "resid", head=False)  # (L, b, C)
        logits = model.head(model.ln_f(resid))
        out.append(torch.softmax(logits.double(), -1).cpu().numpy())
    if not out:
        return np.zeros((model.cfg.n_layer, 0, model.cfg.vocab_size))
    return np.concatenate(out, axis=1)


class LogitLens:
    """The logit lens at one block (default: the last, i.e. the model itself) as a baseline."""

    def __init__(self, model: GPT, block: int = -1, device: str = "cpu"):
        L = model.cfg.n_layer
        if not -L <= block < L:
            raise ValueError(f"block must be in [{-L}, {L}), got {block}")
        self.model, self.block, self.device = model, block % L, device
        self.vocab_size = model.cfg.vocab_size
        self.name = f"logit-lens-{self.block}"

    def predict(self, prompts_ids) -> Prediction:
        p = as_prompts(prompts_ids, self.vocab_size)
        probs = logit_lens(self.model, p, self.device)[self.block]
        return Prediction(probs, np.zeros(len(p), dtype=bool))

    def distributions(self, prompts_ids) -> np.ndarray:
        return self.predict(prompts_ids).probs
