"""The bound index's cells (see :mod:`app.search.bound`): each block's strings split into cells
of similar directions, with an exact cap bound per cell that discards whole cells before any
string's bound is read.

Per block, spherical k-means on a sample gives ``n`` unit centroids c. Each cell keeps alpha, the
largest angle between its centroid and one of its strings, and the largest norm of its stored
vectors (float16: within 2^-11 of 1). For a unit query q at angle theta to c, every string x of
the cell is at least max(theta - alpha, 0) away from q (the triangle inequality on the sphere), so

    q . x  <=  |x| cos(max(theta - alpha, 0))

and a threshold query reads only the strings of the cells whose cap reaches its threshold. The
other side, q . x >= nmin cos(theta + alpha) (nmin: the cell's smallest norm), proves that every
string of a cell qualifies: a threshold batch gives such cells whole (``WholeCells``), each
counted once by its strings' summed follow-on counts, without a pair for each string. The
bound table's columns are laid out cell by cell (``order``: the pool row of each column), so a
cell is a contiguous run of every row of the table; the cells themselves are ordered by a coarse
k-means of their centroids (``groups``: about sqrt(n) runs of cells), so that a batch can skip
whole runs of columns for the queries that have no live cell in them.

Measured on tiny's store (823k strings x 128, 4,096 cells, typed prompts at the calibrated
thresholds): the live cells hold 0.1 / 0.5 % of the strings (p50 / p95) in block 0, 1.6 / 9.4 %
in block 4, 7 / 16 % in block 5 (threshold 0.92); on blog's (859k x 384), 0.07 / 0.4 % in block 0,
4.3 / 6.1 % in block 2. Where the thresholds sit deep (blog's blocks 3-5, about 0.75-0.8), most
cells stay live and the search reads every column, as without cells (``LIVE_MAX``).

Rounding: the centroids' products with the query are float32 (error under C 2^-24, C <= 4096),
taken COS_SLACK higher (lower, for the other side); alpha and the norms are computed in float64
from the stored float16 values; the bound is compared with the threshold less BOUND_MARGIN (the
other side with the threshold plus it) as the strings' bounds are. The tests check that no string
of a discarded cell qualifies and that every string of a whole cell does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

ROWS_PER_CELL = 200  # strings per cell on average (4,096 cells on the reference stores)
MAX_CELLS = 4096
COS_SLACK = 1e-4  # the float32 cosine of a centroid and the query, taken this much higher
# When the live cells hold more than this fraction of the strings, a single query reads every
# column (gathering the live columns of each row would cost more than streaming them all).
LIVE_MAX = 0.5
# Top-k reads its live columns at its one (highest) stage, every row of the table gathered: on
# blog (30 typed prompts, top-200, one run with another job on the cores) the six blocks' p50 /
# p95 were 579 / 1,500 ms with LIVE_MAX, 277 / 629 at 0.15 and 412 / 742 without cells.
TOPK_LIVE_MAX = 0.15
KMEANS_ITERATIONS = 10
SAMPLE_PER_CELL = 48


def cell_count(P: int) -> int:
    """Cells for a block of P strings: about ROWS_PER_CELL each, at most MAX_CELLS."""
    return int(max(1, min(MAX_CELLS, P // ROWS_PER_CELL)))


def spherical_kmeans(X: torch.Tensor, n: int, iters: int = KMEANS_ITERATIONS,
                     seed: int = 0) -> torch.Tensor:
    """(n, C) unit centroids of the unit rows of X by spherical k-means (start: n distinct rows);
    an empty cell keeps its centroid."""
    g = torch.Generator().manual_seed(seed)
    cen = X[torch.randperm(len(X), generator=g)[:n]].clone()
    for _ in range(iters):
        a = assign(X, cen)
        acc = torch.zeros_like(cen).index_add_(0, a, X)
        norm = acc.norm(dim=1, keepdim=True)
        cen = torch.where(norm > 0, acc / norm.clamp_min(1e-30), cen)
    return cen


def assign(X: torch.Tensor, cen: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """Each row's nearest centroid (largest product)."""
    return torch.cat([(X[s : s + chunk] @ cen.T).argmax(1) for s in range(0, len(X), chunk)])


