"""Batched evaluation and per-model threshold calibration.

Many prompts go through one forward pass and one matrix product per store chunk; thresholds are
applied chunk by chunk, so the full prompts x pool similarity matrix is never held.
"""
from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np
import torch
from tqdm import tqdm

from .approx import TOPK, Engine, QuerySettings, blend, hellinger, ranking
from .search import unit
from .store import Store

# Neighbour-set sizes of the reference model at its thresholds on the prompt "And only l"
# (METHOD.md), over a pool of 858,923 strings: the targets of the "reference-sizes" rule.
REFERENCE_SIZES = (94, 47, 70, 108, 175, 2237)
REFERENCE_POOL = 858_923


def reference_prompts(store: Store, n: int, seed: int = 1337) -> np.ndarray:
    """METHOD.md's prompts: torch.manual_seed(seed), randperm over the pool, the first n rows."""
    torch.manual_seed(seed)
    return torch.randperm(store.size)[: min(n, store.size)].numpy().astype(np.int64)


def _target_sizes(store: Store) -> list[int]:
    L, scale = store.n_layer, store.size / REFERENCE_POOL
    ref = np.interp(np.linspace(0, 5, L), np.arange(6), REFERENCE_SIZES) if L != 6 else REFERENCE_SIZES
    return [max(1, int(round(t * scale))) for t in ref]


def calibrate_thresholds(engine: Engine, n_prompts: int = 256, seed: int = 7,
                         batch_size: int = 128, progress: bool = True) -> dict:
    """Per-block thresholds under which the median sample prompt has the reference's neighbour-set
    size (scaled to this pool): the median over prompts of the (size+1)-th largest similarity,
    the prompt's own string included as in the reference. Returns the manifest's ``defaults``."""
    store = engine.store
    rows = reference_prompts(store, n_prompts, seed)
    targets = _target_sizes(store)
    kth = np.zeros((store.n_layer, len(rows)), dtype=np.float64)
    bar = tqdm(total=len(rows) * store.n_layer, desc="calibrate", disable=not progress,
               dynamic_ncols=True)
    for s in range(0, len(rows), batch_size):
        r = rows[s : s + batch_size]
        _, ffn = engine.forward(store.pool.strings(store.corpus_ids, r))
        for b in range(store.n_layer):
            k = min(targets[b] + 1, store.size)
            qi, _, sims = engine.search.batch_topk(b, unit(ffn[b]), k)
            for i in range(len(r)):
                kth[b, s + i] = sims[qi == i].min()
            bar.update(len(r))
    bar.close()
    # float16 unit vectors can give similarities a hair above 1: keep thresholds in [-1, 1].
    thresholds = [float(np.clip(np.median(kth[b]), -1.0, 1.0)) for b in range(store.n_layer)]
    return {
        "thresholds": [round(t, 6) for t in thresholds],
        "weights": None,
        "rule": "reference-sizes",
        "rule_text": (f"per block, the median over {len(rows)} pool prompts (seed {seed}) of the "
                      f"similarity of their (size+1)-th nearest string, where size is METHOD.md's "
                      f"neighbour-set size on 'And only l' scaled to this pool: {targets}"),
        "target_sizes": targets,
    }


def evaluate(engine: Engine, rows: np.ndarray, settings: QuerySettings | None = None,
             batch_size: int = 256, progress: bool = True) -> dict:
    """Approximation against the model on the pool strings ``rows`` run as prompts."""
    store = engine.store
    s = (settings or QuerySettings()).resolved(store)
    L, V = store.n_layer, store.counts.vocab_size
    H = np.zeros(len(rows))
    agree = {k: {"order": np.zeros(len(rows), bool), "set": np.zeros(len(rows), bool)} for k in TOPK}
    sizes = np.zeros((len(rows), L), dtype=np.int64)
    fallback = np.zeros(len(rows), bool)
    t0 = time.time()
    bar = tqdm(total=len(rows), desc="eval", unit="prompt", disable=not progress, dynamic_ncols=True)
    for start in range(0, len(rows), batch_size):
        r = rows[start : start + batch_size]
        B = len(r)
        probs, ffn = engine.forward(store.pool.strings(store.corpus_ids, r))
        exclude = torch.from_numpy(r) if s.exclude_self else None
        counts = np.zeros((B, L, V), dtype=np.float64)
        for b in range(L):
            Q = unit(ffn[b])
            if s.mode == "threshold":
                qi, nb, _ = engine.search.batch_threshold(b, Q, s.thresholds[b], exclude)
            else:
                qi, nb, _ = engine.search.batch_topk(b, Q, s.k, exclude)
            counts[:, b] = store.counts.sum_rows_grouped(nb, qi, B)
            sizes[start : start + B, b] = np.bincount(qi, minlength=B)
        approx, _, _ = blend(counts, np.asarray(s.weights), s.blend)
        empty = approx.sum(-1) == 0
        approx[empty] = engine.unigram
        fallback[start : start + B] = empty
        H[start : start + B] = hellinger(probs, approx)
        for i in range(B):
            rp, rq = ranking(probs[i]), ranking(approx[i])
            for k in TOPK:
                agree[k]["order"][start + i] = (rp[:k] == rq[:k]).all()
                agree[k]["set"][start + i] = set(rp[:k]) == set(rq[:k])
        bar.update(B)
    bar.close()
    seconds = time.time() - t0
    return {
        "prompts": int(len(rows)),
        "settings": asdict(s),
        "backend": engine.search.name,
        "hellinger": {"mean": float(H.mean()), "std": float(H.std()), "min": float(H.min()),
                      "max": float(H.max()), "below_0.2": int((H < 0.2).sum()),
                      "above_0.99": int((H > 0.99).sum())},
        "topk": {str(k): {"order": float(agree[k]["order"].mean()),
                          "set": float(agree[k]["set"].mean())} for k in TOPK},
        "neighbours": {"mean": sizes.mean(0).round(1).tolist(),
                       "median": np.median(sizes, 0).tolist(), "max": sizes.max(0).tolist(),
                       "empty_share": (sizes == 0).mean(0).round(4).tolist()},
        "fallback_share": float(fallback.mean()),
        "seconds": round(seconds, 2),
        "prompts_per_s": round(len(rows) / seconds, 1),
        "per_prompt_h": H,
    }
