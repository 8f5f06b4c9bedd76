"""Approximate search from a per-block faiss inverted-file index; float32 decides what is returned.

Per block, k-means (spherical, inner product) splits the stored unit vectors into ``nlist`` lists;
a query scans only the ``nprobe`` lists whose centroids are closest to it, scoring each string
either exactly in float32 ("flat": IndexIVFFlat) or from an 8-bit scalar-quantised code of its
residual to the centroid ("sq8": IndexIVFScalarQuantizer, QT_8bit; a quarter of the bytes). The
index only proposes candidates: every string returned was recomputed by ExactSearch's own float32
product, so its similarity is bit for bit the full scan's and every string a threshold search
returns truly passes it (precision 1). What the index can miss are strings in lists it did not
probe; with nprobe = nlist nothing is missed and the answers equal the full scan's exactly.

Margins. A faiss score differs from the float32 similarity by (a) the quantiser's error, for sq8:
|q.x - q.x^| <= |q| |x - x^| = |x - x^| (Cauchy-Schwarz, unit q), where x^ is the decoded vector.
The build measures max |x - x^| over every string of the block and records it (``error`` in the
manifest; 0.001 to 0.002 on the test store's 32 dimensions, 0.005 on random low-rank ones): 8 bits
over each dimension's residual range, whose ends are set to the residuals' min and max over the
*whole* block, so no string is clipped (the k-means sample's ranges alone clip the strings outside
them, with errors of 0.1 to 0.4 in the tests). (b) float32 rounding: faiss's and torch's sums of C
products each err by at most about C 2^-24 sum|q_i x_i| <= C 2^-24 (1 + 2^-11 for the float16
vector's norm), and faiss adds q.centroid and q.residual separately, one rounding more; measured,
the two differ by 1e-7 to 3e-7. float_margin(C) = max(1e-4, 3 C 2^-24) covers (b) even in the worst
case (flat has (b) only). A threshold search asks faiss for every string scoring above
thr - margin; top-k reads the best few by faiss score and stops once the best unread score plus
the margin is below the k-th exact similarity.

Files: ``ivf_{b}.faiss`` per block (``ivf_names``), written by ``build_ivf``, recorded in the
manifest by ``seal_ivf`` (or by the store's ``finalize``, given ``index_files``), checked and
memory-mapped by ``open_ivf`` (faiss's IO_FLAG_MMAP maps the inverted lists read-only as
OnDiskInvertedLists, for both kinds with faiss 1.15.1: opening costs about 1 MiB of memory whatever
the size; lists are paged in as they are probed).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from ..store import IndexFiles, Store, seal_index
from .base import IndexCheck, Neighbours, SearchStats, batch_output, best_of, empty, record
from .exact import ExactSearch

FLOAT_MARGIN = 1e-4  # the least rounding margin; see float_margin
KINDS = ("sq8", "flat")
MIN_PER_LIST = 39  # faiss's k-means wants at least 39 training points per centroid
PROBE_FRACTION = 16  # default nprobe = nlist / 16
KMEANS_ITERATIONS = 10
REBUILD = "run `ffnlens index` to build it again"
PATTERN = "ivf_{}.faiss"
CHECK = IndexCheck("ivf", made="built from", add=REBUILD, rebuild=REBUILD)


def ivf_names(n_layer: int) -> tuple[str, ...]:
    """The ivf index's files, one per block."""
    return tuple(PATTERN.format(b) for b in range(n_layer))


def index_files(n_layer: int) -> IndexFiles:
    """The ivf index's files for a store of ``n_layer`` blocks (none hashed: they are large)."""
    return IndexFiles("ivf", ivf_names(n_layer))


def _faiss():
    import faiss

    faiss.omp_set_num_threads(torch.get_num_threads())  # the same cores torch was given, no more
    return faiss


def float_margin(C: int) -> float:
    """Covers the float32 rounding between a faiss score and ``exact``'s sum (module docstring)."""
    return max(FLOAT_MARGIN, 3 * C * 2.0**-24)


