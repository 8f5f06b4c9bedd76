"""/tune and /api/tune: the tuning instrument's routes (the table's arithmetic: tests/test_tuning.py)."""
from __future__ import annotations

import time

import numpy as np
import pytest


@pytest.fixture(scope="module")
def ready(client):
    """The client once the tuning table is built: 202 with progress until then."""
    first = client.get("/api/tune")
    assert first.status_code in (200, 202)
    if first.status_code == 202:
        assert first.headers["retry-after"] and "total" in first.json()["building"]
        page = client.get("/tune")
        assert page.status_code == 202 and page.headers["refresh"] and "Building the tuning table" in page.text
    deadline = time.time() + 120
    while client.get("/api/tune").status_code == 202 and time.time() < deadline:
        time.sleep(0.2)
    return client


def test_the_json_twin_matches_the_evaluation(ready, engine):
    from app.approx import QuerySettings
    from app.study.evaluation import evaluate
    from app.study.tuning import sample_prompts

    d = ready.get("/api/tune", params={"thresholds": "0.9,0.9,0.9,0.9,0.9,0.8", "blend": "normalised"}).json()
    ths = d["settings"]["thresholds"]
    assert all(t in b["levels"] for t, b in zip(ths, d["blocks"]))  # moved onto the grids
    prompts, _ = sample_prompts(engine, d["prompts"])
    ev = evaluate(engine, prompts, QuerySettings(thresholds=ths, blend="normalised"), progress=False)
    assert d["figures"]["mean_h"] == pytest.approx(ev["hellinger"]["mean"], abs=1e-12)
    assert d["figures"]["top1"] == pytest.approx(ev["topk"]["1"]["order"])
    assert sum(d["figures"]["h_hist"]) == d["prompts"]
    assert d["permalink"].startswith("/tune?thresholds=") and "&on=micro." in d["permalink"]
    assert "--blend normalised" in d["cli"] and d["eval_command"].startswith("ffnlens eval --model micro")


def test_a_prompt_and_the_fits(ready):
    d = ready.get("/api/tune", params={"prompt": "the king", "fit": "weights"}).json()
    assert d["prompt"]["prompt"] == "the king" and 0 <= d["prompt"]["hellinger"] <= 1
    assert d["prompt"]["model"] and d["prompt"]["approx"]
    fit = d["fit"]
    assert fit["what"] == "weights" and fit["tuning_prompts"] + fit["test_prompts"] == d["prompts"]
    assert max(d["settings"]["weights"]) == pytest.approx(1.0)
    t = ready.get("/api/tune", params={"fit": "thresholds"}).json()
    assert t["fit"]["what"] == "thresholds" and np.isfinite(t["fit"]["test_after"]["mean_h"])


@pytest.mark.parametrize("params,message", [
    ({"thresholds": "0.9,2"}, "one value per block"), ({"thresholds": "0.9,0.9,0.9,0.9,0.9,2"}, "[-1, 1]"),
    ({"weights": "-1,1,1,1,1,1"}, "zero or positive"), ({"fit": "everything"}, "fit must be"),
    ({"blend": "soft"}, "blend must be"), ({"prompt": "the \u20ac"}, "vocabulary")])
def test_bad_settings_say_what_to_fix(ready, params, message):
    r = ready.get("/api/tune", params=params)
    assert r.status_code == 400 and message in r.json()["detail"]
    page = ready.get("/tune/figures", params=params)
    assert page.status_code == 400 and "error" in page.text


def test_the_tuning_view_downloads_and_draws(ready):
    r = ready.get("/tune", params={"thresholds": "0.9,0.9,0.9,0.9,0.9,0.8", "export": "1"})
    assert r.status_code == 200 and r.headers["content-disposition"].startswith('attachment; filename="ffnlens-tune')
    assert "<script" not in r.text and 'id="ffnlens-data"' in r.text
    png = ready.get("/chart/tune.png", params={"weights": "1,1,1,1,1,1"})
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
