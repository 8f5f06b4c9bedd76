"""The explorer service (app/web/explorer.py), without the web: one engine per store and backend,
the answer cache, the gate, the store's defaults; and no web framework in the module."""
import ast

import pytest

from app.approx import QueryError
from app.links import decode
from app.web.explorer import DEFAULT_STORE, Explorer
from app.web.gate import Busy, Gate

from ..conftest import REPO

BLANK = {"prompt": "", "mode": "threshold", "thresholds": "", "k": "200", "weights": "", "blend": "raw",
         "exclude_self": "", "show": "10"}


def vp(**params):
    return decode({**BLANK, **params})


def answer(res, eng):
    return {"answer": (res, eng)}  # run() adds its timing to what present returns


def run(ex, v):
    return ex.run(v, answer)["answer"]


def test_one_engine_per_backend_and_the_about(engine):
    ex = Explorer(engine, {"model": "micro"}, gate=Gate(running=1, waiting=0))
    assert ex.about["model"] == "micro" and ex.about["backends"] == ["bound", "exact", "ivf"]
    assert ex.about["stores"][DEFAULT_STORE]["size"] == engine.store.size
    assert ex.engine_for(vp(prompt="the king ")) is engine
    assert ex.engine_for(vp(prompt="the king ", backend="exact")).search.name == "exact"
    with pytest.raises(QueryError, match="this server has no store 'context9'; it has: pool"):
        ex.engine_for(vp(prompt="the king ", store="context9"))


def test_answers_are_cached_and_evicted(engine):
    ex = Explorer(engine, {}, cache_size=1, gate=Gate(running=1, waiting=0))
    first, eng = run(ex, vp(prompt="the king "))
    assert eng is engine and first.prompt == "the king "
    assert run(ex, vp(prompt="the king "))[0] is first  # the cache's answer
    other, _ = run(ex, vp(prompt="the king ", backend="exact"))
    assert other is not first and other.backend == "exact"
    again, _ = run(ex, vp(prompt="the king "))  # evicted: asked again, the same numbers
    assert again is not first and again.hellinger == first.hellinger
    small = Explorer(engine, {}, cache_rows=0, gate=Gate(running=1, waiting=0))
    assert run(small, vp(prompt="my lord"))[0] is not run(small, vp(prompt="my lord"))[0]


def test_a_full_gate_turns_the_engine_call_away(engine):
    gate = Gate(running=1, waiting=0)
    ex = Explorer(engine, {}, gate=gate)
    with gate:
        with pytest.raises(Busy):
            ex.run(vp(prompt="the king "), answer)
    assert gate.active == 0


def test_defaults_as_the_form_shows_them(engine):
    d = Explorer(engine, {}, gate=Gate()).defaults()
    assert set(d) == {"thresholds", "weights", "rule", "rule_text", "weights_rule"}
    d["rule"] = "changed"  # a copy: the explorer's own stays
    assert Explorer(engine, {}, gate=Gate()).defaults()["rule"] != "changed"
    assert len(d["thresholds"].split(",")) == len(d["weights"].split(",")) == engine.store.n_layer


def test_the_service_imports_no_web_framework():
    tree = ast.parse((REPO / "app" / "web" / "explorer.py").read_text())
    modules = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | \
        {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(m.split(".")[0] in ("fastapi", "starlette", "jinja2") for m in modules), modules
