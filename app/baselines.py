"""Baselines the evaluation compares the approximation against (METHOD.md, "Known weaknesses" 3).

- :class:`SuffixNgram`: the longest-suffix-match n-gram with back-off ("infini-gram" style): the
  next-character counts after every corpus occurrence of the longest suffix of the context that
  occurs in the corpus followed by a character, found with a suffix array.
- :class:`Unigram`: character frequencies of the corpus.
- :class:`LogitLens`: the model's final LayerNorm and head applied to the residual stream after each
  block (last position); the last block's is the model's own softmax.

Every baseline answers ``distributions(prompts_ids (B, T)) -> (B, V) float64`` (rows sum to 1) and
``predict(prompts_ids) -> Prediction`` (the same probabilities, plus which rows had no evidence and
fell back to the unigram, plus baseline-specific details), so the report scores them all alike.

Conventions for counting (shared by the n-gram and the unigram). An occurrence of a string is
identified by its *end* ``e`` (exclusive: the string is ``corpus[e - len:e]``); its follower is
``corpus[e]``, so only ends ``e <= N - 1`` count (an occurrence at the very end of the corpus has no
follower). The empty string occurs at every end ``1 <= e <= N - 1`` (every position that has a
predecessor), so its counts are ``bincount(corpus[1:])``: that is the unigram, and the n-gram's
length-0 back-off.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from model.gpt import GPT

# --- suffix array ------------------------------------------------------------------------------


def suffix_array(ids: np.ndarray) -> np.ndarray:
    """The suffix array of a 1-D array of non-negative ids: (N,) int64, the start positions of the
    suffixes in lexicographic order (a suffix that is a prefix of another sorts first).

    Prefix doubling (Manber-Myers) in numpy: the suffixes are first sorted by a key packing their
    first h ids (as many as fit in 62 bits: 10 for 65 symbols), then, while some suffixes still
    share a rank, only those are re-sorted by (rank of the first k ids, rank of the next k ids),
    k doubling each round. Ranks are the sorted position of a rank group's first member, so
    resolved suffixes never move again and each round only touches the unresolved ones.

    Measured on this 2-core machine (numpy 2.4, two runs each, while a training job held both cores;
    expect less on idle cores): 1,115,394 random ids over 65 symbols: 0.11-0.17 s (all suffixes
    are distinct after the 10-id key, so no doubling round runs), peak traced numpy memory 37 MB;
    TinyShakespeare (1,115,394 characters, with repeated passages): 0.17-0.21 s, 61 MB.
    """
    s = np.asarray(ids)
    if s.ndim != 1:
        raise ValueError("suffix_array expects a 1-D array of ids")
    n = len(s)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    s = s.astype(np.int64)
    if s.min() < 0:
        raise ValueError("ids must be non-negative")
    base = int(s.max()) + 2  # symbol + 1, and 0 for "past the end" (sorts first)
    h = max(1, int(62 // np.log2(base)))
    while base ** h >= 2 ** 62:  # guard against rounding in the log
        h -= 1
    h = max(1, min(h, n))
    key = np.zeros(n, dtype=np.int64)
    for j in range(h):
        key *= base
        key[: n - j] += s[j:] + 1
    sa = np.argsort(key, kind="stable").astype(np.int64)
    skey = key[sa]
    new_group = np.empty(n, dtype=bool)
    new_group[0] = True
    np.not_equal(skey[1:], skey[:-1], out=new_group[1:])
    del key, skey
    # rank[i] = sorted position of the first member of i's group (its "head").
    heads = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    rank = np.empty(n, dtype=np.int64)
    rank[sa] = heads
    # Unresolved slots: sorted positions whose group has more than one member.
    size_next = np.empty(n, dtype=bool)  # slot i shares a group with slot i + 1
    size_next[-1] = False
    size_next[:-1] = ~new_group[1:]
    active = np.flatnonzero(size_next | ~new_group)
    k = h
    while len(active):
        members = sa[active]  # suffix starts of the unresolved slots, grouped (slots are sorted)
        nxt = members + k
        second = np.where(nxt < n, rank[np.minimum(nxt, n - 1)] + 1, 0)  # 0: past the end
        first = rank[members]
        order = np.lexsort((second, first))  # by group, then by the next k ids' rank
        members, first, second = members[order], first[order], second[order]
        sa[active] = members  # active slots are the union of the groups' slot ranges, in order
        m = len(active)
        boundary = np.empty(m, dtype=bool)
        boundary[0] = True
        boundary[1:] = (first[1:] != first[:-1]) | (second[1:] != second[:-1])
        head_slot = np.maximum.accumulate(np.where(boundary, active, -1))
        rank[members] = head_slot
        same_next = np.zeros(m, dtype=bool)
        same_next[:-1] = ~boundary[1:]
        keep = same_next | ~boundary
        active = active[keep]
        k *= 2
    return sa


# --- results shared by every baseline ----------------------------------------------------------


@dataclass
class Prediction:
    probs: np.ndarray  # (B, V) float64, rows summing to 1
    fallback: np.ndarray  # (B,) bool: the row had no counts and is the unigram instead
    info: dict = field(default_factory=dict)  # baseline-specific arrays (match lengths, ...)


def counts_to_probs(counts: np.ndarray, fallback_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, V) counts -> (B, V) float64 distributions and (B,) flags; an all-zero row becomes
    ``fallback_probs`` and is flagged."""
    c = np.asarray(counts, dtype=np.float64)
    tot = c.sum(-1, keepdims=True)
    empty = tot[:, 0] <= 0
    probs = np.divide(c, tot, out=np.zeros_like(c), where=tot > 0)
    probs[empty] = fallback_probs
    return probs, empty


