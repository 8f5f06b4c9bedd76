"""The full scan: every backend's exact similarities, and the plan the others are checked against.

``ExactSearch`` reads every float16 unit vector of a block. Its float32 products (``exact``,
``pair_sims``) are the similarities every backend returns, so answers agree bit for bit across
backends; the bound and the ivf hold an ``ExactSearch`` and ask it for those products (and for the
threshold decision among their candidates, ``threshold_among``).
"""
from __future__ import annotations

import numpy as np
import torch

from ..cores import on_each_core, scan_pool
from ..store import Store
from .base import (Neighbours, SearchStats, as_tensor, best_of, clamp_topk, empty, from_tensors,
                   mask_excluded, record)

# A similarity computed by a float16 matrix-vector product (float32 accumulation, float16 output)
# differs from the float32 one by at most: the query's rounding to float16, |x.(q - q16)| <=
# |q - q16| <= 2^-11 (Cauchy-Schwarz, unit x and q), plus the output's rounding, half an ulp of a
# value below 1.002, <= 2^-11, plus float32 accumulation error (~1e-6): under 1e-3 in all. The margin
# doubles that, so the float16 pass never drops a string the float32 pass would keep.
COARSE_MARGIN = 2e-3
# The float32 bytes of one piece of rows that pair_sims converts and multiplies at a time.
PIECE_BYTES = 1 << 21


