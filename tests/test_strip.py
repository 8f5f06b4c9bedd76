"""app/strip.py: every position of a prompt at once equals a single query of each prefix."""
import numpy as np
import pytest

from app.approx import QuerySettings
from app.strip import strip


@pytest.mark.parametrize("qs", [QuerySettings(), QuerySettings(mode="topk", k=7),
                                      QuerySettings(exclude_self=True, blend="normalised")])
def test_every_position_is_the_single_query_of_its_prefix(engine, qs):
    """The same answers up to float32 rounding: one forward pass over the whole prompt and one pass
    per prefix multiply matrices of different shapes, so an activation may differ in its last bits
    and a string lying exactly at a threshold may fall on the other side (seen: 724 against 723
    neighbours in one block of one prefix)."""
    prompt = "the king is dead, long may he"
    got = strip(engine, prompt, qs)
    assert [p["char"] for p in got["positions"]] == list(prompt)
    for i, p in enumerate(got["positions"]):
        one = engine.query(prompt[: i + 1], qs)
        for ch, prob in p["model"]:  # the model's distribution after the prefix, as rounded
            assert prob == pytest.approx(one.model_probs[engine.tok.chars.index(ch)], abs=1e-4)
        for a, b in zip(p["neighbours"], (b.n for b in one.blocks)):
            assert abs(a - b) <= max(1, b // 200), (i, p["neighbours"], [b.n for b in one.blocks])
        assert p["hellinger"] == pytest.approx(one.hellinger, abs=5e-3), i
        order = np.argsort(-one.model_probs, kind="stable")
        assert p["model"][0][0] == engine.tok.chars[int(order[0])]
        assert (p["fallback"] is None) == (one.fallback is None)
    assert got["mean_hellinger"] == pytest.approx(np.mean([p["hellinger"] for p in got["positions"]]), abs=1e-3)
    assert set(got["timing"]) == {"forward", "search", "blend"}


def test_a_pool_string_is_marked_in_the_pool(engine):
    n = engine.store.pool.n
    text = engine.tok.decode(engine.store.pool.strings(engine.store.corpus_ids)[5])
    got = strip(engine, text)
    assert got["positions"][n - 1]["in_pool"] and not got["positions"][0]["in_pool"]


def test_an_intervened_strip_is_the_intervened_model(engine):
    from model.gpt import Intervention

    iv = Intervention(drop_ffn=frozenset({1}))
    got = strip(engine, "the king", None, iv)
    one = engine.query("the king", None, iv)
    assert got["positions"][-1]["hellinger"] == pytest.approx(one.hellinger, abs=5e-3)
    assert got["positions"][-1]["model"] != strip(engine, "the king")["positions"][-1]["model"]
