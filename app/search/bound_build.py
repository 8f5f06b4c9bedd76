"""Building the bound index (:mod:`app.search.bound`): each block's directions, its rank chosen by
measurement, its table of projections and residual norms, and the files and manifest entry.

Index time times nothing; it counts. For a sample of queries (the outputs of held-out prompts
when the caller gives them, else pool strings), ``choose_rank`` counts the candidates each rank's
bound leaves at their 50th and 200th exact neighbour (and at the block's calibrated threshold),
prices them as the CPU plan reads them (a streaming pass of the float32 table, then gathered rows
or the float16 scan, whose bytes cost SCAN_COST times as much: the CPU converts each value), and
keeps the cheapest rank; the manifest records the estimates. A block whose outputs spread over
many directions (blog's blocks 3 and 4 keep under half their energy in 32) gets more directions, a
low-rank block fewer. Measured with the scan priced at its bytes and pool strings as queries,
tiny's blocks 4 and 5 got rank 8 and sent 7-9 % of typed prompts' top-200 searches to the scan
(p95 31 ms a block against 5 ms at rank 16); priced as now, blog's ranks went from 24,24,64,32,64,24
to 48,32,96,128,96,48 and its full query's top-200 p95 from 248 to 124 ms (threshold: 102 to 86).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..store import seal_index
from .base import as_tensor
from .bound import GATHER_COST, LAYOUT, SCAN_COST, BoundIndex, index_files

RANKS = (8, 16, 24, 32, 48, 64, 96, 128)  # the ranks ``choose_rank`` prices (those below the width)


def fit_basis(unit: np.ndarray, k: int, sample: int = 20000, seed: int = 0) -> np.ndarray:
    """(C, k) orthonormal directions holding most of the energy of the rows of ``unit``."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(unit), min(sample, len(unit)), replace=False))
    X = torch.from_numpy(np.asarray(unit[rows], dtype=np.float32))
    _, _, Vh = torch.linalg.svd(X, full_matrices=False)
    return Vh[: min(k, X.shape[1])].T.contiguous().numpy()


def _rows32(unit: np.ndarray, s: int, e: int) -> torch.Tensor:
    """Rows s:e of a float16 (or float32) array as a float32 tensor (torch converts fastest)."""
    return as_tensor(np.ascontiguousarray(unit[s:e])).to(torch.float32)


def project(unit: np.ndarray, basis: np.ndarray, out: np.ndarray | None = None,
            chunk: int = 65536) -> np.ndarray:
    """The block's table (k + 1, P), float32: the projections of the stored float16 vectors on the
    k columns of ``basis``, then their residual norms; written into ``out`` when given."""
    U = torch.from_numpy(np.ascontiguousarray(basis, dtype=np.float32))
    P, k = len(unit), U.shape[1]
    table = np.empty((k + 1, P), dtype=np.float32) if out is None else out
    for s in range(0, P, chunk):
        X = _rows32(unit, s, s + chunk)
        xp = X @ U
        table[:k, s : s + chunk] = xp.T.numpy()
        table[k, s : s + chunk] = (X - xp @ U.T).norm(dim=1).numpy()
    return table


