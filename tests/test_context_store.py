"""In-context stores: every position's output read inside windows of text, searchable and switchable."""
import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def context_ws(settings, micro_model_dir, micro_corpus, engine):
    from app.workspace import build_index, open_workspace

    ws = open_workspace(settings, model=str(micro_model_dir), corpus=str(micro_corpus), context=16)
    build_index(ws, progress=False)
    return ws


def test_every_position_is_a_row_read_with_the_text_before_it(context_ws):
    from model.gpt import Trace

    from app.workspace import open_engine

    eng = open_engine(context_ws, progress=False)
    st, n, T = eng.store, context_ws.spec.n, 16
    assert st.context == 16 and st.manifest["context"] == 16
    assert st.size == len(context_ws.ids) - n + 1  # one row per position (duplicates kept)
    assert (st.counts.totals()[:-1] == 1).all()  # each followed by exactly its own next character
    for r in (0, 5, 7, 100, st.size - 1):
        q = r + n - 1  # the row's last character
        S = T // 2
        a = 0 if q < T else ((q - T) // S + 1) * S  # the window that keeps position q
        assert q - a >= min(q, S)  # read with at least half a window of text before it
        tr = Trace()
        with torch.no_grad():
            eng.model(torch.from_numpy(context_ws.ids[a : a + T][None].astype(np.int64)), trace=tr,
                      skip_head=True)
        for b in range(st.n_layer):
            want = tr.ffn[b][0, q - a].float()
            got = torch.from_numpy(st.ffn(b, [r])[0])
            assert torch.allclose(got, want, atol=2e-3 * float(want.norm()) + 1e-5)
    assert st.find(context_ws.ids[:n]) is None  # no position is "the prompt's own"


def test_the_context_store_has_its_own_identity(context_ws, workspace):
    from app.store import StoreError, StoreSpec, open_store

    assert context_ws.store_dir != workspace.store_dir and context_ws.store_dir.name.endswith("-ctx16")
    with pytest.raises(StoreError, match="context"):
        open_store(context_ws.store_dir, StoreSpec(**{**context_ws.spec.__dict__, "context": 32}))
    with pytest.raises(StoreError, match="another model or corpus"):
        open_store(context_ws.store_dir, workspace.spec)


def test_a_context_longer_than_the_model_reads_is_refused(settings, micro_model_dir, micro_corpus):
    from app.corpus import CorpusError
    from app.workspace import open_workspace

    with pytest.raises(CorpusError, match="--context 64"):
        open_workspace(settings, model=str(micro_model_dir), corpus=str(micro_corpus), context=64)


def test_the_explorer_switches_stores_by_url(context_ws, workspace, engine, settings):
    from fastapi.testclient import TestClient

    from app.web import create_app
    from app.workspace import about, sibling_engines

    siblings = sibling_engines(workspace, settings.stores)
    assert "context16" in siblings
    client = TestClient(create_app(engine, about(workspace, engine), stores=siblings))
    info = client.get("/api/info").json()
    assert set(info["stores"]) >= {"pool", "context16"} and info["stores"]["context16"]["context"] == 16
    pool = client.get("/api/query", params={"prompt": "the king and "}).json()
    ctx = client.get("/api/query", params={"prompt": "the king and ", "store": "context16"}).json()
    assert pool["store"]["label"] == "pool" and ctx["store"]["label"] == "context16"
    assert ctx["store"]["pool_size"] != pool["store"]["pool_size"]
    assert "store=context16" in ctx["permalink"] and "store" not in pool["permalink"]
    assert ctx["blocks"][0]["neighbours"] != pool["blocks"][0]["neighbours"] or \
        ctx["blocks"][-1]["neighbours"] != pool["blocks"][-1]["neighbours"]
    page = client.get("/", params={"prompt": "the king and ", "store": "context16"})
    assert page.status_code == 200 and 'value="context16" checked' in page.text
    blk = client.get("/api/blocks/2", params={"prompt": "the king and ", "store": "context16"}).json()
    assert blk["neighbours"] == ctx["blocks"][2]["neighbours"]
    bad = client.get("/api/query", params={"prompt": "the king", "store": "context99"})
    assert bad.status_code == 400 and "context16" in bad.json()["detail"]
    # The strip reads a prompt longer than the pool strings with the in-context store, and says so;
    # a short one, or store=pool, with the pool store.
    assert client.get("/api/strip", params={"prompt": "the king and "}).json()["store"] == "context16"
    assert client.get("/api/strip", params={"prompt": "the king"}).json()["store"] == "pool"
    assert client.get("/api/strip", params={"prompt": "the king and ", "store": "pool"}).json()["store"] == "pool"
    assert "characters of context" in client.get("/strip", params={"prompt": "the king and "}).text
    assert client.get("/api/query", params={"prompt": "x", "store": "<b>"}).status_code == 400


def test_a_sibling_whose_bound_index_does_not_open_is_served_by_the_full_scan(context_ws, workspace, tmp_path):
    """A sibling store whose bound index is of an older layout neither stops the server nor is
    passed over: it is served by the full scan, and the server says so."""
    import json
    import shutil

    from app.workspace import sibling_engines

    dst = tmp_path / "stores" / context_ws.store_dir.name
    shutil.copytree(context_ws.store_dir, dst)
    m = json.loads((dst / "manifest.json").read_text())
    m["bound"]["layout"] = 2
    (dst / "manifest.json").write_text(json.dumps(m))
    siblings = sibling_engines(workspace, tmp_path / "stores")
    assert siblings["context16"].search.name == "exact"


def test_held_out_prompts_can_be_read_in_context(settings, micro_model_dir, micro_corpus):
    """--prompt-length L: L characters of validation text ending with a string absent from the pool."""
    from app.corpus import string_keys
    from app.study.prompts import heldout_prompts
    from app.workspace import open_engine, open_workspace

    ws = open_workspace(settings, model=str(micro_model_dir), corpus=str(micro_corpus), mode="heldout")
    st = open_engine(ws, build=True, progress=False).store
    n, n_train = st.pool.n, ws.corpus.n_train
    ids = st.corpus_ids
    short = heldout_prompts(st, n_train, 50, 7)
    assert np.array_equal(heldout_prompts(st, n_train, 50, 7, length=n), short)
    long = heldout_prompts(st, n_train, 50, 7, length=24)
    assert long.shape[1] == 24 and len(long) > 0
    V = len(st.manifest["vocab"])
    pool = set(string_keys(st.pool.strings(ids), V).tolist())
    ends = string_keys(long[:, -n:], V)
    assert not (set(ends.tolist()) & pool) and len(set(ends.tolist())) == len(long)
    text = ids[n_train:].tolist()
    for p in long[:10].tolist():  # each prompt is a stretch of the validation text
        assert any(text[i : i + 24] == p for i in range(len(text) - 23))
    with pytest.raises(ValueError, match="shorter"):
        heldout_prompts(st, n_train, 5, 7, length=n - 1)


def test_an_in_context_store_in_shards_is_the_unsharded_one(context_ws, tmp_path):
    """Shards of positions: each shard's windows start where the whole store's do, so its rows are
    the unsharded rows bit for bit, and so are the answers."""
    from dataclasses import replace

    from app.approx import QuerySettings
    from app.shard_build import build_sharded
    from app.workspace import open_engine

    ws = replace(context_ws, store_dir=tmp_path / "ctx-shards3", shards=3)
    build_sharded(ws, 3, progress=False)
    whole, parts = open_engine(context_ws, progress=False), open_engine(ws, progress=False)
    assert parts.store.context == whole.store.context == 16 and parts.store.size == whole.store.size
    rows = np.arange(whole.store.size)
    assert np.array_equal(parts.store.unit[:, rows], np.asarray(whole.store.unit))
    assert parts.store.defaults == whole.store.defaults
    for s in (QuerySettings(), QuerySettings(mode="topk", k=15)):
        a, b = parts.query("the king and queen", s), whole.query("the king and queen", s)
        assert np.array_equal(a.approx, b.approx)
        assert all(np.array_equal(x.neighbours.rows, y.neighbours.rows) for x, y in zip(a.blocks, b.blocks))