def default_nlist(P: int) -> int:
    """About 4 sqrt(P) lists, a power of two, with at least MIN_PER_LIST strings per list to train on."""
    want = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(P))))
    cap = 2 ** int(math.log2(max(1, P // MIN_PER_LIST))) if P >= MIN_PER_LIST else 1
    return max(1, min(want, cap))


def default_nprobe(nlist: int) -> int:
    return max(1, nlist // PROBE_FRACTION)


def _f32(unit: np.ndarray, s: int, e: int) -> np.ndarray:
    return np.ascontiguousarray(unit[s:e], dtype=np.float32)


def fit_ivf(unit: np.ndarray, kind: str = "sq8", nlist: int | None = None, seed: int = 0,
            sample: int | None = None, chunk: int = 65536):
    """An inverted-file index over one block's unit vectors (P, C) (float16, memory-mapped: converted
    to float32 a chunk at a time), and the largest quantisation error |x - x^| over its strings
    (0.0 for flat). Rows get ids 0..P-1. k-means trains on ``sample`` random rows (default
    max(39 nlist, 50,000), at most P)."""
    if kind not in KINDS:
        raise ValueError(f"unknown ivf kind {kind!r}; choose one of {', '.join(KINDS)}")
    faiss = _faiss()
    P, C = unit.shape
    nlist = nlist or default_nlist(P)
    if not 1 <= nlist <= P:
        raise ValueError(f"nlist must be between 1 and the {P} strings of the block, not {nlist}")
    quantizer = faiss.IndexFlatIP(C)
    if kind == "sq8":
        index = faiss.IndexIVFScalarQuantizer(quantizer, C, nlist, faiss.ScalarQuantizer.QT_8bit,
                                              faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexIVFFlat(quantizer, C, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    # Ten k-means iterations (faiss's IVF default, pinned here): the lists only route queries, every
    # candidate is verified; at the reference shape (4,096 lists, 160k training rows, width 384)
    # each iteration costs about 2.5e11 multiply-adds, several seconds on 2 cores.
    index.cp.niter = KMEANS_ITERATIONS
    rng = np.random.default_rng(seed)
    n_train = min(P, sample or max(MIN_PER_LIST * nlist, 50000))
    rows = np.sort(rng.choice(P, n_train, replace=False))
    index.train(np.ascontiguousarray(unit[rows], dtype=np.float32))
    if kind == "flat":
        for s in range(0, P, chunk):
            index.add(_f32(unit, s, s + chunk))
        return index, 0.0
    # sq8: assign every string once, widen each dimension's range to all residuals (the sample's
    # ranges would clip the strings outside them, with errors tens of times the usual), then add
    # the codes. QT_8bit's trained vector is each dimension's minimum, then its range (kept > 0).
    centroids = index.quantizer.reconstruct_n(0, nlist)
    assign = np.empty(P, dtype=np.int64)
    lo, hi = np.full(C, np.inf, np.float32), np.full(C, -np.inf, np.float32)
    for s in range(0, P, chunk):
        X = _f32(unit, s, s + chunk)
        assign[s : s + len(X)] = index.quantizer.assign(X, 1).ravel()
        R = X - centroids[assign[s : s + len(X)]]
        lo, hi = np.minimum(lo, R.min(0)), np.maximum(hi, R.max(0))
    span = np.maximum(hi - lo, np.float32(1e-7))
    faiss.copy_array_to_vector(np.concatenate([lo, span]).astype(np.float32), index.sq.trained)
    error = 0.0
    for s in range(0, P, chunk):
        X = _f32(unit, s, s + chunk)
        a = np.ascontiguousarray(assign[s : s + len(X)])
        index.add_core(len(X), faiss.swig_ptr(X), None, faiss.swig_ptr(a))
        R = X - centroids[a]
        Rq = index.sq.decode(index.sq.compute_codes(R))  # the codes add_core stored (same encoder)
        error = max(error, float(np.linalg.norm(R - Rq, axis=1).max()))
    return index, error


def build_ivf(path, kind: str = "sq8", nlist: int | None = None, nprobe: int | None = None,
              progress: bool = True) -> dict:
    """Fit and write the ivf index of the store (or finished build) at ``path``, one file per block
    (each written aside and renamed into place); returns its manifest entry (without the
    fingerprint, which sealing adds): kind, nlist, nprobe (the default) and per-block errors."""
    from tqdm import tqdm

    faiss = _faiss()
    path = Path(path)
    unit = np.load(path / "ffn_unit.npy", mmap_mode="r")
    L, P, C = unit.shape
    nlist = nlist or default_nlist(P)
    errors = []
    for b, name in enumerate(tqdm(ivf_names(L), desc=f"ivf index ({kind})", disable=not progress,
                                  dynamic_ncols=True)):
        index, err = fit_ivf(unit[b], kind, nlist, seed=b)
        tmp = path / (name + ".tmp")
        faiss.write_index(index, str(tmp))
        os.replace(tmp, path / name)
        errors.append(err)
    return {"kind": kind, "nlist": nlist, "nprobe": min(nlist, nprobe or default_nprobe(nlist)),
            "error": errors}


class IVFSearch:
    """Approximate candidates from faiss, exact float32 similarities from ``scan`` (the full scan's
    own products); see the module docstring. ``nprobe`` (settable) is the number of lists each
    query scans."""

    name = "ivf"

    def __init__(self, store: Store, indexes: list, errors: list[float], nprobe: int,
                 device: str = "cpu"):
        self.store, self.device = store, device
        self.scan = ExactSearch(store, device)
        self.indexes = indexes
        self.margins = [float(e) + float_margin(store.unit.shape[2]) for e in errors]
        self.nlist = int(indexes[0].nlist) if indexes else 0
        self.nprobe = nprobe

    @property
    def nprobe(self) -> int:
        return self._nprobe

    @nprobe.setter
    def nprobe(self, n: int) -> None:
        if not 1 <= int(n) <= max(1, self.nlist):
            raise ValueError(f"nprobe must be between 1 and nlist ({self.nlist}), not {n}")
        self._nprobe = int(n)
        for index in self.indexes:
            index.nprobe = self._nprobe

    @staticmethod
    def _np(q: torch.Tensor) -> np.ndarray:
        q = q.detach().to("cpu", torch.float32)
        return np.ascontiguousarray(q.reshape(-1, q.shape[-1]).numpy())

    def _stats(self, stats: SearchStats | None, candidates: int) -> SearchStats:
        return record(stats, "ivf", candidates, candidates * self.scan.row_bytes())

    def threshold(self, b: int, q: torch.Tensor, thr: float, exclude: int | None = None) -> Neighbours:
        """Every string of the probed lists whose faiss score is within the margin of ``thr``,
        decided by its float32 similarity."""
        _, _, ids = self.indexes[b].range_search(self._np(q), thr - self.margins[b])
        cand = torch.from_numpy(ids.astype(np.int64))
        return self.scan.threshold_among(b, q, thr, cand, exclude, self._stats(None, len(cand)))

    def topk(self, b: int, q: torch.Tensor, k: int, exclude: int | None = None) -> Neighbours:
        """The k best strings among those in the probed lists (all of them when nprobe = nlist; fewer
        than k only when the probed lists hold fewer)."""
        P = self.store.size
        ex = exclude is not None and 0 <= exclude < P
        k = min(k, P - ex)
        if k <= 0:
            return empty(self._stats(None, 0))
        qn, margin = self._np(q), self.margins[b]
        m = min(P, max(2 * k, k + 64) + ex)
        while True:
            D, I = self.indexes[b].search(qn, min(P, m + 1))
            got = I[0] >= 0
            D, I = D[0][got], I[0][got]
            rest = float(D[m]) if len(I) > m else -float("inf")  # best score left unread
            cand = torch.from_numpy(I[:m].astype(np.int64))
            if ex:
                cand = cand[cand != exclude]
            s = self.scan.exact(b, cand, q)
            if rest == -float("inf"):  # every string of the probed lists was read
                break
            # Stop once no unread string can reach the k-th exact similarity, ties included.
            if len(cand) >= k and rest + margin < float(s.topk(k).values[-1]):
                break
            m = min(P, 4 * m)
        stats = self._stats(None, len(cand))
        if len(cand) == 0:
            return empty(stats)
        return best_of(cand, s.cpu(), min(k, len(cand)), stats)

    # --- batches (evaluation, calibration) ------------------------------------------------------
    def batch_threshold(self, b: int, Q: torch.Tensor, thr: float,
                        exclude: torch.Tensor | None = None, sims: bool = True,
                        stats: SearchStats | None = None) -> tuple:
        """As ExactSearch.batch_threshold, from one faiss range search over the probed lists; pairs
        are ordered by query, then similarity (descending), then row."""
        Qn = self._np(Q)
        lims, _, ids = self.indexes[b].range_search(Qn, thr - self.margins[b])
        qi = torch.from_numpy(np.repeat(np.arange(len(Qn), dtype=np.int64), np.diff(lims).astype(np.int64)))
        rows = torch.from_numpy(ids.astype(np.int64))
        if exclude is not None:
            keep = rows != exclude.detach().cpu().to(torch.long)[qi]
            qi, rows = qi[keep], rows[keep]
        self._stats(stats, len(rows))
        found = self.scan.pair_sims(b, torch.from_numpy(Qn), qi, rows)
        keep = found > thr
        qi, rows, found = qi[keep].numpy(), rows[keep].numpy(), found[keep].numpy()
        o = np.lexsort((rows, -found, qi))
        return qi[o], rows[o], found[o]

    def batch_topk(self, b: int, Q: torch.Tensor, k: int, exclude: torch.Tensor | None = None,
                   stats: SearchStats | None = None) -> tuple[np.ndarray, ...]:
        """As ExactSearch.batch_topk: one faiss search for every query's m best scores (m a little
        over k), exact products for those, and a single-query search for the few queries whose
        (m+1)-th score could still beat their k-th exact similarity."""
        Qn = self._np(Q)
        B, P = len(Qn), self.store.size
        ex = (np.full(B, -1, np.int64) if exclude is None
              else exclude.detach().cpu().numpy().astype(np.int64))
        m = min(P, max(2 * k, k + 64) + int(exclude is not None))
        D, I = self.indexes[b].search(Qn, min(P, m + 1))
        rest = np.full(B, -np.inf, np.float32)
        if D.shape[1] > m:
            rest = np.where(I[:, m] >= 0, D[:, m], -np.inf)
        cand = I[:, :m]
        valid = (cand >= 0) & (cand != ex[:, None])
        qi_all = np.broadcast_to(np.arange(B)[:, None], cand.shape)
        qi_t, rows_t = torch.from_numpy(qi_all[valid]), torch.from_numpy(cand[valid].astype(np.int64))
        sims = self.scan.pair_sims(b, torch.from_numpy(Qn), qi_t, rows_t).numpy()
        starts = np.concatenate([[0], np.cumsum(valid.sum(1))])
        answers = []
        n_cand, margin = 0, self.margins[b]
        for i in range(B):
            e = int(ex[i]) if 0 <= ex[i] < P else None
            kk = min(k, P - (e is not None))
            if kk <= 0:
                continue
            r = rows_t[starts[i] : starts[i + 1]]
            s = torch.from_numpy(sims[starts[i] : starts[i + 1]])
            if rest[i] == -np.inf or (len(r) >= kk and rest[i] + margin < float(s.topk(kk).values[-1])):
                nb = best_of(r, s, min(kk, len(r))) if len(r) else empty()
                n_cand += len(r)
            else:  # rare: scores this close to the k-th; search this query on its own
                nb = self.topk(b, torch.from_numpy(Qn[i]), k, e)
                n_cand += nb.stats.candidates
            answers.append((i, nb))
        self._stats(stats, n_cand)
        return batch_output(answers)


def read_ivf(path) -> object:
    """A faiss index file, its inverted lists memory-mapped read-only (IO_FLAG_MMAP: checked with
    faiss 1.15.1 for IndexIVFFlat and IndexIVFScalarQuantizer alike; the lists come back as
    OnDiskInvertedLists over a shared read-only map of the file, with results equal to a full read)."""
    faiss = _faiss()
    return faiss.read_index(str(path), faiss.IO_FLAG_MMAP)


def is_mmapped(index) -> bool:
    """Whether the index's inverted lists are a memory map of its file."""
    faiss = _faiss()
    il = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index).invlists)
    return isinstance(il, faiss.OnDiskInvertedLists)


def seal_ivf(path, info: dict) -> None:
    """Record the ivf index files of the store at ``path`` (``info``: what build_ivf returns)."""
    L = np.load(Path(path) / "ffn_unit.npy", mmap_mode="r").shape[0]
    seal_index(Path(path), index_files(L), info)


def open_ivf(store: Store, device: str = "cpu", nprobe: int | None = None) -> IVFSearch:
    """The ivf backend over the store's index (``nprobe``: lists per query, default the manifest's);
    refuses an index that is missing or was built for other vectors or shapes."""
    faiss = _faiss()
    info = CHECK.entry(store)
    L, P, C = store.unit.shape
    errors = info.get("error", [])
    CHECK.fits(info.get("kind") in KINDS and len(errors) == L, f"at {store.path}",
               "has an unknown kind or no errors")
    want = faiss.IndexIVFScalarQuantizer if info["kind"] == "sq8" else faiss.IndexIVFFlat
    indexes = []
    for name in ivf_names(L):
        p = store.path / name
        index = CHECK.load(p, read_ivf)  # faiss returns the concrete class (IndexIVFFlat, ...)
        CHECK.fits(isinstance(index, want) and index.d == C and index.ntotal == P
                   and index.nlist == info.get("nlist") and index.metric_type == faiss.METRIC_INNER_PRODUCT,
                   str(p))
        indexes.append(index)
    nlist = int(info["nlist"])
    return IVFSearch(store, indexes, errors, min(nlist, int(nprobe or info.get("nprobe") or
                                                             default_nprobe(nlist))), device)
