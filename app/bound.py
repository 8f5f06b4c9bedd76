"""Exact search that reads a fraction of the store: a provable upper bound prunes, float32 decides.

FFN outputs are close to low-rank. Per block, index time fits k orthonormal directions U (the top
right-singular vectors of a sample of the stored unit vectors) and keeps, for every string, its
projection x_p = U^T x (float16) and its residual norm |x - U x_p| (float32). For a unit query q
with projection q_p and residual norm |q_r|, Cauchy-Schwarz gives

    q . x  =  q_p . x_p + q_r . x_r  <=  q_p . x_p + |q_r| |x_r|

so every string whose bound stays at or below the threshold (minus a margin for rounding, below)
is discarded with certainty; the rest get the exact float32 product. Answers are identical to
the full float32 scan, reading k/C of the vector bytes plus the survivors.

Rounding margin: the bound is computed by a float16 matrix-vector product over the stored float16
projections. Against the exact-arithmetic bound of the stored vector it can be off by the
projection's rounding to float16 (|q_p . (x_p - x_p16)| <= 2^-11, unit q_p bound), the query's
(|(q_p - q_p16) . x_p| <= 2^-11), the float16 output's (half an ulp below 2: <= 2^-10), and float32
errors in fitting x_p and |x_r| (~1e-6 each): under 2.1e-3 in all. BOUND_MARGIN = 3e-3 covers it.
"""
from __future__ import annotations

import numpy as np
import torch

from .search import ExactSearch, Neighbours, _order, _topk_ties
from .store import Store

BOUND_MARGIN = 3e-3
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
    """Float16 projections (P, k) and float32 residual norms (P,) of the stored float16 vectors."""
    U = torch.from_numpy(basis)
    P = len(unit)
    proj = np.empty((P, basis.shape[1]), dtype=np.float16)
    resid = np.empty(P, dtype=np.float32)
    for s in range(0, P, chunk):
        X = torch.from_numpy(np.asarray(unit[s : s + chunk], dtype=np.float32))
        xp = X @ U
        r = (X - xp @ U.T).norm(dim=1)
        proj[s : s + chunk] = xp.half().numpy()
        resid[s : s + chunk] = r.numpy()
    return proj, resid


class BoundSearch(ExactSearch):
    """Exact answers (equal to the full float32 scan) from a pruned scan; batches as ExactSearch."""

    name = "bound"

    def __init__(self, store: Store, basis: np.ndarray, proj: np.ndarray, resid: np.ndarray,
                 device: str = "cpu"):
        super().__init__(store, device)
        self.basis = torch.from_numpy(np.ascontiguousarray(basis, dtype=np.float32)).to(device)  # (L, C, k)
        self._proj_np, self._resid_np = proj, resid
        self._proj = [None] * store.n_layer
        self._resid = [None] * store.n_layer
        self.last_candidates: list[int] = [0] * store.n_layer  # for benchmarks

    def _tables(self, b: int):
        if self._proj[b] is None:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # read-only memory maps
                p = torch.from_numpy(self._proj_np[b])
                r = torch.from_numpy(self._resid_np[b])
            self._proj[b] = p.to(self.device) if self.device != "cpu" else p
            self._resid[b] = r.to(self.device) if self.device != "cpu" else r
        return self._proj[b], self._resid[b]

    def bounds(self, b: int, q: torch.Tensor) -> torch.Tensor:
        """(P,) float32 upper bounds of q . x, valid to within BOUND_MARGIN."""
        proj, resid = self._tables(b)
        q = q.to(self.basis.device, torch.float32)
        qp = self.basis[b].T @ q
        qr = float((q - self.basis[b] @ qp).norm())
        return torch.mv(proj, qp.to(torch.float16)).float() + qr * resid

    def threshold(self, b: int, q: torch.Tensor, thr: float, exclude: int | None = None) -> Neighbours:
        cand = torch.nonzero(self.bounds(b, q) > thr - BOUND_MARGIN).flatten()
        if exclude is not None:
            cand = cand[cand != exclude]
        self.last_candidates[b] = len(cand)
        s = self.exact(b, cand, q)
        keep = s > thr
        return _order(cand[keep.to(cand.device)], s[keep])

    def topk(self, b: int, q: torch.Tensor, k: int, exclude: int | None = None) -> Neighbours:
        ub = self.bounds(b, q)
        if exclude is not None:
            ub[exclude] = -float("inf")
        n = int(torch.isfinite(ub).sum())
        k = min(k, n)
        if k <= 0:
            return Neighbours(np.zeros(0, np.int64), np.zeros(0, np.float32))
        m = min(n, max(2 * k, k + 64))
        while True:
            top = ub.topk(min(n, m + 1))
            cand = top.indices[:m]
            s = self.exact(b, cand, q)
            kth = s.topk(k).values[-1]
            rest = float(top.values[m]) if m < n else -float("inf")  # best bound left unread
            # Stop once no unread string can reach the k-th exact similarity, ties included.
            if m >= n or rest + BOUND_MARGIN < float(kth):
                break
            m = min(n, 4 * m)
        self.last_candidates[b] = len(cand)
        order = torch.argsort(cand)  # ties at rank k go to the lower row, as in the full scan
        cand, s = cand[order], s[order]
        best = _topk_ties(s, k, False)
        rows = cand.cpu().numpy()[best.rows]
        o = np.lexsort((rows, -best.sims))
        return Neighbours(rows[o].astype(np.int64), best.sims[o])


def add_bound(path, rank: int = DEFAULT_RANK, progress: bool = True) -> None:
    """Fit and write the bound index of the store (or finished build) at ``path``."""
    from pathlib import Path

    from tqdm import tqdm

    path = Path(path)
    unit = np.load(path / "ffn_unit.npy", mmap_mode="r")
    L, P, C = unit.shape
    k = min(rank, C)
    basis = np.zeros((L, C, k), dtype=np.float32)
    proj = np.lib.format.open_memmap(path / "bound_proj.npy.tmp", "w+", np.float16, (L, P, k))
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
    if proj.shape[:2] != (store.n_layer, store.size) or basis.shape[2] != proj.shape[2]:
        raise StoreError(f"the bound index at {store.path} does not fit the store; "
                         "run `ffnlens index --force` to rebuild it")
    return BoundSearch(store, basis, proj, resid, device)
