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

The rank is chosen per block, by measurement (``choose_rank`` in :mod:`app.search.bound_build`,
which also fits the directions and writes the files): a block whose outputs spread over many
directions needs more of them before the bound separates, a low-rank block fewer.

Rounding margin: everything is float32 on the stored float16 vectors (exactly representable in
float32). The computed bound differs from the exact-arithmetic one by float32 rounding in x_p,
|x_r|, q_p, |q_r| and the sums, each a few units of 2^-24 times sums of magnitudes at most sqrt(C)
(C <= 4096: under 2e-5 in all), and the exact similarities the search compares are float32 sums
off by as much again. BOUND_MARGIN = 1e-4 covers both with room to spare; the tests check it.
The same holds for the lower side, q_p . x_p - |q_r| |x_r| <= q . x, with which the threshold
search accepts strings without computing their products: a string is taken unseen only when its
lower bound clears the threshold by the margin.
(Float16 tables would halve the bytes, but torch's float16 matrix-vector product on the CPU is
compute-bound at this shape: measured 11-13 ms for 859k x 32-96 against 2.7 ms for numpy's
float32 at rank 32 and 4.8 ms at rank 64 here.)

Plans, chosen once when the backend opens (``open_bound``): on the CPU, ``BoundSearch`` prunes
single queries and batches alike; on an accelerator, ``DeviceBoundSearch`` holds the tables
there and prunes single queries, while batches run the full scan on the device. Both hold an
``ExactSearch`` (``scan``) that computes every float32 similarity they return.

