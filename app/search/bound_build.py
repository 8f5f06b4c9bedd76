"""Building the bound index (:mod:`app.search.bound`): each block's directions, its stages chosen
by measurement, its table of projections and residual norms, and the files and manifest entry.

Index time times nothing; it counts. For a sample of queries (the outputs of held-out prompts
when the caller gives them, else pool strings), ``choose_stages`` counts the candidates each
rank's bound leaves at their 50th and 200th exact neighbour (and at the block's calibrated
threshold), prices them as the CPU plan reads them (streaming passes of the float32 table, then
gathered rows or the float16 scan, whose bytes cost SCAN_COST times as much: the CPU converts
each value), and keeps the cheapest walk: the first and last stage, the ranks between them the
stages (``walk_cost`` follows a query as ``BoundSearch`` walks it). The manifest records the
estimates. A block whose outputs spread over many directions (blog's blocks 3 and 4 keep under
half their energy in 32) walks further, a low-rank block stops sooner. History, on blog: one rank
per block priced at the scan's bytes and on pool strings gave 24,24,64,32,64,24; priced as the CPU
pays, on held-out prompts, 48,32,96,128,96,48 (full query top-200 p95 248 -> 124 ms, threshold
102 -> 86); walked, see ``choose_stages``. Priced on held-out prompts of every typed length (1 to
30 characters, ``workspace.pricing_prompts``) rather than 10 only, blog's stages reach rank 128 in
five blocks and top-k reads it there: top-200 full query p50 / p95 80 / 141 -> 101 / 117 ms on
10-character prompts, 85 / 174 -> 105 / 133 ms on typed ones (threshold within the noise).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..store import seal_index
from .base import as_tensor
from .bound import (BOUND_MARGIN, GATHER_COST, LAYOUT, SCAN_COST, STAGE_OVERHEAD, index_files,
                    next_stage)
from .bound_cells import fit_cells, write_cells
from .bound_table import BoundIndex, proj_rows

RANKS = (8, 16, 24, 32, 48, 64, 96, 128)  # the ranks ``choose_stages`` prices (those below the width)


def fit_basis(unit: np.ndarray, k: int, sample: int = 20000, seed: int = 0) -> np.ndarray:
    """(C, k) orthonormal directions holding most of the energy of the rows of ``unit``."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(unit), min(sample, len(unit)), replace=False))
    X = torch.from_numpy(np.asarray(unit[rows], dtype=np.float32))
    _, _, Vh = torch.linalg.svd(X, full_matrices=False)
    return Vh[: min(k, X.shape[1])].T.contiguous().numpy()


def _rows32(unit: np.ndarray, s: int, e: int, order: np.ndarray | None = None) -> torch.Tensor:
    """Rows s:e of a float16 (or float32) array (or rows order[s:e]) as a float32 tensor (torch
    converts fastest)."""
    x = unit[s:e] if order is None else unit[np.asarray(order[s:e])]
    return as_tensor(np.ascontiguousarray(x)).to(torch.float32)


def project(unit: np.ndarray, basis: np.ndarray, stages, out: np.ndarray | None = None,
            chunk: int = 65536, order: np.ndarray | None = None) -> np.ndarray:
    """The block's table (r + len(stages), P), float32, laid out as ``BoundIndex`` reads it: the
    projections of the stored float16 vectors on the r = stages[-1] columns of ``basis``, with the
    residual norm at each stage's rank after that stage's directions (each computed directly, not
    from energies), column j for pool row order[j] (default: row j); written into ``out`` when
    given."""
    stages = [int(r) for r in stages]
    U = torch.from_numpy(np.ascontiguousarray(basis[:, : stages[-1]], dtype=np.float32))
    P, rows = len(unit), proj_rows(stages)
    table = np.empty((stages[-1] + len(stages), P), dtype=np.float32) if out is None else out
    for s in range(0, P, chunk):
        X = _rows32(unit, s, s + chunk, order)
        xp = X @ U
        table[rows, s : s + chunk] = xp.T.numpy()
        for i, r in enumerate(stages):
            table[r + i, s : s + chunk] = (X - xp[:, :r] @ U[:, :r].T).norm(dim=1).numpy()
    return table