@dataclass
class Cells:
    """One block's cells. ``order`` (P,): the pool row of each column of the block's table, cell
    by cell; ``edges`` (n + 1,): the columns of cell i are edges[i]:edges[i + 1]; ``centroids``
    (n, C) float32 unit; ``alpha`` (n,): each cell's largest angle to its centroid (radians,
    float64); ``nmax`` (n,): its largest vector norm (``nmin``: its smallest); ``groups`` (G + 1,):
    the cells of run g are groups[g]:groups[g + 1]."""

    order: np.ndarray
    edges: np.ndarray
    centroids: np.ndarray
    alpha: np.ndarray
    nmax: np.ndarray
    groups: np.ndarray
    nmin: np.ndarray | None = None
    _cell_of: np.ndarray | None = None
    _inverse: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.alpha)

    def caps(self, Q: np.ndarray) -> np.ndarray:
        """Upper bounds (n,) (or (B, n) for queries (B, C)) of q . x over each cell's strings."""
        cos = (np.asarray(Q, dtype=np.float32) @ self.centroids.T).astype(np.float64) + COS_SLACK
        theta = np.arccos(np.clip(cos, -1.0, 1.0))
        return self.nmax * np.cos(np.maximum(theta - self.alpha, 0.0))

    def cos_cuts(self, cut: float) -> np.ndarray:
        """(n,) per cell, the cosine of the query to its centroid above which its cap exceeds
        ``cut``: nmax cos(max(theta - alpha, 0)) > cut exactly when theta < alpha + phi, phi =
        arccos(cut / nmax), that is cos theta > cos(alpha + phi) (-inf when alpha + phi reaches
        pi: always; +inf when cut >= nmax: never), taken 1e-12 lower."""
        empty = self.nmax <= 0
        r = np.maximum(cut / np.where(empty, 1.0, self.nmax), -1.0)
        reach = self.alpha + np.arccos(np.minimum(r, 1.0))
        t = np.where(reach >= np.pi, -np.inf, np.cos(np.minimum(reach, np.pi)) - 1e-12)
        return np.where((r >= 1.0) | empty, np.inf, t)

    def cosines(self, Q: np.ndarray) -> np.ndarray:
        """(n,) (or (B, n) for queries (B, C)) the query's float32 products with the centroids, as
        float64: what ``live``, ``sure`` and the rest read (computed once a query and block)."""
        return (np.asarray(Q, dtype=np.float32) @ self.centroids.T).astype(np.float64)

    def live(self, cos: np.ndarray, cut: float) -> np.ndarray:
        """Whether each cell's cap exceeds ``cut``, given the query's ``cosines``: (n,) bool (or
        (B, n)), as ``caps(Q) > cut`` is (or a cell more, within 1e-12 of the boundary), without
        the arccos and cosine of every (query, cell) pair (5 ms a block for a strip's 64)."""
        return cos + COS_SLACK > self.cos_cuts(cut)

    def sure(self, cos: np.ndarray, cut: float) -> np.ndarray:
        """Whether every string of each cell has q . x > ``cut`` > 0, given the query's ``cosines``:
        (n,) bool (or (B, n)). The
        cap's other side: x is within theta + alpha of q, so q . x >= nmin cos(theta + alpha)
        while that angle stays below pi / 2; theta read with the centroid's cosine taken COS_SLACK
        lower. Such a cell holds only neighbours: a batch takes it whole (``WholeCells``)."""
        if self.nmin is None or cut <= 0:
            return np.zeros(cos.shape, dtype=bool)
        r = np.minimum(cut / np.maximum(self.nmin, 1e-300), 1.0)
        psi = np.arccos(r) - self.alpha  # q . x > cut for every x when theta < psi
        t = np.where(psi > 0, np.cos(np.clip(psi, 0.0, np.pi)) + 1e-12, np.inf)
        return cos - COS_SLACK > t

    def live_columns(self, cos: np.ndarray, cut: float, most: float = LIVE_MAX) -> np.ndarray | None:
        """The columns of the cells whose cap exceeds ``cut`` (``cos``: the query's ``cosines``),
        in order; None when they are more than ``most`` of all (read every column)."""
        live = np.flatnonzero(self.live(cos, cut))
        sizes = self.edges[live + 1] - self.edges[live]
        total = int(sizes.sum())
        if total > most * self.edges[-1]:
            return None
        if total == 0:
            return np.zeros(0, dtype=np.int64)
        run_start = np.repeat(self.edges[live] - np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes)
        return run_start + np.arange(total)

    def nearest_rows(self, q: np.ndarray, m: int) -> np.ndarray:
        """The pool rows of the cells whose centroids are nearest q, nearest first, until at
        least m strings (all when fewer)."""
        by = np.argsort(-(self.centroids @ np.asarray(q, dtype=np.float32)), kind="stable")
        sizes = self.edges[by + 1] - self.edges[by]
        take = by[: int(np.searchsorted(np.cumsum(sizes), m)) + 1]
        return np.concatenate([self.order[self.edges[c] : self.edges[c + 1]] for c in take])

    def live_groups(self, cos: np.ndarray, cut: float) -> np.ndarray:
        """(B, G) bool: which runs of cells hold a cell whose cap exceeds ``cut`` for each query."""
        return np.logical_or.reduceat(self.live(cos, cut), self.groups[:-1], axis=1)

    def group_columns(self) -> np.ndarray:
        """(G + 1,) the columns where each run of cells starts (and the end)."""
        return self.edges[self.groups]

    def column_of(self, row: int) -> int:
        """The column of pool row ``row``."""
        return int(self.columns_of(np.array([row]))[0])

    def columns_of(self, rows: np.ndarray) -> np.ndarray:
        """The columns of pool rows ``rows``."""
        if self._inverse is None:
            inv = np.empty(len(self.order), dtype=np.int64)
            inv[self.order] = np.arange(len(self.order))
            self._inverse = inv
        return self._inverse[rows]

    @property
    def cell_of_column(self) -> np.ndarray:
        """(P,) int32: the cell of each column."""
        if self._cell_of is None:
            self._cell_of = np.repeat(np.arange(self.n, dtype=np.int32), np.diff(self.edges))
        return self._cell_of


