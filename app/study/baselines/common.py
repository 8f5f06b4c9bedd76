"""What every baseline shares: the :class:`Prediction` it answers with, the checks on prompt and
corpus ids, counts turned into distributions with the unigram fallback, and the unigram's counts.

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


@dataclass
class Prediction:
    """A baseline's answer for a batch of prompts."""

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


def as_prompts(prompts_ids, vocab_size: int) -> np.ndarray:
    """Prompt ids as a checked (B, T) int64 array (one 1-D prompt becomes a batch of one)."""
    a = np.asarray(prompts_ids)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2:
        raise ValueError(f"prompts must be a (B, T) array of ids, got shape {a.shape}")
    a = a.astype(np.int64)
    if a.size and (a.min() < 0 or a.max() >= vocab_size):
        raise ValueError(f"prompt ids must lie in [0, {vocab_size})")
    return a


def unigram_counts(corpus: np.ndarray, vocab_size: int) -> np.ndarray:
    """(V,) int64 counts of the characters that follow something: ``bincount(corpus[1:])``."""
    if len(corpus) < 2:
        raise ValueError("the corpus needs at least 2 tokens (one that follows another)")
    return np.bincount(corpus[1:], minlength=vocab_size).astype(np.int64)


def corpus_ids_checked(corpus_ids, vocab_size: int | None) -> tuple[np.ndarray, int]:
    """A checked 1-D int64 corpus and its vocabulary size (default: the largest id + 1)."""
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