def _as_prompts(prompts_ids, vocab_size: int) -> np.ndarray:
    a = np.asarray(prompts_ids)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2:
        raise ValueError(f"prompts must be a (B, T) array of ids, got shape {a.shape}")
    a = a.astype(np.int64)
    if a.size and (a.min() < 0 or a.max() >= vocab_size):
        raise ValueError(f"prompt ids must lie in [0, {vocab_size})")
    return a


def _unigram_counts(corpus: np.ndarray, vocab_size: int) -> np.ndarray:
    if len(corpus) < 2:
        raise ValueError("the corpus needs at least 2 tokens (one that follows another)")
    return np.bincount(corpus[1:], minlength=vocab_size).astype(np.int64)


def _corpus_ids(corpus_ids, vocab_size: int | None) -> tuple[np.ndarray, int]:
    c = np.asarray(corpus_ids)
    if c.ndim != 1:
        raise ValueError("the corpus must be a 1-D array of token ids")
    c = c.astype(np.int64)
    if len(c) and c.min() < 0:
        raise ValueError("corpus ids must be non-negative")
    v = int(c.max()) + 1 if vocab_size is None else int(vocab_size)
    if len(c) and c.max() >= v:
        raise ValueError(f"corpus ids must lie in [0, {v})")
    return c, v


# --- unigram ---------------------------------------------------------------------------------


class Unigram:
    """Next-character distribution = frequencies of the characters that follow something
    (``corpus[1:]``), whatever the prompt."""

    name = "unigram"

    def __init__(self, corpus_ids, vocab_size: int | None = None):
        corpus, self.vocab_size = _corpus_ids(corpus_ids, vocab_size)
        self.counts = _unigram_counts(corpus, self.vocab_size)  # (V,) int64
        self.probs = self.counts / self.counts.sum()

    def predict(self, prompts_ids) -> Prediction:
        p = _as_prompts(prompts_ids, self.vocab_size)
        return Prediction(np.tile(self.probs, (len(p), 1)), np.zeros(len(p), dtype=bool))

    def distributions(self, prompts_ids) -> np.ndarray:
        return self.predict(prompts_ids).probs


