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

from .approx import Engine, QuerySettings, blend_or_unigram
from .metrics import TOPK, agreement_arrays, hellinger
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


def heldout_prompts(store: Store, n_train: int, n: int, seed: int = 1337,
                    length: int | None = None) -> np.ndarray:
    """METHOD.md's held-out prompts: distinct n-character strings that start in the validation part
    of the corpus (at or after ``n_train``) and are absent from the store's pool; ``n`` of them
    chosen by ``torch.manual_seed(seed); torch.randperm``. Returns (n, pool n) token ids.

    With ``length`` L > pool n, each prompt is the L characters of validation text that end with
    such a string (distinct by that string), so the model reads it in context."""
    from .corpus import string_keys

    ids, width = store.corpus_ids, store.pool.n
    L = width if length is None else int(length)
    if L < width:
        raise ValueError(f"a prompt length of {L} is shorter than the pool strings ({width})")
    starts = np.arange(n_train + L - width, len(ids) - width + 1)  # of the final n-string
    if len(starts) == 0:
        return np.zeros((0, L), dtype=np.int64)
    strings = ids[starts[:, None] + np.arange(width)]
    keys = string_keys(strings, len(store.manifest["vocab"]))
    pool_keys = string_keys(store.pool.strings(store.corpus_ids), len(store.manifest["vocab"]))
    fresh = ~np.isin(keys, pool_keys)
    _, first = np.unique(keys[fresh], return_index=True)
    ends = starts[fresh][np.sort(first)] + width  # one past each prompt's last character
    torch.manual_seed(seed)
    pick = torch.randperm(len(ends))[: min(n, len(ends))].numpy()
    return ids[ends[pick, None] - L + np.arange(L)].astype(np.int64)


def prompt_ids(store: Store, prompts) -> tuple[np.ndarray, np.ndarray]:
    """Prompts as pool rows (1-D) or token ids (2-D, (N, T)) -> ((N, T) ids, (N,) the pool row of
    each prompt's last n characters, -1 where that string is not in the pool)."""
    a = np.asarray(prompts)
    if a.ndim == 1:
        rows = a.astype(np.int64)
        return store.pool.strings(store.corpus_ids, rows), rows.copy()
    if a.ndim != 2:
        raise ValueError(f"prompts must be pool rows (N,) or token ids (N, T), got shape {a.shape}")
    ids = a.astype(np.int64)
    self_rows = np.full(len(ids), -1, dtype=np.int64)
    n = store.pool.n
    if ids.shape[1] >= n:
        for i in range(len(ids)):
            r = store.find(ids[i, -n:])
            if r is not None:
                self_rows[i] = r
    return ids, self_rows


def block_counts(engine: Engine, block: int, Q: torch.Tensor, s: QuerySettings,
                 exclude: torch.Tensor | None = None, self_rows: np.ndarray | None = None):
    """One block's neighbours for a batch of unit queries Q (B, C) under resolved settings ``s``
    -> (summed follow-on counts (B, V) int64, neighbour counts (B,) int64, self hits (B,) int64:
    how many of a prompt's neighbours are its own pool string, 0 or 1)."""
    store, B = engine.store, Q.shape[0]
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
             keep_counts: bool = False) -> dict:
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
        probs, ffn = engine.forward(all_ids[start : start + B])
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
