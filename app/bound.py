"""Exact search that reads a fraction of the store: a provable upper bound prunes, float32 decides.

FFN outputs are close to low-rank. Per block, index time fits k orthonormal directions U (the top
right-singular vectors of a sample of the stored unit vectors) and keeps, for every string, its
projection x_p = U^T x and its residual norm |x - U x_p|, in float32, the projections stored
direction by direction (k rows of P values) so that the bound is k streaming passes. For a unit query q
with projection q_p and residual norm |q_r|, Cauchy-Schwarz gives

    q . x  =  q_p . x_p + q_r . x_r  <=  q_p . x_p + |q_r| |x_r|

so every string whose bound stays at or below the threshold (minus a margin for rounding, below)
is discarded with certainty; the rest get the exact float32 product. Answers are identical to
the full float32 scan, reading k/C of the vector bytes plus the survivors.

Rounding margin: everything is float32 on the stored float16 vectors (exactly representable in
float32). The computed bound differs from the exact-arithmetic one by float32 rounding in x_p,
|x_r|, q_p, |q_r| and the sums, each a few units of 2^-24 times sums of magnitudes at most sqrt(C)
(C <= 4096: under 2e-5 in all), and the exact similarities the search compares are float32 sums
off by as much again. BOUND_MARGIN = 1e-4 covers both with room to spare; the tests check it.
The same holds for the lower side, q_p . x_p - |q_r| |x_r| <= q . x, with which the threshold
search accepts strings without computing their products: a string is taken unseen only when its
lower bound clears the threshold by the margin.
(Float16 projections would halve the bytes, but torch's float16 matrix-vector product on the CPU
is compute-bound at this shape: measured 18 ms for 823k x 32 against 5 ms in float32 here.)
"""
from __future__ import annotations

import numpy as np
import torch

from .search import (_EMPTY, ExactSearch, Neighbours, _best_of, _clamp_topk, _mask_excluded,
                     as_tensor, batch_output)
from .store import Store

BOUND_MARGIN = 1e-4
DEFAULT_RANK = 32
FILES = ("bound_basis.npy", "bound_proj.npy", "bound_resid.npy")


def fit_basis(unit: np.ndarray, k: int, sample: int = 20000, seed: int = 0) -> np.ndarray:
    """(C, k) orthonormal directions holding most of the energy of the rows of ``unit``."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(unit), min(sample, len(unit)), replace=False))
    X = torch.from_numpy(np.asarray(unit[rows], dtype=np.float32))
    _, _, Vh = torch.linalg.svd(X, full_matrices=False)
    return Vh[: min(k, X.shape[1])].T.contiguous().numpy()


def project(unit: np.ndarray, basis: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Projections (k, P) and residual norms (P,), float32, of the stored float16 vectors."""
    U = torch.from_numpy(basis)
    P = len(unit)
    proj = np.empty((basis.shape[1], P), dtype=np.float32)
    resid = np.empty(P, dtype=np.float32)
    for s in range(0, P, chunk):
        X = torch.from_numpy(np.asarray(unit[s : s + chunk], dtype=np.float32))
        xp = X @ U
        r = (X - xp @ U.T).norm(dim=1)
        proj[:, s : s + chunk] = xp.T.numpy()
        resid[s : s + chunk] = r.numpy()
    return proj, resid


