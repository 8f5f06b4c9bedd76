"""The full scan: every backend's exact similarities, and the plan the others are checked against.

``ExactSearch`` reads every float16 unit vector of a block. Its float32 products (``exact``,
``pair_sims``) are the similarities every backend returns, so answers agree bit for bit across
backends; the bound and the ivf hold an ``ExactSearch`` and ask it for those products (and for the
threshold decision among their candidates, ``threshold_among``).
"""
from __future__ import annotations

import numpy as np
import torch

from ..store import Store
from .base import (Neighbours, SearchStats, as_tensor, best_of, clamp_topk, empty, from_tensors,
                   mask_excluded, record)

# A similarity computed by a float16 matrix-vector product (float32 accumulation, float16 output)
# differs from the float32 one by at most: the query's rounding to float16, |x.(q - q16)| <=
# |q - q16| <= 2^-11 (Cauchy-Schwarz, unit x and q), plus the output's rounding, half an ulp of a
# value below 1.002, <= 2^-11, plus float32 accumulation error (~1e-6): under 1e-3 in all. The margin
# doubles that, so the float16 pass never drops a string the float32 pass would keep.
COARSE_MARGIN = 2e-3


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
        parts = [_scan_pool(n).submit(torch.mv, part, q16) for part in torch.tensor_split(X, n)]
        return torch.cat([f.result() for f in parts]).float()

    def exact(self, b: int, rows: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Float32 similarities of the given rows. An elementwise product summed along each row
        rounds the same way whichever rows are asked for (a matrix-vector product's blocking can
        depend on the number of rows), so every backend gets bit-identical values."""
        X = self.block(b)
        return self.pair_sims(b, q[None], torch.zeros(len(rows), dtype=torch.long), rows).to(X.device)

    def pair_sims(self, b: int, Q: torch.Tensor, qi: torch.Tensor, rows: torch.Tensor,
                  piece: int = 4096) -> torch.Tensor:
        """Float32 similarities of the pairs (Q[qi], row), each an elementwise product summed along
        its row, so batches and single queries agree bit for bit. Pieces of 4,096 rows keep the
        temporaries in cache: measured on 100,000 rows of blog-cpu's block 5, 14 ms against 570-840 ms
        for one piece, with identical values."""
        X = self.block(b)
        Q = Q.to(X.device, torch.float32)
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
            kk = min(k, v.shape[1])
            best_v, pos = v.topk(kk, dim=1)
            best_i = i.gather(1, pos)
        keep = torch.isfinite(best_v)
        qi = torch.arange(Q.shape[0], device=X.device)[:, None].expand_as(best_i)
        record(stats, "scan", Q.shape[0] * X.shape[0], X.shape[0] * self.row_bytes())
        return (qi[keep].cpu().numpy().astype(np.int64), best_i[keep].cpu().numpy().astype(np.int64),
                best_v[keep].cpu().numpy())


_POOLS: dict = {}


def _scan_pool(n: int):
    """A process-wide pool of ``n`` worker threads for the split float16 pass."""
    if n not in _POOLS:
        from concurrent.futures import ThreadPoolExecutor

        _POOLS[n] = ThreadPoolExecutor(n, thread_name_prefix="ffnlens-scan")
    return _POOLS[n]
