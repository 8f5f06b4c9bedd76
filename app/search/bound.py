"""Exact search that reads a fraction of the store: a provable upper bound prunes, float32 decides.

FFN outputs are close to low-rank. Per block, index time fits r orthonormal directions U (the top
right-singular vectors of a sample of the stored unit vectors) and keeps, for every string, its
projection x_p = U^T x and its residual norm |x - U x_p|, in float32: one table of r + 1 rows of P
values per block (the projections direction by direction, then the residual norms), so that the
bound is one streaming matrix-vector product. For a unit query q with projection q_p and residual
norm |q_r|, Cauchy-Schwarz gives

    q . x  =  q_p . x_p + q_r . x_r  <=  q_p . x_p + |q_r| |x_r|  =  [q_p, |q_r|] . [x_p, |x_r|]

so every string whose bound stays at or below the threshold (minus a margin for rounding, below)
is discarded with certainty; the rest get the exact float32 product. Answers are identical to
the full float32 scan, reading (r + 1) / (C / 2) of the vector bytes plus the survivors.

Stages: the rank a query needs depends on the query. On blog's block 3, 128 held-out prompts at
the calibrated threshold leave about as few candidates at rank 48 as at rank 128 (p50 850 against
187), for less than half the bytes, while their 200th neighbours need rank 128 (rank 48 leaves a
tail of 770,000 candidates at p95). So each block's table holds a few stages of increasing rank
(``BoundIndex``), each stage one more product over rows not read before, and a query stops at the
first stage whose candidates cost less to decide than the next stage would (``BoundSearch``;
top-k queries, whose k-th value must be found first, read one stage). The stages, and top-k's,
are chosen per block by measurement (``choose_stages`` in :mod:`app.search.bound_build`, which
also fits the directions and writes the files).

Rounding margin: everything is float32 on the stored float16 vectors (exactly representable in
float32). The computed bound differs from the exact-arithmetic one by float32 rounding in x_p,
|x_r|, q_p, |q_r| and the sums, each a few units of 2^-24 times sums of magnitudes at most sqrt(C)
(C <= 4096: under 2e-5 in all), and the exact similarities the search compares are float32 sums
off by as much again. BOUND_MARGIN = 1e-4 covers both with room to spare; the tests check it.
The same holds for the lower side, q_p . x_p - |q_r| |x_r| <= q . x, with which the threshold
search accepts strings without computing their products: a string is taken unseen only when its
lower bound clears the threshold by the margin.
(Float16 tables would halve the bytes, but this CPU (AVX2, F16C, no AVX-512) multiplies them
below the bandwidth: measured on 858,923 x 97 values, numpy's float32 product 9.4 ms (33 GiB/s),
float16 converted to float32 chunk by chunk 15-19 ms, torch's float16 product 140 ms.)

Plans, chosen once when the backend opens (``bound_device.open_bound``): on the CPU, ``BoundSearch`` prunes
single queries and batches alike; on an accelerator, ``DeviceBoundSearch``
(:mod:`app.search.bound_device`) holds the tables
there and prunes single queries, while batches run the full scan on the device. Both hold an
``ExactSearch`` (``scan``) that computes every float32 similarity they return.

Cells: before any string's bound, a threshold query discards whole cells of strings whose
cap bound (the angle from the cell's centroid to its farthest string) cannot reach the threshold
(:mod:`app.search.bound_cells`). The table's columns are laid out cell by cell, so the query's
passes read only its live cells' columns, and the stages after the first cost that fraction of
their rows (the walk and ``choose_stages`` price them so); top-k queries read the cells that
their nearest cells' k-th similarity leaves live; a batch for counts takes the cells whose every
string qualifies whole (``batch_threshold_cells``).

Files: ``bound_basis.npy`` (L, C, max rank, float32; block b uses its first r_b columns) and
``bound_proj.npy`` (sum of r_b + its stages, P; float32): block b's table is its rows,
interleaved as ``BoundIndex`` says, its columns in cell order; the cells' ``bound_order.npy``,
``bound_centroids.npy`` and ``bound_cells.npy`` (see ``bound_cells.write_cells``); written by
``bound_build.add_bound``, recorded in the manifest (``bound``: layout, stages, cells and their
runs, the estimates) by ``bound_build.seal_bound`` (or by the store's ``finalize``, given
``index_files``), checked by ``open_bound``.
"""
from __future__ import annotations