class BoundSearch(ExactSearch):
    """Exact answers (equal to the full float32 scan) from a pruned scan; batches as ExactSearch."""

    name = "bound"

    def __init__(self, store: Store, basis: np.ndarray, proj: np.ndarray, resid: np.ndarray,
                 device: str = "cpu"):
        super().__init__(store, device)
        self.basis = np.ascontiguousarray(basis, dtype=np.float32)  # (L, C, k)
        self.proj, self.resid = proj, resid  # (L, k, P) and (L, P) float32, memory-mapped
        self._gpu: dict = {}
        self.last_candidates: list[int] = [0] * store.n_layer  # for benchmarks

    def _query_parts(self, b: int, q: torch.Tensor) -> tuple[np.ndarray, np.float32]:
        """The unit query's projection (k,) and residual norm, float32."""
        qn = q.detach().cpu().numpy().astype(np.float32)
        qp = self.basis[b].T @ qn
        return qp, np.float32(np.linalg.norm(qn - self.basis[b] @ qp))

    def bounds(self, b: int, q: torch.Tensor) -> torch.Tensor:
        """(P,) float32 upper bounds of q . x, valid to within BOUND_MARGIN."""
        qp, qr = self._query_parts(b, q)
        if self.device != "cpu":
            if b not in self._gpu:
                self._gpu[b] = (torch.from_numpy(np.array(self.proj[b])).to(self.device),
                                torch.from_numpy(np.array(self.resid[b])).to(self.device))
            pt, rt = self._gpu[b]
            return torch.from_numpy(qp).to(self.device) @ pt + float(qr) * rt
        return torch.from_numpy(self._cpu_bounds(b, qp, qr)[0])

    def _cpu_bounds(self, b: int, qp: np.ndarray, qr: np.float32) -> tuple[np.ndarray, np.ndarray]:
        """(P,) upper bounds on the CPU, and the residual term |q_r| |x_r| in them (the bound's
        lower side is the upper one less twice that term)."""
        slack = qr * self.resid[b]
        ub = qp @ self.proj[b]  # k streaming passes over P float32 values
        ub += slack
        return ub, slack

    def _candidates(self, b: int, q: torch.Tensor, thr: float) -> torch.Tensor:
        ub = self.bounds(b, q)
        if ub.device.type == "cpu":  # numpy's flatnonzero is several times faster than torch's here
            cand = torch.from_numpy(np.flatnonzero(ub.numpy() > np.float32(thr - BOUND_MARGIN)))
        else:
            cand = torch.nonzero(ub > thr - BOUND_MARGIN).flatten()
        self.last_candidates[b] = len(cand)
        return cand

    def threshold(self, b: int, q: torch.Tensor, thr: float, exclude: int | None = None) -> Neighbours:
        """As the full scan's, and the same answer. The bound's lower side, q_p . x_p - |q_r| |x_r|,
        proves many strings qualify without their product (87 % of block 5's on blog-cpu, where
        the sets reach 100,000): their similarities are computed only when the answer is ordered
        or its first strings are shown (see Neighbours)."""
        if self.device != "cpu":
            return super().threshold(b, q, thr, exclude)
        ub, slack = self._cpu_bounds(b, *self._query_parts(b, q))
        cand = np.flatnonzero(ub > np.float32(thr - BOUND_MARGIN))
        if exclude is not None:
            cand = cand[cand != exclude]
        self.last_candidates[b] = len(cand)
        hi = ub[cand]
        lo = hi - 2 * slack[cand]
        sure = lo > np.float32(thr + BOUND_MARGIN)
        test = cand[~sure]
        s = self.exact(b, torch.from_numpy(test), q).numpy()
        keep = s > thr
        rows = np.concatenate([test[keep], cand[sure]]).astype(np.int64)
        sims = np.concatenate([s[keep], np.full(int(sure.sum()), np.nan, np.float32)])
        if not sure.any():
            return Neighbours(rows, sims)
        lo_all = np.concatenate([s[keep], lo[sure] - np.float32(BOUND_MARGIN)])
        hi_all = np.concatenate([s[keep], hi[sure] + np.float32(BOUND_MARGIN)])
        return Neighbours(rows, sims, lo=lo_all, hi=hi_all,
                          fill=lambda r: self.exact(b, torch.from_numpy(r), q).numpy())

    # --- batches (evaluation, calibration) ------------------------------------------------------
    def _batch_parts(self, b: int, Q: torch.Tensor):
        """Unit queries (B, C) -> float32 CPU queries, their projections (B, k), residual norms (B,),
        and the block's projections (k, P) and residual norms (P,) as tensors."""
        Q = Q.detach().to("cpu", torch.float32).contiguous()
        U = torch.from_numpy(self.basis[b])
        Qp = Q @ U
        qr = (Q - Qp @ U.T).norm(dim=1)
        return Q, Qp, qr, as_tensor(self.proj[b]), as_tensor(self.resid[b])

    def _chunk_bounds(self, Qp, qr, proj, resid):
        """(start, (B, chunk) upper bounds) for each chunk of the pool: the batch form of ``bounds``."""
        for s in range(0, self.store.size, self.chunk):
            ub = Qp @ proj[:, s : s + self.chunk]
            ub += qr[:, None] * resid[None, s : s + self.chunk]
            yield s, ub

    def batch_threshold(self, b: int, Q: torch.Tensor, thr: float,
                        exclude: torch.Tensor | None = None, sims: bool = True) -> tuple:
        """As ExactSearch.batch_threshold, from the bound: one (B, k) x (k, chunk) product per chunk
        instead of (B, C) x (C, chunk), then exact products for the surviving pairs only; with
        ``sims=False``, only for the pairs the lower bound does not already prove (their
        similarities are then None)."""
        if self.device != "cpu":
            return super().batch_threshold(b, Q, thr, exclude)
        Q, Qp, qr, proj, resid = self._batch_parts(b, Q)
        cut = thr - BOUND_MARGIN
        qis, rws, ubs = [], [], []
        for s, ub in self._chunk_bounds(Qp, qr, proj, resid):
            i, j = torch.nonzero(ub > cut, as_tuple=True)
            qis.append(i)
            rws.append(j + s)
            if not sims:
                ubs.append(ub[i, j])
        qi, rows = torch.cat(qis), torch.cat(rws)
        sure = torch.zeros(len(rows), dtype=torch.bool)
        if not sims:
            lo = torch.cat(ubs) - 2 * qr[qi] * resid[rows]
            sure = lo > thr + BOUND_MARGIN
        if exclude is not None:
            keep = rows != exclude.to(torch.long)[qi]
            qi, rows, sure = qi[keep], rows[keep], sure[keep]
        self.last_candidates[b] = len(rows)
        test = ~sure
        exact = self.pair_sims(b, Q, qi[test], rows[test])
        keep = exact > thr
        if not sims:
            return (torch.cat([qi[test][keep], qi[sure]]).numpy().astype(np.int64),
                    torch.cat([rows[test][keep], rows[sure]]).numpy().astype(np.int64), None)
        return (qi[keep].numpy().astype(np.int64), rows[keep].numpy().astype(np.int64),
                exact[keep].numpy())

    def batch_topk(self, b: int, Q: torch.Tensor, k: int,
                   exclude: torch.Tensor | None = None) -> tuple[np.ndarray, ...]:
        """As ExactSearch.batch_topk, in rounds: each round reads, for every query still open, its
        m best bounds from one pass over the projections and computes their exact products; a query
        is answered once its (m+1)-th bound cannot beat its k-th exact similarity (ties included);
        the others go to the next round with 4 m (at m = P every query is answered)."""
        if self.device != "cpu":
            return super().batch_topk(b, Q, k, exclude)
        Q, Qp, qr, proj, resid = self._batch_parts(b, Q)
        B, P = Q.shape[0], self.store.size
        ex = torch.full((B,), -1, dtype=torch.long) if exclude is None else exclude.to(torch.long).cpu()
        answers, n_cand = [], 0
        pending = torch.arange(B)
        m = min(P, max(4 * k, k + 256))
        while len(pending):
            done = self._topk_round(b, Q[pending], Qp[pending], qr[pending], proj, resid, k, m,
                                    ex[pending])
            for j, nb in done.items():
                answers.append((int(pending[j]), nb))
            n_cand += len(done) * m
            left = torch.tensor([j not in done for j in range(len(pending))], dtype=torch.bool)
            pending = pending[left]
            if len(pending) and m == P:
                raise AssertionError("a top-k round over the whole pool left queries open")
            m = min(P, 4 * m)
        self.last_candidates[b] = n_cand
        return batch_output(sorted(answers, key=lambda a: a[0]))

    def _topk_round(self, b, Q, Qp, qr, proj, resid, k: int, m: int, ex: torch.Tensor) -> dict:
        """One round of batch_topk for the open queries: {index among them: Neighbours} for those
        it settles."""
        B, P = Q.shape[0], self.store.size
        keep_n = min(P, m + 1)
        best_v = torch.full((B, 0), -float("inf"))
        best_i = torch.zeros((B, 0), dtype=torch.long)
        for s, ub in self._chunk_bounds(Qp, qr, proj, resid):
            _mask_excluded(ub, ex, s)
            v, i = ub.topk(min(keep_n, ub.shape[1]), dim=1)
            v, i = torch.cat([best_v, v], 1), torch.cat([best_i, i + s], 1)
            best_v, pos = v.topk(min(keep_n, v.shape[1]), dim=1)
            best_i = i.gather(1, pos)
        cand, cand_v = best_i[:, :m], best_v[:, :m]
        rest = best_v[:, m] if best_v.shape[1] > m else torch.full((B,), -float("inf"))
        qi = torch.arange(B)[:, None].expand_as(cand)
        sims = self.pair_sims(b, Q, qi.reshape(-1), cand.reshape(-1)).reshape(B, -1)
        sims[~torch.isfinite(cand_v)] = -float("inf")  # the excluded row, when it was read
        done = {}
        for i in range(B):
            n = P - int(0 <= int(ex[i]) < P)
            kk = min(k, n)
            if kk <= 0:
                done[i] = _EMPTY()
                continue
            finite = torch.isfinite(sims[i])
            if int(finite.sum()) < kk:
                continue
            kth = float(sims[i][finite].topk(kk).values[-1])
            if cand.shape[1] >= n or float(rest[i]) + BOUND_MARGIN < kth:
                done[i] = _best_of(cand[i][finite], sims[i][finite], kk)
        return done

    def topk(self, b: int, q: torch.Tensor, k: int, exclude: int | None = None) -> Neighbours:
        """Two passes: the exact similarities of the 2k best bounds give a k-th value that the
        answer's k-th can only exceed; every string whose bound reaches it (less the margin, so
        ties at the k-th are all seen) is then decided exactly. Measured on blog-cpu at k = 200:
        5.5 ms per block before (rounds of 4x more candidates, each re-ranking every bound)."""
        ub = self.bounds(b, q)
        n, k = _clamp_topk(ub, k, exclude)  # the excluded row's bound is now -inf
        if k <= 0:
            return _EMPTY()
        m = min(n, 2 * k)
        if ub.device.type == "cpu":  # numpy's partition and flatnonzero: 3x faster than torch's topk
            u = ub.numpy()
            first = torch.from_numpy(np.flatnonzero(u >= np.partition(u, len(u) - m)[len(u) - m]))
        else:
            first = ub.topk(m).indices
        kth = float(self.exact(b, first, q).topk(k).values[-1])
        if ub.device.type == "cpu":
            cand = torch.from_numpy(np.flatnonzero(ub.numpy() >= np.float32(kth - BOUND_MARGIN)))
        else:
            cand = torch.nonzero(ub >= kth - BOUND_MARGIN).flatten()
        self.last_candidates[b] = len(cand)
        return _best_of(cand, self.exact(b, cand, q), k)


