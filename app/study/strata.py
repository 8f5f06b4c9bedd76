"""The report's strata: prompts grouped by the model's next-character entropy."""
from __future__ import annotations

import math

import numpy as np

from ..metrics import entropy

# Strata of the model's next-character entropy, in nats: (name, low, high), low <= H < high.
ENTROPY_BINS = (
    ("near-deterministic", 0.0, 0.5),
    ("moderate", 0.5, 1.5),
    ("uncertain", 1.5, math.inf),
)


def bin_label(lo: float, hi: float) -> str:
    """A stratum's label: "H < hi nats", "lo <= H < hi nats" or "H >= lo nats"."""
    if lo <= 0:
        return f"H < {hi:g} nats"
    if math.isinf(hi):
        return f"H >= {lo:g} nats"
    return f"{lo:g} <= H < {hi:g} nats"


def strata(model_probs: np.ndarray, H: dict, top1: dict, bins=ENTROPY_BINS) -> dict:
    """Prompts grouped by the model's entropy (nats; each bin is low <= entropy < high).
    ``H``: method -> (N,) Hellinger distances; ``top1``: method -> (N,) bools (top-1 agreement).
    -> {"unit": "nats", "bins": [{name, label, lo, hi, count, share, methods: {name:
    {hellinger_mean, top1}}}]}; an empty bin's means are None."""
    e = entropy(model_probs)
    N = len(e)
    out = []
    for name, lo, hi in bins:
        m = (e >= lo) & (e < hi)
        c = int(m.sum())
        methods = {}
        for meth in H:
            h = np.asarray(H[meth], dtype=np.float64)
            t = np.asarray(top1[meth]) if meth in top1 else None
            methods[meth] = {
                "hellinger_mean": float(h[m].mean()) if c else None,
                "top1": float(t[m].mean()) if (c and t is not None) else None,
            }
        out.append({"name": name, "label": bin_label(lo, hi), "lo": float(lo),
                    "hi": None if math.isinf(hi) else float(hi), "count": c,
                    "share": c / N if N else 0.0, "methods": methods})
    return {"unit": "nats", "bins": out, "entropy_mean": float(e.mean()) if N else None}
