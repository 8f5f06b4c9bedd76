"""app/search/ivf.py, the ivf backend: with every list probed it answers exactly as the full float32 scan; with few
lists probed, everything it returns is still a true answer with the full scan's similarity."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from app.search import ExactSearch
from app.search.ivf import FLOAT_MARGIN, IVFSearch, default_nlist, fit_ivf
from app.store import Store


def make_store(unit: np.ndarray) -> Store:
    """An in-memory store of unit vectors (L, P, C): all the search backends read."""
    L, P, C = unit.shape
    return Store(path=Path("/in-memory"), manifest={"vocab": "ab"}, unit=unit.astype(np.float16),
                 norm=np.ones((L, P), np.float32), pool=None, counts=None)


def unit_rows(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-30)


def ivf_for(store: Store, kind: str, nlist: int | None = None, nprobe: int | None = None) -> IVFSearch:
    built = [fit_ivf(store.unit[b], kind, nlist, seed=b) for b in range(store.n_layer)]
    nlist = built[0][0].nlist
    return IVFSearch(store, [i for i, _ in built], [e for _, e in built], nprobe or nlist)


def same(a, b):
    assert a.rows.tolist() == b.rows.tolist()
    assert np.array_equal(a.sims, b.sims)


@pytest.fixture(scope="module")
def clustered():
    """Two blocks of low-rank vectors with noise, 300 exact duplicates (ties) and a few strings far
    outside the rest (so the quantiser's ranges must cover more than its training sample)."""
    rng = np.random.default_rng(0)
    L, P, C, r = 2, 2000, 32, 6
    x = rng.normal(size=(L, P, r)) @ rng.normal(size=(r, C)) + 0.1 * rng.normal(size=(L, P, C))
    x[:, 100:400] = x[:, 5:6]
    x[:, 400:410] = -x[:, 5:6]
    x[:, 1990:, 7] = 100.0
    store = make_store(unit_rows(x))
    queries = [store.unit[0, i].astype(np.float32) + s * rng.normal(size=C)
               for i, s in ((5, 0.0), (99, 0.3), (1995, 0.0))] + [rng.normal(size=C)]
    return store, [torch.from_numpy(unit_rows(q.astype(np.float32))) for q in queries]


def test_default_nlist():
    assert default_nlist(858_923) == 4096
    assert default_nlist(1) == 1 and default_nlist(38) == 1
    for P in (39, 100, 1000, 3000, 5000, 20_000, 10**6):
        n = default_nlist(P)
        assert n & (n - 1) == 0 and P >= 39 * n, P  # a power of two, >= 39 training points per list


@pytest.mark.parametrize("kind", ["sq8", "flat"])
def test_every_list_probed_equals_the_full_scan(clustered, kind):
    store, queries = clustered
    full, ivf = ExactSearch(store), ivf_for(store, kind)
    assert ivf.nprobe == ivf.nlist == default_nlist(store.size) == 32
    P = store.size
    for b in range(store.n_layer):
        for q in queries:
            sims = full.similarities(b, q).numpy()
            for thr in [*np.quantile(sims, [0.999, 0.99, 0.9, 0.5]), 0.0, -1.0, 1.0]:
                thr = float(thr)
                same(full.threshold(b, q, thr), ivf.threshold(b, q, thr))
                same(full.threshold(b, q, thr, exclude=5), ivf.threshold(b, q, thr, exclude=5))
            for k in (1, 7, 50, 300, P + 10):  # 301 equal strings: ties at rank 300
                same(full.topk(b, q, k), ivf.topk(b, q, k))
                same(full.topk(b, q, k, exclude=5), ivf.topk(b, q, k, exclude=5))
                assert len(ivf.topk(b, q, k, exclude=5)) == min(k, P - 1)


@pytest.mark.parametrize("sample", [None, 400])
def test_the_margin_covers_the_quantiser(clustered, sample):
    """Every faiss score is within the margin of the float32 similarity (the search relies on it),
    and the margin stays small (about 0.005 here) even when k-means trains on a fifth of the strings:
    the quantiser's ranges cover every string, not just the sample (the sample's alone would give
    errors of about 0.2 here)."""
    store, queries = clustered
    built = [fit_ivf(store.unit[b], "sq8", 8, seed=b, sample=sample) for b in range(store.n_layer)]
    full = ExactSearch(store)
    ivf = IVFSearch(store, [i for i, _ in built], [e for _, e in built], 8)
    for b in range(store.n_layer):
        assert FLOAT_MARGIN < ivf.margins[b] < 0.02
        for q in queries:
            D, I = ivf.indexes[b].search(q[None].numpy(), store.size)
            exact = full.exact(b, torch.from_numpy(I[0]), q).numpy()
            assert np.abs(D[0] - exact).max() <= ivf.margins[b]


@pytest.mark.parametrize("kind", ["sq8", "flat"])
@pytest.mark.parametrize("nprobe", [1, 3])
def test_few_lists_probed_return_only_true_answers(clustered, kind, nprobe):
    store, queries = clustered
    full, ivf = ExactSearch(store), ivf_for(store, kind, nprobe=nprobe)
    missed = returned = 0
    for b in range(store.n_layer):
        for q in queries:
            sims = full.similarities(b, q).numpy()
            for thr in [*np.quantile(sims, [0.99, 0.9, 0.5]), 0.0]:
                want, got = full.threshold(b, q, float(thr)), ivf.threshold(b, q, float(thr))
                truth = dict(zip(want.rows.tolist(), want.sims.tolist()))
                assert all(truth[r] == s for r, s in zip(got.rows.tolist(), got.sims.tolist()))
                assert got.stats.candidates < store.size
                missed += len(want) - len(got)
            for k in (1, 7, 50):
                nb = ivf.topk(b, q, k, exclude=5)
                assert len(nb) <= k and 5 not in nb.rows.tolist()
                assert len(set(nb.rows.tolist())) == len(nb)
                assert np.array_equal(nb.sims, full.exact(b, torch.from_numpy(nb.rows), q).numpy())
                returned += len(nb)
                o = np.lexsort((nb.rows, -nb.sims))
                assert np.array_equal(o, np.arange(len(nb)))
    assert missed > 0  # probing one or three of 32 lists does miss strings: the test can tell
    assert returned > 0


@pytest.mark.parametrize("kind", ["sq8", "flat"])
@pytest.mark.parametrize("nprobe", [2, None])
def test_batches_equal_single_queries(clustered, kind, nprobe):
    store, _ = clustered
    ivf = ivf_for(store, kind, nprobe=nprobe)
    rows = np.array([0, 5, 17, 150, 1995, 404])
    ex = torch.tensor([0, -1, 17, 150, -1, 404])
    for b in range(store.n_layer):
        Q = torch.from_numpy(unit_rows(store.unit[b, rows].astype(np.float32)))
        for thr in (0.99, 0.5, -1.0):
            qi, nb, sims = ivf.batch_threshold(b, Q, thr, exclude=ex)
            for i in range(len(rows)):
                e = None if ex[i] < 0 else int(ex[i])
                single = ivf.threshold(b, Q[i], thr, exclude=e)
                assert nb[qi == i].tolist() == single.rows.tolist()
                assert np.array_equal(sims[qi == i], single.sims)
        for k in (1, 9, 300, store.size + 3):
            for exclude in (None, ex):
                qi, nb, sims = ivf.batch_topk(b, Q, k, exclude=exclude)
                for i in range(len(rows)):
                    e = None if exclude is None or ex[i] < 0 else int(ex[i])
                    single = ivf.topk(b, Q[i], k, exclude=e)
                    assert nb[qi == i].tolist() == single.rows.tolist()
                    assert np.array_equal(sims[qi == i], single.sims)
                    if nprobe is None:
                        assert len(single) == min(k, store.size - (e is not None))


# --- the index a store is built with -----------------------------------------------------------

def test_the_store_is_built_with_a_memory_mapped_ivf_index(engine):
    from app.search import make_search
    from app.search.ivf import is_mmapped, ivf_names

    store = engine.store
    info = store.manifest["ivf"]
    assert info["kind"] == "sq8" and info["nlist"] == default_nlist(store.size)
    assert 1 <= info["nprobe"] <= info["nlist"] and len(info["error"]) == store.n_layer
    assert info["unit_fingerprint"] == store.manifest["unit_fingerprint"]
    for name in ivf_names(store.n_layer):
        assert store.manifest["files"][name]["bytes"] == (store.path / name).stat().st_size
    assert not list(store.path.glob("*.tmp"))
    ivf = make_search(store, "ivf")
    assert ivf.name == "ivf" and ivf.nprobe == info["nprobe"]
    assert all(is_mmapped(index) for index in ivf.indexes)
    assert make_search(store, "auto").name == "bound"


def test_the_store_index_with_every_list_probed_equals_the_full_scan(engine):
    from app.search import unit
    from app.search.ivf import open_ivf

    store = engine.store
    full = ExactSearch(store)
    ivf = open_ivf(store, nprobe=store.manifest["ivf"]["nlist"])
    thresholds = store.defaults["thresholds"]
    rng = np.random.default_rng(0)
    for b in range(store.n_layer):
        for row in rng.choice(store.size, 3, replace=False):
            q = unit(torch.from_numpy(store.ffn(b, [row])[0]))
            for thr in (thresholds[b], 0.5):
                same(full.threshold(b, q, thr, exclude=int(row)), ivf.threshold(b, q, thr, exclude=int(row)))
            for k in (1, 50):
                same(full.topk(b, q, k), ivf.topk(b, q, k))


def _copy(engine, tmp_path):
    dst = tmp_path / "s"
    shutil.copytree(engine.store.path, dst)
    return dst


def _edit_manifest(dst, edit):
    m = json.loads((dst / "manifest.json").read_text())
    edit(m)
    (dst / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("how, message", [
    (lambda m: m["ivf"].update(unit_fingerprint="0" * 64), "other vectors"),
    (lambda m: m["ivf"].update(nlist=m["ivf"]["nlist"] * 2), "does not fit"),
    (lambda m: m["ivf"].update(kind="flat"), "does not fit"),
    (lambda m: m.pop("ivf"), "has no ivf index"),
])
def test_a_mismatched_or_missing_index_is_refused(engine, tmp_path, how, message):
    from app.search import make_search
    from app.store import StoreError, open_store

    dst = _copy(engine, tmp_path)
    _edit_manifest(dst, how)
    st_ = open_store(dst, corpus_ids=engine.store.corpus_ids)
    with pytest.raises(StoreError, match=message) as e:
        make_search(st_, "ivf")
    assert "ffnlens index" in str(e.value)
    assert make_search(st_, "exact").name == "exact"


def test_an_index_for_a_store_of_another_size_is_refused(engine, tmp_path):
    """A file from another store (same dimension, other strings) is caught by its shape."""
    import faiss

    from app.search.ivf import open_ivf
    from app.store import StoreError, open_store

    dst = _copy(engine, tmp_path)
    st_ = open_store(dst, corpus_ids=engine.store.corpus_ids)
    index, _ = fit_ivf(st_.unit[0][:-40], "sq8", st_.manifest["ivf"]["nlist"])
    faiss.write_index(index, str(dst / "ivf_0.faiss"))
    with pytest.raises(StoreError, match="does not fit"):
        open_ivf(st_)


def test_a_flat_index_added_to_a_store(engine, tmp_path):
    from app.search import unit
    from app.search.ivf import build_ivf, is_mmapped, open_ivf, seal_ivf
    from app.store import open_store

    dst = _copy(engine, tmp_path)
    info = build_ivf(dst, kind="flat", nlist=8, nprobe=2, progress=False)
    assert info["error"] == [0.0] * engine.store.n_layer
    seal_ivf(dst, info)
    st_ = open_store(dst, corpus_ids=engine.store.corpus_ids)
    assert st_.manifest["ivf"]["kind"] == "flat"
    ivf = open_ivf(st_)
    assert ivf.nprobe == 2 and ivf.nlist == 8 and all(is_mmapped(i) for i in ivf.indexes)
    ivf.nprobe = 8
    with pytest.raises(ValueError):
        ivf.nprobe = 9
    full = ExactSearch(st_)
    for b in range(st_.n_layer):
        q = unit(torch.from_numpy(st_.ffn(b, [3])[0]))
        same(full.threshold(b, q, 0.8), ivf.threshold(b, q, 0.8))
        same(full.topk(b, q, 20, exclude=3), ivf.topk(b, q, 20, exclude=3))