def fit_cells(unit: np.ndarray, n: int | None = None, seed: int = 0) -> Cells:
    """The cells of one block's stored unit vectors ``unit`` (P, C) (float16): spherical k-means
    on a sample of SAMPLE_PER_CELL strings a cell, every string assigned to its nearest centroid,
    the cells ordered by a coarse k-means of their centroids (about sqrt(n) runs)."""
    P, C = unit.shape
    n = min(cell_count(P) if n is None else int(n), P)
    rng = np.random.default_rng(seed)
    X = torch.from_numpy(np.asarray(unit, dtype=np.float32))
    X = torch.nn.functional.normalize(X, dim=1)
    sample = np.sort(rng.choice(P, min(P, n * SAMPLE_PER_CELL), replace=False))
    cen = spherical_kmeans(X[torch.from_numpy(sample)], n, seed=seed)
    G = max(1, int(round(n ** 0.5)))
    coarse = assign(cen, spherical_kmeans(cen, G, seed=seed)).numpy()
    cen = cen[torch.from_numpy(np.argsort(coarse, kind="stable"))]
    coarse = np.sort(coarse)
    a = assign(X, cen).numpy()
    del X
    order = np.argsort(a, kind="stable")
    edges = np.concatenate([[0], np.cumsum(np.bincount(a, minlength=n))]).astype(np.int64)
    groups = np.concatenate([[0], np.cumsum(np.bincount(coarse, minlength=G))]).astype(np.int64)
    groups = np.unique(groups)  # an empty run of cells is no run
    c64 = cen.numpy().astype(np.float64)
    c64 /= np.linalg.norm(c64, axis=1, keepdims=True)
    alpha, nmax, nmin = np.zeros(n), np.zeros(n), np.full(n, np.inf)
    for s in range(0, P, 65536):
        x = np.asarray(unit[s : s + 65536], dtype=np.float64)
        norm = np.linalg.norm(x, axis=1)
        cos = np.einsum("pc,pc->p", x, c64[a[s : s + 65536]]) / np.maximum(norm, 1e-300)
        np.maximum.at(alpha, a[s : s + 65536], np.arccos(np.clip(cos, -1.0, 1.0)))
        np.maximum.at(nmax, a[s : s + 65536], norm)
        np.minimum.at(nmin, a[s : s + 65536], norm)
    nmin[np.isinf(nmin)] = 0.0  # an empty cell
    return Cells(order.astype(np.int64), edges, np.ascontiguousarray(c64, dtype=np.float32),
                 alpha + 1e-9, nmax * (1 + 1e-9), groups, nmin * (1 - 1e-9))


