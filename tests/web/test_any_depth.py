"""Models shallower and deeper than METHOD.md's six blocks: served with their defaults, every route
answers, the fuzzed URLs never give a 500, and METHOD.md's six reference thresholds are refused by
name with a message that says why."""
import copy
from urllib.parse import quote

import pytest
from hypothesis import given, strategies as st

from .test_fuzz import QUERY_PARAMS, VALID, anything, check, fuzz


def _world(tmp_path_factory, micro_corpus, micro_preset, n_layer: int):
    from fastapi.testclient import TestClient

    from app.corpus import load_corpus
    from app.settings import Settings
    from app.web import create_app
    from app.workspace import about, build_index, open_engine, open_workspace
    from model.tokenizer import CharTokenizer
    from model.train import train

    home = tmp_path_factory.mktemp(f"depth{n_layer}")
    preset = copy.deepcopy(micro_preset)
    preset.arch.n_layer = n_layer
    corpus = load_corpus(micro_corpus)
    tok = CharTokenizer.from_text(corpus.text)
    ids = tok.encode(corpus.text)
    out = home / "models" / f"micro{n_layer}"
    train(preset, tok, ids[: corpus.n_train], ids[corpus.n_train :], corpus.info(), home / "runs",
          out, progress=False)
    ws = open_workspace(Settings(home=home, device="cpu"), model=str(out), corpus=str(micro_corpus))
    build_index(ws, progress=False, ivf_kind=None)
    engine = open_engine(ws, progress=False)
    return TestClient(create_app(engine, about(ws, engine))), n_layer


@pytest.fixture(scope="module", params=[4, 8], ids=["4-blocks", "8-blocks"])
def deep(request, tmp_path_factory, micro_corpus, micro_preset):
    return _world(tmp_path_factory, micro_corpus, micro_preset, request.param)


def test_every_route_answers_with_the_defaults(deep):
    from app.defaults import default_weights

    client, L = deep
    for path in ["/", "/?prompt=the+king", "/results?prompt=the+king", "/api/query?prompt=the+king",
                 "/api/query?prompt=the+king&mode=topk&k=5", "/corpus?pos=5", "/api/corpus?pos=5",
                 "/api/info", *[f"/blocks/{b}?prompt=the+king" for b in range(L)],
                 *[f"/api/blocks/{b}?prompt=the+king" for b in range(L)]]:
        r = client.get(path)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
    info = client.get("/api/info").json()
    weights = [float(w) for w in info["defaults"]["weights"].split(",")]
    assert weights == pytest.approx(default_weights(L), rel=1e-5) and len(weights) == L  # shown to 6 digits
    assert "relative depth" in info["defaults"]["weights_rule"]
    q = client.get("/api/query?prompt=the+king").json()
    assert len(q["blocks"]) == L


def test_reference_thresholds_are_refused_by_name_on_another_depth(deep):
    client, L = deep
    r = client.get("/api/query?prompt=the+king&thresholds=reference")
    assert r.status_code == 400
    assert "6-block" in r.json()["detail"] and f"{L} blocks" in r.json()["detail"]
    page = client.get("/?prompt=the+king&thresholds=reference")
    assert page.status_code == 400 and "6-block" in page.text
    given_l = ",".join(["0.9"] * L)
    assert client.get(f"/api/query?prompt=the+king&thresholds={given_l}").status_code == 200


@fuzz(60)
@given(params=st.fixed_dictionaries({"prompt": VALID["prompt"]},
                                    optional={k: VALID[k] for k in QUERY_PARAMS if k != "prompt"}),
       hostile=st.dictionaries(st.sampled_from(QUERY_PARAMS), anything, max_size=2),
       block=st.integers(-1, 9).map(str))
def test_fuzzed_urls_never_fail_on_another_depth(deep, params, hostile, block):
    client, _ = deep
    params = {**params, **hostile}
    for path in ("/api/query", "/", "/results", f"/blocks/{quote(block, safe='')}",
                 f"/api/blocks/{quote(block, safe='')}"):
        check(client.get(path, params=params), path, "query")