# --- longest-suffix-match n-gram -----------------------------------------------------------------


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
    gives ``bincount(corpus[1:])``, the unigram. ``max_len`` caps L (the context is cut to its last
    ``max_len`` ids first).

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

    def __init__(self, corpus_ids, vocab_size: int | None = None, max_len: int | None = None,
                 chunk: int = 512):
        corpus, self.vocab_size = _corpus_ids(corpus_ids, vocab_size)
        self.unigram_counts = _unigram_counts(corpus, self.vocab_size)
        self.unigram_probs = self.unigram_counts / self.unigram_counts.sum()
        self.corpus = corpus
        self.N = len(corpus)
        self.M = self.N - 1  # ends 1..N-1 have followers; suffix-array entry k <-> end N-1-k
        self.rev = np.ascontiguousarray(corpus[: self.M][::-1]).astype(np.int32)
        self.sa = suffix_array(self.rev)
        self.isa = np.empty(self.M, dtype=np.int64)  # entry k's position in the suffix array
        self.isa[self.sa] = np.arange(self.M)
        self.follower = corpus[self.M - self.sa]  # (M,) follower of each suffix-array slot
        self.max_len = max_len
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
        ctx = _as_prompts(contexts, self.vocab_size)
        B, T = ctx.shape
        cap = self.max_len if max_len is None else max_len
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

    def predict(self, prompts_ids, exclude_pos=None, max_len: int | None = None) -> Prediction:
        counts, lengths, occ = self.match_batch(prompts_ids, max_len, exclude_pos)
        probs, fb = counts_to_probs(counts, self.unigram_probs)
        return Prediction(probs, fb, {"lengths": lengths, "occurrences": occ})

    def distributions(self, prompts_ids, exclude_pos=None, max_len: int | None = None) -> np.ndarray:
        return self.predict(prompts_ids, exclude_pos, max_len).probs


# --- logit lens ----------------------------------------------------------------------------------


@torch.inference_mode()
def logit_lens(model: GPT, prompts_ids, device: str = "cpu", batch: int = 256) -> np.ndarray:
    """(B, T) ids -> (L, B, V) float64: softmax(head(ln_f(residual after block i))) at the last
    position, for every block i. The last block's is the model's own next-character softmax
    (computed exactly as the model computes it: float32 LayerNorm and head, softmax in float64).
    Uses the residual streams the forward pass records (:meth:`model.gpt.GPT.read_last`)."""
    ids = np.atleast_2d(np.asarray(prompts_ids)).astype(np.int64)
    model.eval()
    out = []
    for a in range(0, len(ids), batch):
        idx = torch.from_numpy(ids[a:a + batch]).to(device)
        _, resid = model.read_last(idx, "resid", head=False)  # (L, b, C)
        logits = model.head(model.ln_f(resid))
        out.append(torch.softmax(logits.double(), -1).cpu().numpy())
    if not out:
        return np.zeros((model.cfg.n_layer, 0, model.cfg.vocab_size))
    return np.concatenate(out, axis=1)


class LogitLens:
    """The logit lens at one block (default: the last, i.e. the model itself) as a baseline."""

    def __init__(self, model: GPT, block: int = -1, device: str = "cpu"):
        L = model.cfg.n_layer
        if not -L <= block < L:
            raise ValueError(f"block must be in [{-L}, {L}), got {block}")
        self.model, self.block, self.device = model, block % L, device
        self.vocab_size = model.cfg.vocab_size
        self.name = f"logit-lens-{self.block}"

    def predict(self, prompts_ids) -> Prediction:
        p = _as_prompts(prompts_ids, self.vocab_size)
        probs = logit_lens(self.model, p, self.device)[self.block]
        return Prediction(probs, np.zeros(len(p), dtype=bool))

    def distributions(self, prompts_ids) -> np.ndarray:
        return self.predict(prompts_ids).probs


def standard_baselines(model: GPT, corpus_ids: np.ndarray, vocab_size: int, device: str = "cpu") -> dict:
    """The report's baselines over the text the pool was drawn from (``corpus_ids``): the longest-
    suffix n-gram with back-off, the unigram, and the logit lens at every block (the last block's
    is the model itself)."""
    out = {"ngram": SuffixNgram(corpus_ids, vocab_size), "unigram": Unigram(corpus_ids, vocab_size)}
    for b in range(model.cfg.n_layer):
        out[f"logit-lens-{b}"] = LogitLens(model, b, device)
    return out


class StoreBaseline:
    """The approximation computed on another store of the same model and pool (the attention
    outputs or the residual stream instead of the FFN outputs, or an in-context store) as a
    baseline."""

    def __init__(self, engine, settings, label: str | None = None):
        self.engine, self.settings = engine, settings
        self.name = f"neighbours-{label or engine.activation}"

    def distributions(self, prompts_ids) -> np.ndarray:
        from .evaluate import evaluate

        ev = evaluate(self.engine, np.asarray(prompts_ids), self.settings, progress=False, keep=True)
        return ev["arrays"]["approx"]