Files (float32): ``bound_basis.npy`` (L, C, max rank; block b uses its first r_b columns) and
``bound_proj.npy`` (sum of r_b + 1, P): block b's table is its r_b + 1 rows; written by
``bound_build.add_bound``, recorded in the manifest (``bound``: layout, ranks, the estimates) by
``bound_build.seal_bound`` (or by the store's ``finalize``, given ``index_files``), checked by
``open_bound``.
"""
from __future__ import annotations

import numpy as np
import torch

from ..store import IndexFiles, Store, StoreError
from .base import (IndexCheck, Neighbours, SearchStats, batch_output, best_of,
                   clamp_topk, empty, record)
from .exact import ExactSearch

BOUND_MARGIN = 1e-4
LAYOUT = 2  # one table per block, its rank chosen by measurement (1: one rank, separate residuals)
# The planner: deciding a candidate exactly gathers its row (random access), which costs about
# GATHER_COST times what streaming one row costs in the full float16 scan; when the bound leaves
# more than P / GATHER_COST candidates to decide, the block is scanned instead, so a block never
# costs much more than the scan (the bound's own pass, r + 1 float32 values a row, is the most
# lost). Measured by bench/search.py's planner line here (2 cores shared with other jobs): 3.9-4.5
# on blog's block 3 (858,923 x 384), 6.3-8.5 on tiny's (823k x 128).
GATHER_COST = 4
# What one byte of the float16 scan costs against one byte of the bound's float32 pass: without
# AVX-512 FP16 the CPU converts every float16 value before multiplying, so the scan runs below the
# memory bandwidth while the table streams at it. Measured here on 2 cores (each block's scan and
# its table's pass, median of 15): tiny's blocks (823k x 128) 2.8-3.3 (the scan at
# 11-12 GiB/s, the tables at 33-40), blog's (859k x 384) 1.5-2.3 (17-18 against 27-41 GiB/s).
# ``choose_rank`` prices ranks in the table's bytes, so a scan is 2 C P x SCAN_COST; one constant
# for every width, taken at the narrow end: wide blocks are priced somewhat towards higher ranks.
SCAN_COST = 3.3
SMALL = ("bound_basis.npy",)  # hashed in the manifest
BIG = ("bound_proj.npy",)
CHECK = IndexCheck("bound", made="fitted to", add="run `ffnlens index` to add it",
                   rebuild="run `ffnlens index` to rebuild it (the bound index only)")


def index_files(n_layer: int) -> IndexFiles:
    """The bound index's files (the same for any number of blocks)."""
    return IndexFiles("bound", SMALL + BIG, hashed=SMALL)


class BoundIndex:
    """The bound's tables for every block, and the bounds they give on the CPU."""

    def __init__(self, basis: np.ndarray, ranks, table: np.ndarray):
        self.basis = np.ascontiguousarray(basis, dtype=np.float32)  # (L, C, max rank)
        self.ranks = [int(r) for r in ranks]
        self.offsets = np.concatenate([[0], np.cumsum([r + 1 for r in self.ranks])]).tolist()
        self.table = table  # (sum of r_b + 1, P) float32, memory-mapped

    def block(self, b: int) -> np.ndarray:
        """Block b's table (r_b + 1, P): projections, then residual norms."""
        return self.table[self.offsets[b] : self.offsets[b + 1]]

    def block_bytes(self, b: int) -> int:
        """Bytes of one block's table: one pass of the bound reads them."""
        return 4 * (self.offsets[b + 1] - self.offsets[b]) * self.table.shape[1]

    def query_vec(self, b: int, q: torch.Tensor) -> np.ndarray:
        """The unit query's side of the bound, (r_b + 1,) float32: projection, residual norm."""
        qn = q.detach().cpu().numpy().astype(np.float32)
        U = self.basis[b, :, : self.ranks[b]]
        qp = U.T @ qn
        return np.append(qp, np.float32(np.linalg.norm(qn - U @ qp))).astype(np.float32)

    def cpu_bounds(self, b: int, qv: np.ndarray) -> np.ndarray:
        """(P,) upper bounds on the CPU: one streaming product over the block's table."""
        return qv @ self.block(b)

    def slack(self, b: int, qv: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The residual term |q_r| |x_r| of the given rows' bounds (their lower bounds are the
        upper ones less twice it)."""
        return qv[-1] * self.block(b)[-1, rows]

    def batch_parts(self, b: int, Q: torch.Tensor):
        """Unit queries (B, C) -> float32 CPU queries, their side of the bound (B, r_b + 1), and
        the block's table (r_b + 1, P) as it is stored (a numpy array)."""
        Q = Q.detach().to("cpu", torch.float32).contiguous()
        U = torch.from_numpy(self.basis[b, :, : self.ranks[b]])
        Qp = Q @ U
        Qv = torch.cat([Qp, (Q - Qp @ U.T).norm(dim=1, keepdim=True)], 1)
        return Q, Qv, self.block(b)


def topk_from_bounds(scan: ExactSearch, b: int, q: torch.Tensor, ub: torch.Tensor, k: int,
                     exclude: int | None, plan: str, bound_bytes: int,
                     gather_cost: float = GATHER_COST) -> Neighbours:
    """Two passes over upper bounds ``ub`` (on the CPU or a device): the exact similarities of the
    2k best bounds give a k-th value that the answer's k-th can only exceed; every string whose
    bound reaches it (less the margin, so ties at the k-th are all seen) is then decided exactly.
    Measured on blog-cpu at k = 200: 5.5 ms per block before (rounds of 4x more candidates, each
    re-ranking every bound)."""
    n, k = clamp_topk(ub, k, exclude)  # the excluded row's bound is now -inf
    if k <= 0:
        return empty(record(None, plan, 0, bound_bytes))
    m = min(n, 2 * k)
    if ub.device.type == "cpu":  # numpy's partition and flatnonzero: 3x faster than torch's topk
        u = ub.numpy()
        first = torch.from_numpy(np.flatnonzero(u >= np.partition(u, len(u) - m)[len(u) - m]))
    else:
        first = ub.topk(m).indices
    kth = float(scan.exact(b, first, q).topk(k).values[-1])
    if ub.device.type == "cpu":
        cand = torch.from_numpy(np.flatnonzero(ub.numpy() >= np.float32(kth - BOUND_MARGIN)))
    else:
        cand = torch.nonzero(ub >= kth - BOUND_MARGIN).flatten()
    if len(cand) * gather_cost > len(ub):  # the bound cannot prune enough: scan (see GATHER_COST)
        nb = scan.topk(b, q, k, exclude)
        nb.stats = record(None, plan + "->scan", nb.stats.candidates,
                          bound_bytes + m * scan.row_bytes() + nb.stats.bytes_read)
        return nb
    stats = record(None, plan, len(cand), bound_bytes + len(cand) * scan.row_bytes())
    return best_of(cand, scan.exact(b, cand, q), k, stats)


class BoundSearch:
    """Exact answers (equal to the full float32 scan) from a pruned scan, for single queries and
    batches; the bounds on the CPU, the float32 products by ``scan`` (on ``device``)."""

    name = "bound"

    def __init__(self, store: Store, index: BoundIndex, device: str = "cpu",
                 gather_cost: float = GATHER_COST):
        self.store, self.device, self.index = store, device, index
        self.scan = ExactSearch(store, device)
        self.gather_cost = gather_cost  # 0: never switch to the scan (the pruned plan always)

    def bounds(self, b: int, q: torch.Tensor) -> torch.Tensor:
        """(P,) float32 upper bounds of q . x, valid to within BOUND_MARGIN."""
        return torch.from_numpy(self.index.cpu_bounds(b, self.index.query_vec(b, q)))

    def threshold(self, b: int, q: torch.Tensor, thr: float, exclude: int | None = None) -> Neighbours:
        """As the full scan's, and the same answer. The bound's lower side, q_p . x_p - |q_r| |x_r|,
        proves many strings qualify without their product (87 % of block 5's on blog-cpu, where
        the sets reach 100,000): their similarities are computed only when the answer is ordered
        or its first strings are shown (see Neighbours)."""
        qv = self.index.query_vec(b, q)
        ub = self.index.cpu_bounds(b, qv)
        cand = np.flatnonzero(ub > np.float32(thr - BOUND_MARGIN))
        if exclude is not None:
            cand = cand[cand != exclude]
        hi = ub[cand]
        lo = hi - 2 * self.index.slack(b, qv, cand)
        sure = lo > np.float32(thr + BOUND_MARGIN)
        test = cand[~sure]
        if len(test) * self.gather_cost > self.store.size:  # the bound cannot prune enough: scan
            nb = self.scan.threshold(b, q, thr, exclude)
            nb.stats = record(None, "bound->scan", nb.stats.candidates,
                              self.index.block_bytes(b) + nb.stats.bytes_read)
            return nb
        stats = record(None, "bound", len(cand),
                       self.index.block_bytes(b) + len(cand) * self.scan.row_bytes())
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
        """See ``topk_from_bounds``."""
        return topk_from_bounds(self.scan, b, q, self.bounds(b, q), k, exclude, "bound",
                                self.index.block_bytes(b), self.gather_cost)

    # --- batches (evaluation, calibration) ------------------------------------------------------
    def batch_threshold(self, b: int, Q: torch.Tensor, thr: float,
                        exclude: torch.Tensor | None = None, sims: bool = True,
                        stats: SearchStats | None = None) -> tuple:
        """As ExactSearch.batch_threshold, from the bound: one (B, r + 1) x (r + 1, chunk) product
        per chunk instead of (B, C) x (C, chunk), then exact products for the surviving pairs only;
        with ``sims=False``, only for the pairs the lower bound does not already prove (their
        similarities are then None)."""
        Q, Qv, T = self.index.batch_parts(b, Q)
        cut = np.float32(thr - BOUND_MARGIN)  # as torch compared it: in float32
        Qn = np.ascontiguousarray(Qv.numpy())
        qis, rws, ubs = [], [], []
        # numpy only inside the loop: a torch operation between two numpy products waits for
        # BLAS's threads to yield the cores (measured on tiny, 64 queries x 823k rows: 706-888 ms
        # with torch.nonzero on each chunk, 32-38 ms with numpy's flatnonzero)
        for s in range(0, T.shape[1], self.scan.chunk):
            ub = Qn @ T[:, s : s + self.scan.chunk]
            k = np.flatnonzero(ub > cut)
            qis.append(k // ub.shape[1])
            rws.append(k % ub.shape[1] + s)
            if not sims:
                ubs.append(ub.ravel()[k])
        qi, rows = torch.from_numpy(np.concatenate(qis)), torch.from_numpy(np.concatenate(rws))
        sure = torch.zeros(len(rows), dtype=torch.bool)
        if not sims:
            lo = torch.from_numpy(np.concatenate(ubs)) - 2 * Qv[qi, -1] * torch.from_numpy(T[-1][rows.numpy()])
            sure = lo > thr + BOUND_MARGIN
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
            record(stats, "bound->scan", len(rows), self.index.block_bytes(b)
                   + (self.store.size + len(rows)) * self.scan.row_bytes())
        else:
            record(stats, "bound", len(rows), self.index.block_bytes(b) + len(rows) * self.scan.row_bytes())
        exact = self.scan.pair_sims(b, Q, qi[test], rows[test])
        keep = exact > thr
        if not sims:
            return (torch.cat([qi[test][keep], qi[sure]]).numpy().astype(np.int64),
                    torch.cat([rows[test][keep], rows[sure]]).numpy().astype(np.int64), None)
        return (qi[keep].numpy().astype(np.int64), rows[keep].numpy().astype(np.int64),
                exact[keep].numpy())

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


class DeviceBoundSearch:
    """The bound on an accelerator: the tables are held on the device and prune single queries
    (the same answers as the CPU's plan); batches are the full scan's on the device."""

    name = "bound"

    def __init__(self, store: Store, index: BoundIndex, device: str):
        self.store, self.device, self.index = store, device, index
        self.scan = ExactSearch(store, device)
        self._held: dict = {}

    def bounds(self, b: int, q: torch.Tensor) -> torch.Tensor:
        """(P,) float32 upper bounds of q . x on the device, valid to within BOUND_MARGIN."""
        if b not in self._held:
            self._held[b] = torch.from_numpy(np.array(self.index.block(b))).to(self.device)
        return torch.from_numpy(self.index.query_vec(b, q)).to(self.device) @ self._held[b]

    def threshold(self, b: int, q: torch.Tensor, thr: float, exclude: int | None = None) -> Neighbours:
        cand = torch.nonzero(self.bounds(b, q) > thr - BOUND_MARGIN).flatten()
        stats = record(None, "bound-device", len(cand),
                       self.index.block_bytes(b) + len(cand) * self.scan.row_bytes())
        return self.scan.threshold_among(b, q, thr, cand, exclude, stats)

    def topk(self, b: int, q: torch.Tensor, k: int, exclude: int | None = None) -> Neighbours:
        return topk_from_bounds(self.scan, b, q, self.bounds(b, q), k, exclude, "bound-device",
                                self.index.block_bytes(b))

    def batch_threshold(self, b: int, Q: torch.Tensor, thr: float,
                        exclude: torch.Tensor | None = None, sims: bool = True,
                        stats: SearchStats | None = None) -> tuple:
        return self.scan.batch_threshold(b, Q, thr, exclude, stats=stats)

    def batch_topk(self, b: int, Q: torch.Tensor, k: int, exclude: torch.Tensor | None = None,
                   stats: SearchStats | None = None) -> tuple[np.ndarray, ...]:
        return self.scan.batch_topk(b, Q, k, exclude, stats=stats)


def open_bound(store: Store, device: str = "cpu") -> BoundSearch | DeviceBoundSearch:
    """The bound backend over the store's index, its plan chosen for ``device``; refuses an index
    that is missing, of an older layout, or fitted to other vectors or shapes."""
    info = CHECK.entry(store)
    if info.get("layout") != LAYOUT:
        raise StoreError(f"the bound index at {store.path} has an older layout (one rank for every "
                         f"block); {CHECK.rebuild}")
    ranks = info.get("ranks") or []
    basis = CHECK.load(store.path / "bound_basis.npy", np.load)
    table = CHECK.load(store.path / "bound_proj.npy", lambda p: np.load(p, mmap_mode="r"))
    CHECK.fits(len(ranks) == store.n_layer and basis.shape[:2] == (store.n_layer, store.unit.shape[2])
               and basis.shape[2] >= max(ranks, default=0)
               and table.shape == (sum(r + 1 for r in ranks), store.size), f"at {store.path}")
    index = BoundIndex(basis, ranks, table)
    if device == "cpu":
        return BoundSearch(store, index, device)
    return DeviceBoundSearch(store, index, device)
