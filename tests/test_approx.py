import numpy as np
import pytest

from app.approx import QueryError, QuerySettings, blend
from app.metrics import hellinger, topk_agreement


def test_hellinger_bounds_and_symmetry():
    p = np.array([0.2, 0.3, 0.5, 0.0])
    q = np.array([0.0, 0.0, 0.0, 1.0])
    r = np.array([0.1, 0.6, 0.3, 0.0])
    assert hellinger(p, p) == pytest.approx(0.0, abs=1e-12)
    assert hellinger(p, q) == pytest.approx(1.0)
    assert hellinger(p, r) == pytest.approx(hellinger(r, p))
    expected = np.sqrt(((np.sqrt(p) - np.sqrt(r)) ** 2).sum() / 2)
    assert hellinger(p, r) == pytest.approx(expected)
    assert 0 < hellinger(p, r) < 1


def test_blend_equals_a_hand_computation():
    counts = np.array([[2, 0, 0], [1, 1, 0], [0, 0, 4]], dtype=float)  # 3 blocks x 3 tokens
    w = np.array([0.5, 1.0, 0.25])
    approx, raw, norm = blend(counts, w, "raw")
    # raw: 0.5*[2,0,0] + 1*[1,1,0] + 0.25*[0,0,4] = [2, 1, 1] -> /4
    assert approx == pytest.approx([0.5, 0.25, 0.25])
    assert raw == pytest.approx([1 / 4, 2 / 4, 1 / 4])
    approx_n, _, norm = blend(counts, w, "normalised")
    # normalised: 0.5*[1,0,0] + 1*[.5,.5,0] + .25*[0,0,1] = [1, .5, .25] -> /1.75
    assert approx_n == pytest.approx([1 / 1.75, 0.5 / 1.75, 0.25 / 1.75])
    assert norm == pytest.approx([0.5 / 1.75, 1 / 1.75, 0.25 / 1.75])
    empty, _, _ = blend(np.zeros((3, 3)), w)
    assert (empty == 0).all()
    batch, _, _ = blend(np.stack([counts, counts * 2]), w)
    assert batch[0] == pytest.approx(batch[1])


def test_topk_agreement():
    p = np.array([0.5, 0.3, 0.15, 0.05, 0.0, 0.0])
    q = np.array([0.4, 0.2, 0.3, 0.1, 0.0, 0.0])
    a = topk_agreement(p, q)
    assert a[1] == {"order": True, "set": True}
    assert a[2] == {"order": False, "set": False}
    assert a[3] == {"order": False, "set": True}
    assert a[5]["set"] and not a[5]["order"]


def test_query_matches_a_hand_blend(engine):
    res = engine.query("the king ", QuerySettings(mode="topk", k=5, weights=[1, 0, 0, 0, 0, 2]))
    c0, c5 = res.blocks[0].counts, res.blocks[5].counts
    want = (c0 + 2 * c5) / (c0 + 2 * c5).sum()
    assert res.approx == pytest.approx(want)
    assert res.model_probs.sum() == pytest.approx(1.0)
    assert res.hellinger == pytest.approx(float(hellinger(res.model_probs, want)))
    assert res.backend == "bound"
    assert all(b.n == 5 for b in res.blocks)


def test_self_exclusion(engine):
    store = engine.store
    text = "".join(engine.tok.chars[i] for i in store.pool.strings(store.corpus_ids, [30])[0])
    res = engine.query(text, QuerySettings(mode="topk", k=3))
    # It finds itself at cosine ~1 (not always first: another string's float16 vector can round
    # closer to the prompt's own float32 output than its stored copy does).
    assert all(30 in b.neighbours.rows[:3] for b in res.blocks)
    assert all(b.neighbours.sims[list(b.neighbours.rows).index(30)] > 0.999 for b in res.blocks)
    res = engine.query(text, QuerySettings(mode="topk", k=3, exclude_self=True))
    assert all(30 not in b.neighbours.rows for b in res.blocks)


@pytest.mark.parametrize("prompt, message", [
    ("", "empty"),
    ("the king Z", "not in the model's vocabulary: 'Z'"),
    ("the king " * 10, "at most 32"),
])
def test_bad_prompts(engine, prompt, message):
    with pytest.raises(QueryError, match=message):
        engine.query(prompt)


@pytest.mark.parametrize("qs, message", [
    (QuerySettings(thresholds=[0.5] * 5), "one value per block"),
    (QuerySettings(thresholds=[1.5] * 6), r"\[-1, 1\]"),
    (QuerySettings(weights=[1, 1, 1, 1, 1, float("nan")]), "finite"),
    (QuerySettings(weights=[1, 1, 1, 1, 1, -1]), "positive"),
    (QuerySettings(mode="topk", k=0), "k must be"),
    (QuerySettings(mode="nearest"), "mode must be"),
])
def test_bad_settings(engine, qs, message):
    with pytest.raises(QueryError, match=message):
        engine.query("the king ", qs)


def test_reference_thresholds_resolve_by_name_on_six_blocks(engine):
    from app.defaults import REFERENCE_THRESHOLDS

    s = QuerySettings(thresholds="reference").resolved(engine.store)
    assert s.thresholds == list(REFERENCE_THRESHOLDS)
    with pytest.raises(QueryError, match="numbers or 'reference'"):
        QuerySettings(thresholds="calibrated").resolved(engine.store)