import numpy as np
import torch

from ..store import IndexFiles, Store, StoreError
from .base import (IndexCheck, Neighbours, SearchStats, batch_output, best_of,
                   clamp_topk, empty, record)
from .bound_batch import batch_bounds, batch_spans, lower_pairs
from .bound_cells import TOPK_LIVE_MAX, WholeCells, read_cells
from .bound_table import BoundIndex
from .exact import ExactSearch

BOUND_MARGIN = 1e-4
LAYOUT = 4  # per block, cells, and stages of increasing rank in one table with its columns cell by
# cell (3: in pool order, no cells; 2: one rank per block; 1: one rank)
# The planner: deciding a candidate exactly gathers its row (random access), which costs about
# GATHER_COST times what streaming one row costs in the full float16 scan; when the bound leaves
# more than P / GATHER_COST candidates to decide, the block is scanned instead, so a block never
# costs much more than the scan (the bound's own pass, r + 1 float32 values a row, is the most
# lost). Measured by bench/search.py's planner line here (2 cores shared with other jobs): 3.9-4.5
# on blog's block 3 (858,923 x 384), 6.3-8.5 on tiny's (823k x 128); since the gathers run on
# one-core workers (app.cores), on the idle machine, 6.5 (20,000 rows) and 3.6 (100,000) on blog's,
# 9.4 and 3.1 on tiny's.
GATHER_COST = 4
# What one byte of the float16 scan costs against one byte of the bound's float32 pass: without
# AVX-512 FP16 the CPU converts every float16 value before multiplying, so the scan runs below the
# memory bandwidth while the table streams at it. Measured here on 2 cores (each block's scan and
# its table's pass, median of 15): tiny's blocks (823k x 128) 2.8-3.3 (the scan at
# 11-12 GiB/s, the tables at 33-40), blog's (859k x 384) 1.5-2.3 (17-18 against 27-41 GiB/s).
# ``choose_stages`` prices stages in the table's bytes, so a scan is 2 C P x SCAN_COST; one
# constant for every width, taken at the narrow end: wide blocks are priced towards higher ranks.
SCAN_COST = 3.3
# What a stage costs beyond its rows' bytes, in rows of P float32: adding its product into the
# bounds and comparing them with the cut (two more passes over P values, and a write).
STAGE_OVERHEAD = 3
SMALL = ("bound_basis.npy", "bound_cells.npy")  # hashed in the manifest
BIG = ("bound_proj.npy", "bound_order.npy", "bound_centroids.npy")
CHECK = IndexCheck("bound", made="fitted to", add="run `ffnlens index` to add it",
                   rebuild="run `ffnlens index` to rebuild it (the bound index only)")


def index_files(n_layer: int) -> IndexFiles:
    """The bound index's files (the same for any number of blocks)."""
    return IndexFiles("bound", SMALL + BIG, hashed=SMALL)


def next_stage(i: int, last: int, n: float, P: int, C: int, next_bytes: float,
               gather_cost: float = GATHER_COST, scan_cost: float = SCAN_COST,
               live: float = 1.0) -> int | None:
    """Where a threshold query at stage i (of stages 0 to ``last``) that leaves n candidates to
    decide goes next: None (it stops) at the last stage, or when deciding them costs no more than
    the next stage's pass (``next_bytes``, plus STAGE_OVERHEAD), both in bytes of the table's pass;
    straight to the last stage when they are so many that the planner would scan (the stages
    between would cost their overhead and rarely stop it: on blog's block 3 such queries leave
    780,000 candidates at rank 32 and 5,000-35,000 at rank 128); else the next stage. ``live``:
    the fraction of the columns the query reads (its live cells'; ``next_bytes`` already counts
    only those). The search walks by it (``BoundSearch._next``) and the build prices by it
    (``bound_build.walk_cost``)."""
    if i == last:
        return None
    if n * gather_cost > P:
        return last
    if n * gather_cost * 2 * C * scan_cost <= next_bytes + STAGE_OVERHEAD * 4 * P * live:
        return None
    return i + 1


