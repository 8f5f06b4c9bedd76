"""The report's neighbour statistics: neighbour-set sizes per block, their quantiles, empty and
self-only shares, and a log-scale histogram."""
from __future__ import annotations

import numpy as np


def log_edges(max_value: int) -> list[int]:
    """Integer bin edges 0, 1, 3, 10, 30, 100, ... (1-3-10 steps) past ``max_value``: bins are
    [edge_i, edge_{i+1}), the first one holding exactly 0."""
    edges, step = [0, 1], 0
    while edges[-1] <= max_value:
        edges.append(edges[-1] * (3 if step % 2 == 0 else 10) // (1 if step % 2 == 0 else 3))
        step += 1
    return edges


def edge_labels(edges) -> list[str]:
    """A label per bin of :func:`log_edges`: "0", "1–2", "3–9", ..."""
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        out.append(str(a) if b - a == 1 else f"{a:,}–{b - 1:,}")
    return out


def neighbour_stats(sizes: np.ndarray, self_only: np.ndarray | None = None) -> dict:
    """Neighbour-set sizes (N, L) per prompt and block -> per block quantiles (min, p10, median,
    p90, max, mean), the share of prompts with an empty set and with a self-only set (the prompt's
    own string and nothing else), a log-scale histogram (1-3-10 bins), and shares over blocks."""
    S = np.asarray(sizes, dtype=np.int64)
    N, L = S.shape
    so = np.zeros_like(S, dtype=bool) if self_only is None else np.asarray(self_only, dtype=bool)
    edges = log_edges(int(S.max()) if S.size else 0)
    blocks, hist = [], []
    for b in range(L):
        s = S[:, b]
        q = np.percentile(s, [0, 10, 50, 90, 100]) if N else [0] * 5
        blocks.append({"block": b, "min": int(q[0]), "p10": float(q[1]), "median": float(q[2]),
                       "p90": float(q[3]), "max": int(q[4]), "mean": float(s.mean()) if N else 0.0,
                       "empty_share": float((s == 0).mean()) if N else 0.0,
                       "self_only_share": float(so[:, b].mean()) if N else 0.0})
        idx = np.searchsorted(edges, s, side="right") - 1
        hist.append(np.bincount(idx, minlength=len(edges) - 1)[: len(edges) - 1].tolist())
    poor = (S == 0) | so
    return {
        "blocks": blocks,
        "histogram": {"edges": edges, "labels": edge_labels(edges), "counts": hist},
        "any_empty_share": float((S == 0).any(1).mean()) if N else 0.0,
        "all_empty_share": float((S == 0).all(1).mean()) if N else 0.0,
        "any_self_only_share": float(so.any(1).mean()) if N else 0.0,
        "all_empty_or_self_only_share": float(poor.all(1).mean()) if N else 0.0,
    }
