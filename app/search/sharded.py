"""Search over a sharded store: every shard asked in turn, the answers merged exactly.

Each shard is an ordinary store with its own backend (its bound index, or the full scan), answering
for its rows numbered from 0; a row r of shard i is row ``bounds[i] + r`` of the whole pool. The
similarities are float32 products computed row by row (``ExactSearch.pair_sims``), whatever rows
are asked with them, so a shard's similarities are the unsharded store's bit for bit, and merging
is exact:

- threshold: the union of the shards' rows, offset (the excluded row is excluded in its shard);
- top-k: the union of the shards' top-k, ordered by similarity then pool row, the first k: every
  row of the whole top-k is in its shard's top-k (ties at rank k go to the lower row in the shard
  as in the whole), so nothing is lost;
- batches: the same per query; a batch's top-k is laid out as one query's (queries in order, rows
  by decreasing similarity, ties by row), a batch's threshold rows in no particular order.

``ShardedSearch.each`` asks the shards; ``RaySearch`` (app/search/ray_shards.py) asks them on a Ray
cluster instead and merges with the same code.
"""
from __future__ import annotations

import numpy as np
import torch

from model.errors import FfnlensError

from .base import Neighbours, SearchStats, joined, record

RESTARTING = "a shard of the store is restarting; try again in a moment"


class ShardUnavailable(FfnlensError):
    """A shard did not answer (its actor died and is being restarted, or timed out): the query has
    no answer rather than one without that shard's rows. The web app answers 503 with the message."""

    def __init__(self, message: str = RESTARTING, retry_after: int = 2):
        super().__init__(message)
        self.message, self.retry_after = message, retry_after


def split_exclude(bounds: np.ndarray, exclude: int | None) -> list[int | None]:
    """A pool row to exclude, as each shard's own row (None in the shards that do not hold it)."""
    out = [None] * (len(bounds) - 1)
    if exclude is not None and exclude >= 0:
        i = int(np.searchsorted(bounds, exclude, side="right") - 1)
        out[i] = int(exclude - bounds[i])
    return out


def split_excludes(bounds: np.ndarray, exclude: torch.Tensor | None) -> list[torch.Tensor | None]:
    """A batch's rows to exclude (-1: none), as each shard's own rows (-1 outside the shard)."""
    if exclude is None:
        return [None] * (len(bounds) - 1)
    ex = exclude.to(torch.long).cpu()
    return [torch.where((ex >= lo) & (ex < hi), ex - int(lo), torch.full_like(ex, -1))
            for lo, hi in zip(bounds[:-1], bounds[1:])]


def merged_stats(parts: list[SearchStats], stats: SearchStats | None = None) -> SearchStats:
    """One answer's cost from its shards': the candidates and bytes summed, the plans named."""
    plans = sorted({p.plan for p in parts})
    return record(stats, "shards:" + "+".join(plans), sum(p.candidates for p in parts),
                  sum(p.bytes_read for p in parts))


def merged_topk(parts: list[Neighbours], bounds, k: int) -> Neighbours:
    """The first k of the shards' top-k by similarity, ties to the lower pool row."""
    rows = np.concatenate([nb.rows + int(o) for nb, o in zip(parts, bounds)])
    sims = np.concatenate([nb.sims for nb in parts])
    o = np.lexsort((rows, -sims))[:k]
    return Neighbours(rows[o].astype(np.int64), sims[o].astype(np.float32), ordered=True,
                      stats=merged_stats([nb.stats for nb in parts]))


def merged_batch_threshold(parts: list[tuple], bounds) -> tuple:
    """The shards' (query index, row, similarity or None) arrays, rows offset, concatenated."""
    qi = np.concatenate([p[0] for p in parts]).astype(np.int64)
    rows = np.concatenate([p[1] + int(o) for p, o in zip(parts, bounds)]).astype(np.int64)
    sims = None if any(p[2] is None for p in parts) else \
        np.concatenate([p[2] for p in parts]).astype(np.float32)
    return qi, rows, sims


def merged_batch_topk(parts: list[tuple], bounds, k: int) -> tuple:
    """Per query, the first k of the shards' top-k, laid out as a batch's top-k."""
    qi, rows, sims = merged_batch_threshold(parts, bounds)
    o = np.lexsort((rows, -sims, qi))
    qi, rows, sims = qi[o], rows[o], sims[o]
    first = np.searchsorted(qi, qi, side="left")  # where each query's run begins
    keep = np.arange(len(qi)) - first < k
    return qi[keep], rows[keep], sims[keep]


class ShardedSearch:
    """One backend per shard (``parts``, all of one kind), asked in turn; answers as the unsharded
    store's backend gives them. ``store``: the ShardedStore (the whole pool's rows)."""

    def __init__(self, store, parts: list):
        self.store, self.parts = store, parts
        self.bounds = np.asarray(store.bounds, dtype=np.int64)
        self.name = parts[0].name

    def each(self, method: str, b: int, query, arg, excludes: list, stats: list | None = None,
             **kw) -> list:
        """Every shard's answer to ``method(b, query, arg, its exclude, **kw)`` (a batch: with its
        own ``stats[i]``)."""
        return [getattr(p, method)(b, query, arg, ex, **kw, **({} if stats is None else {"stats": st}))
                for p, ex, st in zip(self.parts, excludes, stats or [None] * len(self.parts))]

    def threshold(self, b: int, q: torch.Tensor, thr: float, exclude: int | None = None) -> Neighbours:
        return self.merged("threshold", self.each("threshold", b, q, thr,
                                                  split_exclude(self.bounds, exclude)), thr)

    def topk(self, b: int, q: torch.Tensor, k: int, exclude: int | None = None) -> Neighbours:
        return self.merged("topk", self.each("topk", b, q, k, split_exclude(self.bounds, exclude)), k)

    def merged(self, method: str, parts: list[Neighbours], value) -> Neighbours:
        """The shards' answers to one single query in one block, as the whole store's."""
        if method == "threshold":
            return joined(parts, self.bounds[:-1], merged_stats([nb.stats for nb in parts]))
        return merged_topk(parts, self.bounds[:-1], value)

    def batch_threshold(self, b: int, Q: torch.Tensor, thr: float,
                        exclude: torch.Tensor | None = None, sims: bool = True,
                        stats: SearchStats | None = None) -> tuple:
        each = [SearchStats() for _ in self.parts]
        parts = self.each("batch_threshold", b, Q, thr, split_excludes(self.bounds, exclude),
                          sims=sims, stats=each)
        merged_stats(each, stats)
        return merged_batch_threshold(parts, self.bounds[:-1])

    def batch_topk(self, b: int, Q: torch.Tensor, k: int, exclude: torch.Tensor | None = None,
                   stats: SearchStats | None = None) -> tuple[np.ndarray, ...]:
        each = [SearchStats() for _ in self.parts]
        parts = self.each("batch_topk", b, Q, k, split_excludes(self.bounds, exclude), stats=each)
        merged_stats(each, stats)
        return merged_batch_topk(parts, self.bounds[:-1], k)