def topk_from_bounds(scan: ExactSearch, b: int, q: torch.Tensor, ub: torch.Tensor, k: int,
                     exclude: int | None, plan: str, bound_bytes: int,
                     gather_cost: float = GATHER_COST, rank: int = 0, order=None,
                     exclude_col: int | None = None) -> Neighbours:
    """Two passes over upper bounds ``ub`` (on the CPU or a device): the exact similarities of the
    2k best bounds give a k-th value that the answer's k-th can only exceed; every string whose
    bound reaches it (less the margin, so ties at the k-th are all seen) is then decided exactly.
    Measured on blog-cpu at k = 200: 5.5 ms per block before (rounds of 4x more candidates, each
    re-ranking every bound). ``ub`` is by column of the table: ``order`` maps columns to pool rows
    (None: the same), and ``exclude_col`` is the excluded row's column."""
    rows_of = (lambda c: c) if order is None else (lambda c: order[c])
    n, k = clamp_topk(ub, k, exclude if order is None else exclude_col)  # its bound is now -inf
    if k <= 0:
        return empty(record(None, plan, 0, bound_bytes, rank))
    m = min(n, 2 * k)
    if ub.device.type == "cpu":  # numpy's partition and flatnonzero: 3x faster than torch's topk
        u = ub.numpy()
        first = torch.from_numpy(np.flatnonzero(u >= np.partition(u, len(u) - m)[len(u) - m]))
    else:
        first = ub.topk(m).indices
    kth = float(scan.exact(b, rows_of(first), q).topk(k).values[-1])
    if ub.device.type == "cpu":
        cand = torch.from_numpy(np.flatnonzero(ub.numpy() >= np.float32(kth - BOUND_MARGIN)))
    else:
        cand = torch.nonzero(ub >= kth - BOUND_MARGIN).flatten()
    if len(cand) * gather_cost > scan.store.size:  # the bound cannot prune enough: scan (GATHER_COST)
        nb = scan.topk(b, q, k, exclude)
        nb.stats = record(None, plan + "->scan", nb.stats.candidates,
                          bound_bytes + m * scan.row_bytes() + nb.stats.bytes_read, rank)
        return nb
    stats = record(None, plan, len(cand), bound_bytes + len(cand) * scan.row_bytes(), rank)
    cand = rows_of(cand)
    return best_of(cand, scan.exact(b, cand, q), k, stats)


