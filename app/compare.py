"""Every reading of the model's next character for one prompt, in one panel: the model, the
approximation, the n-gram of the prompt's longest suffix in the corpus, the logit lens at each
block and the committed other-seed models (METHOD.md's noise floor), each with its Hellinger
distance to the model. The reader sees where the neighbours' story sits among the other readings.
"""
from __future__ import annotations

import numpy as np
import torch

from model.gpt import GPT

from .approx import Engine, QuerySettings
from .metrics import hellinger
from .present import top_tokens
from .story import suffix_counts
from .study.baselines.logit_lens import logit_lens


@torch.inference_mode()
def comparisons(engine: Engine, text: str, prompt: str, settings: QuerySettings | None = None,
                seeds: dict[str, GPT] | None = None) -> list[dict]:
    """[{"name", "kind", "hellinger" (to the model), "top" (its 3 first characters), "note"}], the
    model first."""
    chars = engine.tok.chars
    res = engine.query(prompt, settings)
    model = res.model_probs

    def row(name, kind, p, note=""):
        return {"name": name, "kind": kind, "hellinger": float(hellinger(model, p)),
                "top": top_tokens(p, chars, 3), "note": note}

    rows = [row("model", "model", model), row("approximation", "approximation", res.approx,
                                              "the neighbours' follow-on counts, blended")]
    suffix, seen, counts = suffix_counts(text, prompt, chars)
    if counts.sum():
        rows.append(row("n-gram", "ngram", counts / counts.sum(),
                        f"the {len(suffix)} last characters, seen {seen} times in the corpus"))
    else:
        rows.append({"name": "n-gram", "kind": "ngram", "hellinger": None, "top": [],
                     "note": "no ending of the prompt is followed by anything in the corpus"})
    ids = engine.encode(prompt)
    lens = logit_lens(engine.model, ids[None], engine.device)[:, 0]  # (L, V)
    for b in range(len(lens) - 1):  # the last block's lens is the model itself
        rows.append(row(f"logit lens, block {b}", "logit-lens", lens[b],
                        "the final LayerNorm and head on the residual stream after the block"))
    idx = torch.from_numpy(ids.astype(np.int64))[None].to(engine.device)
    for name, m in (seeds or {}).items():
        logits, _ = m(idx[:, -m.cfg.block_size :], last_only=True)
        p = torch.softmax(logits[0, -1].double(), -1).cpu().numpy()
        rows.append(row(name, "seed", p, "the same recipe trained with another seed"))
    return rows
