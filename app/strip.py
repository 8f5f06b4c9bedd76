"""The prompt strip: every position of a prompt answered at once.

Position i stands for the prefix ``prompt[: i + 1]``: the model's distribution after it, the
approximation's, and the Hellinger distance between them. The answers are those of single queries
of each prefix (:meth:`app.approx.Engine.query`), computed together: the model is causal, so one
forward pass over the whole prompt gives every prefix's distribution and every block's output at
every position, and each block's search runs once as a batch over the positions.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from model.gpt import Intervention, Trace

from .approx import Engine, QuerySettings, blend_or_unigram
from .metrics import hellinger
from .search import unit
from .study.evaluation import block_counts

TOP = 3  # characters listed per side and position


def _top(tok_chars: str, p: np.ndarray, k: int = TOP) -> list[list]:
    order = np.argsort(-p, kind="stable")[:k]
    return [[tok_chars[int(i)], round(float(p[i]), 4)] for i in order]


@torch.inference_mode()
def strip(engine: Engine, prompt: str, settings: QuerySettings | None = None,
          intervention: Intervention | None = None) -> dict:
    """Every position of ``prompt``: its character, the model's and the approximation's most likely
    next characters, H between them, and each block's neighbour count; with the time spent in the
    forward pass, the searches and the blend (milliseconds). With ``intervention``, all of it is
    the model's without the sublayers it names (as :meth:`Engine.query` with it)."""
    s = (settings or QuerySettings()).resolved(engine.store)
    ids = engine.encode(prompt)
    store, T, chars = engine.store, len(ids), engine.tok.chars
    t0 = time.perf_counter()
    trace = Trace()
    idx = torch.from_numpy(ids.astype(np.int64))[None].to(engine.device)
    logits, _ = engine.model(idx, trace=trace, intervention=intervention)
    probs = torch.softmax(logits[0].double(), -1).cpu().numpy()  # (T, V)
    Q = unit(torch.stack([t[0].float() for t in getattr(trace, engine.activation)]))  # (L, T, C)
    t1 = time.perf_counter()
    n = store.pool.n
    self_rows = np.array([store.find(ids[i + 1 - n : i + 1]) if i + 1 >= n else None
                          for i in range(T)], dtype=object)
    own = np.array([-1 if r is None else int(r) for r in self_rows], dtype=np.int64)
    exclude = torch.from_numpy(own) if s.exclude_self else None
    counts, sizes = [], []
    for b in range(store.n_layer):
        c, m, _ = block_counts(engine, b, Q[b], s, exclude)
        counts.append(c)
        sizes.append(m)
    counts = np.stack(counts, 1).astype(np.float64)  # (T, L, V)
    t2 = time.perf_counter()
    approx, empty, _, _ = blend_or_unigram(counts, s.weights, s.blend, engine.unigram)
    H = hellinger(probs, approx)
    positions = []
    for i in range(T):
        m_top, a_top = _top(chars, probs[i]), _top(chars, approx[i])
        positions.append({
            "pos": i, "char": prompt[i], "hellinger": round(float(H[i]), 4),
            "model": m_top, "approx": a_top, "agree_top1": m_top[0][0] == a_top[0][0],
            "neighbours": [int(sz[i]) for sz in sizes], "fallback": "unigram" if empty[i] else None,
            "in_pool": bool(own[i] >= 0)})
    t3 = time.perf_counter()
    return {"prompt": prompt, "positions": positions,
            "mean_hellinger": round(float(H.mean()), 4),
            "agree_top1": round(float(np.mean([p["agree_top1"] for p in positions])), 4),
            "timing": {"forward": 1e3 * (t1 - t0), "search": 1e3 * (t2 - t1),
                       "blend": 1e3 * (t3 - t2)}}
