"""The store in shards (app/shards.py, app/shard_build.py, app/search/sharded.py) on one machine:
each shard a complete store, the pool and counts put back together row for row, and every answer
(threshold and top-k, single and batch, both exact backends) the unsharded store's, bit for bit."""
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from app.approx import QuerySettings
from app.search import make_search, unit
from app.shards import open_sharded, shard_ranges
from app.store import StoreError, open_store
from app.workspace import open_engine

from .conftest import REPO

SHARDS = (1, 2, 4)


@pytest.fixture(scope="module")
def sharded(sharded_workspaces):
    return {n: open_engine(ws, progress=False) for n, ws in sharded_workspaces.items()}


def queries(engine, count: int = 6, seed: int = 0) -> torch.Tensor:
    """(L, count, C) unit queries: prompts' outputs, two stored vectors (each its own nearest,
    with ties where strings share a vector) and random directions."""
    _, ffn = engine.forward(engine.encode("the king and "))
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, engine.store.size, 2)
    stored = torch.from_numpy(np.stack([engine.store.ffn(b, rows) for b in range(engine.store.n_layer)]))
    rand = torch.from_numpy(rng.standard_normal((engine.store.n_layer, count - 3,
                                                 engine.store.unit.shape[2])).astype(np.float32))
    return unit(torch.cat([ffn[:, None], stored, rand], 1))


