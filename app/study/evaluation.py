"""Batched evaluation: the approximation against the model on many prompts at once.

Many prompts go through one forward pass and one matrix product per store chunk; thresholds are
applied chunk by chunk, so the full prompts x pool similarity matrix is never held.
:func:`block_counts` is one block's neighbours for a batch (shared with the threshold sweep).
"""
from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np
import torch
from tqdm import tqdm

from ..approx import Engine, QuerySettings, blend_or_unigram
from ..metrics import TOPK, agreement_arrays, hellinger
from ..search import unit
from .prompts import prompt_ids


def block_counts(engine: Engine, block: int, Q: torch.Tensor, s: QuerySettings,
                 exclude: torch.Tensor | None = None, self_rows: np.ndarray | None = None):
    """One block's neighbours for a batch of unit queries Q (B, C) under resolved settings ``s``
    -> (summed follow-on counts (B, V) int64, neighbour counts (B,) int64, self hits (B,) int64:
    how many of a prompt's neighbours are its own pool string, 0 or 1)."""
    store, B = engine.store, Q.shape[0]
    cells = getattr(engine.search, "batch_threshold_cells", None)
    whole = None if s.mode != "threshold" or cells is None else \
        cells(block, Q, s.thresholds[block], exclude)
    if whole is not None:  # the bound's cells: those whose every string qualifies come whole
        counts, sizes = whole.summed(store.counts.sum_rows_grouped, B)
        hits = np.zeros(B, dtype=np.int64) if self_rows is None else \
            whole.holds(np.arange(B), np.asarray(self_rows, dtype=np.int64)).astype(np.int64)
        return counts, sizes, hits
    if s.mode == "threshold":
        qi, nb, _ = engine.search.batch_threshold(block, Q, s.thresholds[block], exclude, sims=False)
    else:
        qi, nb, _ = engine.search.batch_topk(block, Q, s.k, exclude)
    counts = store.counts.sum_rows_grouped(nb, qi, B)
    sizes = np.bincount(qi, minlength=B).astype(np.int64)
    if self_rows is None:
        hits = np.zeros(B, dtype=np.int64)
    else:
        own = nb == np.asarray(self_rows, dtype=np.int64)[qi]
        hits = np.bincount(qi[own], minlength=B).astype(np.int64)
    return counts, sizes, hits


def evaluate(engine: Engine, rows: np.ndarray, settings: QuerySettings | None = None,
             batch_size: int = 256, progress: bool = True, *, keep: bool = False,
             keep_counts: bool = False, intervention=None) -> dict:
    """Approximation against the model on the pool strings ``rows`` run as prompts.

    ``rows`` may also be a 2-D (N, T) array of token ids (for example validation strings absent
    from a held-out pool); a prompt's "own string" is then the pool row of its last n characters,
    when there is one (what ``exclude_self`` leaves out).

    ``keep=True`` adds ``"arrays"`` with per-prompt numpy arrays: ``model_probs`` (N, V),
    ``approx`` (N, V) (the unigram where no block found a neighbour), ``sizes`` (N, L) neighbour
    counts, ``self_only`` (N, L) (the block's neighbour set is exactly the prompt's own string),
    ``self_rows`` (N,) (-1: not in the pool), ``fallback`` (N,), ``agree`` ({k: {"order", "set"}}
    of (N,) bools), and with ``keep_counts=True`` also ``counts`` (N, L, V) float64, each block's
    summed follow-on counts. Without ``keep`` the result is as before (arrays are not JSON).
    ``intervention`` (a :class:`model.gpt.Intervention`): evaluate the model run without the
    sublayers it names (its distribution and its activations both).
    """
    store = engine.store
    s = (settings or QuerySettings()).resolved(store)
    L, V = store.n_layer, store.counts.vocab_size
    all_ids, self_rows = prompt_ids(store, rows)
    N = len(all_ids)
    H = np.zeros(N)
    agree = {k: {"order": np.zeros(N, bool), "set": np.zeros(N, bool)} for k in TOPK}
    sizes = np.zeros((N, L), dtype=np.int64)
    self_hits = np.zeros((N, L), dtype=np.int64)
    fallback = np.zeros(N, bool)
    if keep:
        model_all, approx_all = np.zeros((N, V)), np.zeros((N, V))
        counts_all = np.zeros((N, L, V)) if keep_counts else None
    t0 = time.time()
    bar = tqdm(total=N, desc="eval", unit="prompt", disable=not progress, dynamic_ncols=True)
    for start in range(0, N, batch_size):
        sr = self_rows[start : start + batch_size]
        B = len(sr)
        probs, ffn = engine.forward(all_ids[start : start + B], intervention)
        exclude = torch.from_numpy(sr.copy()) if s.exclude_self else None
        counts = np.zeros((B, L, V), dtype=np.float64)
        for b in range(L):
            c, n, h = block_counts(engine, b, unit(ffn[b]), s, exclude, sr)
            counts[:, b] = c
            sizes[start : start + B, b] = n
            self_hits[start : start + B, b] = h
        approx, empty, _, _ = blend_or_unigram(counts, s.weights, s.blend, engine.unigram)
        fallback[start : start + B] = empty
        H[start : start + B] = hellinger(probs, approx)
        for k, a in agreement_arrays(probs, approx).items():
            agree[k]["order"][start : start + B] = a["order"]
            agree[k]["set"][start : start + B] = a["set"]
        if keep:
            model_all[start : start + B], approx_all[start : start + B] = probs, approx
            if keep_counts:
                counts_all[start : start + B] = counts
        bar.update(B)
    bar.close()
    seconds = max(time.time() - t0, 1e-9)
    out = {
        "prompts": int(N),
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
        "prompts_per_s": round(N / seconds, 1),
        "per_prompt_h": H,
    }
    if keep:
        out["arrays"] = {
            "model_probs": model_all, "approx": approx_all, "sizes": sizes,
            "self_only": (sizes == 1) & (self_hits == 1), "self_rows": self_rows,
            "fallback": fallback, "agree": agree,
        }
        if keep_counts:
            out["arrays"]["counts"] = counts_all
    return out