def add_bound(path, rank: int = DEFAULT_RANK, progress: bool = True) -> None:
    """Fit and write the bound index of the store (or finished build) at ``path``."""
    from pathlib import Path

    from tqdm import tqdm

    path = Path(path)
    unit = np.load(path / "ffn_unit.npy", mmap_mode="r")
    L, P, C = unit.shape
    k = min(rank, C)
    basis = np.zeros((L, C, k), dtype=np.float32)
    proj = np.lib.format.open_memmap(path / "bound_proj.npy.tmp", "w+", np.float32, (L, k, P))
    resid = np.zeros((L, P), dtype=np.float32)
    for b in tqdm(range(L), desc="bound index", disable=not progress, dynamic_ncols=True):
        basis[b] = fit_basis(unit[b], k)
        proj[b], resid[b] = project(unit[b], basis[b])
    proj.flush()
    del proj
    import os

    np.save(path / "bound_basis.npy", basis)
    np.save(path / "bound_resid.npy", resid)
    os.replace(path / "bound_proj.npy.tmp", path / "bound_proj.npy")


def open_bound(store: Store, device: str = "cpu") -> BoundSearch:
    from .store import StoreError

    info = store.manifest.get("bound")
    if not info:
        raise StoreError(f"the store at {store.path} has no bound index; run `ffnlens index` to add it")
    if info.get("unit_fingerprint") != store.manifest.get("unit_fingerprint"):
        raise StoreError(f"the bound index at {store.path} was fitted to other vectors than the "
                         "store holds; run `ffnlens index --force` to rebuild it")
    basis = np.load(store.path / "bound_basis.npy")
    proj = np.load(store.path / "bound_proj.npy", mmap_mode="r")
    resid = np.load(store.path / "bound_resid.npy", mmap_mode="r")
    if proj.shape != (store.n_layer, basis.shape[2], store.size) or resid.shape != (store.n_layer, store.size):
        raise StoreError(f"the bound index at {store.path} does not fit the store; "
                         "run `ffnlens index --force` to rebuild it")
    return BoundSearch(store, basis, proj, resid, device)
