"""The study's prompts: METHOD.md's reference prompts (pool rows; the sample is drawn by
:func:`app.calibrate.reference_prompts`, which calibration shares), held-out prompts (validation
strings absent from the pool, optionally read in context), and the one conversion of either kind
to token ids with each prompt's own pool row (:func:`prompt_ids`).
"""
from __future__ import annotations

import numpy as np
import torch

from ..calibrate import reference_prompts
from ..corpus import string_keys
from ..store import Store

__all__ = ["reference_prompts", "heldout_prompts", "prompt_ids"]


def heldout_prompts(store: Store, n_train: int, n: int, seed: int = 1337,
                    length: int | None = None) -> np.ndarray:
    """METHOD.md's held-out prompts: distinct n-character strings that start in the validation part
    of the corpus (at or after ``n_train``) and are absent from the store's pool; ``n`` of them
    chosen by ``torch.manual_seed(seed); torch.randperm``. Returns (n, pool n) token ids.

    With ``length`` L > pool n, each prompt is the L characters of validation text that end with
    such a string (distinct by that string), so the model reads it in context."""
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
