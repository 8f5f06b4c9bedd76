"""Baselines: suffix array, longest-suffix-match n-gram, unigram, logit lens (tiny hand-made cases)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from app.study.baselines.common import counts_to_probs
from app.study.baselines.logit_lens import LogitLens, logit_lens
from app.study.baselines.ngram import SuffixNgram
from app.study.baselines.suffix_array import suffix_array
from app.study.baselines.unigram import Unigram

VOCAB = "abcdx"  # "x" never occurs in the corpora below


def enc(s: str) -> np.ndarray:
    return np.array([VOCAB.index(c) for c in s], dtype=np.int64)


def counts(**kw) -> list[int]:
    return [kw.get(c, 0) for c in VOCAB]


def ngram(text: str, **kw) -> SuffixNgram:
    return SuffixNgram(enc(text), vocab_size=len(VOCAB), **kw)


# --- suffix array --------------------------------------------------------------------------------
@pytest.mark.parametrize("n,v,seed", [(1, 1, 0), (2, 1, 0), (40, 1, 0), (200, 2, 1), (300, 3, 2),
                                      (257, 65, 3)])
def test_suffix_array_equals_naive_sort(n, v, seed):
    s = np.random.default_rng(seed).integers(0, v, n)
    if n > 50:
        s[10:60] = s[100:150] if n >= 150 else s[10:60]  # a long repeat: several doubling rounds
    naive = sorted(range(n), key=lambda i: tuple(s[i:]))
    assert suffix_array(s).tolist() == naive


def test_suffix_array_hand_case():
    # suffixes of "banana": a(5) ana(3) anana(1) banana(0) na(4) nana(2)
    s = np.array([ord(c) for c in "banana"])
    assert suffix_array(s).tolist() == [5, 3, 1, 0, 4, 2]


# --- longest match ---------------------------------------------------------------------------------
def test_longest_match_and_counts():
    ng = ngram("abcabd")
    m = ng.match(enc("ab"))  # at 0 (then c) and at 3 (then d)
    assert (m.length, m.occurrences, m.counts.tolist()) == (2, 2, counts(c=1, d=1))
    m = ng.match(enc("cab"))  # at 2 only, then d
    assert (m.length, m.occurrences, m.counts.tolist()) == (3, 1, counts(d=1))
    m = ng.match(enc("xab"))  # "xab" is absent: back off to "ab"
    assert (m.length, m.occurrences, m.counts.tolist()) == (2, 2, counts(c=1, d=1))
    m = ng.match(enc("db"))  # "db" is absent; "b" at 1 (then c) and 4 (then d)
    assert (m.length, m.occurrences, m.counts.tolist()) == (1, 2, counts(c=1, d=1))
    m = ng.match(enc("abcab"), max_len=2)  # capped: "ab"
    assert (m.length, m.counts.tolist()) == (2, counts(c=1, d=1))
    assert ng.match(enc("abcab")).length == 5  # uncapped: the full context, then d
    assert ng.match(enc("abcab")).counts.tolist() == counts(d=1)


def test_back_off_when_the_longest_match_ends_the_corpus():
    ng = ngram("abcab")
    # "cab" occurs only at the very end (no follower); "ab" also ends the corpus once, which is
    # not counted: one occurrence, followed by c.
    m = ng.match(enc("cab"))
    assert (m.length, m.occurrences, m.counts.tolist()) == (2, 1, counts(c=1))
    # "abd" corpus: every suffix of "abd" occurs only at the end -> the empty suffix.
    ng = ngram("abcabd")
    m = ng.match(enc("abd"))
    assert (m.length, m.occurrences) == (0, 5)
    assert m.counts.tolist() == counts(a=1, b=2, c=1, d=1)  # corpus[1:] = "bcabd"


def test_empty_suffix_equals_the_unigram():
    ng, uni = ngram("abcabd"), Unigram(enc("abcabd"), vocab_size=len(VOCAB))
    assert uni.counts.tolist() == counts(a=1, b=2, c=1, d=1)  # "bcabd": positions with a predecessor
    for ctx, kw in [("x", {}), ("", {}), ("cab", {"max_len": 0}), ("xxxx", {})]:
        m = ng.match(enc(ctx), **kw)
        assert m.length == 0 and m.occurrences == 5
        assert m.counts.tolist() == uni.counts.tolist()
    np.testing.assert_allclose(uni.distributions(np.array([[0, 1], [2, 3]])),
                               [[1 / 5, 2 / 5, 1 / 5, 1 / 5, 0]] * 2)
    assert not uni.predict(np.zeros((3, 1), dtype=int)).fallback.any()


def test_exclude_pos():
    ng = ngram("abcabd")
    m = ng.match(enc("ab"), exclude_pos=0)  # leave out the one ending at 2 (followed by c)
    assert (m.length, m.occurrences, m.counts.tolist()) == (2, 1, counts(d=1))
    m = ng.match(enc("ab"), exclude_pos=3)
    assert (m.length, m.occurrences, m.counts.tolist()) == (2, 1, counts(c=1))
    # "cab" only occurs at 2: without it, back off to "ab", minus the occurrence ending at 5.
    m = ng.match(enc("cab"), exclude_pos=2)
    assert (m.length, m.occurrences, m.counts.tolist()) == (2, 1, counts(c=1))
    m = ng.match(enc("cab"), exclude_pos=2, max_len=2)  # the cap does not move the exclusion
    assert (m.length, m.occurrences, m.counts.tolist()) == (2, 1, counts(c=1))
    # "c" occurs once (at 2, then a): back off to the unigram, less that one "a".
    m = ng.match(enc("c"), exclude_pos=2)
    assert (m.length, m.occurrences, m.counts.tolist()) == (0, 4, counts(b=2, c=1, d=1))
    # An occurrence ending the corpus has no follower: nothing to exclude.
    m = ng.match(enc("abd"), exclude_pos=3)
    assert (m.length, m.occurrences, m.counts.tolist()) == (0, 5, counts(a=1, b=2, c=1, d=1))
    with pytest.raises(ValueError, match="not an occurrence"):
        ng.match(enc("ab"), exclude_pos=1)
    with pytest.raises(ValueError, match="not an occurrence"):
        ng.match(enc("bd"), exclude_pos=5)  # runs past the end


def test_all_zero_counts_fall_back_to_the_unigram_and_are_flagged():
    ng = ngram("ab")  # "a" once, then b; the unigram is {b: 1}
    pred = ng.predict(enc("a")[None], exclude_pos=[0])
    assert pred.info["lengths"].tolist() == [0] and pred.info["occurrences"].tolist() == [0]
    assert pred.fallback.tolist() == [True]
    assert pred.probs.tolist() == [[0, 1, 0, 0, 0]]
    pred = ng.predict(enc("a")[None])
    assert pred.fallback.tolist() == [False] and pred.probs.tolist() == [[0, 1, 0, 0, 0]]
    probs, fb = counts_to_probs(np.array([[0, 0, 0], [1, 3, 0]]), np.array([0.5, 0.25, 0.25]))
    assert fb.tolist() == [True, False]
    assert probs.tolist() == [[0.5, 0.25, 0.25], [0.25, 0.75, 0.0]]


# --- against a naive scan --------------------------------------------------------------------------
def naive(corpus: np.ndarray, ctx: np.ndarray, V: int, max_len=None, exclude_pos=None):
    N, m = len(corpus), len(ctx)
    skip_end = None if exclude_pos is None else exclude_pos + m
    top = m if max_len is None else min(m, max_len)
    for L in range(top, -1, -1):
        suf = list(ctx[m - L:])
        ends = [e for e in range(max(L, 1), N)  # e < N: followed by corpus[e]
                if list(corpus[e - L:e]) == suf and e != skip_end]
        if ends or L == 0:
            c = np.zeros(V, dtype=np.int64)
            for e in ends:
                c[corpus[e]] += 1
            return c, L, len(ends)


def random_cases(rng, corpus, V, n, T=None):
    out = []
    for _ in range(n):
        t = int(rng.integers(0, 13)) if T is None else T
        if rng.random() < 0.6 and t < len(corpus):
            s = int(rng.integers(0, len(corpus) - t + 1))
            ctx = corpus[s:s + t].copy()
            if rng.random() < 0.3 and t:
                ctx[0] = rng.integers(0, V)  # an almost-match
                s = None
            out.append((ctx, s))
        else:
            out.append((rng.integers(0, V, t), None))
    return out


@pytest.mark.parametrize("seed,V", [(0, 2), (1, 3), (2, 5)])
def test_longest_suffix_counts_equal_a_naive_scan(seed, V):
    rng = np.random.default_rng(seed)
    corpus = rng.integers(0, V, 250)
    corpus[100:140] = corpus[20:60]  # a long repeat
    ng = SuffixNgram(corpus, vocab_size=V + 1)  # one id that never occurs
    for ctx, s in random_cases(rng, corpus, V, 120):
        max_len = None if rng.random() < 0.7 else int(rng.integers(0, 6))
        exact = s is not None and np.array_equal(corpus[s:s + len(ctx)], ctx)
        ex = s if exact and rng.random() < 0.6 else None
        want = naive(corpus, ctx, V + 1, max_len, ex)
        got = ng.match(ctx, max_len=max_len, exclude_pos=ex)
        assert (got.counts.tolist(), got.length, got.occurrences) == \
            (want[0].tolist(), want[1], want[2]), (ctx.tolist(), max_len, ex)


def test_batched_equals_single():
    rng = np.random.default_rng(7)
    V = 4
    corpus = rng.integers(0, V, 400)
    corpus[200:260] = corpus[0:60]
    ng = SuffixNgram(corpus, vocab_size=V, chunk=7)  # several chunks
    cases = random_cases(rng, corpus, V, 40, T=9)
    ctxs = np.stack([c for c, _ in cases])
    ex = np.array([s if s is not None and np.array_equal(corpus[s:s + 9], c) else -1 for c, s in cases])
    assert (ex >= 0).sum() >= 5
    for max_len in (None, 4):
        c, l, o = ng.match_batch(ctxs, max_len=max_len, exclude_pos=ex)
        for i, (ctx, _) in enumerate(cases):
            m = ng.match(ctx, max_len=max_len, exclude_pos=None if ex[i] < 0 else int(ex[i]))
            assert (c[i].tolist(), l[i], o[i]) == (m.counts.tolist(), m.length, m.occurrences)
            want = naive(corpus, ctx, V, max_len, None if ex[i] < 0 else int(ex[i]))
            assert (c[i].tolist(), l[i], o[i]) == (want[0].tolist(), want[1], want[2])
    probs = ng.distributions(ctxs, exclude_pos=ex)
    assert probs.shape == (40, V) and probs.dtype == np.float64
    np.testing.assert_allclose(probs.sum(1), 1.0)


# --- logit lens ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_gpt():
    from model.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=7, block_size=16, n_layer=3, n_head=2, n_embd=16, dropout=0.0))
    with torch.no_grad():  # larger random weights than the init: distinct, peaked distributions
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return model.eval()


def test_logit_lens_last_block_is_the_model_softmax(tiny_gpt):
    ids = np.random.default_rng(0).integers(0, 7, (5, 11))
    lens = logit_lens(tiny_gpt, ids, batch=2)  # several batches
    assert lens.shape == (3, 5, 7) and lens.dtype == np.float64
    np.testing.assert_allclose(lens.sum(-1), 1.0, atol=1e-12)
    with torch.no_grad():
        logits, _ = tiny_gpt(torch.from_numpy(ids))  # a plain full forward pass
    model_probs = torch.softmax(logits[:, -1].double(), -1).numpy()
    np.testing.assert_allclose(lens[-1], model_probs, atol=1e-6)
    np.testing.assert_allclose(LogitLens(tiny_gpt).distributions(ids), model_probs, atol=1e-6)
    # Earlier blocks: the head read from the residual after that block, computed by hand.
    with torch.no_grad():
        x = tiny_gpt.tok_emb(torch.from_numpy(ids)) + tiny_gpt.pos_emb(torch.arange(11))
        for b in range(2):
            x = tiny_gpt.blocks[b](x)
            want = torch.softmax(tiny_gpt.head(tiny_gpt.ln_f(x[:, -1])).double(), -1).numpy()
            np.testing.assert_allclose(lens[b], want, atol=1e-6)
            assert np.abs(lens[b] - lens[-1]).max() > 1e-2  # a different read-out, not a copy
    lens0 = LogitLens(tiny_gpt, block=0).predict(ids)  # one batch: bit for bit logit_lens's
    np.testing.assert_array_equal(lens0.probs, logit_lens(tiny_gpt, ids)[0])
    np.testing.assert_allclose(lens0.probs, lens[0], atol=1e-6)  # batches of 2: float32 rounding
    assert not lens0.fallback.any()
    with pytest.raises(ValueError):
        LogitLens(tiny_gpt, block=3)
