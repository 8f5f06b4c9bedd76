"""The unigram baseline: character frequencies of the corpus, whatever the prompt."""
from __future__ import annotations

import numpy as np

from .common import Prediction, as_prompts, corpus_ids_checked, unigram_counts


class Unigram:
    """Next-character distribution = frequencies of the characters that follow something
    (``corpus[1:]``), whatever the prompt."""

    name = "unigram"

    def __init__(self, corpus_ids, vocab_size: int | None = None):
        corpus, self.vocab_size = corpus_ids_checked(corpus_ids, vocab_size)
        self.counts = unigram_counts(corpus, self.vocab_size)  # (V,) int64
        self.probs = self.counts / self.counts.sum()

    def predict(self, prompts_ids) -> Prediction:
        p = as_prompts(prompts_ids, self.vocab_size)
        return Prediction(np.tile(self.probs, (len(p), 1)), np.zeros(len(p), dtype=bool))

    def distributions(self, prompts_ids) -> np.ndarray:
        return self.predict(prompts_ids).probs