def write_cells(path, cells: list[Cells]) -> list[list[int]]:
    """Write every block's cells to the store's files (``CELL_FILES``: the columns' pool rows,
    int32; the centroids, float32; edges, alpha, largest and smallest norms, float64); returns the runs
    of cells (``groups``), which the manifest records."""
    L, n = len(cells), cells[0].n
    np.save(path / "bound_order.npy", np.stack([c.order.astype(np.int32) for c in cells]))
    np.save(path / "bound_centroids.npy", np.stack([c.centroids for c in cells]))
    caps = np.zeros((L, 4, n + 1))
    for b, c in enumerate(cells):
        caps[b, 0], caps[b, 1, :n], caps[b, 2, :n], caps[b, 3, :n] = c.edges, c.alpha, c.nmax, c.nmin
    np.save(path / "bound_cells.npy", caps)
    return [[int(g) for g in c.groups] for c in cells]


def read_cells(order: np.ndarray, centroids: np.ndarray, caps: np.ndarray, groups) -> list[Cells]:
    """Every block's cells from the arrays ``write_cells`` wrote (``order`` memory-mapped)."""
    n = centroids.shape[1]
    return [Cells(np.asarray(order[b], dtype=np.int64), caps[b, 0].astype(np.int64),
                  np.ascontiguousarray(centroids[b]), caps[b, 1, :n], caps[b, 2, :n],
                  np.asarray(groups[b], dtype=np.int64), caps[b, 3, :n]) for b in range(len(caps))]


@dataclass
class WholeCells:
    """A threshold batch's neighbours (``BoundSearch.batch_threshold_cells``): the pairs (``qi``,
    ``rows``), and the whole cells (``cq``, ``cc``): query cq[i] has every string of cell cc[i]
    as a neighbour. ``counts()`` (n, V): each cell's summed follow-on counts (made when first
    asked); ``sizes`` (n,): its strings; ``cells``: the block's Cells."""

    qi: np.ndarray
    rows: np.ndarray
    cq: np.ndarray
    cc: np.ndarray
    counts: Callable[[], np.ndarray]
    sizes: np.ndarray
    cells: Cells

    def summed(self, sum_rows_grouped, B: int) -> tuple[np.ndarray, np.ndarray]:
        """(B, V) each query's summed follow-on counts (its pairs' rows through
        ``sum_rows_grouped(rows, groups, n)``, plus its whole cells'), and (B,) its neighbours."""
        out = sum_rows_grouped(self.rows, self.qi, B)
        if len(self.cq):
            np.add.at(out, self.cq, self.counts()[self.cc])
        sizes = np.bincount(self.qi, minlength=B) + np.bincount(
            self.cq, weights=self.sizes[self.cc], minlength=B).astype(np.int64)
        return out, sizes.astype(np.int64)

    def holds(self, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Whether query q[i]'s neighbours hold pool row rows[i] (-1: none): among its pairs or
        in one of its whole cells."""
        q, rows = np.asarray(q, dtype=np.int64), np.asarray(rows, dtype=np.int64)
        ok = rows >= 0
        whole = np.zeros((int(q.max(initial=-1)) + 1, self.cells.n), dtype=bool)
        keep = self.cq < len(whole)
        whole[self.cq[keep], self.cc[keep]] = True
        out = np.zeros(len(q), dtype=bool)
        out[ok] = whole[q[ok], self.cells.cell_of_column[self.cells.columns_of(rows[ok])]]
        M = int(max(self.rows.max(initial=0), rows.max(initial=0))) + 1
        return out | (ok & np.isin(q * M + rows, self.qi * M + self.rows))

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Every (query, pool row) pair, the whole cells' strings listed (tests, checks)."""
        e = self.cells.edges
        n = e[self.cc + 1] - e[self.cc]
        start = np.repeat(e[self.cc] - np.concatenate([[0], np.cumsum(n)[:-1]]), n)
        cols = start + np.arange(int(n.sum()))
        return (np.concatenate([self.qi, np.repeat(self.cq, n)]),
                np.concatenate([self.rows, self.cells.order[cols]]))
