"""The bound's batches (:mod:`app.search.bound`, ``BoundSearch.batch_threshold``): the (query,
column) pairs whose bound exceeds a cut, over spans of the table's columns, a share per core."""
from __future__ import annotations

import numpy as np
import torch

from ..cores import one_core
from .base import as_tensor

# Rows of the table per product in a batch: the (B, BATCH_CHUNK) bounds stay in cache (8,192
# measured best on tiny's strip, 25.7 ms a block against 31.2 at 16,384 and 29.5 at 2,048).
BATCH_CHUNK = 8192


def bound_pairs(Qv: torch.Tensor, T: torch.Tensor, cut: np.float32, spans,
                keep_bounds: bool = False, skip: tuple | None = None) -> tuple:
    """The (query, column) pairs whose bound ``Qv @ T`` exceeds ``cut`` among the columns of
    ``spans``, each (start, end, queries): columns [start, end) for the queries at those indices
    (None: all); with ``keep_bounds``, their bounds too. The spans are at most BATCH_CHUNK columns
    (the bounds stay in cache). ``skip``: (whole (B, n) bool, the cell of each column): the
    columns of the cells a query takes whole are left out of its pairs. Batches run a share of
    the spans per core, each on a one-core worker (``app.cores``): torch's product and numpy's
    comparison on one thread each. Measured
    on tiny's strip (64 positions x 823k rows, block 3 at rank 17): 50 ms on the request's thread
    (numpy's two-thread product, then a one-thread comparison), 26 ms as two slices; a torch
    operation between numpy's products also waits for BLAS's threads to yield the cores (706-888
    ms then)."""
    qis, rws, ubs = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, np.float32)]
    for s, e, qs in spans:
        ub = ((Qv if qs is None else Qv[qs]) @ T[:, s:e]).numpy()
        if skip is not None:
            whole, cell_of = skip
            c0, c1 = int(cell_of[s]), int(cell_of[e - 1]) + 1
            w = (whole if qs is None else whole[qs.numpy()])[:, c0:c1]
            if w.any():
                ub[w[:, cell_of[s:e] - c0]] = -np.inf
        k = np.flatnonzero(ub > cut)
        qi = k // (e - s)
        qis.append(qi if qs is None else qs[qi])
        rws.append(k % (e - s) + s)
        if keep_bounds:
            ubs.append(ub.ravel()[k])
    return (np.concatenate(qis), np.concatenate(rws),
            np.concatenate(ubs) if keep_bounds else None)


def batch_spans(P: int, live: np.ndarray | None = None, starts: np.ndarray | None = None) -> list:
    """The spans ``bound_pairs`` reads: every column for every query, or, given ``live`` (B, G),
    which runs of cells hold a live cell for each query, and ``starts`` (G + 1,), the columns
    where the runs start, each run's columns for its live queries only."""
    if live is None:
        return [(s, min(s + BATCH_CHUNK, P), None) for s in range(0, P, BATCH_CHUNK)]
    spans = []
    for g in range(live.shape[1]):
        qs = np.flatnonzero(live[:, g])
        if len(qs) == 0:
            continue
        qs = None if len(qs) == live.shape[0] else torch.from_numpy(qs)
        a, z = int(starts[g]), int(starts[g + 1])
        spans += [(s, min(s + BATCH_CHUNK, z), qs) for s in range(a, z, BATCH_CHUNK)]
    return spans


def batch_bounds(Qv: torch.Tensor, T: np.ndarray, cut: np.float32, keep_bounds: bool,
                 spans: list, skip: tuple | None = None) -> tuple:
    """``bound_pairs`` over the ``spans`` of the table's rows ``T``, a share per core (every n-th
    span) on one-core workers; ``skip`` as there."""
    n, Tt, Qv = torch.get_num_threads(), as_tensor(T), Qv.contiguous()
    if n == 1 or len(spans) < 2:
        return bound_pairs(Qv, Tt, cut, spans, keep_bounds, skip)
    futures = [one_core(n).submit(bound_pairs, Qv, Tt, cut, spans[i::n], keep_bounds, skip)
               for i in range(n)]
    parts = [f.result() for f in futures]
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]) if keep_bounds else None)


def lower_pairs(qi, rows, ub, Qv: torch.Tensor, T: np.ndarray, at=None) -> tuple:
    """(query, row, lower bound or None) of pairs bounded by the stage whose query side is ``Qv``
    (its last column the query's residual norm; rows of it at ``at``, default ``qi``) and whose
    table is ``T`` (its last row the strings' residual norms)."""
    if ub is None:
        return qi, rows, None
    qres = Qv[:, -1].numpy()[qi if at is None else at]
    return qi, rows, ub - 2 * qres * T[-1][rows]
