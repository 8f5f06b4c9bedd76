"""app/search/exact.py, and every backend: the neighbours against a brute-force recomputation from the
stored vectors."""
import numpy as np
import pytest
import torch

from app.search import ExactSearch, unit

TOL = 1e-5  # float32 (search) against float64 (here) on the same float16 vectors


def brute(store, b, q):
    X = store.unit[b].astype(np.float64)
    return X @ q.numpy().astype(np.float64)


def check_threshold(got_rows, sims, thr, exclude=None):
    got = set(got_rows.tolist())
    must = set(np.nonzero(sims > thr + TOL)[0].tolist()) - {exclude}
    may = set(np.nonzero(sims > thr - TOL)[0].tolist()) - {exclude}
    assert must <= got <= may


@pytest.mark.parametrize("backend", ["exact", "bound"])
@pytest.mark.parametrize("b", range(6))
def test_threshold_and_topk_equal_brute_force(engine, b, backend):
    from app.search import make_search

    store = engine.store
    search = make_search(store, backend)
    assert search.name == backend
    rng = np.random.default_rng(b)
    for row in rng.choice(store.size, 5, replace=False):
        q = unit(torch.from_numpy(store.ffn(b, [row])[0]))
        sims = brute(store, b, q)
        for thr in (np.quantile(sims, 0.99), np.quantile(sims, 0.5), 0.0, -1.0):
            nb = search.threshold(b, q, float(thr))
            check_threshold(nb.rows, sims, thr)
            assert (np.diff(nb.sims) <= 0).all()
            ex = search.threshold(b, q, float(thr), exclude=int(row))
            check_threshold(ex.rows, sims, thr, exclude=int(row))
            assert int(row) not in set(ex.rows.tolist())
        for k in (1, 7, 50, store.size + 10):
            nb = search.topk(b, q, k)
            assert len(nb) == min(k, store.size)
            kth = np.sort(sims)[::-1][min(k, store.size) - 1]
            assert (sims[nb.rows] >= kth - TOL).all()
            assert set(np.nonzero(sims > kth + TOL)[0]) <= set(nb.rows.tolist())
            ex = search.topk(b, q, k, exclude=int(row))
            assert int(row) not in set(ex.rows.tolist()) and len(ex) == min(k, store.size - 1)


def test_topk_ties_are_taken_in_row_order():
    from app.search.base import topk_ties

    s = torch.tensor([0.5, 0.9, 0.5, 0.5, 0.1, 0.9])
    nb = topk_ties(s, 3, False)
    assert nb.rows.tolist() == [1, 5, 0]
    nb = topk_ties(s, 4, False)
    assert nb.rows.tolist() == [1, 5, 0, 2]


def test_batches_equal_single_queries(engine):
    store, search = engine.store, engine.search
    rows = np.array([0, 5, 17, 40])
    for b in (0, 3, 5):
        Q = unit(torch.from_numpy(store.ffn(b, rows)))
        thr = 0.9
        qi, nb, sims = search.batch_threshold(b, Q, thr, exclude=torch.from_numpy(rows))
        for i, r in enumerate(rows):
            single = search.threshold(b, Q[i], thr, exclude=int(r))
            s = brute(store, b, Q[i])
            check_threshold(nb[qi == i], s, thr, exclude=int(r))
            assert len(single) == pytest.approx(int((qi == i).sum()), abs=3)
        qi, nb, sims = search.batch_topk(b, Q, 9)
        for i in range(len(rows)):
            assert (qi == i).sum() == 9
            single = search.topk(b, Q[i], 9)
            assert np.allclose(np.sort(sims[qi == i])[::-1], single.sims, atol=TOL)


def test_split_float16_pass_on_a_large_block():
    """Blocks of 65,536 rows or more take the multi-threaded float16 pass: still within its margin,
    and the threshold answer is still the float32 one."""
    from app.search.exact import COARSE_MARGIN

    from .test_search_bound import make_store, unit_rows

    rng = np.random.default_rng(3)
    store = make_store(unit_rows(rng.normal(size=(1, 70_000, 16))))
    search = ExactSearch(store)
    q = unit(torch.from_numpy(rng.normal(size=16).astype(np.float32)))
    exact = search.similarities(0, q)
    assert float((search.coarse(0, q) - exact).abs().max()) <= COARSE_MARGIN
    sims = brute(store, 0, q)
    for thr in (0.9, 0.5):
        check_threshold(search.threshold(0, q, thr).rows, sims, thr)


@pytest.mark.parametrize("backend, plan", [("exact", "scan"), ("bound", "bound"), ("ivf", "ivf")])
def test_answers_carry_their_own_statistics(engine, backend, plan):
    """Each answer says what it cost (nothing is written on the shared search object): single
    queries on their Neighbours, batches in the SearchStats their caller passes."""
    from app.search import SearchStats, make_search

    store = engine.store
    search = make_search(store, backend)
    rows = np.array([3, 7, 11])
    Q = unit(torch.from_numpy(store.ffn(3, rows)))
    before = dict(vars(search))
    wide, narrow = search.threshold(3, Q[0], -1.0), search.threshold(3, Q[0], 0.99)
    assert wide.stats is not narrow.stats
    for nb in (wide, narrow, search.topk(3, Q[1], 5, exclude=7)):
        assert nb.stats.plan.split("->")[0].split("+")[0] == plan  # "bound+cells": it read cells
        assert nb.stats.candidates >= len(nb) and nb.stats.bytes_read > 0
    assert wide.stats.candidates >= narrow.stats.candidates
    for call in (lambda st: search.batch_threshold(3, Q, 0.5, torch.from_numpy(rows), stats=st),
                 lambda st: search.batch_topk(3, Q, 5, stats=st)):
        st = SearchStats()
        qi, _, _ = call(st)
        assert st.plan.split("->")[0].split("+")[0] == plan and st.candidates >= len(qi) > 0 and st.bytes_read > 0
    assert vars(search).keys() == before.keys()  # no counters left behind
    assert not hasattr(search, "last_candidates")


def test_every_backend_offers_the_interface():
    """Each backend class has the Protocol's name and methods, with the same parameters."""
    import inspect

    from app.search import SearchBackend
    from app.search.bound import BoundSearch
    from app.search.bound_device import DeviceBoundSearch
    from app.search.ivf import IVFSearch

    methods = ("threshold", "topk", "batch_threshold", "batch_topk")
    for cls in (ExactSearch, BoundSearch, DeviceBoundSearch, IVFSearch):
        assert isinstance(cls.name, str)
        for m in methods:
            want = list(inspect.signature(getattr(SearchBackend, m)).parameters)
            assert list(inspect.signature(getattr(cls, m)).parameters) == want, (cls, m)


def test_batch_top_k_takes_ties_at_rank_k_in_row_order():
    from app.search.exact import first_k

    v = torch.tensor([[0.5, 0.9, 0.5, 0.5, 0.1], [0.3, 0.2, 0.9, 0.8, 0.7]])
    i = torch.tensor([[3, 7, 12, 40, 1], [0, 1, 2, 3, 4]])  # torch.topk alone took 7, 12, 40
    best_v, best_i = first_k(v, i, 3)
    assert torch.equal(best_v, torch.tensor([[0.9, 0.5, 0.5], [0.9, 0.8, 0.7]]))
    assert best_i.tolist() == [[7, 3, 12], [2, 3, 4]]  # the tie at 0.5: rows 3 and 12, not 40
