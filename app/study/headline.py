"""The report's headline: every method scored against the model (Hellinger distance, top-k
agreement), paired comparisons with the approximation, and METHOD.md's published figures."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..metrics import TOPK, agreement_arrays, hellinger
from .methods import APPROX

# METHOD.md's published figures of the reference study (its own model, 20,000 pool prompts).
PUBLISHED = {
    "label": "reference study (its own model, 20,000 pool prompts)",
    "prompts": 20000,
    "hellinger": {"mean": 0.1677, "std": 0.1215, "min": 0.0013, "median": None, "max": 0.9994,
                  "below_0.2": 13779, "above_0.99": 8},
    "topk": {"1": {"order": 0.806, "set": 0.806}, "2": {"order": 0.502, "set": 0.568},
             "3": {"order": 0.342, "set": 0.405}, "5": {"order": 0.209, "set": 0.248}},
    "noise_floor_hellinger_mean": 0.106,
}


# --- per-prompt metrics ------------------------------------------------------------------------
def summarise(H: np.ndarray, agree: dict) -> dict:
    """Per-prompt Hellinger distances and agreement arrays -> the headline numbers."""
    H = np.asarray(H, dtype=np.float64)
    n = len(H)
    if n == 0:
        return {"prompts": 0, "hellinger": None, "topk": None}
    return {
        "prompts": int(n),
        "hellinger": {"mean": float(H.mean()), "std": float(H.std()),
                      "sem": float(H.std(ddof=1) / math.sqrt(n)) if n > 1 else None,
                      "min": float(H.min()), "median": float(np.median(H)), "max": float(H.max()),
                      "below_0.2": int((H < 0.2).sum()), "above_0.99": int((H > 0.99).sum())},
        "topk": {str(k): {"order": float(a["order"].mean()), "set": float(a["set"].mean())}
                 for k, a in agree.items()},
    }


def score(model_probs: np.ndarray, dists: dict, ks=TOPK) -> dict:
    """Each method's distributions (name -> (N, V)) against the model's (N, V): Hellinger mean,
    std, sem, min, median, max, prompts below 0.2 and above 0.99, and top-k agreement (k = 1, 2,
    3, 5) in order and as sets. -> {name: summary}."""
    P = np.atleast_2d(np.asarray(model_probs, dtype=np.float64))
    out = {}
    for name, q in dists.items():
        Q = np.atleast_2d(np.asarray(q, dtype=np.float64))
        if Q.shape != P.shape:
            raise ValueError(f"{name}: shape {Q.shape}, the model's is {P.shape}")
        out[name] = summarise(hellinger(P, Q), agreement_arrays(P, Q, ks))
    return out


def paired(h_approx: np.ndarray, h_other: np.ndarray) -> dict:
    """Paired comparison of per-prompt distances: mean of (other - approximation) with a 95 %
    normal interval, and the share of prompts where the approximation is strictly closer / the
    other is strictly closer."""
    d = np.asarray(h_other, dtype=np.float64) - np.asarray(h_approx, dtype=np.float64)
    n = len(d)
    half = float(1.96 * d.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {"mean_diff": float(d.mean()) if n else float("nan"), "ci95": half,
            "approx_closer": float((d > 0).mean()) if n else float("nan"),
            "other_closer": float((d < 0).mean()) if n else float("nan")}


@dataclass
class Headline:
    """Every method against the model: per-prompt arrays (``H``: method -> (N,) Hellinger
    distances, ``agree``: method -> agreement arrays), their summaries, paired comparisons with
    the approximation, the methods identical to the model and the closest other one."""
    methods: list
    H: dict
    agree: dict
    summaries: dict
    pairs: dict
    identical: set
    rivals: list
    best_rival: str | None


def headline_section(model_probs: np.ndarray, dists: dict) -> Headline:
    """Score every method in ``dists`` (method -> (N, V), the approximation among them) against
    ``model_probs`` (N, V), per prompt then summarised."""
    methods = list(dists)
    H = {m: hellinger(model_probs, dists[m]) for m in methods}
    agree = {m: agreement_arrays(model_probs, dists[m]) for m in methods}
    summaries = {m: summarise(H[m], agree[m]) for m in methods}
    pairs = {m: paired(H[APPROX], H[m]) for m in methods if m != APPROX}
    identical = {m for m in pairs if float(H[m].max(initial=0.0)) < 1e-6}
    rivals = [m for m in pairs if m not in identical]
    best_rival = min(rivals, key=lambda m: summaries[m]["hellinger"]["mean"]) if rivals else None
    return Headline(methods, H, agree, summaries, pairs, identical, rivals, best_rival)
