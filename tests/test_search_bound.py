"""app/search/bound.py: the bound backend returns exactly what the full float32 scan returns, on any store."""
from itertools import product
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from app.search import ExactSearch
from app.search.bound import LAYOUT, BoundSearch
from app.search.bound_build import fit_index
from app.store import Store


def make_store(unit: np.ndarray) -> Store:
    """An in-memory store of unit vectors (L, P, C): all the search backends read."""
    L, P, C = unit.shape
    return Store(path=Path("/in-memory"), manifest={"vocab": "ab"}, unit=unit.astype(np.float16),
                 norm=np.ones((L, P), np.float32), pool=None, counts=None)


def bound_for(store: Store, k, gather_cost: float = 0, walk: str = "priced",
              cells: int | None = None) -> BoundSearch:
    """The bound backend over ``store`` at rank ``k`` (or walking the ranks in the list ``k``),
    with ``cells`` cells a block (default: about 50 strings each); by default the pruned plan
    always (the planner's switch to the scan off), so the equality tests exercise the pruning
    itself."""
    n = max(1, store.size // 50) if cells is None else cells
    return BoundSearch(store, fit_index(store.unit, [k] * store.n_layer, cells=n),
                       gather_cost=gather_cost, walk=walk)


def unit_rows(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-30)


def same(a, b):
    assert a.rows.tolist() == b.rows.tolist()
    assert np.array_equal(a.sims, b.sims)


def same_threshold(full, bound, b, q, thr, exclude=None):
    """The bound's threshold answer equals the full scan's: as a set (before any similarity it
    skipped is computed), in its first m (computing only what they need), and whole."""
    ref = full.threshold(b, q, thr, exclude)
    for m in (1, 3, 10, len(ref)):
        got = bound.threshold(b, q, thr, exclude)
        assert sorted(got.members.tolist()) == sorted(ref.rows.tolist())
        rows, sims = got.top(m)
        assert rows.tolist() == ref.rows[:m].tolist()
        assert np.array_equal(sims, ref.sims[:m])
    same(ref, got)


def per_query(out, B):
    """Batch output (query index, row, sim) -> one Neighbours per query, in the single-query order."""
    from app.search import Neighbours

    qi, rows, sims = out
    res = []
    for i in range(B):
        r, s = rows[qi == i], sims[qi == i]
        o = np.lexsort((r, -s))
        res.append(Neighbours(r[o], s[o]))
    return res


def check_batches(full, bound, b, Q, thresholds, ks):
    """Batches through the bound equal single queries (bit for bit) and the full scan's batches."""
    B = Q.shape[0]
    exclude = torch.tensor([-1 if i % 2 else (3 * i) % full.store.size for i in range(B)])
    cases = [("threshold", t) for t in thresholds] + [("topk", k) for k in ks]
    for kind, arg in cases:
        got = per_query(getattr(bound, f"batch_{kind}")(b, Q, arg, exclude), B)
        ref = per_query(getattr(full, f"batch_{kind}")(b, Q, arg, exclude), B)
        for i in range(B):
            ex = None if exclude[i] < 0 else int(exclude[i])
            same(got[i], getattr(bound, kind)(b, Q[i], arg, ex))
            assert len(got[i]) == len(ref[i])
            if kind == "threshold":
                assert got[i].rows.tolist() == ref[i].rows.tolist()
        if kind == "threshold":  # pairs only: those the lower bound proves come without products
            qi, rows, sims = bound.batch_threshold(b, Q, arg, exclude, sims=False)
            rqi, rrows, _ = full.batch_threshold(b, Q, arg, exclude)
            assert sims is None
            assert sorted(zip(qi.tolist(), rows.tolist())) == sorted(zip(rqi.tolist(), rrows.tolist()))


def check_all(store, k_rank, queries, thresholds, ks):
    """At rank ``k_rank`` alone, and walking three stages up to it (every stage, so each stage's
    update of the bounds is exercised): single queries and batches equal the full scan's."""
    full = ExactSearch(store)
    walked = bound_for(store, [max(1, k_rank // 4), max(1, k_rank // 2), k_rank], walk="all")
    assert len(walked.index.stages[0]) > 1
    middle = bound_for(store, [max(1, k_rank // 4), max(1, k_rank // 2), k_rank])
    middle.index.topk_stage = [len(st) // 2 for st in middle.index.stages]  # top-k at a middle stage
    Q = torch.from_numpy(unit_rows(np.stack(queries).astype(np.float32)))
    for bound in (bound_for(store, k_rank), walked, middle):
        for b in range(store.n_layer):
            check_batches(full, bound, b, Q, thresholds, ks)
            for q in queries:
                q = torch.from_numpy(unit_rows(q.astype(np.float32)))
                for thr in thresholds:
                    same_threshold(full, bound, b, q, thr)
                    same_threshold(full, bound, b, q, thr, exclude=0)
                for k in ks:
                    same(full.topk(b, q, k), bound.topk(b, q, k))
                    same(full.topk(b, q, k, exclude=3), bound.topk(b, q, k, exclude=3))


def test_low_rank_store_with_noise():
    rng = np.random.default_rng(0)
    L, P, C, r = 2, 3000, 48, 6
    basis = rng.normal(size=(r, C))
    x = rng.normal(size=(L, P, r)) @ basis + 0.05 * rng.normal(size=(L, P, C))
    store = make_store(unit_rows(x))
    queries = [store.unit[0, i].astype(np.float32) + 0.01 * rng.normal(size=C) for i in (0, 7, 99)]
    check_all(store, 8, queries, [0.999, 0.99, 0.9, 0.5, 0.0, -1.0, 1.0], [1, 5, 200, P + 5])


def test_large_residuals_many_ties_and_duplicates():
    rng = np.random.default_rng(1)
    L, P, C = 1, 2000, 32
    x = rng.normal(size=(L, P, C))  # full rank: the projection explains little
    x[0, 100:400] = x[0, 5]  # 300 identical rows: exact ties everywhere
    x[0, 400:410] = -x[0, 5]
    store = make_store(unit_rows(x))
    q = store.unit[0, 5].astype(np.float32)
    check_all(store, 4, [q, -q, rng.normal(size=C)], [0.999, 0.5, 0.0, -0.5, -1.0, 1.0],
              [1, 2, 150, 299, 300, 301, 1999, 2000, 5000])


def test_bound_is_an_upper_bound_within_the_margin():
    from app.search.bound import BOUND_MARGIN

    rng = np.random.default_rng(2)
    store = make_store(unit_rows(rng.normal(size=(1, 5000, 64))))
    bound = bound_for(store, 16)
    full = ExactSearch(store)
    for _ in range(5):
        q = torch.from_numpy(unit_rows(rng.normal(size=64).astype(np.float32)))
        exact = full.similarities(0, q)
        assert bool((exact <= bound.bounds(0, q) + BOUND_MARGIN).all())


def test_strings_proven_in_by_the_lower_bound_are_counted_unseen_and_shown_exactly():
    """On a low-rank store most neighbours clear the threshold on the bound's lower side: they are
    members at once, their similarities computed only for the strings shown."""
    rng = np.random.default_rng(3)
    L, P, C, r = 1, 4000, 32, 4
    x = rng.normal(size=(L, P, r)) @ rng.normal(size=(r, C)) + 1e-3 * rng.normal(size=(L, P, C))
    store = make_store(unit_rows(x))
    full, bound = ExactSearch(store), bound_for(store, 8)
    q = torch.from_numpy(store.unit[0, 0].astype(np.float32))
    got = bound.threshold(0, q, 0.5)
    unseen = int(np.isnan(got._sims).sum())
    assert len(got) > 100 and unseen > len(got) // 2
    rows, sims = got.top(5)
    assert int(np.isnan(got._sims).sum()) > unseen // 2  # the first five did not need them all
    ref = full.threshold(0, q, 0.5)
    assert rows.tolist() == ref.rows[:5].tolist() and np.array_equal(sims, ref.sims[:5])
    same(ref, got)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(P=st.integers(1, 300), C=st.integers(2, 24), rank=st.integers(1, 24), seed=st.integers(0, 10**6),
       thr=st.floats(-1, 1), k=st.integers(1, 400), dup=st.booleans())
def test_hypothesis_equal_to_the_full_scan(P, C, rank, seed, thr, k, dup):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(1, P, C))
    if dup and P > 3:
        x[0, : P // 2] = x[0, 0]
    store = make_store(unit_rows(x))
    q = store.unit[0, rng.integers(P)].astype(np.float32) + rng.normal(size=C) * rng.choice([0, 0.1, 1])
    stages = sorted({int(r) for r in rng.integers(1, min(rank, C) + 1, size=rng.integers(1, 4))})
    walk, gather = rng.choice(["all", "first", "priced"]), float(rng.choice([0, 4]))
    full, bound = ExactSearch(store), bound_for(store, stages, gather_cost=gather, walk=walk)
    qt = torch.from_numpy(unit_rows(q.astype(np.float32)))
    same_threshold(full, bound, 0, qt, thr)
    same(full.topk(0, qt, k), bound.topk(0, qt, k))
    same(full.topk(0, qt, k, exclude=0), bound.topk(0, qt, k, exclude=0))


def test_a_bound_fitted_to_other_vectors_is_refused(engine, tmp_path):
    import json
    import shutil

    from app.store import StoreError, open_store
    from app.search import make_search

    dst = tmp_path / "s"
    shutil.copytree(engine.store.path, dst)
    m = json.loads((dst / "manifest.json").read_text())
    m["bound"]["unit_fingerprint"] = "0" * 64
    (dst / "manifest.json").write_text(json.dumps(m))
    st_ = open_store(dst, corpus_ids=engine.store.corpus_ids)
    with pytest.raises(StoreError, match="fitted to other vectors"):
        make_search(st_, "bound")
    assert make_search(st_, "exact").name == "exact"


def test_the_device_plan_equals_the_full_scan():
    """The plan an accelerator gets (bounds held on the device prune single queries, batches are the
    full scan's), run here on the CPU: the same answers as the full scan, bit for bit."""
    from app.search import SearchStats
    from app.search.bound_device import DeviceBoundSearch

    rng = np.random.default_rng(4)
    L, P, C, r = 1, 3000, 32, 5
    x = rng.normal(size=(L, P, r)) @ rng.normal(size=(r, C)) + 0.05 * rng.normal(size=(L, P, C))
    store = make_store(unit_rows(x))
    cpu = bound_for(store, 8)
    dev = DeviceBoundSearch(store, cpu.index, "cpu")
    full = ExactSearch(store)
    Q = torch.from_numpy(store.unit[0, [0, 9, 77]].astype(np.float32))
    for q in Q:
        for thr in (0.99, 0.9, 0.0, -1.0):
            same(full.threshold(0, q, thr), dev.threshold(0, q, thr))
            same(full.threshold(0, q, thr, exclude=9), dev.threshold(0, q, thr, exclude=9))
        for k in (1, 20, 300, P + 1):
            same(full.topk(0, q, k), dev.topk(0, q, k))
            same(full.topk(0, q, k, exclude=0), dev.topk(0, q, k, exclude=0))
        assert dev.threshold(0, q, 0.9).stats.plan == "bound-device"
    ex = torch.tensor([0, -1, 77])
    for kind, arg in (("threshold", 0.9), ("topk", 15)):
        st = SearchStats()
        got = getattr(dev, f"batch_{kind}")(0, Q, arg, ex, stats=st)
        ref = getattr(full, f"batch_{kind}")(0, Q, arg, ex)
        assert all(np.array_equal(a, b) for a, b in zip(got, ref)) and st.plan == "scan"


def test_open_bound_chooses_the_plan_for_the_device(engine):
    from app.search.bound import BoundSearch
    from app.search.bound_device import DeviceBoundSearch, open_bound

    assert type(open_bound(engine.store, "cpu")) is BoundSearch
    assert type(open_bound(engine.store, "cuda")) is DeviceBoundSearch  # nothing moves there yet


def test_the_planner_scans_when_the_bound_cannot_prune():
    """With the planner on, a bound that leaves too many candidates (here rank 1 on 6-dimensional
    data) hands the block to the scan, said in the answer's stats; a tight one (rank 8) prunes.
    The answers are the full scan's either way."""
    from app.search.bound import GATHER_COST

    rng = np.random.default_rng(5)
    X = unit_rows(rng.normal(size=(2000, 6)) @ rng.normal(size=(6, 64)) + 0.01 * rng.normal(size=(2000, 64)))
    store = make_store(X[None])
    full = ExactSearch(store)
    loose, tight = (bound_for(store, r, gather_cost=GATHER_COST) for r in (1, 8))
    q = torch.from_numpy(X[7].astype(np.float32))
    mid = float(np.median(full.similarities(0, q).numpy()))  # where loose bounds straddle most
    got = loose.threshold(0, q, mid)
    assert got.stats.plan == "bound->scan" and 900 <= len(got) <= 1100
    same(full.threshold(0, q, mid), got)
    got = loose.topk(0, q, 1500)
    assert got.stats.plan == "bound->scan"
    same(full.topk(0, q, 1500), got)
    for thr in (0.95, 0.8):
        got = tight.threshold(0, q, thr)
        assert got.stats.plan in ("bound", "bound+cells")
        same_threshold(full, tight, 0, q, thr)
    got = tight.topk(0, q, 10)
    assert got.stats.plan in ("bound", "bound+cells")
    same(full.topk(0, q, 10), got)
    # batches too: the loose bound's batch scans the block (said in the stats) and decides the
    # pairs with the same float32 sums, so it answers exactly as the pruned plan and the scan do
    from app.search.base import SearchStats

    Qb = torch.from_numpy(X[[7, 30, 501, 1999]].astype(np.float32))
    ex = torch.tensor([7, -1, 3, -1])
    for sims in (True, False):
        st = SearchStats()
        got = loose.batch_threshold(0, Qb, mid, ex, sims=sims, stats=st)
        assert st.plan == "bound->scan"
        ref = bound_for(store, 8).batch_threshold(0, Qb, mid, ex, sims=sims)
        key = lambda out: sorted(zip(out[0].tolist(), out[1].tolist()))  # noqa: E731
        assert key(got) == key(ref) and len(got[0]) > 3000
        want = full.batch_threshold(0, Qb, mid, ex)
        assert set(zip(want[0].tolist(), want[1].tolist())) == set(key(got))
    st = SearchStats()
    tight.batch_threshold(0, Qb, 0.95, ex, stats=st)
    assert st.plan in ("bound", "bound+cells")


def test_choose_stages_prices_the_walks_by_what_they_leave():
    """A block of rank-4 outputs (plus faint noise) is cheapest walked to the smallest rank that
    holds them; a block whose outputs spread over every direction needs more. Each estimate is a
    mean and a 98th percentile, as fractions of a full scan."""
    from app.search.bound_build import choose_stages, fit_basis

    rng = np.random.default_rng(11)
    P, C = 4000, 64
    low = unit_rows(rng.normal(size=(P, 4)) @ rng.normal(size=(4, C)) + 1e-3 * rng.normal(size=(P, C)))
    stages, info = choose_stages(low.astype(np.float16), fit_basis(low, 48), ranks=(4, 16, 48),
                                 queries=32)
    assert stages[-1] == 4
    assert set(info["cost_vs_scan"]) == {4, 16, 48} and info["walk"]["stages"] == stages
    assert 0 <= info["topk_stage"] < len(stages)
    mean, p98 = info["cost_vs_scan"][4]
    assert 0 < mean <= p98 < 1
    spread = unit_rows(rng.normal(size=(P, 24)) @ rng.normal(size=(24, C)) + 0.1 * rng.normal(size=(P, C)))
    stages, _ = choose_stages(spread.astype(np.float16), fit_basis(spread, 48), ranks=(2, 24, 48),
                                 queries=32)
    assert stages[-1] >= 24


def test_the_walk_reads_on_only_for_queries_the_first_stage_leaves_loose():
    """Priced, a query stops at the first stage whose candidates cost less to decide than the next
    stage: on a store of rank-8 outputs, a first stage of rank 1 leaves thousands for a top-k
    query, which walks on to rank 8 (its stats say so), while a threshold high above every
    similarity stops at once; the answers equal the full scan's either way (without cells: with
    them, the next stage would read only the live cells' columns, and goes on for less)."""
    from app.search.bound import GATHER_COST

    rng = np.random.default_rng(13)
    L, P, C = 1, 20000, 32
    x = unit_rows(rng.normal(size=(L, P, 8)) @ rng.normal(size=(8, C)) + 1e-3 * rng.normal(size=(L, P, C)))
    store = make_store(x)
    full, bound = ExactSearch(store), bound_for(store, [1, 8], gather_cost=GATHER_COST, cells=0)
    q = torch.from_numpy(unit_rows(x[0, 17] + 0.01 * rng.normal(size=C)).astype(np.float32))
    got = bound.topk(0, q, 20)
    assert got.stats.rank == 8 and got.stats.plan == "bound" and got.stats.candidates < P // 10
    same(full.topk(0, q, 20), got)
    none = bound.threshold(0, -torch.from_numpy(x[0, 0].astype(np.float32)), 0.999)
    assert none.stats.rank == 1 and len(none) == len(full.threshold(0, -torch.from_numpy(x[0, 0].astype(np.float32)), 0.999))


def test_a_batch_reads_the_last_stage_only_for_the_queries_that_need_it():
    """A batch bounds every query at the first stage, then the last stage for those that need it
    (as the single queries walk: here the opposite of a string stops at rank 1, the others read
    rank 8): both passes' bytes are counted, and every answer equals the single query's and the
    full scan's, the pairs the lower bound proves included (without cells, so that every pass
    reads the whole table)."""
    from app.search.base import SearchStats
    from app.search.bound import GATHER_COST

    rng = np.random.default_rng(13)
    L, P, C = 1, 20000, 32
    x = unit_rows(rng.normal(size=(L, P, 8)) @ rng.normal(size=(8, C)) + 1e-3 * rng.normal(size=(L, P, C)))
    store = make_store(x)
    full, bound = ExactSearch(store), bound_for(store, [1, 8], gather_cost=GATHER_COST, cells=0)
    near = unit_rows(x[0, [17, 400]] + 0.01 * rng.normal(size=(2, C)))
    Q = torch.from_numpy(np.stack([near[0], -x[0, 0], near[1], -x[0, 1]]).astype(np.float32))
    assert [bound.threshold(0, q, 0.99).stats.rank for q in Q] == [8, 1, 8, 8]
    idx, row = bound.index, bound.scan.row_bytes()
    stats = SearchStats()
    bound.batch_threshold(0, Q, 0.99, stats=stats)
    assert stats.bytes_read == idx.block_bytes(0, 0) + idx.block_bytes(0) + stats.candidates * row
    stats = SearchStats()
    bound.batch_threshold(0, Q[1:2], 0.99, stats=stats)
    assert stats.rank == 1 and stats.bytes_read == idx.block_bytes(0, 0) + stats.candidates * row
    for thr in (0.5, 0.99):  # (near-duplicate strings: compared with the full scan as sets)
        got = per_query(bound.batch_threshold(0, Q, thr), len(Q))
        for i, q in enumerate(Q):
            same(got[i], bound.threshold(0, q, thr))
            assert set(got[i].rows.tolist()) == set(full.threshold(0, q, thr).rows.tolist())
        qi, rows, sims = bound.batch_threshold(0, Q, thr, sims=False)
        rqi, rrows, _ = full.batch_threshold(0, Q, thr)
        assert sims is None and sorted(zip(qi.tolist(), rows.tolist())) == sorted(zip(rqi.tolist(), rrows.tolist()))


def test_stages_are_priced_on_prompts_from_outside_the_pool(engine, workspace):
    """Given query outputs, choose_stages prices on them (nothing excluded) instead of pool
    strings; a store build forwards validation prompts for it and says so in the manifest."""
    from app.search.bound_build import choose_stages, fit_basis
    from app.workspace import pricing_lengths, pricing_prompts

    # typed prompts of every length up to three pool strings' (the explorer asks each prefix)
    assert pricing_lengths(7, 3).tolist() == [1, 2, 3, 1, 2, 3, 1]
    Q = pricing_prompts(workspace, count=24)
    L, C = engine.store.n_layer, engine.store.unit.shape[2]
    assert Q.shape == (L, 24, C) and np.isfinite(Q).all()
    unit = engine.store.unit[3]
    stages, info = choose_stages(unit, fit_basis(unit, 16), ranks=(2, 8, 16), prompts=Q[3], threshold=0.5)
    assert info["queries"] == 24 and set(info["score"]) == {"2-2", "2-8", "2-16", "8-8", "8-16", "16-16"}
    assert set(stages) <= {2, 8, 16}
    m = engine.store.manifest["bound"]
    assert m["priced_on"] == "128 held-out prompts" and len(m["stages"]) == len(m["topk_stages"]) == L


def test_ranks_differ_by_block_and_answers_stay_exact():
    """An index whose blocks have different ranks (the table's rows per block differ) answers as
    the full scan does in every block, single and batch."""
    rng = np.random.default_rng(12)
    L, P, C = 3, 1500, 24
    x = unit_rows(rng.normal(size=(L, P, 6)) @ rng.normal(size=(6, C)) + 0.05 * rng.normal(size=(L, P, C)))
    store = make_store(x)
    bound = BoundSearch(store, fit_index(store.unit, [2, 6, 12]), gather_cost=0)
    assert bound.index.table.shape == (3 + 7 + 13, P)
    full = ExactSearch(store)
    Q = torch.from_numpy(unit_rows(x[:, [5, 50, 500]].mean(0)).astype(np.float32))
    for b in range(L):
        check_batches(full, bound, b, Q, (0.95, 0.5), (1, 40))
        for q in Q:
            same_threshold(full, bound, b, q, 0.9)
            same(full.topk(b, q, 25, exclude=5), bound.topk(b, q, 25, exclude=5))


def test_an_older_bound_layout_is_refused_and_rebuilt_alone(workspace, engine):
    """A store whose bound index has layout 1 (one rank, residual norms in their own file) opens
    without it, with a message naming the fix; ``add_missing_indexes`` retires the old files from
    the manifest first, then adds the new index (as `ffnlens serve` opens the store: `make start`
    after an upgrade just works), and the store's vectors are untouched."""
    import json

    from app.search import make_search
    from app.store import StoreError, open_store
    from app.workspace import open_engine

    path = workspace.store_dir
    mpath = path / "manifest.json"
    manifest = json.loads(mpath.read_text())
    before = {n: m for n, m in manifest["files"].items() if not n.startswith("bound_")}
    manifest["bound"].pop("layout")
    (path / "bound_resid.npy").write_bytes(b"old")
    manifest["files"]["bound_resid.npy"] = {"bytes": 3}
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="older layout.*ffnlens index"):
        make_search(open_store(path, workspace.spec), "bound")
    assert open_engine(workspace, build=True, progress=False).search.name == "bound"  # as serve opens it
    after = json.loads(mpath.read_text())
    assert not (path / "bound_resid.npy").exists() and "bound_resid.npy" not in after["files"]
    assert after["bound"]["layout"] == LAYOUT and len(after["bound"]["stages"]) == engine.store.n_layer
    assert {n: m for n, m in after["files"].items() if not n.startswith("bound_")} == before
    make_search(open_store(path, workspace.spec), "bound")


def clustered_store(seed: int, L: int = 2, P: int = 6000, C: int = 24, centres: int = 40):
    """Unit vectors around ``centres`` directions per block (cells that prune), a few of them
    exact duplicates and opposites."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(size=(L, centres, C))[:, rng.integers(centres, size=P)]
                        + 0.15 * rng.normal(size=(L, P, C))], 0)
    x[:, 10:30] = x[:, 5:6]
    x[:, 30:35] = -x[:, 5:6]
    return make_store(unit_rows(x))


def test_no_string_of_a_discarded_cell_qualifies():
    """A cell's cap bound is an upper bound on every similarity in the cell (within the margin
    the strings' bounds use): checked against the full float32 scan for queries near, between
    and opposite the clusters."""
    from app.search.bound import BOUND_MARGIN

    store = clustered_store(21)
    full, bound = ExactSearch(store), bound_for(store, 4)
    rng = np.random.default_rng(22)
    for b in range(store.n_layer):
        cells = bound.index.cells[b]
        assert cells.n == store.size // 50 and cells.edges[-1] == store.size
        assert sorted(cells.order.tolist()) == list(range(store.size))
        for q in [store.unit[b, 5], -store.unit[b, 5], store.unit[b, 7] + store.unit[b, 900],
                  rng.normal(size=store.unit.shape[2])]:
            q = unit_rows(q.astype(np.float32))
            sims = full.similarities(b, torch.from_numpy(q)).numpy()
            cap = cells.caps(q)
            for i in range(cells.n):
                rows = cells.order[cells.edges[i] : cells.edges[i + 1]]
                assert len(rows) == 0 or sims[rows].max() <= cap[i] + BOUND_MARGIN
            for cut in (0.3, 0.6, 0.8, 0.9, 0.95):  # a sure cell holds only strings above cut
                for i in np.flatnonzero(cells.sure(cells.cosines(q), cut)):
                    assert sims[cells.order[cells.edges[i] : cells.edges[i + 1]]].min() > cut
            held = np.diff(cells.edges) > 0  # an empty cell is never live
            for cut in (-1.5, -0.3, 0.0, 0.5, 0.9, 0.99, 0.9999, 1.01):  # live: caps > cut
                live, capped = cells.live(cells.cosines(q), cut)[held], cap[held] > cut
                assert np.array_equal(live, capped) or (live >= capped).all() and \
                    np.abs(cap[held][live != capped] - cut).max() < 1e-9, cut
            assert not cells.live(cells.cosines(q), -1.5)[~held].any()


def test_cells_prune_whole_cells_and_answers_stay_exact():
    """On clustered vectors a threshold or top-k query reads only its live cells' columns (its
    stats say "bound+cells" and count fewer bytes than the table's), single and batched, and every answer
    equals the full scan's; a batch's queries skip the runs of cells where none of theirs is live."""
    store = clustered_store(23)
    full, bound = ExactSearch(store), bound_for(store, [2, 6])
    Q = torch.from_numpy(unit_rows(store.unit[:, [5, 31, 77, 1500]].astype(np.float32)))
    for b in range(store.n_layer):
        whole = bound.index.block_bytes(b)
        for thr in (0.99, 0.95, 0.9):
            for i in range(Q.shape[1]):
                got = bound.threshold(b, Q[b, i], thr)
                assert got.stats.plan == "bound+cells" and got.stats.bytes_read < whole // 2
                same_threshold(full, bound, b, Q[b, i], thr)
                same_threshold(full, bound, b, Q[b, i], thr, exclude=5)
        for i, k in product(range(Q.shape[1]), (1, 5, 40)):  # the nearest cells' k-th prunes
            got = bound.topk(b, Q[b, i], k)
            assert got.stats.plan == "bound+cells" and got.stats.bytes_read < whole // 2
            same(full.topk(b, Q[b, i], k), got)
            same(full.topk(b, Q[b, i], k, exclude=5), bound.topk(b, Q[b, i], k, exclude=5))
        check_batches(full, bound, b, Q[b], [0.99, 0.9, 0.5], [3, 40])
        cells = bound.index.cells[b]
        live = cells.live_groups(cells.cosines(Q[b].numpy()), 0.99)
        assert len(cells.groups) > 2 and not live.all()


def test_top_k_over_live_cells_scans_only_when_the_whole_block_would_cost_less():
    """The planner prices a top-k's candidates against the block's scan, not against the live
    cells' columns it read: a few dozen candidates among a few hundred live columns are decided
    exactly, not sent to the scan."""
    from app.search.bound import GATHER_COST

    store = clustered_store(25)
    full, bound = ExactSearch(store), bound_for(store, [2, 6], gather_cost=GATHER_COST)
    Q = torch.from_numpy(unit_rows(store.unit[:, [5, 31, 77, 1500]].astype(np.float32)))
    for b, i, k in product(range(store.n_layer), range(Q.shape[1]), (5, 40)):
        got = bound.topk(b, Q[b, i], k)
        assert got.stats.plan == "bound+cells", (b, i, k, got.stats.plan)
        same(full.topk(b, Q[b, i], k), got)


def test_a_batch_takes_cells_of_neighbours_whole_and_stays_exact():
    """Cells whose every string qualifies (the cap's lower side) come whole from a threshold batch:
    their strings and the batch's pairs together are the full scan's answer, with or without
    excludes (an excluded row keeps its cell out of the whole ones), and ``holds`` finds a row in
    either."""
    store = clustered_store(24)
    full, bound = ExactSearch(store), bound_for(store, [2, 6])
    Q = torch.from_numpy(unit_rows(store.unit[:, [5, 31, 77, 1500, 900, 12]].astype(np.float32)))
    ex = torch.tensor([5, -1, 77, -1, 3, 12])
    whole = 0
    for b, thr, e in product(range(store.n_layer), (0.95, 0.8, 0.6), (None, ex)):
        got = bound.batch_threshold_cells(b, Q[b], thr, e)
        qi, rows, _ = full.batch_threshold(b, Q[b], thr, e)
        assert sorted(zip(*[a.tolist() for a in got.pairs()])) == sorted(zip(qi.tolist(), rows.tolist()))
        assert got.holds(qi, rows).all()
        if e is not None:
            assert not got.holds(np.arange(6), e.numpy()).any()
        whole += len(got.cc)
        if len(got.cc):  # a string of a whole cell, and one that is no neighbour
            cell = got.cells
            r = cell.order[cell.edges[got.cc[0]]]
            assert got.holds(np.array([got.cq[0]]), np.array([r]))[0]
            far = np.setdiff1d(np.arange(store.size), rows[qi == got.cq[0]])[0]
            assert not got.holds(np.array([got.cq[0]]), np.array([far]))[0]
    assert whole > 0  # the test saw whole cells


def test_block_counts_count_whole_cells_as_their_strings(engine):
    """The strip's and the evaluation's per-block counts, neighbour numbers and self hits are the
    same whether the bound gives cells whole or lists every pair (the micro store, its calibrated
    thresholds and low ones where whole cells appear)."""
    from app.approx import QuerySettings
    from app.study.evaluation import block_counts

    from .test_shards import queries

    Q = queries(engine, count=24, seed=5)
    own = np.array([3, -1, 10, engine.store.size - 1] * 6, dtype=np.int64)
    B, whole = Q.shape[1], 0
    for thr in (None, 0.6, 0.3):
        s = QuerySettings(thresholds=None if thr is None else [thr] * engine.store.n_layer)
        s = s.resolved(engine.store)
        for b, ex in product(range(engine.store.n_layer), (None, torch.from_numpy(own))):
            whole += len(engine.search.batch_threshold_cells(b, Q[b], s.thresholds[b], ex).cc)
            qi, rows, _ = engine.search.batch_threshold(b, Q[b], s.thresholds[b], ex, sims=False)
            hits = np.bincount(qi[rows == own[qi]], minlength=B)
            ref = (engine.store.counts.sum_rows_grouped(rows, qi, B), np.bincount(qi, minlength=B), hits)
            got = block_counts(engine, b, Q[b], s, ex, own)
            assert all(np.array_equal(x, y) for x, y in zip(got, ref)), (thr, b)
    assert whole > 0
