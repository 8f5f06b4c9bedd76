"""Neighbour search over one block of the store: by threshold (cosine strictly above it) or top-k.

Every backend answers the same two questions for one query and for a batch, and names itself in
``name``. Results are ordered by similarity (descending), ties by pool row (ascending); top-k takes
ties at rank k in row order, so answers are deterministic and comparable across backends.
"""
from __future__ import annotations

import numpy as np
import torch

from .store import Store


class Neighbours:
    """One block's neighbours: pool rows and their cosine similarities (float32).

    ``rows`` and ``sims`` are ordered by decreasing similarity, ties by row; the order is computed on
    first use, so a huge set that is only counted (``members``) is never sorted, and ``top(m)``
    orders just its first m (block 5 of the reference store can have 100,000 neighbours: a full
    sort costs 7 ms there, the first ten well under one).

    A backend that proves a row qualifies without computing its similarity (the bound) leaves that
    similarity NaN and passes ``lo``/``hi``, certain bounds on it (lo <= sim <= hi), and ``fill``,
    which computes the similarities of given rows; they are computed when first needed, and
    ``top(m)`` computes only those whose ``hi`` can reach the m-th value."""

    def __init__(self, rows: np.ndarray, sims: np.ndarray, ordered: bool = False,
                 lo: np.ndarray | None = None, hi: np.ndarray | None = None, fill=None):
        self._rows, self._sims, self._ordered = rows, sims, ordered
        self._lo, self._hi, self._fill = lo, hi, fill

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


def _order(rows: torch.Tensor, sims: torch.Tensor) -> Neighbours:
    return Neighbours(rows.cpu().numpy().astype(np.int64), sims.cpu().float().numpy())


def as_tensor(arr: np.ndarray) -> torch.Tensor:
    """A tensor over an array without a copy (read-only memory maps included: never written to)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that it cannot mark the tensor read-only
        return torch.from_numpy(arr)


def unit(v: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length (zero rows stay zero)."""
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-30)


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

    def _candidates(self, b: int, q: torch.Tensor, thr: float) -> torch.Tensor:
        """Rows that may have similarity > thr: a superset, decided exactly by ``threshold``."""
        return torch.nonzero(self.coarse(b, q) > thr - COARSE_MARGIN).flatten()

    def threshold(self, b: int, q: torch.Tensor, thr: float, exclude: int | None = None) -> Neighbours:
        cand = self._candidates(b, q, thr)
        if exclude is not None:
            cand = cand[cand != exclude]
        s = self.exact(b, cand, q)
        keep = s > thr
        return _order(cand[keep.to(cand.device)], s[keep])

    def topk(self, b: int, q: torch.Tensor, k: int, exclude: int | None = None) -> Neighbours:
        c = self.coarse(b, q)
        n, k = _clamp_topk(c, k, exclude)
        if k <= 0:
            return _EMPTY()
        # With |coarse - exact| <= M, every exact top-k string has coarse >= (coarse k-th) - 2M.
        kth = c.topk(k).values[-1]
        cand = torch.nonzero(c >= kth - 2 * COARSE_MARGIN).flatten()
        return _best_of(cand, self.exact(b, cand, q), k)

    # --- batches (evaluation) -----------------------------------------------------------------
    def batch_threshold(self, b: int, Q: torch.Tensor, thr: float,
                        exclude: torch.Tensor | None = None, sims: bool = True) -> tuple:
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
                _mask_excluded(S, exclude, s)
            i, j = torch.nonzero(S > thr, as_tuple=True)
            qi.append(i.cpu())
            rows.append((j + s).cpu())
            out.append(S[i, j].cpu())
        return (torch.cat(qi).numpy().astype(np.int64), torch.cat(rows).numpy().astype(np.int64),
                torch.cat(out).numpy())

    def batch_topk(self, b: int, Q: torch.Tensor, k: int,
                   exclude: torch.Tensor | None = None) -> tuple[np.ndarray, ...]:
        """(query index, pool row, similarity) of each query's k most similar strings."""
        X = self.block(b)
        Q = Q.to(X.device, torch.float32)
        best_v = torch.full((Q.shape[0], 0), -float("inf"), device=X.device)
        best_i = torch.zeros((Q.shape[0], 0), dtype=torch.long, device=X.device)
        for s in range(0, X.shape[0], self.chunk):
            S = Q @ X[s : s + self.chunk].to(torch.float32).T
            if exclude is not None:
                _mask_excluded(S, exclude, s)
            v = torch.cat([best_v, S], dim=1)
            i = torch.cat([best_i, torch.arange(s, s + S.shape[1], device=X.device).expand_as(S)], 1)
            kk = min(k, v.shape[1])
            best_v, pos = v.topk(kk, dim=1)
            best_i = i.gather(1, pos)
        keep = torch.isfinite(best_v)
        qi = torch.arange(Q.shape[0], device=X.device)[:, None].expand_as(best_i)
        return (qi[keep].cpu().numpy().astype(np.int64), best_i[keep].cpu().numpy().astype(np.int64),
                best_v[keep].cpu().numpy())