class ExactSearch:
    """Full scan of the block's float16 unit vectors.

    Similarities are float32 dot products of the stored float16 unit vectors with the float32 unit
    query. A single query first runs one fast float16 matrix-vector product over the whole block
    (memory-mapped on the CPU, or held on the GPU), keeps every string within COARSE_MARGIN of
    qualifying, and recomputes those in float32: the answer is the float32 answer, exactly.
    Batches convert row chunks to float32 and apply thresholds chunk by chunk, so the full
    similarity matrix is never held. Chunks of 16,384 rows keep the converted rows and the scores
    in cache: 256 queries against blog-cpu's block 4 took 1.20 s, against 1.66 s in chunks of 65,536
    (the bound's batches gain more: 2x).
    """

    name = "exact"

    def __init__(self, store: Store, device: str = "cpu", chunk: int = 16384):
        self.store, self.device, self.chunk = store, device, chunk
        self._blocks = [None] * store.n_layer

    def block(self, b: int) -> torch.Tensor:
        """(P, C) float16 tensor of block ``b`` (memory-mapped on the CPU; copied to a GPU)."""
        if self._blocks[b] is None:
            t = as_tensor(self.store.unit[b])
            self._blocks[b] = t.to(self.device) if self.device != "cpu" else t
        return self._blocks[b]

    def row_bytes(self) -> int:
        """Bytes of one stored vector (float16)."""
        return 2 * int(self.store.unit.shape[2])

    def coarse(self, b: int, q: torch.Tensor) -> torch.Tensor:
        """(P,) float32 similarities within COARSE_MARGIN of the exact ones (one float16 pass).

        On the CPU torch's float16 matrix-vector product runs on one core (measured: the same time
        with 1 or 2 threads), so the rows are split into one slice per thread, each multiplied on
        a worker thread (torch releases the GIL): the pass then runs near the memory bandwidth."""
        X = self.block(b)
        q16 = q.to(X.device, torch.float16)
        n = torch.get_num_threads()
        if X.device.type != "cpu" or n == 1 or X.shape[0] < 65536:
            return torch.mv(X, q16).float()
        parts = [scan_pool(n).submit(torch.mv, part, q16) for part in torch.tensor_split(X, n)]
        return torch.cat([f.result() for f in parts]).float()

    def exact(self, b: int, rows: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Float32 similarities of the given rows. An elementwise product summed along each row
        rounds the same way whichever rows are asked for (a matrix-vector product's blocking can
        depend on the number of rows), so every backend gets bit-identical values."""
        X = self.block(b)
        return self.pair_sims(b, q[None], torch.zeros(len(rows), dtype=torch.long), rows).to(X.device)

    def pair_sims(self, b: int, Q: torch.Tensor, qi: torch.Tensor, rows: torch.Tensor,
                  piece: int | None = None) -> torch.Tensor:
        """Float32 similarities of the pairs (Q[qi], row), each an elementwise product summed along
        its row, so batches and single queries agree bit for bit. Pieces of about 2 MB of float32
        (PIECE_BYTES) keep the temporaries in cache: 50,000 random rows of blog's block 4 (C = 384)
        took 5.4 ms in pieces of 1,365 rows against 13.0 ms in pieces of 4,096 (6 MB); tiny's
        (C = 128) 2.1 ms at 4,096 rows, 3.1 at 1,024. The values are the same for any piece."""
        X = self.block(b)
        Q = Q.to(X.device, torch.float32)
        piece = piece or max(256, PIECE_BYTES // (4 * X.shape[1]))
        if X.device.type == "cpu" and torch.get_num_threads() > 1 and len(rows) > piece // 4:
            # on one core: torch's two-thread gathers and sums of a piece wait on each other (and
            # on BLAS's threads) longer than they save: 60,000 rows of blog's block 4 took 11.3 ms
            # on one core against 20.9 on two; the values are the same
            return torch.cat(on_each_core(
                torch.get_num_threads(),
                lambda s, e: self.pair_sims(b, Q, qi[s:e], rows[s:e], piece), len(rows), piece))
        out = torch.empty(len(rows), dtype=torch.float32)
        for s in range(0, len(rows), piece):
            r, i = rows[s : s + piece].to(X.device), qi[s : s + piece].to(X.device)
            x = torch.index_select(X, 0, r).float()  # 5x faster than X[r] on the CPU (measured)
            x.mul_(torch.index_select(Q, 0, i) if len(Q) > 1 else Q)
            out[s : s + piece] = x.sum(dim=1).cpu()
        return out

    def similarities(self, b: int, q: torch.Tensor) -> torch.Tensor:
        """(P,) float32 similarities with every string (chunked float32: slow, for checks)."""
        X = self.block(b)
        q = q.to(X.device, torch.float32)
        return torch.cat([(X[s : s + self.chunk].float() * q).sum(dim=1)
                          for s in range(0, X.shape[0], self.chunk)])

    def threshold_among(self, b: int, q: torch.Tensor, thr: float, cand: torch.Tensor,
                        exclude: int | None, stats: SearchStats) -> Neighbours:
        """The strings with similarity > thr among candidate rows ``cand`` (a superset of them, from
        any plan), decided by their float32 similarities."""
        if exclude is not None:
            cand = cand[cand != exclude]
        s = self.exact(b, cand, q)
        keep = s > thr
        return from_tensors(cand[keep.to(cand.device)], s[keep], stats)

    def threshold(self, b: int, q: torch.Tensor, thr: float, exclude: int | None = None) -> Neighbours:
        cand = torch.nonzero(self.coarse(b, q) > thr - COARSE_MARGIN).flatten()
        stats = record(None, "scan", len(cand), (self.store.size + len(cand)) * self.row_bytes())
        return self.threshold_among(b, q, thr, cand, exclude, stats)

    def topk(self, b: int, q: torch.Tensor, k: int, exclude: int | None = None) -> Neighbours:
        c = self.coarse(b, q)
        n, k = clamp_topk(c, k, exclude)
        if k <= 0:
            return empty(record(None, "scan", 0, self.store.size * self.row_bytes()))
        # With |coarse - exact| <= M, every exact top-k string has coarse >= (coarse k-th) - 2M.
        kth = c.topk(k).values[-1]
        cand = torch.nonzero(c >= kth - 2 * COARSE_MARGIN).flatten()
        stats = record(None, "scan", len(cand), (self.store.size + len(cand)) * self.row_bytes())
        return best_of(cand, self.exact(b, cand, q), k, stats)

    # --- batches (evaluation) -----------------------------------------------------------------
    def batch_threshold(self, b: int, Q: torch.Tensor, thr: float,
                        exclude: torch.Tensor | None = None, sims: bool = True,
                        stats: SearchStats | None = None) -> tuple:
        """(query index, pool row, similarity) of every pair with similarity > thr, for unit
        queries Q (B, C); ``exclude`` (B,) holds a row to skip per query (-1: none). With
        ``sims=False`` the caller needs only the pairs: a backend may then return None for the
        similarities (the bound does, skipping the products it can prove)."""
        X = self.block(b)
        Q = Q.to(X.device, torch.float32)
        qi, rows, out = [], [], []
        for s in range(0, X.shape[0], self.chunk):
            S = Q @ X[s : s + self.chunk].to(torch.float32).T  # (B, chunk)
            if exclude is not None:
                mask_excluded(S, exclude, s)
            i, j = torch.nonzero(S > thr, as_tuple=True)
            qi.append(i.cpu())
            rows.append((j + s).cpu())
            out.append(S[i, j].cpu())
        record(stats, "scan", Q.shape[0] * X.shape[0], X.shape[0] * self.row_bytes())
        return (torch.cat(qi).numpy().astype(np.int64), torch.cat(rows).numpy().astype(np.int64),
                torch.cat(out).numpy())

    def batch_topk(self, b: int, Q: torch.Tensor, k: int, exclude: torch.Tensor | None = None,
                   stats: SearchStats | None = None) -> tuple[np.ndarray, ...]:
        """(query index, pool row, similarity) of each query's k most similar strings."""
        X = self.block(b)
        Q = Q.to(X.device, torch.float32)
        best_v = torch.full((Q.shape[0], 0), -float("inf"), device=X.device)
        best_i = torch.zeros((Q.shape[0], 0), dtype=torch.long, device=X.device)
        for s in range(0, X.shape[0], self.chunk):
            S = Q @ X[s : s + self.chunk].to(torch.float32).T
            if exclude is not None:
                mask_excluded(S, exclude, s)
            v = torch.cat([best_v, S], dim=1)
            i = torch.cat([best_i, torch.arange(s, s + S.shape[1], device=X.device).expand_as(S)], 1)
            best_v, best_i = first_k(v, i, min(k, v.shape[1]))
        keep = torch.isfinite(best_v)
        qi = torch.arange(Q.shape[0], device=X.device)[:, None].expand_as(best_i)
        record(stats, "scan", Q.shape[0] * X.shape[0], X.shape[0] * self.row_bytes())
        return (qi[keep].cpu().numpy().astype(np.int64), best_i[keep].cpu().numpy().astype(np.int64),
                best_v[keep].cpu().numpy())


def first_k(v: torch.Tensor, i: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's k largest values of ``v`` (B, n) and their labels ``i``, ties at rank k to the
    lower label (torch.topk picks among ties at will: the rows holding such a tie are sorted)."""
    best_v, pos = v.topk(k, dim=1)
    kth = best_v[:, -1:]
    short = ((v == kth).sum(1) > (best_v == kth).sum(1)).nonzero().flatten()
    best_i = i.gather(1, pos)
    if len(short):
        o = torch.argsort(i[short], dim=1, stable=True)
        sv, sp = torch.sort(v[short].gather(1, o), dim=1, descending=True, stable=True)
        best_v[short], best_i[short] = sv[:, :k], i[short].gather(1, o).gather(1, sp[:, :k])
    return best_v, best_i