class BoundSearch:
    """Exact answers (equal to the full float32 scan) from a pruned scan, for single queries and
    batches; the bounds on the CPU, the float32 products by ``scan`` (on ``device``).

    A threshold query walks its block's stages (see BoundIndex) and stops at the first whose
    bound leaves candidates that cost no more to decide than the next stage's pass would
    (``walk``: "priced"; tests also walk "all" the stages or stop at the "first"). Most stop early
    (a threshold's neighbours are easy to separate at a low rank), while the few whose candidates
    stay many read on, so the rank is chosen per query by the tightness it measures. Top-k
    queries read one stage, and batches the last (see ``topk`` and ``BoundIndex.batch_parts``)."""

    name = "bound"

    def __init__(self, store: Store, index: BoundIndex, device: str = "cpu",
                 gather_cost: float = GATHER_COST, walk: str = "priced"):
        self.store, self.device, self.index = store, device, index
        self.scan = ExactSearch(store, device)
        self.gather_cost = gather_cost  # 0: never switch to the scan (the pruned plan always)
        self.walk = walk
        self._cell_counts: dict = {}  # block -> (cells, V) summed follow-on counts of each cell

    def bounds(self, b: int, q: torch.Tensor) -> torch.Tensor:
        """(P,) float32 upper bounds of q . x at the block's last stage by pool row, valid to
        within BOUND_MARGIN (the strings' bounds, without their cells')."""
        ub = self.index.cpu_bounds(b, *self.index.query_parts(b, q))
        by_row = np.empty_like(ub)
        by_row[self.index.rows_of(b, np.arange(len(ub)))] = ub
        return torch.from_numpy(by_row)

    def _next(self, b: int, i: int, n: int, live: float = 1.0) -> int | None:
        """Where a threshold query at stage i of block b that leaves n candidates to decide goes
        next (``next_stage``, reading the fraction ``live`` of the columns; walking "all" or
        stopping at the "first" in tests)."""
        last = len(self.index.stages[b]) - 1
        if self.walk == "first":
            return None
        if self.walk == "all":
            return None if i == last else i + 1
        nxt = self.index.stage_bytes(b, i + 1) * live if i < last else 0
        return next_stage(i, last, n, self.store.size, self.store.unit.shape[2], nxt,
                          self.gather_cost, live=live)

    def _walk(self, b: int, qp: np.ndarray, qres: np.ndarray, cols: np.ndarray | None,
              start: int = 0):
        """The query's bounds stage by stage from stage ``start``, over the table's columns
        ``cols`` (None: all): yields (stage, upper bounds), the same array updated in place; the
        caller sends the stage to go to next (``_next``), None to stop."""
        T = self.index.block(b)
        read = (lambda s, e: T[s:e]) if cols is None else (lambda s, e: np.take(T[s:e], cols, 1))
        i = start
        ub = self.index.stage_vec(qp, qres, b, 0, i) @ read(0, self.index.stage_span(b, 0, i)[1])
        while True:
            j = yield i, ub
            if j is None:
                return
            s, e = self.index.stage_span(b, i + 1, j)
            ub += self.index.stage_vec(qp, qres, b, i + 1, j) @ read(s, e)
            i = j

    def threshold(self, b: int, q: torch.Tensor, thr: float, exclude: int | None = None) -> Neighbours:
        """As the full scan's, and the same answer. The bound's lower side, q_p . x_p - |q_r| |x_r|,
        proves many strings qualify without their product (87 % of block 5's on blog-cpu, where
        the sets reach 100,000): their similarities are computed only when the answer is ordered
        or its first strings are shown (see Neighbours)."""
        qp, qres = self.index.query_parts(b, q)
        T, P = self.index.block(b), self.store.size
        cells, cols = self.index.cells[b], None
        if cells is not None:
            cols = cells.live_columns(cells.cosines(q.detach().cpu().numpy()), thr - BOUND_MARGIN)
        live = 1.0 if cols is None else len(cols) / P
        walk = self._walk(b, qp, qres, cols)
        i, ub = next(walk)
        while True:  # on by the candidates each stage leaves, as choose_stages priced the walk
            above = ub > np.float32(thr - BOUND_MARGIN)
            j = self._next(b, i, int(np.count_nonzero(above)), live)
            if j is None:
                break
            i, ub = walk.send(j)
        cand = np.flatnonzero(above)
        hi = ub[cand]
        if cols is not None:
            cand = cols[cand]
        lo = hi - 2 * qres[i] * T[self.index.resid_row(b, i)][cand]
        sure = lo > np.float32(thr + BOUND_MARGIN)
        cand = self.index.rows_of(b, cand)
        if exclude is not None:
            keep = cand != exclude
            cand, hi, lo, sure = cand[keep], hi[keep], lo[keep], sure[keep]
        test = cand[~sure]
        rank, read = self.index.stages[b][i], int(self.index.block_bytes(b, i) * live)
        if len(test) * self.gather_cost > P:  # the bound cannot prune enough: scan
            nb = self.scan.threshold(b, q, thr, exclude)
            nb.stats = record(None, "bound->scan", nb.stats.candidates, read + nb.stats.bytes_read, rank)
            return nb
        stats = record(None, "bound" if cols is None else "bound+cells", len(cand),
                       read + len(cand) * self.scan.row_bytes(), rank)
        s = self.scan.exact(b, torch.from_numpy(test), q).numpy()
        keep = s > thr
        rows = np.concatenate([test[keep], cand[sure]]).astype(np.int64)
        sims = np.concatenate([s[keep], np.full(int(sure.sum()), np.nan, np.float32)])
        if not sure.any():
            return Neighbours(rows, sims, stats=stats)
        lo_all = np.concatenate([s[keep], lo[sure] - np.float32(BOUND_MARGIN)])
        hi_all = np.concatenate([s[keep], hi[sure] + np.float32(BOUND_MARGIN)])
        return Neighbours(rows, sims, lo=lo_all, hi=hi_all, stats=stats,
                          fill=lambda r: self.scan.exact(b, torch.from_numpy(r), q).numpy())

    def topk(self, b: int, q: torch.Tensor, k: int, exclude: int | None = None) -> Neighbours:
        """As the full scan's, and the same answer, at one stage, its block's ``topk_stage`` (chosen
        by ``choose_stages``). Top-k does not walk: on blog (150 held-out prompts) one stage gave
        p50 / p95 58.7 / 113.3 ms against 50.9-57.4 / 125.6-160.4 for walks with probes at some
        stages: a walk saves the typical query's rows and costs the tail's, which needs the last
        rank. The exact similarities of the 2k best bounds give a k-th value that the answer's
        k-th can only exceed; every string whose bound reaches it (less the margin) is decided.

        With cells, the exact similarities of the strings of the cells nearest the query (at
        least 2k + 1 of them) give a floor the answer's k-th can only exceed: the bounds are read
        only over the cells whose cap reaches it (when those hold at most TOPK_LIVE_MAX of the
        strings), every one of the answer's strings among them."""
        qp, qres = self.index.query_parts(b, q)
        i = self.index.topk_stage[b]
        cells, cols = self.index.cells[b], None
        if cells is not None:
            qn = q.detach().cpu().numpy()
            near = cells.nearest_rows(qn, 2 * k + 1)
            near = near if exclude is None else near[near != exclude]
            if len(near) >= k > 0:
                floor = float(self.scan.exact(b, torch.from_numpy(near), q).topk(k).values[-1])
                cols = cells.live_columns(cells.cosines(qn), floor - BOUND_MARGIN, TOPK_LIVE_MAX)
        _, ub = next(self._walk(b, qp, qres, cols, i))
        order = None if cells is None else cells.order if cols is None else cells.order[cols]
        at = None  # the excluded row's place among the bounds read (None: not among them)
        if exclude is not None and order is not None:
            at = self.index.column_of(b, exclude)
            if cols is not None:
                j = int(np.searchsorted(cols, at))  # the live columns are in order
                at = j if j < len(cols) and cols[j] == at else None
        return topk_from_bounds(self.scan, b, q, torch.from_numpy(ub), k, exclude,
                                "bound" if cols is None else "bound+cells",
                                int(self.index.block_bytes(b, i) * len(ub) / self.store.size),
                                self.gather_cost, self.index.stages[b][i],
                                None if order is None else torch.from_numpy(order), at)

    # --- batches (evaluation, calibration) ------------------------------------------------------
    def batch_threshold(self, b: int, Q: torch.Tensor, thr: float,
                        exclude: torch.Tensor | None = None, sims: bool = True,
                        stats: SearchStats | None = None) -> tuple:
        """As ExactSearch.batch_threshold (``batch_pairs``, every pair listed)."""
        return self.batch_pairs(b, Q, thr, exclude, sims, stats)

    def batch_pairs(self, b: int, Q: torch.Tensor, thr: float,
                    exclude: torch.Tensor | None = None, sims: bool = True,
                    stats: SearchStats | None = None, whole: np.ndarray | None = None,
                    cos: np.ndarray | None = None) -> tuple:
        """As ExactSearch.batch_threshold, from the bound: one (B, r + 1) x (r + 1, chunk) product
        per chunk instead of (B, C) x (C, chunk), then exact products for the surviving pairs only;
        with ``sims=False``, only for the pairs the lower bound does not already prove (their
        similarities are then None).

        A batch walks in at most two passes: every query at the block's first stage, then the
        last stage for the queries whose candidates there would cost more to decide than the next
        stage (``next_stage``), when the first stage is at most half the last's rows. Most stop at
        the first: of blog's 256-character strip, 1, 7, 41, 7 and 91 of 256 positions went on in
        blocks 0-4, whose passes took 109-297 ms at the first stage against 432-993 ms at the
        last. With cells, each query reads only the runs of cells that hold one of its live cells
        (``batch_spans``). ``whole`` (B, n) bool: cells whose strings all qualify, left out of
        the answer (``batch_threshold_cells`` gives them whole); ``cos``: the queries' products
        with the cells' centroids, when already computed."""
        cut = np.float32(thr - BOUND_MARGIN)  # as torch compared it: in float32
        st, B, P = self.index.stages[b], Q.shape[0], self.store.size
        last = len(st) - 1
        parts, read, rank = [], 0, st[0]
        cells = self.index.cells[b]
        live, starts, frac = None, None, np.ones(B)
        if cells is not None:
            Q = Q.detach().to("cpu", torch.float32)
            cos = cells.cosines(Q.numpy()) if cos is None else cos
            live, starts = cells.live_groups(cos, float(cut)), cells.group_columns()
            frac = (live * np.diff(starts)).sum(1) / P
        skip = None if whole is None or not whole.any() else (whole, cells.cell_of_column)
        go = np.arange(B)  # the queries that read the last stage
        if last > 0 and 2 * self.index.stage_span(b, 0)[1] <= self.index.stage_span(b, last)[1]:
            # two passes: every query at the first stage, then the last stage for those whose
            # candidates there would cost more to decide than walking on (next_stage)
            Q, Qv0, T0 = self.index.batch_parts(b, Q, 0)
            spans = batch_spans(P, live, starts)
            qi, rows, ub = batch_bounds(Qv0, T0, cut, not sims, spans, skip)
            n = np.bincount(qi, minlength=B)
            on = np.array([next_stage(0, last, c, P, Q.shape[1], self.index.stage_bytes(b, 1) * f,
                                      self.gather_cost, live=f) is not None
                           for c, f in zip(n, frac)], dtype=bool)
            stop = ~on[qi]
            parts.append(lower_pairs(qi[stop], rows[stop], None if ub is None else ub[stop],
                                     Qv0, T0))
            read += self.index.block_bytes(b, 0) * sum(e - s for s, e, _ in spans) // P
            go = np.flatnonzero(on)
        if len(go):
            Q, Qv, T = self.index.batch_parts(b, Q)
            Qv = Qv[go] if len(go) < B else Qv
            spans = batch_spans(P, None if live is None else live[go], starts)
            qi, rows, ub = batch_bounds(Qv, T, cut, not sims, spans,
                                        None if skip is None else (skip[0][go], skip[1]))
            parts.append(lower_pairs(go[qi], rows, ub, Qv, T, qi))
            read += self.index.block_bytes(b) * sum(e - s for s, e, _ in spans) // P
            rank = st[-1]
        qi = torch.from_numpy(np.concatenate([p[0] for p in parts]))
        rows = torch.from_numpy(self.index.rows_of(b, np.concatenate([p[1] for p in parts])))
        sure = torch.zeros(len(rows), dtype=torch.bool)
        if not sims:
            sure = torch.from_numpy(np.concatenate([p[2] for p in parts])) > thr + BOUND_MARGIN
        if exclude is not None:
            keep = rows != exclude.to(torch.long)[qi]
            qi, rows, sure = qi[keep], rows[keep], sure[keep]
        test = ~sure
        if self.gather_cost and int(test.sum()) * self.gather_cost > Q.shape[0] * self.store.size:
            # deciding the candidates one by one would cost more than the block's scan for the
            # whole batch (measured on blog's held-out prompts, block 3 at 0.606: 8.4 s for 64)
            # the scan's float32 products keep every pair within BOUND_MARGIN of the threshold: a
            # superset that pair_sims decides below, so the answer is the pruned plan's (the two
            # float32 sums of the same products differ by far less than the margin)
            sqi, srows, _ = self.scan.batch_threshold(b, Q, thr - BOUND_MARGIN, exclude)
            qi, rows = torch.from_numpy(sqi), torch.from_numpy(srows)
            sure = torch.zeros(len(rows), dtype=torch.bool)
            test = ~sure
            record(stats, "bound->scan", len(rows), read
                   + (self.store.size + len(rows)) * self.scan.row_bytes())
        else:
            record(stats, "bound" if live is None else "bound+cells", len(rows),
                   read + len(rows) * self.scan.row_bytes(), rank)
        exact = self.scan.pair_sims(b, Q, qi[test], rows[test])
        keep = exact > thr
        if not sims:
            return (torch.cat([qi[test][keep], qi[sure]]).numpy().astype(np.int64),
                    torch.cat([rows[test][keep], rows[sure]]).numpy().astype(np.int64), None)
        return (qi[keep].numpy().astype(np.int64), rows[keep].numpy().astype(np.int64),
                exact[keep].numpy())

    def batch_threshold_cells(self, b: int, Q: torch.Tensor, thr: float,
                              exclude: torch.Tensor | None = None,
                              stats: SearchStats | None = None) -> WholeCells | None:
        """A threshold batch's neighbours as pairs and whole cells (``WholeCells``): the cells
        whose every string qualifies (``Cells.sure``) are given as (query, cell), their strings'
        follow-on counts summed once per cell; the rest as ``batch_threshold(sims=False)`` gives
        them. A query's excluded row keeps its cell out of the whole ones. None without cells.
        On tiny's 64-position strip, 1.2 of block 5's 1.7 million neighbour pairs lie in such
        cells: its search and counts took 233 -> 163 ms, the six blocks' 499 -> 462 (A/B, 5
        prompts x 3 rounds). Single queries do not take cells whole: the page orders their first
        neighbours, which the cells' looser bounds made cost more (tiny's typed prefixes, block
        5's p95 14.5 -> 19.6 ms)."""
        cells = self.index.cells[b]
        if cells is None:
            return None
        Q = Q.detach().to("cpu", torch.float32)
        cos = cells.cosines(Q.numpy())
        whole = cells.sure(cos, thr + BOUND_MARGIN)
        if exclude is not None:
            ex = exclude.to(torch.long).cpu().numpy()
            at = np.flatnonzero(ex >= 0)
            whole[at, cells.cell_of_column[cells.columns_of(ex[at])]] = False
        qi, rows, _ = self.batch_pairs(b, Q, thr, exclude, sims=False, stats=stats, whole=whole,
                                       cos=cos)
        cq, cc = np.nonzero(whole)
        return WholeCells(qi, rows, cq.astype(np.int64), cc.astype(np.int64),
                          lambda: self.cell_counts(b), np.diff(cells.edges), cells)

    def cell_counts(self, b: int) -> np.ndarray:
        """(cells, V) the summed follow-on counts of each of block b's cells (kept once made)."""
        if b not in self._cell_counts:
            cells = self.index.cells[b]
            self._cell_counts[b] = self.store.counts.sum_rows_grouped(
                cells.order, cells.cell_of_column, cells.n)
        return self._cell_counts[b]

    def batch_topk(self, b: int, Q: torch.Tensor, k: int, exclude: torch.Tensor | None = None,
                   stats: SearchStats | None = None) -> tuple[np.ndarray, ...]:
        """As ExactSearch.batch_topk: each query answered as a single one (``topk``: the same
        answer, ties at the k-th to the lower row). Rounds over the whole batch (each chunk's top m
        bounds of every open query, merged) were measured on tiny at 25-36 s for 64 queries x 6
        blocks; one by one they take about 2 s."""
        Q = Q.detach().to("cpu", torch.float32)
        ex = None if exclude is None else exclude.to(torch.long).cpu()
        answers, n_cand, read = [], 0, 0
        for i in range(Q.shape[0]):
            e = int(ex[i]) if ex is not None and int(ex[i]) >= 0 else None
            nb = self.topk(b, Q[i], k, e)
            answers.append((i, nb))
            n_cand += nb.stats.candidates
            read += nb.stats.bytes_read
        record(stats, "bound", n_cand, read)
        return batch_output(answers)


