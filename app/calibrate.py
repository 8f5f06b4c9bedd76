"""Per-model threshold calibration, run when a store is built: per block, the cosine threshold under
which a sample of pool prompts (METHOD.md's reference prompts) has the reference study's
neighbour-set size, scaled to this pool. Sits beside the approximation, below the study: the
workspace calls it, and the study takes its reference-prompt sample from here.
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from . import defaults
from .approx import Engine
from .search import unit
from .store import Store



def reference_prompts(store: Store, n: int, seed: int = 1337) -> np.ndarray:
    """METHOD.md's prompts: torch.manual_seed(seed), randperm over the pool, the first n rows."""
    torch.manual_seed(seed)
    return torch.randperm(store.size)[: min(n, store.size)].numpy().astype(np.int64)


def target_sizes(store: Store) -> list[int]:
    """Each block's neighbour-set size to calibrate for: the reference sizes (interpolated over
    L blocks when L != 6) scaled by this pool's size over the reference pool's, at least 1."""
    return defaults.target_sizes(store.n_layer, store.size)


def calibrate_thresholds(engine: Engine, n_prompts: int = 256, seed: int = 7,
                         batch_size: int = 128, progress: bool = True) -> dict:
    """Per-block thresholds under which the median sample prompt has the reference's neighbour-set
    size (scaled to this pool): the median over prompts of the (size+1)-th largest similarity,
    the prompt's own string included as in the reference. Returns the manifest's ``defaults``."""
    store = engine.store
    rows = reference_prompts(store, n_prompts, seed)
    targets = target_sizes(store)
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