_POOLS: dict = {}


def _scan_pool(n: int):
    """A process-wide pool of ``n`` worker threads for the split float16 pass."""
    if n not in _POOLS:
        from concurrent.futures import ThreadPoolExecutor

        _POOLS[n] = ThreadPoolExecutor(n, thread_name_prefix="ffnlens-scan")
    return _POOLS[n]


def _mask_excluded(S: torch.Tensor, exclude: torch.Tensor, start: int) -> None:
    """Set S[i, exclude[i] - start] to -inf where that row lies in this chunk (exclude < 0: none)."""
    ex = exclude.to(S.device)
    inside = (ex >= start) & (ex < start + S.shape[1])
    idx = torch.nonzero(inside).flatten()
    S[idx, ex[idx] - start] = -float("inf")


def batch_output(answers: list[tuple[int, Neighbours]]) -> tuple[np.ndarray, ...]:
    """Per-query answers [(query index, Neighbours)] as a batch's (query index, row, sim) arrays."""
    if not answers:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return (np.concatenate([np.full(len(nb), i, dtype=np.int64) for i, nb in answers]),
            np.concatenate([nb.rows for _, nb in answers]),
            np.concatenate([nb.sims for _, nb in answers]))


def _EMPTY() -> Neighbours:
    return Neighbours(np.zeros(0, np.int64), np.zeros(0, np.float32))


def _clamp_topk(scores: torch.Tensor, k: int, exclude: int | None) -> tuple[int, int]:
    """Mask the excluded row (in place) and clamp k: (rows left, k to take)."""
    n = len(scores)
    if exclude is not None:
        scores[exclude] = -float("inf")
        n -= 1
    return n, min(k, n)


def _best_of(cand: torch.Tensor, sims: torch.Tensor, k: int) -> Neighbours:
    """The k best of candidate rows with exact similarities, ties at rank k to the lower row."""
    order = torch.argsort(cand)
    cand, sims = cand[order], sims[order]
    best = _topk_ties(sims, k, False)
    rows = cand.cpu().numpy()[best.rows]
    o = np.lexsort((rows, -best.sims))
    return Neighbours(rows[o].astype(np.int64), best.sims[o], ordered=True)


def _topk_ties(s: torch.Tensor, k: int, has_excluded: bool) -> Neighbours:
    """The k largest of s; ties at the k-th value are taken in row order. -inf never counts."""
    finite = int(torch.isfinite(s).sum()) if has_excluded else s.numel()
    k = min(k, finite)
    if k <= 0:
        return _EMPTY()
    kth = s.topk(k).values[-1]
    above = torch.nonzero(s > kth).flatten()
    tied = torch.nonzero(s == kth).flatten()[: k - len(above)]
    rows = torch.cat([above, tied])
    return _order(rows, s[rows])


BACKENDS = ("auto", "bound", "exact", "ivf")


def make_search(store: Store, backend: str = "auto", device: str = "cpu"):
    """"bound" (exact answers from a pruned scan), "exact" (full scan), "ivf" (approximate: a faiss
    inverted-file index proposes, float32 decides), or "auto": bound when the store has its index,
    else exact."""
    if backend == "exact" or (backend == "auto" and "bound" not in store.manifest):
        return ExactSearch(store, device)
    if backend == "ivf":
        from .ivf import open_ivf

        return open_ivf(store, device)
    if backend in ("bound", "auto"):
        from .bound import open_bound

        return open_bound(store, device)
    raise ValueError(f"unknown search backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def available_backends(store: Store) -> list[str]:
    """The backends this store can answer with: the full scan always, the others when built."""
    return ["exact"] + [name for name in ("bound", "ivf") if name in store.manifest]
