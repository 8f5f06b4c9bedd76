"""The model run without some of its sublayers, beside the unmodified model (METHOD.md's
intervention figures, for one prompt, live).

:func:`intervention_dict` describes one intervened answer against the unmodified model;
:func:`sublayer_effects` drops each block's attention output and each block's FFN output in turn
and measures how far the model's next-character distribution moves (Hellinger distance to the
unmodified model), one forward pass each.
"""
from __future__ import annotations

import time

import numpy as np

from model.gpt import Intervention

from .approx import Engine
from .metrics import hellinger
from .present import top_tokens


def intervention_dict(engine: Engine, prompt: str, iv: Intervention, intervened: np.ndarray) -> dict:
    """The intervention as data: the sublayers dropped, the unmodified model's distribution (its
    top characters) and H between it and the intervened model's ``intervened`` (V,)."""
    original, _ = engine.forward(engine.encode(prompt))
    chars = engine.tok.chars
    return {"drop_attn": sorted(iv.drop_attn), "drop_ffn": sorted(iv.drop_ffn),
            "original_top": top_tokens(original, chars),
            "original": dict(zip(chars, np.asarray(original, dtype=float).tolist())),
            "hellinger_to_original": float(hellinger(original, intervened))}


def sublayer_effects(engine: Engine, prompt: str) -> dict:
    """For each block, H between the unmodified model and the model without that block's attention
    output, and without its FFN output, with each one's most likely next character."""
    ids = engine.encode(prompt)
    chars = engine.tok.chars
    t0 = time.perf_counter()
    base, _ = engine.forward(ids)
    rows = []
    for b in range(engine.model.cfg.n_layer):
        row = {"block": b}
        for name, iv in (("drop_attn", Intervention(drop_attn=frozenset({b}))),
                         ("drop_ffn", Intervention(drop_ffn=frozenset({b})))):
            p, _ = engine.forward(ids, iv)
            row[name] = {"hellinger": float(hellinger(base, p)), "top": top_tokens(p, chars, 3)}
        rows.append(row)
    return {"prompt": prompt, "model_top": top_tokens(base, chars, 3), "blocks": rows,
            "timing": {"forward": 1e3 * (time.perf_counter() - t0)}}
