"""The report's threshold sweep: one block's threshold varied around its value, everything else as
set, with mean Hellinger, top-1 agreement and neighbour-set sizes at each value."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from ..approx import Engine, QuerySettings, blend_or_unigram
from ..metrics import agreement_arrays, hellinger
from ..search import unit
from .evaluation import block_counts
from .prompts import prompt_ids
from .weights import mean_shares


def default_sweep_values(threshold: float) -> list[float]:
    """Thresholds around ``threshold``: 1 - (1 - t) x (4, 2.5, 1.6, 1.25, 1, 0.8, 0.6, 0.4, 0.25),
    clipped to [-1, 1], rounded to 6 places, increasing, without repeats."""
    gap = 1.0 - float(threshold)
    vals = {round(float(np.clip(1.0 - gap * f, -1.0, 1.0)), 6)
            for f in (4, 2.5, 1.6, 1.25, 1, 0.8, 0.6, 0.4, 0.25)}
    return sorted(vals)


def threshold_sweep(engine: Engine, prompts, settings: QuerySettings | None, block: int, values,
                    batch_size: int = 256) -> list[dict]:
    """Mean Hellinger distance, top-1 agreement and neighbour-set sizes when ``block``'s threshold
    takes each of ``values`` and everything else stays as ``settings`` (threshold mode; resolved
    against the store). ``prompts``: pool rows (N,) or token ids (N, T), as for evaluate.

    The result for each value is what :func:`app.study.evaluation.evaluate` gives with that threshold
    (same search, blend and unigram fallback); the forward pass and the other blocks' neighbours
    are computed once and only ``block`` is searched again per value.
    -> [{threshold, mean_h, top1, mean_neighbours, median_neighbours, empty_share,
    self_only_share, fallback_share}]"""
    store = engine.store
    s = replace(settings or QuerySettings(), mode="threshold").resolved(store)
    L = store.n_layer
    if not 0 <= block < L:
        raise ValueError(f"block must be in [0, {L})")
    ids, self_rows = prompt_ids(store, prompts)
    N, V = len(ids), store.counts.vocab_size
    probs = np.zeros((N, V))
    counts = np.zeros((N, L, V))
    queries = []
    for a in range(0, N, batch_size):
        sr = self_rows[a : a + batch_size]
        p, ffn = engine.forward(ids[a : a + len(sr)])
        probs[a : a + len(sr)] = p
        Q = unit(ffn[block])
        ex = torch.from_numpy(sr.copy()) if s.exclude_self else None
        queries.append((a, Q, ex, sr))
        for b in range(L):
            if b != block:
                counts[a : a + len(sr), b] = block_counts(engine, b, unit(ffn[b]), s, ex, sr)[0]
    out = []
    for t in values:
        t = float(t)
        st = replace(s, thresholds=[t if b == block else x for b, x in enumerate(s.thresholds)])
        st = st.resolved(store)  # checks the value
        sizes, hits = np.zeros(N, np.int64), np.zeros(N, np.int64)
        for a, Q, ex, sr in queries:
            c, n, h = block_counts(engine, block, Q, st, ex, sr)
            counts[a : a + len(sr), block] = c
            sizes[a : a + len(sr)], hits[a : a + len(sr)] = n, h
        approx, empty, _, _ = blend_or_unigram(counts, st.weights, st.blend, engine.unigram)
        H = hellinger(probs, approx)
        top1 = agreement_arrays(probs, approx, ks=(1,))[1]["order"]
        out.append({"threshold": t, "mean_h": float(H.mean()) if N else None,
                    "top1": float(top1.mean()) if N else None,
                    "mean_neighbours": float(sizes.mean()) if N else None,
                    "median_neighbours": float(np.median(sizes)) if N else None,
                    "empty_share": float((sizes == 0).mean()) if N else None,
                    "self_only_share": float(((sizes == 1) & (hits == 1)).mean()) if N else None,
                    "fallback_share": float(empty.mean()) if N else None})
    return out


@dataclass
class ThresholdSweep:
    """The report's "sweep" section: ``block``'s threshold (now ``current``) swept over ``points``
    on ``prompts`` prompts of the ``split`` ("tuning" or "all")."""
    block: int
    prompts: int
    split: str
    current: float
    points: list

    def to_json(self) -> dict:
        return asdict(self)


def sweep_section(engine: Engine, prompts, s: QuerySettings, counts: np.ndarray, tune: np.ndarray,
                  block: int | None = None, values=None, n_prompts: int = 256,
                  batch_size: int = 256) -> ThresholdSweep | None:
    """The sweep of ``block`` (default: the block with the largest mean share of the blend, from
    ``counts`` (N, L, V)) over ``values`` (default: :func:`default_sweep_values` around its
    threshold) on the first ``n_prompts`` tuning prompts (all prompts when ``tune`` is empty);
    None unless ``s`` (resolved) is in threshold mode and there are prompts."""
    N = len(counts)
    if s.mode != "threshold" or not N:
        return None
    shares = mean_shares(counts, s.weights, s.blend)
    blk = int(np.argmax(shares)) if block is None else int(block)
    vals = default_sweep_values(s.thresholds[blk]) if values is None else list(values)
    sub = tune if len(tune) else np.arange(N)
    sub = sub[: max(1, n_prompts)]
    prom = np.asarray(prompts)[sub]
    return ThresholdSweep(blk, int(len(sub)), "tuning" if len(tune) else "all",
                          float(s.thresholds[blk]),
                          threshold_sweep(engine, prom, s, blk, vals, batch_size))
