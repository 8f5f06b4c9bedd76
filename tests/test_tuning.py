"""Live tuning's table (app/study/tuning.py): its figures at grid thresholds are what the batched
evaluation gives on the same prompts and settings, with no search after the build."""
from __future__ import annotations

import numpy as np
import pytest

from app.approx import QueryError, QuerySettings
from app.study.evaluation import evaluate
from app.study.tuning import TuningTable, build_table, cache_path, grid, load_or_build, sample_prompts


@pytest.fixture(scope="module")
def table(engine):
    prompts, describe = sample_prompts(engine, 120, seed=3)
    return prompts, build_table(engine, prompts, describe, batch_size=64)


class NoSearch:
    """A search backend that refuses: the tuning figures must never reach it."""

    name = "refuses"

    def __getattr__(self, name):
        raise AssertionError(f"the tuning figures called the search ({name})")


def test_grid_holds_the_calibrated_value_and_the_sweep():
    g = grid(0.99)
    assert 0.99 in g.tolist() and 0.98 in g.tolist() and np.isclose(g.max(), 0.9975)
    assert np.all(np.diff(g) > 0)


@pytest.mark.parametrize("shift,weights,blend", [
    (0, None, "raw"), (-12, None, "raw"), (9, [1, 0, 2, 0.5, 3, 0.01], "normalised"),
    (-24, [0.3, 0.3, 0.3, 0.3, 0.3, 0.3], "raw")])
def test_figures_equal_the_evaluation(engine, table, shift, weights, blend):
    prompts, t = table
    centre = t.snap(QuerySettings().resolved(engine.store).thresholds)
    idx = [int(np.clip(i + shift, 0, len(lv) - 1)) for i, lv in zip(centre, t.levels)]
    s = QuerySettings(thresholds=t.thresholds(idx), weights=weights, blend=blend)
    w = s.resolved(engine.store).weights
    ev = evaluate(engine, prompts, s, batch_size=64, progress=False)
    got = t.score(idx, w, blend)
    assert got["prompts"] == ev["prompts"] == len(prompts)
    assert np.allclose(got["per_prompt_h"], ev["per_prompt_h"], atol=1e-12)
    assert got["mean_h"] == pytest.approx(ev["hellinger"]["mean"], abs=1e-12)
    assert got["top1"] == pytest.approx(ev["topk"]["1"]["order"])
    assert got["median_neighbours"] == ev["neighbours"]["median"]
    assert got["fallback_share"] == pytest.approx(ev["fallback_share"])


def test_figures_and_fits_never_search(engine, table):
    from app.study.weights import split_prompts

    _, t = table
    eng = engine.with_search(NoSearch())  # what the page holds after the build
    assert eng is not engine
    idx = t.snap(QuerySettings().resolved(engine.store).thresholds)
    w = QuerySettings().resolved(engine.store).weights
    tune, test = split_prompts(t.n, seed=0)
    fitted = t.fit_thresholds(idx, w, "raw", tune, rounds=1)
    before, after = t.score(idx, w, "raw", tune)["mean_h"], t.score(fitted, w, "raw", tune)["mean_h"]
    assert after <= before + 1e-12  # block by block, each step can only lower the tuning half's H
    weights = t.fit_weights(idx, "raw", tune)
    assert len(weights) == engine.store.n_layer and max(weights) == pytest.approx(1.0)


def test_snap_and_refusals(table):
    _, t = table
    assert t.snap([lv[3] + 1e-7 for lv in t.levels]) == [3] * t.n_layer
    with pytest.raises(QueryError, match="one value per block"):
        t.snap([0.5])


def test_cached_beside_the_store_and_read_back(engine, tmp_path):
    t = load_or_build(engine, 40, seed=5)
    path = cache_path(engine, 40, 5)
    assert path.exists() and path.parent.name == engine.store.path.name + ".tuning"
    again = TuningTable.load(path)
    assert again.info == t.info and all(np.array_equal(a, b) for a, b in zip(again.cum, t.cum))
    assert load_or_build(engine, 40, seed=5).info["seconds"] == t.info["seconds"]  # not rebuilt
    assert cache_path(engine, 41, 5) != path
