"""The bound index's tables (see :mod:`app.search.bound`): each block's projections and residual
norms, laid out in stages of increasing rank, and the bounds they give on the CPU."""
from __future__ import annotations

import numpy as np
import torch


def proj_rows(stages, upto: int | None = None) -> np.ndarray:
    """The rows of a block's table (see BoundIndex) that hold its projections on directions 0 to
    r - 1, r = stages[upto] (default: the last): direction d of stage s sits at row d + s, after
    the s residual rows of the stages before it. The one place the interleaved layout is written;
    the residual row of stage s is ``stages[s] + s``."""
    st = np.asarray(stages[: (len(stages) if upto is None else upto + 1)])
    d = np.arange(st[-1])
    return d + np.searchsorted(st, d, side="right")


class BoundIndex:
    """The bound's tables for every block, and the bounds they give on the CPU.

    Block b's table holds its r projections (r = the last of its stage ranks r_0 < r_1 < ...) and
    a residual-norm row for each stage rank, interleaved so that each stage is one run of rows:

        x_p[0:r_0], |x_r|@r_0, x_p[r_0:r_1], |x_r|@r_1, ..., x_p[..:r], |x_r|@r

    Stage 0's rows give the rank-r_0 bound in one product. Stage i > 0 is the run from |x_r|@r_{i-1}
    to |x_r|@r_i: with the query's side [-|q_r|@r_{i-1}, q_p[r_{i-1}:r_i], |q_r|@r_i] one more
    product turns the rank-r_{i-1} bound into the rank-r_i one (the old residual term taken out,
    the new directions and the new residual term added), so walking the stages reads each row
    once, and a query stops at the first stage whose bound leaves few enough candidates."""

    def __init__(self, basis: np.ndarray, stages, table: np.ndarray, topk_stages=None,
                 cells: list | None = None):
        self.basis = np.ascontiguousarray(basis, dtype=np.float32)  # (L, C, max rank)
        self.stages = [[int(r) for r in st] for st in stages]  # per block, increasing ranks
        self.ranks = [st[-1] for st in self.stages]
        # the stage top-k queries read (default: the last)
        self.topk_stage = ([len(st) - 1 for st in self.stages] if topk_stages is None
                           else [int(i) for i in topk_stages])
        self.offsets = np.concatenate([[0], np.cumsum([r + len(st) for r, st in
                                                       zip(self.ranks, self.stages)])]).tolist()
        self.table = table  # (sum of r_b + stages_b, P) float32, memory-mapped
        # per block, its Cells (app.search.bound_cells): the table's columns are laid out cell by
        # cell, column j holding pool row cells[b].order[j]; None: in pool order, no cells
        self.cells = cells if cells is not None else [None] * len(self.stages)

    def rows_of(self, b: int, cols: np.ndarray) -> np.ndarray:
        """The pool rows of columns ``cols`` of block b's table."""
        c = self.cells[b]
        return cols if c is None else c.order[cols]

    def column_of(self, b: int, row: int) -> int:
        """The column of block b's table holding pool row ``row``."""
        c = self.cells[b]
        return row if c is None else c.column_of(row)

    def block(self, b: int) -> np.ndarray:
        """Block b's table (r_b + its number of stages, P), interleaved as above."""
        return self.table[self.offsets[b] : self.offsets[b + 1]]

    def resid_row(self, b: int, i: int) -> int:
        """The row of block b's table holding the residual norms at stage i's rank."""
        return self.stages[b][i] + i

    def stage_span(self, b: int, i: int, j: int | None = None) -> tuple[int, int]:
        """Rows [start, end) of block b's table that moving from stage i - 1 to stage j reads
        (default j = i: stage i's own rows; i = 0: from the first row)."""
        st, j = self.stages[b], i if j is None else j
        return (0 if i == 0 else st[i - 1] + i - 1), st[j] + j + 1

    def stage_bytes(self, b: int, i: int, j: int | None = None) -> int:
        """Bytes that moving from stage i - 1 to stage j (default: i) of block b reads."""
        s, e = self.stage_span(b, i, j)
        return 4 * (e - s) * self.table.shape[1]

    def block_bytes(self, b: int, upto: int | None = None) -> int:
        """Bytes of one block's table through stage ``upto`` (default: the last)."""
        upto = len(self.stages[b]) - 1 if upto is None else upto
        return 4 * self.stage_span(b, upto)[1] * self.table.shape[1]

    def query_parts(self, b: int, q: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """The unit query's projection (r_b,) and its residual norm at each stage's rank, float32
        (each residual computed directly, not from energies: no cancellation)."""
        qn = q.detach().cpu().numpy().astype(np.float32)
        U = self.basis[b, :, : self.ranks[b]]
        qp = U.T @ qn
        res = [np.linalg.norm(qn - U[:, :r] @ qp[:r]) for r in self.stages[b]]
        return qp.astype(np.float32), np.array(res, dtype=np.float32)

    def stage_vec(self, qp: np.ndarray, qres: np.ndarray, b: int, i: int,
                  j: int | None = None) -> np.ndarray:
        """The query's side of the product over ``stage_span(b, i, j)``: it turns the rank-r_{i-1}
        bound into the rank-r_j one (the old residual term taken out, the new directions and the
        new residual term added; the residual rows between weighted 0); for i = 0, the rank-r_j
        bound itself."""
        st, j = self.stages[b], i if j is None else j
        start, end = self.stage_span(b, i, j)
        first = 0 if i == 0 else st[i - 1]  # the first direction these rows add
        v = np.zeros(end - start, dtype=np.float32)
        v[proj_rows(st, j)[first:] - start] = qp[first : st[j]]
        if i > 0:
            v[0] = -qres[i - 1]
        v[-1] = qres[j]
        return v

    def prefix_vec(self, qp: np.ndarray, qres: np.ndarray, b: int, i: int) -> np.ndarray:
        """The query's side of the rank-r_i bound in one product over the rows through stage i."""
        return self.stage_vec(qp, qres, b, 0, i)

    def cpu_bounds(self, b: int, qp: np.ndarray, qres: np.ndarray, i: int | None = None) -> np.ndarray:
        """(P,) upper bounds at stage i's rank (default: the last) on the CPU: one streaming
        product over the rows through that stage."""
        i = len(self.stages[b]) - 1 if i is None else i
        return self.prefix_vec(qp, qres, b, i) @ self.block(b)[: self.stage_span(b, i)[1]]

    def batch_parts(self, b: int, Q: torch.Tensor, i: int | None = None):
        """Unit queries (B, C) -> float32 CPU queries, their side of the rank-r_i bound (B, rows
        through stage i; default: the last), and those rows of the table (a numpy array). A batch
        reads the first stage for every query and the last for those that need it
        (``BoundSearch.batch_threshold``); the first stage alone, for every query, left tiny's
        strip (64 positions) so many candidates at rank 8 that blocks 0-2 went to the scan,
        1.0-1.2 s each against 50 ms at rank 16."""
        i = len(self.stages[b]) - 1 if i is None else i
        Q = Q.detach().to("cpu", torch.float32).contiguous()
        U = torch.from_numpy(self.basis[b, :, : self.stages[b][i]])
        Qp = Q @ U
        Qv = torch.zeros(Q.shape[0], self.stage_span(b, i)[1])
        Qv[:, torch.from_numpy(proj_rows(self.stages[b], i))] = Qp
        Qv[:, -1] = (Q - Qp @ U.T).norm(dim=1)
        return Q, Qv, self.block(b)[: self.stage_span(b, i)[1]]