def test_each_shard_is_a_complete_store_and_the_whole_is_the_unsharded_pool(sharded, engine, workspace):
    ref = engine.store
    for n, eng in sharded.items():
        st = eng.store
        assert len(st.shards) == n and st.size == ref.size
        for shard, (a, b) in zip(st.shards, shard_ranges(ref.size, n)):
            alone = open_store(shard.path, workspace.spec)  # an ordinary store, checked as any
            assert alone.manifest["shard"]["start"] == a and alone.manifest["shard"]["stop"] == b
            assert alone.manifest["shard"]["store"]["model_sha256"] == workspace.spec.model_sha256
            assert "bound" in alone.manifest and alone.size == b - a
            assert np.array_equal(np.asarray(alone.unit), np.asarray(ref.unit[:, a:b]))
            assert np.array_equal(alone.counts.totals(), ref.follow_totals[a:b])
        assert np.array_equal(st.pool.starts, ref.pool.starts)
        assert np.array_equal(st.pool.at, ref.pool.at)
        for name in ("indptr", "chars", "counts"):
            assert np.array_equal(getattr(st.counts, name), getattr(ref.counts, name))
        rows = np.array([0, 1, st.size // 2, st.size - 1])
        assert np.array_equal(st.unit[:, rows], ref.unit[:, rows])
        assert np.array_equal(st.unit[3, 7], ref.unit[3, 7]) and np.array_equal(st.ffn(2, rows), ref.ffn(2, rows))
        assert st.manifest["unit_fingerprint"] == ref.manifest["unit_fingerprint"]  # same permalinks
        assert st.defaults["thresholds"] == ref.defaults["thresholds"]  # calibrated on the whole
        assert st.find(st.pool.strings(st.corpus_ids, rows[2:3])[0]) == rows[2]
        assert np.array_equal(st.occurrences(5), ref.occurrences(5))


@pytest.mark.parametrize("backend", ["bound", "exact"])
def test_single_queries_answer_as_the_unsharded_store(sharded, engine, backend):
    ref = make_search(engine.store, backend)
    Q = queries(engine)
    for n, eng in sharded.items():
        search = make_search(eng.store, backend)
        assert search.name == backend and type(search).__name__ == "ShardedSearch"
        for b in (0, 3, 5):
            for i in range(Q.shape[1]):
                ex = [None, int(engine.store.size // 3 + i)][i % 2]
                for thr in (engine.store.defaults["thresholds"][b], 0.5, -0.2):
                    x, y = search.threshold(b, Q[b, i], thr, ex), ref.threshold(b, Q[b, i], thr, ex)
                    assert np.array_equal(x.rows, y.rows) and np.array_equal(x.sims, y.sims), (n, b, i, thr)
                for k in (1, 9, engine.store.size):
                    x, y = search.topk(b, Q[b, i], k, ex), ref.topk(b, Q[b, i], k, ex)
                    assert np.array_equal(x.rows, y.rows) and np.array_equal(x.sims, y.sims), (n, b, i, k)


def sorted_triples(qi, rows, sims):
    o = np.lexsort((rows, qi))
    return qi[o], rows[o], None if sims is None else sims[o]


@pytest.mark.parametrize("backend", ["bound", "exact"])
def test_batches_answer_as_the_unsharded_store(sharded, engine, backend):
    ref = make_search(engine.store, backend)
    Q = queries(engine, count=8, seed=1)
    ex = torch.tensor([-1, 5, engine.store.size - 1] + [-1] * 5)
    for n, eng in sharded.items():
        search = make_search(eng.store, backend)
        for b in (0, 3, 5):
            thr = engine.store.defaults["thresholds"][b] - 0.01
            for sims in (True, False):
                x = search.batch_threshold(b, Q[b], thr, ex, sims=sims)
                y = ref.batch_threshold(b, Q[b], thr, ex, sims=sims)
                for u, v in zip(sorted_triples(*x), sorted_triples(*y)):
                    assert (u is None and v is None) or np.array_equal(u, v), (n, b, sims)
            for k in (1, 7, 300):
                x, y = search.batch_topk(b, Q[b], k, ex), ref.batch_topk(b, Q[b], k, ex)
                if backend == "exact":  # the scan's batch (torch.topk) lists equal values in any
                    y = canonical(*y)   # order; the merge lists them by row, as the bound does
                for u, v in zip(x, y):
                    assert np.array_equal(u, v), (n, b, k)


def canonical(qi, rows, sims):
    """A batch's top-k laid out query by query, by decreasing similarity, ties by row."""
    o = np.lexsort((rows, -sims, qi))
    return qi[o], rows[o], sims[o]


def test_the_engine_counts_follow_ons_by_pool_row(sharded, engine):
    for eng in sharded.values():
        for prompt, s in (("the king ", QuerySettings()), ("my lord", QuerySettings(mode="topk", k=40)),
                          ("peace", QuerySettings(thresholds=[0.3] * 6, exclude_self=True))):
            a, b = eng.query(prompt, s), engine.query(prompt, s)
            assert np.array_equal(a.approx, b.approx) and a.hellinger == b.hellinger
            for x, y in zip(a.blocks, b.blocks):
                assert np.array_equal(x.counts, y.counts) and x.self_row == y.self_row


def test_a_shard_that_is_not_the_manifests_is_refused(sharded_workspaces, workspace, tmp_path):
    import shutil

    src = sharded_workspaces[2].store_dir
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    m = json.loads((dst / "shard-001" / "manifest.json").read_text())
    m["shard"]["start"] += 1
    (dst / "shard-001" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(StoreError, match="is not shard 1 of this store"):
        open_sharded(dst, workspace.spec)
    (dst / "manifest.json").unlink()
    with pytest.raises(StoreError, match="only partly built.*--shards N"):
        open_sharded(dst, workspace.spec)
    with pytest.raises(StoreError, match="splits into 1 to"):
        shard_ranges(10, 11)


def test_a_build_killed_mid_shard_resumes_to_the_same_shards(workspace, engine, micro_model_dir,
                                                             micro_corpus, tmp_path):
    """kill -9 while shard 1's vectors are being written (shard 0's written, unsealed); the build run
    again finishes, and its shards hold the vectors, pool and counts of an uninterrupted build's,
    bit for bit."""
    from app.store import build_store

    env = {**os.environ, "FFNLENS_HOME": str(tmp_path), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    cmd = [sys.executable, "-m", "app.cli", "index", "--model", str(micro_model_dir), "--corpus",
           str(micro_corpus), "--shards", "2", "--batch-size", "16", "--quiet"]
    top = tmp_path / "stores" / f"{workspace.spec.dirname()}-shards2"
    prog = top / "shard-001.partial" / "progress.json"
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline, done = time.time() + 120, 0
    while proc.poll() is None and time.time() < deadline and not done:
        try:  # flushed every 64 batches of 16 rows: the first flush lands mid-shard
            done = json.loads(prog.read_text())["done"]
        except (OSError, ValueError):
            time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, proc.communicate()
    half = engine.store.size // 2  # shard 0's rows; shard 1 has the rest
    assert 0 < done < engine.store.size - half  # mid-shard: some of shard 1's rows written
    assert json.loads((top / "shard-000.partial" / "progress.json").read_text())["done"] == half
    assert not (top / "manifest.json").exists()
    with pytest.raises(StoreError, match="only partly built"):
        open_sharded(top, workspace.spec)
    finished = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    resumed = open_sharded(top, workspace.spec, workspace.ids)
    for shard, rows in zip(resumed.shards, shard_ranges(engine.store.size, 2)):
        fresh = build_store(workspace.model, workspace.ids, workspace.spec, tmp_path / f"fresh{rows[0]}",
                            batch_size=16, progress=False, rows=rows)
        for name in ("ffn_unit.npy", "ffn_norm.npy", "pool_starts.npy", "pool_at.npy", "counts_n.npy"):
            assert (shard.path / name).read_bytes() == (fresh / name).read_bytes(), name
    assert resumed.defaults == engine.store.defaults


def test_the_command_line_builds_and_queries_shards_and_refuses_bad_flags(micro_model_dir, micro_corpus,
                                                                         home, engine, tmp_path,
                                                                         monkeypatch, capsys):
    from app.cli import main

    m = ["--model", str(micro_model_dir), "--corpus", str(micro_corpus), "--quiet"]

    def run(*args, home=tmp_path):
        monkeypatch.setenv("FFNLENS_HOME", str(home))
        try:
            code = main([*args, *m])
        except SystemExit as e:
            code = e.code
        out = capsys.readouterr()
        return code, out.out, out.err

    for args, message in [
        (("index", "--shards", "0"), "--shards takes the number of shards to split the store into, 1 or more, not 0"),
        (("query", "the king", "--shards", "-2"), "1 or more, not -2"),
        (("serve", "--ray", "auto"), "--ray builds and searches a sharded store: give --shards N too"),
        (("query", "the king", "--shards", "3"), "no sharded store at"),
        (("index", "--shards", str(engine.store.size + 1)),
         f"splits into 1 to {engine.store.size:,} shards, not {engine.store.size + 1}"),
    ]:
        code, _, err = run(*args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    with monkeypatch.context() as without:  # as after `make start`: no Ray to import
        without.setitem(sys.modules, "ray", None)
        code, _, err = run("eval", "--shards", "2", "--ray", "auto")
    assert code == 2 and err.strip() == \
        "ffnlens: error: --ray needs Ray, which is not installed here: pip install -e '.[ray]'"
    code, out, _ = run("index", "--shards", "2")
    half = engine.store.size // 2
    assert code == 0 and f"in 2 shards of {half:,} to {engine.store.size - half:,} strings" in out
    q = ("query", "the king ", "--mode", "topk", "--k", "7", "--json")
    a, b = json.loads(run(*q, "--shards", "2")[1]), json.loads(run(*q, home=home)[1])
    assert a.pop("store")["path"].endswith("-shards2") and b.pop("store")
    assert a == b


def test_the_explorer_serves_a_sharded_store_as_the_unsharded_one(sharded, engine, client, workspace):
    from fastapi.testclient import TestClient

    from app.web import create_app
    from app.workspace import about

    eng = sharded[4]
    mine = TestClient(create_app(eng, about(workspace, eng)))
    assert mine.get("/api/info").json()["backends"] == ["bound", "exact"]
    for path in ("/api/query?prompt=the+king+&mode=topk&k=12", "/api/query?prompt=my+lord&backend=exact",
                 f"/api/strings/{engine.store.size - 3}?prompt=the+king", "/api/strip?prompt=the+king+and"):
        a, b = mine.get(path), client.get(path)
        assert a.status_code == b.status_code == 200, path
        a, b = a.json(), b.json()
        for d in (a, b):  # the store's name and the time taken differ; nothing else may
            d.pop("store", None), d.pop("timing", None)
        assert a == b, path
    for path in ("/?prompt=the+king", "/blocks/5?prompt=the+king", "/interventions?prompt=the+king"):
        assert mine.get(path).status_code == 200, path
