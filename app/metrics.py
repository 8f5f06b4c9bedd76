"""How close two next-character distributions are: the one home of every metric the engine, the
evaluation and the report use (Hellinger distance, ranking, top-k agreement, entropy), each for one
distribution and for a batch."""
from __future__ import annotations

import numpy as np

TOPK = (1, 2, 3, 5)  # the k of METHOD.md's top-k agreement


def hellinger(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """H(p, q) = ||sqrt p - sqrt q||_2 / sqrt 2 over the last axis, in [0, 1]."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    return np.sqrt(((np.sqrt(p) - np.sqrt(q)) ** 2).sum(-1) / 2.0)


def entropy(p: np.ndarray) -> np.ndarray:
    """Entropy in nats over the last axis (0 log 0 = 0)."""
    p = np.asarray(p, dtype=np.float64)
    logs = np.log(np.where(p > 0, p, 1.0))
    return -(p * logs).sum(-1)


def ranking(p: np.ndarray) -> np.ndarray:
    """Token ids by decreasing probability, ties by id (a stable, reproducible order)."""
    return np.lexsort((np.arange(p.shape[-1]), -np.asarray(p)))


def topk_agreement(p: np.ndarray, q: np.ndarray, ks=TOPK) -> dict:
    """For each k: do the k most likely tokens of p and q agree in order, and as sets?"""
    rp, rq = ranking(p), ranking(q)
    return {k: {"order": bool((rp[:k] == rq[:k]).all()), "set": set(rp[:k]) == set(rq[:k])}
            for k in ks}


def agreement_arrays(model_probs: np.ndarray, q: np.ndarray, ks=TOPK) -> dict:
    """:func:`topk_agreement` for a batch: per prompt, for each k, do the k most likely tokens of
    the model and of q agree in order, and as sets? -> {k: {"order": (N,) bool, "set": (N,) bool}}."""
    P, Q = np.atleast_2d(model_probs), np.atleast_2d(q)
    if P.shape != Q.shape:
        raise ValueError(f"shapes differ: model {P.shape}, other {Q.shape}")
    N = len(P)
    out = {k: {"order": np.zeros(N, bool), "set": np.zeros(N, bool)} for k in ks}
    for i in range(N):
        a = topk_agreement(P[i], Q[i], ks)
        for k in ks:
            out[k]["order"][i], out[k]["set"][i] = a[k]["order"], a[k]["set"]
    return out