def load_index(store: Store) -> BoundIndex:
    """The store's bound index (its table and cells memory-mapped); refuses an index that is
    missing, of an older layout, or fitted to other vectors or shapes."""
    info = CHECK.entry(store)
    if info.get("layout") != LAYOUT:
        raise StoreError(f"the bound index at {store.path} has an older layout (no cells); "
                         f"{CHECK.rebuild}")
    stages = info.get("stages") or []
    basis = CHECK.load(store.path / "bound_basis.npy", np.load)
    table = CHECK.load(store.path / "bound_proj.npy", lambda p: np.load(p, mmap_mode="r"))
    ranks = [st[-1] for st in stages if st]
    topk = info.get("topk_stages") or [len(st) - 1 for st in stages]
    order = CHECK.load(store.path / "bound_order.npy", lambda p: np.load(p, mmap_mode="r"))
    centroids = CHECK.load(store.path / "bound_centroids.npy", np.load)
    caps = CHECK.load(store.path / "bound_cells.npy", np.load)
    groups = info.get("groups") or []
    n = centroids.shape[1] if centroids.ndim == 3 else -1
    CHECK.fits(len(stages) == store.n_layer == len(ranks) == len(topk)
               and all(list(st) == sorted(set(st)) for st in stages)
               and all(0 <= i < len(st) for i, st in zip(topk, stages))
               and basis.shape[:2] == (store.n_layer, store.unit.shape[2])
               and basis.shape[2] >= max(ranks, default=0)
               and table.shape == (sum(r + len(st) for r, st in zip(ranks, stages)), store.size)
               and order.shape == (store.n_layer, store.size)
               and centroids.shape == (store.n_layer, n, store.unit.shape[2])
               and caps.shape == (store.n_layer, 4, n + 1) and len(groups) == store.n_layer
               and all(caps[b, 0, -1] == store.size and g[0] == 0 and g[-1] == n
                       for b, g in enumerate(groups)),
               f"at {store.path}")
    return BoundIndex(basis, stages, table, topk, read_cells(order, centroids, caps, groups))
