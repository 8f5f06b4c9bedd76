"""The sharded store on a real local Ray cluster (2 CPUs, one per module): searched by shard actors
(app/search/ray_shards.py) with the unsharded store's answers, a killed actor a 503 with a message
and then correct answers once Ray has restarted it, and the shards built by actors
(app/ray_build.py) bit for bit as the single-process build makes them."""
import os
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray", reason="the ray extra: pip install -e '.[ray]' (make test does)")

from app.approx import QuerySettings  # noqa: E402
from app.search import make_search  # noqa: E402
from app.search.sharded import RESTARTING  # noqa: E402
from app.workspace import open_engine  # noqa: E402

from .test_shards import canonical, queries, sorted_triples  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    from app.search.ray_shards import connect

    connect("auto", num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def on_ray(local_ray, sharded_workspaces):
    """Engines over the 1-, 2- and 4-shard stores, each searched by its own shard actors."""
    out = {}
    for n, ws in sharded_workspaces.items():
        out[n] = open_engine(ws, progress=False, ray="auto")
    yield out
    for eng in out.values():
        eng.store.remote.shutdown()


def test_shard_actors_answer_as_the_unsharded_store(on_ray, engine):
    bound = make_search(engine.store, "bound")
    Q = queries(engine, count=4, seed=2)
    ex = torch.tensor([-1, 3, engine.store.size - 2, -1])
    for n, eng in on_ray.items():
        search = eng.search
        assert type(search).__name__ == "RaySearch" and search.name == "bound"
        assert len(eng.store.remote.actors) == n
        for b in (0, 4, 5):
            for i in range(Q.shape[1]):
                e = None if int(ex[i]) < 0 else int(ex[i])
                for thr in (engine.store.defaults["thresholds"][b], 0.4):
                    x, y = search.threshold(b, Q[b, i], thr, e), bound.threshold(b, Q[b, i], thr, e)
                    assert np.array_equal(x.rows, y.rows) and np.array_equal(x.sims, y.sims), (n, b, thr)
                for k in (1, 9, 300):
                    x, y = search.topk(b, Q[b, i], k, e), bound.topk(b, Q[b, i], k, e)
                    assert np.array_equal(x.rows, y.rows) and np.array_equal(x.sims, y.sims), (n, b, k)
            x = search.batch_threshold(b, Q[b], 0.4, ex)
            y = bound.batch_threshold(b, Q[b], 0.4, ex)
            for u, v in zip(sorted_triples(*x), sorted_triples(*y)):
                assert np.array_equal(u, v)
            for k in (1, 50):
                for u, v in zip(search.batch_topk(b, Q[b], k, ex), bound.batch_topk(b, Q[b], k, ex)):
                    assert np.array_equal(u, v)
        exact = make_search(eng.store, "exact")  # the actors' full scan, through the store's remote
        assert type(exact).__name__ == "RaySearch" and exact.name == "exact"
        scan = make_search(engine.store, "exact")
        x, y = exact.batch_topk(5, Q[5], 20), canonical(*scan.batch_topk(5, Q[5], 20))
        assert all(np.array_equal(u, v) for u, v in zip(x, y))


def test_the_engine_and_eval_on_ray_answer_as_unsharded(on_ray, engine):
    from app.study.evaluation import evaluate

    eng = on_ray[4]
    for prompt, s in (("the king ", QuerySettings()), ("my lord", QuerySettings(mode="topk", k=30))):
        a, b = eng.query(prompt, s), engine.query(prompt, s)
        assert np.array_equal(a.approx, b.approx) and a.hellinger == b.hellinger
    rows = np.arange(0, engine.store.size, 97)
    for s in (QuerySettings(), QuerySettings(mode="topk", k=25)):
        x, y = evaluate(eng, rows, s, progress=False), evaluate(engine, rows, s, progress=False)
        assert np.array_equal(x["per_prompt_h"], y["per_prompt_h"])


def wait_gone(pid: int, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} outlived its kill")


def test_a_killed_shard_actor_is_a_503_then_answers_once_restarted(on_ray, engine, workspace):
    from fastapi.testclient import TestClient

    from app.web import create_app
    from app.workspace import about

    eng = on_ray[2]
    client = TestClient(create_app(eng, about(workspace, eng)))
    want = engine.query("the queen ", QuerySettings())
    ok = client.get("/api/query", params={"prompt": "the king "})
    assert ok.status_code == 200 and ok.json()["backend"] == "bound"
    shards = eng.store.remote
    # Killed twice: the first request after each kill meets the shard restarting (a restart
    # starts a worker process and reopens the shard: seconds), the JSON twin, then the page.
    for path, shown in (("/api/query", lambda r: r.json()["detail"]), ("/", lambda r: r.text)):
        _, before, pid = ray.get(shards.actors[1].ready.remote())
        ray.kill(shards.actors[1], no_restart=False)
        wait_gone(pid)
        down = client.get(path, params={"prompt": "the queen "})
        assert down.status_code == 503, down.text[:300]
        assert RESTARTING in shown(down) and down.headers["Retry-After"]
        _, after, _ = shards.wait_ready()[1]
        assert after != before  # Ray restarted the actor: it reopened its shard
    up = client.get("/api/query", params={"prompt": "the queen "})
    assert up.status_code == 200
    assert up.json()["hellinger"] == want.hellinger
    assert [b["neighbours"] for b in up.json()["blocks"]] == [len(b.neighbours) for b in want.blocks]


def test_shards_built_by_ray_actors_are_the_local_builds(local_ray, sharded_workspaces, tmp_path):
    from app.ray_build import RayBuild
    from app.shard_build import build_sharded
    from app.shards import open_sharded

    ws = replace(sharded_workspaces[2], store_dir=tmp_path / "on-ray")
    cluster = RayBuild("auto")
    try:
        build_sharded(ws, 2, progress=False, cluster=cluster)
    finally:
        cluster.shutdown()
    got = open_sharded(ws.store_dir, ws.spec, ws.ids)
    ref = open_sharded(sharded_workspaces[2].store_dir, ws.spec, ws.ids)
    assert got.manifest["built_on"] == "ray" and got.defaults == ref.defaults
    for a, b in zip(got.shards, ref.shards):
        for name in ("ffn_unit.npy", "ffn_norm.npy", "pool_starts.npy", "pool_at.npy", "counts_n.npy"):
            assert (a.path / name).read_bytes() == (b.path / name).read_bytes(), name


def test_a_ray_build_whose_actors_die_mid_shard_resumes_to_the_same_shards(local_ray, workspace, engine,
                                                                          tmp_path):
    """The builder actors killed while they write their shards: the build fails, no store opens;
    run again, it resumes each shard where its last flush left it, and the shards hold the
    single-process build's vectors, pool and counts, byte for byte."""
    import json
    import threading

    from app.ray_build import RayBuild
    from app.shard_build import build_sharded
    from app.shards import open_sharded, shard_ranges
    from app.store import StoreError, build_store

    ws = replace(workspace, store_dir=tmp_path / "killed", shards=2)
    cluster, failed = RayBuild("auto"), []

    def build():
        try:
            build_sharded(ws, 2, batch_size=4, progress=False, cluster=cluster)
        except Exception as e:  # what the killed actors' calls raise
            failed.append(e)

    def done(i):
        try:
            return json.loads((ws.store_dir / f"shard-00{i}.partial" / "progress.json").read_text())["done"]
        except (OSError, ValueError):
            return 0

    thread = threading.Thread(target=build)
    thread.start()
    deadline = time.time() + 120
    while time.time() < deadline and not (done(0) or done(1)):
        time.sleep(0.001)
    for actor in cluster.actors:
        ray.kill(actor)
    thread.join(120)
    at_kill = [done(0), done(1)]  # flushed every 4 batches of 4 rows
    sizes = [b - a for a, b in shard_ranges(engine.store.size, 2)]
    assert failed and any(0 < d < n for d, n in zip(at_kill, sizes)), (failed, at_kill)
    with pytest.raises(StoreError, match="only partly built"):
        open_sharded(ws.store_dir, ws.spec)
    again = RayBuild("auto")
    try:
        build_sharded(ws, 2, batch_size=4, progress=False, cluster=again)
    finally:
        again.shutdown()
    got = open_sharded(ws.store_dir, ws.spec, ws.ids)
    for shard, rows in zip(got.shards, shard_ranges(engine.store.size, 2)):
        fresh = build_store(ws.model, ws.ids, ws.spec, tmp_path / f"fresh{rows[0]}", batch_size=4,
                            progress=False, rows=rows)
        for name in ("ffn_unit.npy", "ffn_norm.npy", "pool_starts.npy", "pool_at.npy", "counts_n.npy"):
            assert (shard.path / name).read_bytes() == (fresh / name).read_bytes(), name