def rank_choices(C: int) -> tuple[int, ...]:
    """The ranks worth pricing at width C: those of RANKS below C (at C the table outweighs the
    vectors), or C // 2 for very narrow stores."""
    return tuple(r for r in RANKS if r < C) or (max(1, C // 2),)


def choose_rank(unit: np.ndarray, basis: np.ndarray, ranks=None, queries: int = 128,
                ks: tuple[int, ...] = (50, 200), threshold: float | None = None,
                gather_cost: float = GATHER_COST, scan_cost: float = SCAN_COST,
                chunk: int = 65536, seed: int = 0, prompts: np.ndarray | None = None
                ) -> tuple[int, dict]:
    """The rank (among ``ranks``, each at most basis's columns) whose bound costs least on this
    block, and the estimates: for ``queries`` pool strings (seed ``seed``) as queries, self
    excluded, the bound's candidates at each one's k-th exact similarity (k in ``ks``) and at the
    block's calibrated ``threshold`` when it has one, priced in
    bytes as the CPU plan reads them (the table's pass, then gathered rows at ``gather_cost``, or
    the scan when the planner would switch to it), as fractions of one full scan of the block: the
    mean and the 98th percentile over queries and cuts. The rank minimising mean + p98 / 2, taken
    per cut (each mode's tail apart: a threshold whose neighbour sets are so large that every rank
    scans must not hide the top-k tail that one rank fixes) and averaged over the cuts, wins:
    a page waits for its slowest blocks, so a rank that is cheap on average but now and then falls
    back to the scan loses to one a little dearer that rarely does, while the typical query still
    counts most (measured on blog with bench/search.py: the sum of the two chose rank 128 for
    block 3, which cut top-200's scans from 39 % of prompts to 0.7 % but made threshold mode's
    p50 half as slow again). The sample's queries are pool strings, whose neighbours lie closer
    than a typed prompt's, so a rank that serves them well can fail typed prompts (measured on
    tiny's blocks 4 and 5: rank 8 won on pool strings, and left 7-9 % of real prompts' top-200
    searches to the scan, p95 31 ms against 5 ms at rank 16). Given ``prompts`` (B, C), the unit
    outputs of prompts from outside the pool (``add_bound``'s caller forwards held-out text), those
    are the queries instead, nothing excluded.
    Residual norms here come from energies (|x|^2 - |x_p|^2): close enough to price, never used to
    prune."""
    P, C = unit.shape
    ranks = tuple(r for r in (ranks or rank_choices(C)) if r <= basis.shape[1])
    K = min(max(ks), P - 1)
    if K < 1 or len(ranks) == 1:
        return ranks[0], {}
    if prompts is not None:
        qi = np.full(len(prompts), -1)
        Q = torch.nn.functional.normalize(torch.from_numpy(np.asarray(prompts, dtype=np.float32)), dim=1)
    else:
        rng = np.random.default_rng(seed)
        qi = np.sort(rng.choice(P, min(queries, P), replace=False))
        Q = torch.nn.functional.normalize(torch.from_numpy(np.asarray(unit[qi], dtype=np.float32)), dim=1)
    B = len(qi)
    best = torch.full((B, 0), -float("inf"))
    for s in range(0, P, chunk):  # pass 1: each query's K best exact similarities
        S = Q @ _rows32(unit, s, s + chunk).T
        inside = (qi >= s) & (qi < s + chunk)
        S[torch.from_numpy(np.flatnonzero(inside)), torch.from_numpy(qi[inside] - s)] = -float("inf")
        best = torch.cat([best, S], 1).topk(min(K, best.shape[1] + S.shape[1]), dim=1).values
    cuts = [best[:, min(k, K) - 1] for k in ks]
    if threshold is not None:
        cuts.append(torch.full((B,), float(threshold)))
    cuts = torch.stack(cuts, 1)  # (B, cuts)
    U = torch.from_numpy(np.ascontiguousarray(basis[:, : max(ranks)], dtype=np.float32))
    Qp = Q @ U
    q_res = (1 - (Qp ** 2).cumsum(1)).clamp_min(0).sqrt()
    counts = torch.zeros(len(ranks), B, cuts.shape[1])
    for s in range(0, P, chunk):  # pass 2: each rank's candidates at those cuts
        X = _rows32(unit, s, s + chunk)
        Xp = X @ U
        x_res = ((X ** 2).sum(1, keepdim=True) - (Xp ** 2).cumsum(1)).clamp_min(0).sqrt()
        for i, r in enumerate(ranks):
            ub = Qp[:, :r] @ Xp[:, :r].T + q_res[:, r - 1 : r] * x_res[:, r - 1][None]
            counts[i] += (ub[:, :, None] >= cuts[:, None, :]).sum(1)
    row, scan = 2 * C * scan_cost, 2 * C * P * scan_cost  # in bytes of the table's pass
    costs, score = {}, {}
    for i, r in enumerate(ranks):
        gathered = counts[i] * gather_cost * row
        after = torch.where(counts[i] * gather_cost <= P, gathered, torch.full_like(gathered, scan))
        cost = (4 * (r + 1) * P + after) / scan  # (queries, cuts)
        costs[r] = (round(float(cost.mean()), 4), round(float(cost.quantile(0.98)), 4))
        score[r] = round(float((cost.mean(0) + cost.quantile(0.98, dim=0) / 2).mean()), 4)
    return min(score, key=score.get), {"cost_vs_scan": costs, "score": score, "queries": B,
                                       "ks": list(ks), "threshold": threshold}


def fit_index(unit: np.ndarray, ranks) -> BoundIndex:
    """An index in memory over ``unit`` (L, P, C) at the given rank of each block (tests,
    small stores; ``add_bound`` writes one to disk and chooses the ranks)."""
    L, P, C = unit.shape
    ranks = [max(1, min(int(r), C, P)) for r in ranks]  # SVD of P rows gives min(P, C) directions
    basis = np.zeros((L, C, max(ranks)), dtype=np.float32)
    table = np.empty((sum(r + 1 for r in ranks), P), dtype=np.float32)
    index = BoundIndex(basis, ranks, table)
    for b in range(L):
        index.basis[b, :, : ranks[b]] = fit_basis(unit[b], ranks[b])
        project(unit[b], index.basis[b, :, : ranks[b]], out=index.block(b))
    return index


def add_bound(path, rank: int | None = None, thresholds=None, progress: bool = True,
              prompts: np.ndarray | None = None) -> dict:
    """Fit and write the bound index of the store (or finished build) at ``path``, each block at
    the rank ``choose_rank`` measures cheapest (priced at its calibrated threshold in
    ``thresholds`` too, when given, and on the outputs ``prompts`` (L, B, C) of prompts from
    outside the pool when given, else on pool strings), or at ``rank``; returns its manifest entry
    (less the seconds): the layout, the ranks and what each rank was estimated to cost (mean, p98)."""
    from tqdm import tqdm

    path = Path(path)
    unit = np.load(path / "ffn_unit.npy", mmap_mode="r")
    L, P, C = unit.shape
    top = min(max(rank_choices(C)) if rank is None else rank, C, P)
    basis = np.zeros((L, C, top), dtype=np.float32)
    ranks, costs, scores = [], [], []
    for b in tqdm(range(L), desc="bound index: ranks", disable=not progress, dynamic_ncols=True):
        basis[b] = fit_basis(unit[b], top)
        thr = None if thresholds is None else thresholds[b]
        r, info = (top, {}) if rank is not None else choose_rank(
            unit[b], basis[b], threshold=thr, prompts=None if prompts is None else prompts[b])
        ranks.append(int(r))
        costs.append(info.get("cost_vs_scan", {}))
        scores.append(info.get("score", {}))
    basis = np.ascontiguousarray(basis[:, :, : max(ranks)])
    for b, r in enumerate(ranks):
        basis[b, :, r:] = 0  # block b uses its first r columns
    table = np.lib.format.open_memmap(path / "bound_proj.npy.tmp", "w+", np.float32,
                                      (sum(r + 1 for r in ranks), P))
    index = BoundIndex(basis, ranks, table)
    for b in tqdm(range(L), desc="bound index: tables", disable=not progress, dynamic_ncols=True):
        project(unit[b], basis[b, :, : ranks[b]], out=index.block(b))
    table.flush()
    del table, index
    np.save(path / "bound_basis.npy", basis)
    os.replace(path / "bound_proj.npy.tmp", path / "bound_proj.npy")
    return {"layout": LAYOUT, "ranks": ranks, "rank": max(ranks),
            "cost_vs_scan": [{str(r): list(c) for r, c in cs.items()} for cs in costs],
            "score": [{str(r): v for r, v in sc.items()} for sc in scores],
            "priced_on": "pool strings" if prompts is None else f"{prompts.shape[1]} held-out prompts"}


def seal_bound(path, info: dict) -> None:
    """Record the bound index files of the store at ``path`` (``info``: ``add_bound``'s entry and
    the seconds it took)."""
    seal_index(Path(path), index_files(0), info)