def rank_choices(C: int) -> tuple[int, ...]:
    """The ranks worth pricing at width C: those of RANKS below C (at C the table outweighs the
    vectors), or C // 2 for very narrow stores."""
    return tuple(r for r in RANKS if r < C) or (max(1, C // 2),)


def walk_cost(counts: np.ndarray, ranks, P: int, C: int, gather_cost: float = GATHER_COST,
              scan_cost: float = SCAN_COST, live: np.ndarray | None = None) -> np.ndarray:
    """What walking the stages ``ranks`` costs each query, as fractions of a full scan, given
    ``counts`` (len(ranks), queries): the candidates each stage's bound leaves. Each query reads
    stages (their rows, plus STAGE_OVERHEAD each) and goes on as the search does (``next_stage``):
    it stops when deciding its candidates costs no more than the next stage, goes straight to the
    last stage when the planner would scan them, else to the next. All in bytes of the table's
    pass; a gathered row costs ``gather_cost`` streamed float16 rows, and the float16 scan
    ``scan_cost`` times its bytes (see ``choose_stages``). ``live`` (queries,): the fraction of
    the columns each query reads (its live cells'; default all)."""
    last = len(ranks) - 1
    live = np.ones(counts.shape[1]) if live is None else live
    rows = np.array([ranks[0] + 1] + [r - p + 2 for p, r in zip(ranks, ranks[1:])] + [0],
                    dtype=np.float64)  # each stage's rows (0 past the last)
    cost = np.empty(counts.shape[1])
    for q in range(counts.shape[1]):
        f = live[q]
        i, read = 0, 4 * P * f * (rows[0] + STAGE_OVERHEAD)
        while (j := next_stage(i, last, counts[i, q], P, C, 4 * P * f * rows[i + 1], gather_cost,
                               scan_cost, live=f)) is not None:
            read += 4 * P * f * (rows[i + 1 : j + 1].sum() + STAGE_OVERHEAD)
            i = j
        decide = min(counts[i, q] * gather_cost, P) * 2 * C * scan_cost  # or the scan
        cost[q] = (read + decide) / (2 * C * P * scan_cost)
    return cost


def choose_stages(unit: np.ndarray, basis: np.ndarray, ranks=None, queries: int = 128,
                  ks: tuple[int, ...] = (50, 200), threshold: float | None = None,
                  gather_cost: float = GATHER_COST, scan_cost: float = SCAN_COST,
                  chunk: int = 65536, seed: int = 0, prompts: np.ndarray | None = None,
                  cells=None) -> tuple[list[int], dict]:
    """The stages (increasing ranks among ``ranks``, each at most basis's columns) whose walk
    costs least on this block, and the estimates.

    For ``queries`` pool strings (seed ``seed``) as queries, self excluded, or, given ``prompts``
    (B, C), the unit outputs of prompts from outside the pool (``add_bound``'s caller forwards
    held-out text; their neighbours lie farther than a pool string's), nothing excluded: the
    candidates each rank's bound leaves at each query's k-th exact similarity (k in ``ks``) and at
    the block's calibrated ``threshold`` when it has one. From them, ``walk_cost`` prices every
    choice of first and last stage (the ranks between are the stages) as fractions of a full scan
    of the block. The choice minimising mean + p98 / 2, taken per cut and averaged over the cuts,
    wins (the smaller on a tie): a page waits for its slowest blocks, so the tail counts, while
    the typical query counts most. With ``cells`` (the block's, its table's columns in their
    order), the threshold's candidates are those of the query's live cells, and its passes read
    only their columns (or all of them, when the live cells hold more than LIVE_MAX).

    Measured on blog (128 held-out prompts, bench numbers in bound.py's docstring): one rank per
    block had to serve both modes, and the rank top-200's tail needed (128 for block 3: 0.35 of a
    scan on average) cost threshold mode three times what rank 32 did (0.11); walked, block 3's
    threshold queries cost 0.115 on average.
    Residual norms here come from energies (|x|^2 - |x_p|^2): close enough to price, never used to
    prune."""
    P, C = unit.shape
    ranks = tuple(r for r in (ranks or rank_choices(C)) if r <= basis.shape[1])
    K = min(max(ks), P - 1)
    if K < 1 or len(ranks) == 1:
        return [ranks[-1]], {}
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
    live_rows, live_frac = None, np.ones(B)
    if cells is not None and threshold is not None:
        from .bound_cells import LIVE_MAX
        live_cells = cells.live(cells.cosines(Q.numpy()), float(threshold) - BOUND_MARGIN)
        sizes = np.diff(cells.edges)
        live_frac = (live_cells * sizes).sum(1) / P
        live_cells[live_frac > LIVE_MAX] = True  # such a query reads every column
        live_frac[live_frac > LIVE_MAX] = 1.0
        cell_of = np.empty(P, dtype=np.int64)
        cell_of[cells.order] = np.repeat(np.arange(cells.n), sizes)
        live_rows = lambda s, e: torch.from_numpy(live_cells[:, cell_of[s:e]])  # noqa: E731
    U = torch.from_numpy(np.ascontiguousarray(basis[:, : max(ranks)], dtype=np.float32))
    Qp = Q @ U
    q_res = (1 - (Qp ** 2).cumsum(1)).clamp_min(0).sqrt()
    counts = torch.zeros(len(ranks), B, cuts.shape[1])
    for s in range(0, P, chunk):  # pass 2: each rank's candidates at those cuts
        X = _rows32(unit, s, s + chunk)
        Xp = X @ U
        x_res = ((X ** 2).sum(1, keepdim=True) - (Xp ** 2).cumsum(1)).clamp_min(0).sqrt()
        inside = None if live_rows is None else live_rows(s, s + X.shape[0])
        for i, r in enumerate(ranks):
            ub = Qp[:, :r] @ Xp[:, :r].T + q_res[:, r - 1 : r] * x_res[:, r - 1][None]
            hit = ub[:, :, None] >= cuts[:, None, :]
            if inside is not None:
                hit[:, :, -1] &= inside
            counts[i] += hit.sum(1)
    counts = counts.numpy()
    n_cuts = counts.shape[2]
    fixed = {}  # each rank alone: one stage
    for i, r in enumerate(ranks):
        cost = np.stack([walk_cost(counts[i : i + 1, :, c], [r], P, C, gather_cost, scan_cost,
                                   live_frac if threshold is not None and c == n_cuts - 1 else None)
                         for c in range(n_cuts)], 1)
        fixed[r] = cost
    score, walks = {}, {}
    walked = [threshold is not None and c == n_cuts - 1 for c in range(n_cuts)]
    kcuts = [c for c in range(n_cuts) if not walked[c]]

    kscore = {r: float((c[:, kcuts].mean(0) + np.quantile(c[:, kcuts], 0.98, axis=0) / 2).mean())
              for r, c in fixed.items()}  # top-k's cost at each rank alone, over the k-th cuts
    for a in range(len(ranks)):
        for z in range(a, len(ranks)):
            st = list(ranks[a : z + 1])
            tk = min(range(len(st)), key=lambda i: kscore[st[i]])  # top-k's stage
            cost = np.stack([walk_cost(counts[a : z + 1, :, c], st, P, C, gather_cost, scan_cost,
                                       live_frac)
                             if walked[c] else fixed[st[tk]][:, c]
                             for c in range(n_cuts)], 1)  # (queries, cuts)
            key = f"{st[0]}-{st[-1]}"
            score[key] = round(float((cost.mean(0) + np.quantile(cost, 0.98, axis=0) / 2).mean()), 4)
            walks[key] = (st, tk, round(float(cost.mean()), 4), round(float(np.quantile(cost, 0.98)), 4))
    key = min(score, key=lambda k: (score[k], walks[k][0][-1]))
    stages, tk = walks[key][0], walks[key][1]
    return stages, {
        "topk_stage": tk,
        "cost_vs_scan": {r: (round(float(c.mean()), 4), round(float(np.quantile(c, 0.98)), 4))
                         for r, c in fixed.items()},
        "walk": {"stages": stages, "topk_rank": stages[tk], "mean": walks[key][2], "p98": walks[key][3],
                 "score": score[key]},
        "score": score, "queries": B, "ks": list(ks), "threshold": threshold}


def fit_index(unit: np.ndarray, stages, cells: int | None = 0) -> BoundIndex:
    """An index in memory over ``unit`` (L, P, C), block b walking the ranks ``stages[b]`` (a
    list, or one rank: one stage), with ``cells`` cells a block (None: ``cell_count``; 0: none)
    (tests, small stores; ``add_bound`` chooses the stages and writes the index to disk)."""
    L, P, C = unit.shape
    top = min(C, P)  # SVD of P rows gives min(P, C) directions
    stages = [sorted({max(1, min(int(r), top)) for r in np.atleast_1d(st)}) for st in stages]
    basis = np.zeros((L, C, max(st[-1] for st in stages)), dtype=np.float32)
    table = np.empty((sum(st[-1] + len(st) for st in stages), P), dtype=np.float32)
    fitted = [fit_cells(unit[b], cells) for b in range(L)] if cells != 0 else None
    index = BoundIndex(basis, stages, table, cells=fitted)
    for b in range(L):
        index.basis[b, :, : stages[b][-1]] = fit_basis(unit[b], stages[b][-1])
        project(unit[b], index.basis[b], stages[b], out=index.block(b),
                order=None if fitted is None else fitted[b].order)
    return index


def add_bound(path, thresholds=None, progress: bool = True, prompts: np.ndarray | None = None) -> dict:
    """Fit and write the bound index of the store (or finished build) at ``path``, each block with
    the stages ``choose_stages`` measures cheapest (priced at its calibrated threshold in
    ``thresholds`` too, when given, and on the outputs ``prompts`` (L, B, C) of prompts from
    outside the pool when given, else on pool strings); returns its manifest entry (less the
    seconds): the layout, the stages and what was estimated (fractions of a
    full scan: each rank alone and the chosen walk, mean and p98)."""
    from tqdm import tqdm

    path = Path(path)
    unit = np.load(path / "ffn_unit.npy", mmap_mode="r")
    L, P, C = unit.shape
    top = min(max(rank_choices(C)), C, P)
    basis = np.zeros((L, C, top), dtype=np.float32)
    stages, topk, costs, walks, scores, cells = [], [], [], [], [], []
    for b in tqdm(range(L), desc="bound index: cells and stages", disable=not progress,
                  dynamic_ncols=True):
        basis[b] = fit_basis(unit[b], top)
        cells.append(fit_cells(unit[b]))
        thr = None if thresholds is None else thresholds[b]
        st, info = choose_stages(unit[b], basis[b], threshold=thr,
                                 prompts=None if prompts is None else prompts[b], cells=cells[b])
        stages.append([int(r) for r in st])
        topk.append(int(info.get("topk_stage", len(st) - 1)))
        costs.append(info.get("cost_vs_scan", {}))
        walks.append(info.get("walk", {}))
        scores.append(info.get("score", {}))
    ranks = [st[-1] for st in stages]
    basis = np.ascontiguousarray(basis[:, :, : max(ranks)])
    for b, r in enumerate(ranks):
        basis[b, :, r:] = 0  # block b uses its first r columns
    table = np.lib.format.open_memmap(path / "bound_proj.npy.tmp", "w+", np.float32,
                                      (sum(r + len(st) for r, st in zip(ranks, stages)), P))
    index = BoundIndex(basis, stages, table, topk, cells)
    for b in tqdm(range(L), desc="bound index: tables", disable=not progress, dynamic_ncols=True):
        project(unit[b], basis[b], stages[b], out=index.block(b), order=cells[b].order)
    table.flush()
    del table, index
    np.save(path / "bound_basis.npy", basis)
    groups = write_cells(path, cells)
    os.replace(path / "bound_proj.npy.tmp", path / "bound_proj.npy")
    return {"layout": LAYOUT, "stages": stages, "topk_stages": topk, "ranks": ranks,
            "cells": cells[0].n, "groups": groups,
            "rank": max(ranks), "walk": walks,
            "cost_vs_scan": [{str(r): list(c) for r, c in cs.items()} for cs in costs],
            "score": scores,
            "priced_on": "pool strings" if prompts is None else f"{prompts.shape[1]} held-out prompts"}


def seal_bound(path, info: dict) -> None:
    """Record the bound index files of the store at ``path`` (``info``: ``add_bound``'s entry and
    the seconds it took)."""
    seal_index(Path(path), index_files(0), info)
