"""The longest-suffix-match n-gram baseline with back-off ("infini-gram" style): the next-character
counts after every corpus occurrence of the longest suffix of the context that occurs in the corpus
followed by a character, found with a suffix array of the reversed corpus."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .common import Prediction, as_prompts, corpus_ids_checked, counts_to_probs, unigram_counts
from .suffix_array import suffix_array


@dataclass
class Match:
    counts: np.ndarray  # (V,) int64: next-character counts over the matched suffix's occurrences
    length: int  # length of the matched suffix (0: the empty suffix, i.e. the unigram)
    occurrences: int  # occurrences counted (each has a follower) = counts.sum()


class SuffixNgram:
    """Longest-suffix-match next-character counts with back-off, over one corpus.

    For a context c (length m) the answer is the longest suffix ``c[m-L:]`` that occurs in the
    corpus *followed by a character* (an occurrence ending the corpus does not count), and the
    counts of the characters following all such occurrences. Because every occurrence of a suffix
    also contains occurrences of its shorter suffixes with the same follower, "has a follower" is
    monotone in L: backing off means taking the largest L that has one. L = 0 (the empty suffix)
    gives ``bincount(corpus[1:])``, the unigram. ``max_len`` (of :meth:`match` and
    :meth:`match_batch`) caps L (the context is cut to its last ``max_len`` ids first).

    Implementation: a suffix array of the *reversed* corpus without its last id
    (``corpus[:N-1][::-1]``), so a suffix of the context is a prefix of the reversed context and
    every suffix-array entry is an occurrence end ``e <= N - 1`` that has a follower
    (entry k <-> end e = N - 1 - k). One binary search places the reversed context; the longest
    match is its longest common prefix with its two neighbours in suffix-array order; two more
    binary searches give the range of occurrences of that length, whose followers are counted.
    Batches search in lockstep (numpy, no Python loop over the binary search).

    Self-exclusion: ``exclude_pos = s`` says the full context occurs at ``corpus[s:s + m]`` (checked;
    a ValueError otherwise). Exactly one occurrence is then left out at every length L: the one
    ending at ``e = s + m`` (its suffix of length L, ``corpus[s + m - L:s + m]``), i.e. one count of
    the follower ``corpus[s + m]``, also at L = 0. The match length is then the longest L with some
    *other* followed occurrence. When ``s + m == N`` that occurrence has no follower and nothing is
    excluded. ``max_len`` does not change which occurrence is excluded.
    """

    name = "ngram"

    def __init__(self, corpus_ids, vocab_size: int | None = None, chunk: int = 512):
        corpus, self.vocab_size = corpus_ids_checked(corpus_ids, vocab_size)
        self.unigram_counts = unigram_counts(corpus, self.vocab_size)
        self.unigram_probs = self.unigram_counts / self.unigram_counts.sum()
        self.corpus = corpus
        self.N = len(corpus)
        self.M = self.N - 1  # ends 1..N-1 have followers; suffix-array entry k <-> end N-1-k
        self.rev = np.ascontiguousarray(corpus[: self.M][::-1]).astype(np.int32)
        self.sa = suffix_array(self.rev)
        self.isa = np.empty(self.M, dtype=np.int64)  # entry k's position in the suffix array
        self.isa[self.sa] = np.arange(self.M)
        self.follower = corpus[self.M - self.sa]  # (M,) follower of each suffix-array slot
        self.chunk = chunk

    # -- low-level lockstep searches over the reversed text --
    def _window(self, slots: np.ndarray, width: int) -> np.ndarray:
        """(B, width) ids of the reversed suffixes at ``slots`` (-1 past the end)."""
        start = self.sa[np.clip(slots, 0, self.M - 1)]
        idx = start[:, None] + np.arange(width)
        return np.where(idx < self.M, self.rev[np.minimum(idx, self.M - 1)], -1)

    def _compare(self, slots, pat, lens) -> np.ndarray:
        """sign(suffix at slot, truncated to lens) vs the pattern row: -1, 0 or +1 per row."""
        w = self._window(slots, pat.shape[1])
        neq = (w != pat) & (np.arange(pat.shape[1]) < lens[:, None])
        has = neq.any(1)
        first = neq.argmax(1)
        r = np.arange(len(slots))
        return np.where(has, np.sign(w[r, first] - pat[r, first]), 0)

    def _lcp(self, slots, pat, lens) -> np.ndarray:
        """Longest common prefix (capped at lens) of the pattern row and the suffix at slot;
        -1 where the slot lies outside the suffix array."""
        w = self._window(slots, pat.shape[1])
        neq = (w != pat) | (np.arange(pat.shape[1]) >= lens[:, None])
        lcp = np.where(neq.any(1), neq.argmax(1), pat.shape[1])
        return np.where((slots >= 0) & (slots < self.M), lcp, -1)

    def _bound(self, pat, lens, upper: bool) -> np.ndarray:
        """First slot whose suffix (first lens ids) is >= the pattern (> with ``upper``)."""
        B = len(pat)
        lo, hi = np.zeros(B, dtype=np.int64), np.full(B, self.M, dtype=np.int64)
        while True:
            open_ = lo < hi
            if not open_.any():
                return lo
            mid = (lo + hi) // 2
            c = self._compare(mid, pat, lens)
            right = open_ & ((c <= 0) if upper else (c < 0))
            left = open_ & ~right
            lo = np.where(right, mid + 1, lo)
            hi = np.where(left, mid, hi)

    # -- public --
    def match_batch(self, contexts, max_len: int | None = None, exclude_pos=None):
        """contexts (B, T) ids -> (counts (B, V) int64, lengths (B,) int64, occurrences (B,) int64).

        ``exclude_pos``: None, or (B,) ints, each a start position of that row's full context in
        the corpus, or -1 for no exclusion (see the class docstring)."""
        ctx = as_prompts(contexts, self.vocab_size)
        B, T = ctx.shape
        cap = max_len
        if cap is not None and cap < 0:
            raise ValueError("max_len must be >= 0")
        width = T if cap is None else min(T, cap)
        ex = np.full(B, -1, dtype=np.int64) if exclude_pos is None else \
            np.asarray(exclude_pos, dtype=np.int64).reshape(B)
        self_slot = np.full(B, -1, dtype=np.int64)  # suffix-array slot of the excluded occurrence
        self_next = np.zeros(B, dtype=np.int64)
        for i in np.flatnonzero(ex >= 0):
            s, e = int(ex[i]), int(ex[i]) + T
            if e > self.N or not np.array_equal(self.corpus[s:e], ctx[i]):
                raise ValueError(f"exclude_pos {s} is not an occurrence of context row {i}")
            if e <= self.M:  # it has a follower; e >= 1 unless the context is empty
                if e >= 1:
                    self_slot[i] = self.isa[self.M - e]
                    self_next[i] = self.corpus[e]
        counts = np.zeros((B, self.vocab_size), dtype=np.int64)
        lengths = np.zeros(B, dtype=np.int64)
        occ = np.zeros(B, dtype=np.int64)
        for a in range(0, B, self.chunk):
            b = min(B, a + self.chunk)
            c, l, o = self._match_chunk(ctx[a:b, T - width:], self_slot[a:b], self_next[a:b])
            counts[a:b], lengths[a:b], occ[a:b] = c, l, o
        return counts, lengths, occ

    def _match_chunk(self, ctx, self_slot, self_next):
        B, W = ctx.shape
        pat = np.ascontiguousarray(ctx[:, ::-1])  # reversed: context suffixes are its prefixes
        full = np.full(B, W, dtype=np.int64)
        if W:
            ins = self._bound(pat, full, upper=False)
            left = ins - 1  # never the excluded slot: that one is >= ins (it matches all W ids)
            right = np.where(ins == self_slot, ins + 1, ins)
            lcp = np.maximum(self._lcp(left, pat, full), self._lcp(right, pat, full))
            lengths = np.maximum(lcp, 0)
            lo = self._bound(pat, lengths, upper=False)
            hi = self._bound(pat, lengths, upper=True)
        else:
            lengths = np.zeros(B, dtype=np.int64)
            lo, hi = np.zeros(B, dtype=np.int64), np.full(B, self.M, dtype=np.int64)
        counts = np.zeros((B, self.vocab_size), dtype=np.int64)
        for i in range(B):
            if lengths[i] == 0:
                counts[i] = self.unigram_counts
            else:
                counts[i] = np.bincount(self.follower[lo[i]:hi[i]], minlength=self.vocab_size)
        inside = (self_slot >= 0) & (self_slot >= lo) & (self_slot < hi)
        counts[np.flatnonzero(inside), self_next[inside]] -= 1
        return counts, lengths, hi - lo - inside

    def match(self, context, max_len: int | None = None, exclude_pos: int | None = None) -> Match:
        """The longest followed suffix of a 1-D context, with its next-character counts."""
        ctx = np.asarray(context).reshape(1, -1)
        c, l, o = self.match_batch(ctx, max_len, None if exclude_pos is None else [exclude_pos])
        return Match(counts=c[0], length=int(l[0]), occurrences=int(o[0]))

    def predict(self, prompts_ids, exclude_pos=None) -> Prediction:
        counts, lengths, occ = self.match_batch(prompts_ids, None, exclude_pos)
        probs, fb = counts_to_probs(counts, self.unigram_probs)
        return Prediction(probs, fb, {"lengths": lengths, "occurrences": occ})

    def distributions(self, prompts_ids, exclude_pos=None) -> np.ndarray:
        return self.predict(prompts_ids, exclude_pos).probs
