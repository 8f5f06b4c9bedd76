"""The report's usual baselines over one text: the n-gram, the unigram and every block's logit lens."""
from __future__ import annotations

import numpy as np

from model.gpt import GPT

from .logit_lens import LogitLens
from .ngram import SuffixNgram
from .unigram import Unigram


def standard_baselines(model: GPT, corpus_ids: np.ndarray, vocab_size: int, device: str = "cpu") -> dict:
    """The report's baselines over the text the pool was drawn from (``corpus_ids``): the longest-
    suffix n-gram with back-off, the unigram, and the logit lens at every block (the last block's
    is the model itself)."""
    out = {"ngram": SuffixNgram(corpus_ids, vocab_size), "unigram": Unigram(corpus_ids, vocab_size)}
    for b in range(model.cfg.n_layer):
        out[f"logit-lens-{b}"] = LogitLens(model, b, device)
    return out
