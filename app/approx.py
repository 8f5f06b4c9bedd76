"""The approximation: per-block follow-on counts of the neighbours, blended, against the model.

For a prompt the engine runs the model once (softmax and every block's last-position FFN output),
finds each block's neighbours in the store, sums their next-character count rows, blends the blocks
with per-block weights, normalises, and measures the distance to the model's softmax.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from model.errors import FfnlensError
from model.gpt import GPT, Intervention
from model.tokenizer import CharTokenizer, UnknownCharacters

from .cores import one_core
from .defaults import (REFERENCE_DEPTH, default_weights, fallback_thresholds,
                       reference_thresholds_for)
from .metrics import hellinger, topk_agreement

from .search import Neighbours, SearchBackend, every_block, unit
from .store import Store


class QueryError(FfnlensError):
    """A prompt or a setting the engine cannot use; the message says what to change."""


# --- settings and results --------------------------------------------------------------------
@dataclass
class QuerySettings:
    mode: str = "threshold"  # "threshold": cosine > per-block threshold; "topk": k nearest
    # per block; None: the store's calibrated defaults; "reference": METHOD.md's (6-block models)
    thresholds: list[float] | str | None = None
    k: int = 200  # neighbours per block in top-k mode
    weights: list[float] | None = None  # per block; None: METHOD.md's, by depth (app/defaults.py)
    blend: str = "raw"  # "raw": weight x summed counts (METHOD.md); "normalised": weight x distribution
    exclude_self: bool = False  # drop the pool string equal to the prompt's last n characters
    show: int = 10  # neighbours listed per block

    def resolved(self, store: Store) -> "QuerySettings":
        """A copy with thresholds and weights filled in and checked against the store."""
        L = store.n_layer
        s = QuerySettings(**asdict(self))
        if s.mode not in ("threshold", "topk"):
            raise QueryError(f"mode must be 'threshold' or 'topk', not {s.mode!r}")
        if s.blend not in ("raw", "normalised"):
            raise QueryError(f"blend must be 'raw' or 'normalised', not {s.blend!r}")
        if s.thresholds == "reference":
            s.thresholds = reference_thresholds_for(L)
            if s.thresholds is None:
                raise QueryError(f"thresholds=reference are METHOD.md's values for its "
                                 f"{REFERENCE_DEPTH}-block model; this model has {L} blocks: leave "
                                 f"thresholds empty for this store's calibrated ones, or give {L} values")
        elif isinstance(s.thresholds, str):
            raise QueryError(f"thresholds must be numbers or 'reference', not {s.thresholds[:20]!r}")
        if s.thresholds is None:
            s.thresholds = list(store.defaults.get("thresholds") or fallback_thresholds(L))
        if s.weights is None:
            s.weights = list(store.defaults.get("weights") or default_weights(L))
        for name, vals in (("thresholds", s.thresholds), ("weights", s.weights)):
            if len(vals) != L:
                raise QueryError(f"{name} need one value per block: {L} values, got {len(vals)}")
            if not all(np.isfinite(v) for v in vals):
                raise QueryError(f"{name} must be finite numbers")
        if any(not -1.0 <= t <= 1.0 for t in s.thresholds):
            raise QueryError("thresholds are cosine similarities: each must lie in [-1, 1]")
        if any(w < 0 for w in s.weights):
            raise QueryError("weights must be zero or positive")
        if not 1 <= s.k <= store.size:
            raise QueryError(f"k must be between 1 and the pool size ({store.size})")
        return s


@dataclass
class BlockResult:
    block: int
    neighbours: Neighbours  # all of them
    counts: np.ndarray  # (V,) int64: summed follow-on counts of the neighbours
    weight: float  # the block's weight as set
    share_raw: float = 0.0  # its share of the blend: weight x count total, normalised
    share_norm: float = 0.0  # its share when each block's counts are first normalised
    self_row: int | None = None  # the prompt's own pool row, when it is in the pool

    @property
    def n(self) -> int:
        return len(self.neighbours)

    @property
    def total(self) -> int:
        return int(self.counts.sum())


@dataclass
class QueryResult:
    prompt: str
    settings: QuerySettings
    backend: str
    model_probs: np.ndarray  # (V,) the model's softmax
    approx: np.ndarray  # (V,) the blended approximation
    blocks: list[BlockResult]
    hellinger: float
    agreement: dict
    fallback: str | None = None  # set when no block found a neighbour
    meta: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)  # milliseconds spent in forward, search and blend


# --- the engine --------------------------------------------------------------------------------
class Engine:
    """Model + store + search: answers queries. Holds no per-request state."""

    def __init__(self, model: GPT, tok: CharTokenizer, store: Store, search: SearchBackend,
                 device: str = "cpu"):
        self.model, self.tok, self.store, self.search, self.device = model, tok, store, search, device
        # The per-block output the store holds (the method's FFN output unless built otherwise).
        self.activation = store.manifest.get("activation", "ffn")
        totals = store.counts.sum_rows(np.arange(store.size))
        self.unigram = totals / max(1, totals.sum())

    def with_search(self, search: SearchBackend) -> "Engine":
        """The same model and store answered by another search backend."""
        other = Engine.__new__(Engine)
        other.__dict__.update(self.__dict__)
        other.search = search
        return other

    def encode(self, prompt: str) -> np.ndarray:
        if not prompt:
            raise QueryError("the prompt is empty: type at least one character")
        if len(prompt) > self.model.cfg.block_size:
            raise QueryError(f"the prompt has {len(prompt)} characters; this model reads at most "
                             f"{self.model.cfg.block_size}")
        try:
            return self.tok.encode(prompt)
        except UnknownCharacters as e:
            raise QueryError(f"the prompt has {e}; the vocabulary is {self.tok.chars!r}") from e

    @torch.inference_mode()
    def forward(self, ids: np.ndarray, intervention: Intervention | None = None
                ) -> tuple[np.ndarray, torch.Tensor]:
        """ids (T,) or (B, T) -> the model's softmax (V,) or (B, V) float64, and every block's FFN
        output at the last position, (L, C) or (L, B, C); with ``intervention``, those of the model
        run without the sublayers it names."""
        idx = torch.from_numpy(np.atleast_2d(ids).astype(np.int64)).to(self.device)
        if intervention:
            intervention.check(self.model.cfg.n_layer)
        if ids.ndim == 1 and self.device == "cpu" and torch.get_num_threads() > 1:
            # one prompt's small products run faster on one core (see app.cores)
            logits, ffn = one_core(torch.get_num_threads()).submit(
                self._read_last, idx, intervention).result()
        else:
            logits, ffn = self._read_last(idx, intervention)
        probs = torch.softmax(logits.double(), -1).cpu().numpy()
        return (probs[0], ffn[:, 0]) if ids.ndim == 1 else (probs, ffn)

    @torch.inference_mode()
    def _read_last(self, idx: torch.Tensor, intervention: Intervention | None):
        return self.model.read_last(idx, self.activation, intervention=intervention)

    def query(self, prompt: str, settings: QuerySettings | None = None,
              intervention: Intervention | None = None) -> QueryResult:
        """The approximation for ``prompt``; with ``intervention`` both the model's distribution and
        the activations searched are those of the intervened model."""
        s = (settings or QuerySettings()).resolved(self.store)
        ids = self.encode(prompt)
        if intervention:
            try:
                intervention.check(self.model.cfg.n_layer)
            except ValueError as e:  # it names blocks the model does not have
                raise QueryError(str(e)) from e
        t0 = time.perf_counter()
        probs, ffn = self.forward(ids, intervention)
        q = unit(ffn)
        t1 = time.perf_counter()
        self_row = self.store.find(ids[-self.store.pool.n :])
        exclude = self_row if s.exclude_self else None
        blocks = []
        values = s.thresholds if s.mode == "threshold" else [s.k] * self.store.n_layer
        for b, nb in enumerate(every_block(self.search, "threshold" if s.mode == "threshold"
                                           else "topk", q, values, exclude)):
            counts = self.store.counts.sum_rows(nb.members)
            blocks.append(BlockResult(b, nb, counts, s.weights[b], self_row=self_row))
        t2 = time.perf_counter()
        counts = np.stack([br.counts for br in blocks]).astype(np.float64)
        approx, empty, shares_raw, shares_norm = blend_or_unigram(counts, s.weights, s.blend,
                                                                   self.unigram)
        for br, r, n in zip(blocks, shares_raw, shares_norm):
            br.share_raw, br.share_norm = float(r), float(n)
        fallback = "unigram" if empty else None
        res = QueryResult(prompt=prompt, settings=s, backend=self.search.name, model_probs=probs,
                          approx=approx, blocks=blocks, hellinger=float(hellinger(probs, approx)),
                          agreement=topk_agreement(probs, approx), fallback=fallback)
        t3 = time.perf_counter()
        res.timing = {"forward": 1e3 * (t1 - t0), "search": 1e3 * (t2 - t1), "blend": 1e3 * (t3 - t2)}
        return res


def blend(counts: np.ndarray, weights: np.ndarray, mode: str = "raw"):
    """counts (..., L, V), weights (L,) -> (approximation (..., V), raw shares, normalised shares).

    raw (METHOD.md): sum_b w_b * counts_b, normalised at the end, so a block's effective weight
    grows with its neighbours' count total. normalised: each block's counts are first made a
    distribution. Shares are each block's part of the blend's total mass under the two views.
    An all-zero blend is returned as zeros (the caller chooses a fallback).
    """
    counts = np.asarray(counts, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    tot = counts.sum(-1)  # (..., L)
    raw_mass = weights * tot
    dist = np.divide(counts, tot[..., None], out=np.zeros_like(counts), where=tot[..., None] > 0)
    norm_mass = weights * (tot > 0)
    mix = (weights[:, None] * (counts if mode == "raw" else dist)).sum(-2)
    z = mix.sum(-1, keepdims=True)
    approx = np.divide(mix, z, out=np.zeros_like(mix), where=z > 0)

    def shares(m):
        s = m.sum(-1, keepdims=True)
        return np.divide(m, s, out=np.zeros_like(m), where=s > 0)

    return approx, shares(raw_mass), shares(norm_mass)


def blend_or_unigram(counts: np.ndarray, weights, mode: str, unigram: np.ndarray):
    """:func:`blend`, then the fallback: where no block found a neighbour (an all-zero blend) the
    approximation is the corpus's unigram distribution (V,). counts (..., L, V) ->
    (approximation (..., V), where the fallback was used (...,) bool, raw shares, normalised
    shares). The one rule the engine, the evaluation and the report share."""
    approx, raw, norm = blend(counts, np.asarray(weights, dtype=np.float64), mode)
    empty = approx.sum(-1) == 0
    approx[empty] = unigram
    return approx, empty, raw, norm
