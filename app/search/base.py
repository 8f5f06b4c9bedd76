"""What every search backend offers, what it answers with, and the helpers the backends share.

A backend (``SearchBackend``) answers two questions about one block of the store, for one unit query
and for a batch: which strings have cosine similarity strictly above a threshold, and which are the
k most similar. Results are ordered by similarity (descending), ties by pool row (ascending); top-k
takes ties at rank k in row order, so answers are deterministic and comparable across backends.

Each answer carries its own statistics (``SearchStats``: the plan that ran, the candidates it
examined, the bytes it read): ``Neighbours.stats`` for a single query; a batch fills the
``SearchStats`` its caller passes. Nothing is written on the (shared) search object itself.

The index files a backend keeps beside the vectors are checked when it opens by ``IndexCheck``:
the manifest entry is present, was built from the vectors the store holds, and the files fit.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
import torch

from ..store import Store, StoreError


@dataclass
class SearchStats:
    """What one answer cost. ``plan``: which plan ran (e.g. "scan", "bound", "bound-device",
    "ivf"); ``candidates``: strings (for a batch: query-string pairs) whose similarity the plan
    computed or proved; ``bytes_read``: bytes of vectors and index arrays it read, an estimate from
    the shapes (an upper one where proven strings are never read; the ivf counts its candidates'
    vectors, not faiss's lists); ``rank``: for the bound, the rank of the bound it stopped at
    (0 for the other plans)."""

    plan: str = ""
    candidates: int = 0
    bytes_read: int = 0
    rank: int = 0

    def fill(self, plan: str, candidates: int, bytes_read: int, rank: int = 0) -> "SearchStats":
        self.plan, self.candidates, self.bytes_read, self.rank = plan, int(candidates), int(bytes_read), int(rank)
        return self


class Neighbours:
    """One block's neighbours: pool rows and their cosine similarities (float32), and ``stats``,
    what finding them cost.

    ``rows`` and ``sims`` are ordered by decreasing similarity, ties by row; the order is computed on
    first use, so a huge set that is only counted (``members``) is never sorted, and ``top(m)``
    orders just its first m (block 5 of the reference store can have 100,000 neighbours: a full
    sort costs 7 ms there, the first ten well under one).

    A backend that proves a row qualifies without computing its similarity (the bound) leaves that
    similarity NaN and passes ``lo``/``hi``, certain bounds on it (lo <= sim <= hi), and ``fill``,
    which computes the similarities of given rows; they are computed when first needed, and
    ``top(m)`` computes only those whose ``hi`` can reach the m-th value."""

    def __init__(self, rows: np.ndarray, sims: np.ndarray, ordered: bool = False,
                 lo: np.ndarray | None = None, hi: np.ndarray | None = None, fill=None,
                 stats: SearchStats | None = None):
        self._rows, self._sims, self._ordered = rows, sims, ordered
        self._lo, self._hi, self._fill = lo, hi, fill
        self.stats = stats if stats is not None else SearchStats()

    def __len__(self) -> int:
        return len(self._rows)

    def _complete(self, where: np.ndarray | None = None) -> None:
        """Compute the missing similarities (at the indices ``where``, else all)."""
        if self._fill is None:
            return
        nan = np.isnan(self._sims)
        idx = np.flatnonzero(nan) if where is None else where[nan[where]]
        if len(idx):
            self._sims[idx] = self._fill(self._rows[idx])
        if len(idx) == int(nan.sum()):
            self._lo = self._hi = self._fill = None

    def _sort(self) -> None:
        self._complete()
        if not self._ordered:
            o = np.lexsort((self._rows, -self._sims))
            self._rows, self._sims, self._ordered = self._rows[o], self._sims[o], True

    @property
    def rows(self) -> np.ndarray:
        """(m,) int64 pool rows, by decreasing similarity."""
        self._sort()
        return self._rows

    @property
    def sims(self) -> np.ndarray:
        """(m,) float32 similarities, in the order of ``rows``."""
        self._sort()
        return self._sims

    @property
    def members(self) -> np.ndarray:
        """The rows in no particular order (for counting)."""
        return self._rows

    def top(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        """The first m of (rows, sims), without ordering (or computing) the rest."""
        if self._ordered or m >= len(self) // 4:
            return self.rows[:m], self.sims[:m]
        if m <= 0:
            return self._rows[:0], self._sims[:0]
        n = len(self)
        if self._fill is not None:
            # First the missing rows with the best upper bounds (a guess at the first m); then at
            # least m rows certainly reach t, the m-th largest of (known value, else lower bound),
            # and a row whose upper bound stays below t cannot be among the first m. Measured on
            # blog-cpu's block 5: 322 of 100,000 similarities computed (t from the lower bounds
            # alone, without the guess, needed 65,000).
            missing = np.flatnonzero(np.isnan(self._sims))
            g = min(len(missing), max(4 * m, 256))
            best = np.argpartition(self._hi[missing], len(missing) - g)[len(missing) - g :]
            self._complete(missing[best])
            if self._fill is not None:
                floor = np.where(np.isnan(self._sims), self._lo, self._sims)
                t = np.partition(floor, n - m)[n - m]
                self._complete(np.flatnonzero(self._hi >= t))
            known = ~np.isnan(self._sims)
        else:
            known = slice(None)
        r, s = self._rows[known], self._sims[known]
        kth = np.partition(s, len(s) - m)[len(s) - m]  # the m-th largest
        pick = np.flatnonzero(s >= kth)  # m of them, more when tied at kth
        r, s = r[pick], s[pick]
        o = np.lexsort((r, -s))[:m]
        return r[o], s[o]


def joined(parts: list[Neighbours], offsets, stats: SearchStats | None = None) -> Neighbours:
    """One answer from answers over disjoint row ranges (a sharded store's): part i's rows offset
    by ``offsets[i]``, its similarities as they are; those a part left to compute (the bound's
    proven rows) stay lazy, each computed by its own part when needed, so joining costs no
    similarity the unsharded answer would not compute."""
    offsets = [int(o) for o in offsets]
    rows = np.concatenate([nb._rows + o for nb, o in zip(parts, offsets)]).astype(np.int64)
    sims = np.concatenate([nb._sims for nb in parts]).astype(np.float32)
    if all(nb._fill is None for nb in parts):
        return Neighbours(rows, sims, stats=stats)
    lo = np.concatenate([nb._sims if nb._fill is None else nb._lo for nb in parts])
    hi = np.concatenate([nb._sims if nb._fill is None else nb._hi for nb in parts])
    owner = np.repeat(np.arange(len(parts)), [len(nb) for nb in parts])
    order = np.argsort(rows, kind="stable")  # rows -> their part, for the fill below

    def fill(asked: np.ndarray) -> np.ndarray:
        which = owner[order[np.searchsorted(rows[order], asked)]]
        out = np.empty(len(asked), np.float32)
        for i in np.unique(which):
            at = np.flatnonzero(which == i)
            out[at] = parts[i]._fill(asked[at] - offsets[i])
        return out

    return Neighbours(rows, sims, lo=lo, hi=hi, fill=fill, stats=stats)


class SearchBackend(Protocol):
    """The interface every backend offers (``make_search`` opens one by name).

    ``b`` is a block; ``q`` (C,) and ``Q`` (B, C) are unit queries. ``exclude`` skips one pool row
    (for a batch, (B,) rows, -1 for none). Batch answers are (query index, pool row, similarity)
    arrays; with ``sims=False`` a threshold batch may return None for the similarities. A batch
    writes what it cost into ``stats`` when given one."""

    name: str
    store: Store

    def threshold(self, b: int, q: torch.Tensor, thr: float,
                  exclude: int | None = None) -> Neighbours: ...

    def topk(self, b: int, q: torch.Tensor, k: int, exclude: int | None = None) -> Neighbours: ...

    def batch_threshold(self, b: int, Q: torch.Tensor, thr: float,
                        exclude: torch.Tensor | None = None, sims: bool = True,
                        stats: SearchStats | None = None) -> tuple: ...

    def batch_topk(self, b: int, Q: torch.Tensor, k: int, exclude: torch.Tensor | None = None,
                   stats: SearchStats | None = None) -> tuple[np.ndarray, ...]: ...


def every_block(search: SearchBackend, method: str, q: torch.Tensor, values, exclude: int | None
                ) -> list[Neighbours]:
    """One query's answer in every block: ``method`` ("threshold" or "topk") of block b with
    ``values[b]`` (its threshold, or k) for the unit queries q (L, C). A backend that asks another
    machine answers all blocks in one exchange (``RaySearch.every_block``: one round trip per
    shard instead of one per block and shard); the others block by block."""
    if hasattr(search, "every_block"):
        return search.every_block(method, q, values, exclude)
    return [getattr(search, method)(b, q[b], values[b], exclude) for b in range(len(values))]


# --- shared helpers ------------------------------------------------------------------------------
def as_tensor(arr: np.ndarray) -> torch.Tensor:
    """A tensor over an array without a copy (read-only memory maps included: never written to)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that it cannot mark the tensor read-only
        return torch.from_numpy(arr)


def unit(v: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length (zero rows stay zero)."""
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-30)


def empty(stats: SearchStats | None = None) -> Neighbours:
    """No neighbours."""
    return Neighbours(np.zeros(0, np.int64), np.zeros(0, np.float32), stats=stats)


def from_tensors(rows: torch.Tensor, sims: torch.Tensor, stats: SearchStats | None = None) -> Neighbours:
    """Neighbours over rows and their similarities given as tensors (on any device), unordered."""
    return Neighbours(rows.cpu().numpy().astype(np.int64), sims.cpu().float().numpy(), stats=stats)


def clamp_topk(scores: torch.Tensor, k: int, exclude: int | None) -> tuple[int, int]:
    """Mask the excluded row (in place) and clamp k: (rows left, k to take)."""
    n = len(scores)
    if exclude is not None:
        scores[exclude] = -float("inf")
        n -= 1
    return n, min(k, n)


def mask_excluded(S: torch.Tensor, exclude: torch.Tensor, start: int) -> None:
    """Set S[i, exclude[i] - start] to -inf where that row lies in this chunk (exclude < 0: none)."""
    ex = exclude.to(S.device)
    inside = (ex >= start) & (ex < start + S.shape[1])
    idx = torch.nonzero(inside).flatten()
    S[idx, ex[idx] - start] = -float("inf")


def best_of(cand: torch.Tensor, sims: torch.Tensor, k: int, stats: SearchStats | None = None) -> Neighbours:
    """The k best of candidate rows with exact similarities, ties at rank k to the lower row."""
    order = torch.argsort(cand)
    cand, sims = cand[order], sims[order]
    best = topk_ties(sims, k, False)
    rows = cand.cpu().numpy()[best.rows]
    o = np.lexsort((rows, -best.sims))
    return Neighbours(rows[o].astype(np.int64), best.sims[o], ordered=True, stats=stats)


def topk_ties(s: torch.Tensor, k: int, has_excluded: bool) -> Neighbours:
    """The k largest of s; ties at the k-th value are taken in row order. -inf never counts."""
    finite = int(torch.isfinite(s).sum()) if has_excluded else s.numel()
    k = min(k, finite)
    if k <= 0:
        return empty()
    kth = s.topk(k).values[-1]
    above = torch.nonzero(s > kth).flatten()
    tied = torch.nonzero(s == kth).flatten()[: k - len(above)]
    rows = torch.cat([above, tied])
    return from_tensors(rows, s[rows])


def batch_output(answers: list[tuple[int, Neighbours]]) -> tuple[np.ndarray, ...]:
    """Per-query answers [(query index, Neighbours)] as a batch's (query index, row, sim) arrays."""
    if not answers:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return (np.concatenate([np.full(len(nb), i, dtype=np.int64) for i, nb in answers]),
            np.concatenate([nb.rows for _, nb in answers]),
            np.concatenate([nb.sims for _, nb in answers]))


def record(stats: SearchStats | None, plan: str, candidates: int, bytes_read: int,
           rank: int = 0) -> SearchStats:
    """Fill the caller's ``stats`` (a batch's), or a new one (a single query's)."""
    return (stats if stats is not None else SearchStats()).fill(plan, candidates, bytes_read, rank)


# --- the checks when an index opens -------------------------------------------------------------
@dataclass(frozen=True)
class IndexCheck:
    """The checks every index file set gets when its backend opens: its manifest entry ``key`` is
    present, it was made from the vectors the store holds (their fingerprint), and its files fit
    the store. ``made``: how the message says it was made ("fitted to", "built from"); ``add``: the
    remedy when it is missing; ``rebuild``: the remedy when it does not fit."""

    key: str
    made: str
    add: str
    rebuild: str

    def entry(self, store: Store) -> dict:
        """The index's manifest entry, present and made from the store's vectors."""
        info = store.manifest.get(self.key)
        if not info:
            raise StoreError(f"the store at {store.path} has no {self.key} index; {self.add}")
        if info.get("unit_fingerprint") != store.manifest.get("unit_fingerprint"):
            raise StoreError(f"the {self.key} index at {store.path} was {self.made} other vectors "
                             f"than the store holds; {self.rebuild}")
        return info

    def fits(self, ok: bool, where: str, what: str = "does not fit the store") -> None:
        """Refuse the index (``where``: e.g. "at PATH", or a file) unless ``ok``."""
        if not ok:
            raise StoreError(f"the {self.key} index {where} {what}; {self.rebuild}")

    def load(self, path, read: Callable):
        """``read(path)``, refusing a file that is missing or cannot be read."""
        if not path.exists():
            raise StoreError(f"{path} is missing; {self.rebuild}")
        try:
            return read(path)
        except RuntimeError as e:
            raise StoreError(f"{path} cannot be read ({str(e).splitlines()[0]}); {self.rebuild}") from e
