"""Live tuning: each block's threshold and weight moved by hand, the accuracy over a fixed sample of
prompts answered by lookups, never by a search.

For a sample of prompts (held-out ones when the store's pool is held out, else METHOD.md's
reference prompts), ``build_table`` searches each block once, at the lowest threshold of the
block's grid, and files every neighbour under the highest grid level its similarity exceeds. The
follow-on counts summed from the top of the grid down then give, for every prompt and every grid
level, exactly what a search at that threshold would have summed: a threshold is an index, a
weight a re-blend, and a figure a few numpy reductions over (prompts, blocks, vocabulary).

The grid of a block whose calibrated threshold is t: 1 - (1 - t) f for f from ``SPAN[0]`` to
``SPAN[1]``, ``STEPS`` levels an octave of f (each level's gap to 1 about 3 % from the next),
rounded to 6 places, f = 1 included: the calibrated value and the report's sweep (0.25 to 4 times
the gap) lie on it. Memory is (prompts x levels x vocabulary) int32 per block, capped at
``MAX_BYTES`` by dropping the lowest levels (the table says so).

The figures for grid thresholds equal ``app.study.evaluation.evaluate`` on the same prompts and
settings (the same search backend decides every similarity; tests check it on the micro model).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..approx import Engine, QueryError, QuerySettings, blend_or_unigram
from ..corpus import TRAIN_FRACTION
from ..metrics import agreement_arrays, hellinger
from ..search import unit
from .prompts import heldout_prompts, prompt_ids, reference_prompts
from .weights import fit_weights

SPAN = (0.25, 2.0)  # the grid's factors on a block's gap to 1 (lowest threshold: 1 - 2 (1 - t))
STEPS = 24  # levels per octave of the factor
MAX_BYTES = 512 * 2**20  # the counts' memory cap; the lowest levels go first
SAMPLE = 500
SEED = 1337
H_BINS = 20
VERSION = 1  # of the cached file's layout


def grid(threshold: float, span=SPAN, steps: int = STEPS) -> np.ndarray:
    """A block's threshold grid (increasing) around its calibrated ``threshold``."""
    gap = max(1.0 - float(threshold), 1e-6)
    lo, hi = math.floor(math.log2(span[0]) * steps), math.ceil(math.log2(span[1]) * steps)
    f = 2.0 ** (np.arange(hi, lo - 1, -1) / steps)
    return np.unique(np.clip(np.round(1.0 - gap * f, 6), -1.0, 1.0))


def sample_prompts(engine: Engine, n: int = SAMPLE, seed: int = SEED) -> tuple[np.ndarray, str]:
    """The tuning sample: (prompts, what they are). Held-out prompts (validation strings absent
    from the pool) when the store's pool is held out, else METHOD.md's reference prompts (pool
    rows), as the report draws them."""
    st = engine.store
    if st.manifest.get("mode") == "heldout":
        ids = heldout_prompts(st, int(TRAIN_FRACTION * len(st.corpus_ids)), n, seed)
        return ids, f"{len(ids)} held-out prompts (validation strings absent from the pool, seed {seed})"
    rows = reference_prompts(st, n, seed)
    return rows, f"{len(rows)} reference prompts (pool strings, METHOD.md's sample, seed {seed})"


@dataclass
class TuningTable:
    """Per block: its grid ``levels`` (G_b,), the summed follow-on counts ``cum`` (N, G_b, V) int32
    of each prompt's neighbours above each level, and their number ``sizes`` (N, G_b); the model's
    distribution per prompt (N, V), the unigram fallback (V,), and what was built (``info``)."""

    levels: list[np.ndarray]
    cum: list[np.ndarray]
    sizes: list[np.ndarray]
    model_probs: np.ndarray
    unigram: np.ndarray
    info: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.model_probs)

    @property
    def n_layer(self) -> int:
        return len(self.levels)

    def nbytes(self) -> int:
        return int(sum(c.nbytes + s.nbytes for c, s in zip(self.cum, self.sizes)) + self.model_probs.nbytes)

    # --- thresholds <-> grid -----------------------------------------------------------------
    def snap(self, thresholds) -> list[int]:
        """Each block's grid index nearest to its threshold (a value off the grid moves to it)."""
        if len(thresholds) != self.n_layer:
            raise QueryError(f"thresholds need one value per block: {self.n_layer} values, got {len(thresholds)}")
        return [int(np.abs(lv - float(t)).argmin()) for lv, t in zip(self.levels, thresholds)]

    def thresholds(self, idx) -> list[float]:
        return [float(lv[i]) for lv, i in zip(self.levels, idx)]

    # --- figures -----------------------------------------------------------------------------
    def counts(self, idx, rows: np.ndarray | None = None) -> np.ndarray:
        """(N, L, V) float64: each prompt's summed counts at each block's grid level ``idx``."""
        sel = slice(None) if rows is None else rows
        return np.stack([c[sel, i] for c, i in zip(self.cum, idx)], 1).astype(np.float64)

    def approx(self, idx, weights, blend: str = "raw", rows: np.ndarray | None = None) -> np.ndarray:
        """(N, V) the blended approximation of each prompt (the unigram where no block found one)."""
        return blend_or_unigram(self.counts(idx, rows), weights, blend, self.unigram)[0]

    def score(self, idx, weights, blend: str = "raw", rows: np.ndarray | None = None) -> dict:
        """Mean H, top-k agreement, H's histogram and neighbour sizes over the sample (or its
        ``rows``) at grid levels ``idx`` with ``weights`` and ``blend``."""
        sel = np.arange(self.n) if rows is None else np.asarray(rows)
        approx, empty, _, _ = blend_or_unigram(self.counts(idx, sel), weights, blend, self.unigram)
        p = self.model_probs[sel]
        H = hellinger(p, approx)
        agree = agreement_arrays(p, approx)
        hist, _ = np.histogram(H, bins=H_BINS, range=(0.0, 1.0))
        return {"prompts": int(len(sel)), "mean_h": float(H.mean()) if len(H) else float("nan"),
                "median_h": float(np.median(H)) if len(H) else float("nan"),
                "top1": float(agree[1]["order"].mean()) if len(H) else float("nan"),
                "topk": {str(k): float(a["set"].mean()) for k, a in agree.items()},
                "fallback_share": float(empty.mean()) if len(H) else 0.0,
                "h_hist": hist.tolist(),
                "median_neighbours": [float(np.median(s[sel, i])) for s, i in zip(self.sizes, idx)],
                "per_prompt_h": H}

    def fit_weights(self, idx, blend: str, rows: np.ndarray) -> list[float]:
        """Per-block weights fitted on ``rows`` at grid levels ``idx`` (app.study.weights)."""
        w = fit_weights(self.counts(idx, rows), self.model_probs[rows], blend)
        return [round(float(x), 6) for x in w]

    def fit_thresholds(self, idx, weights, blend: str, rows: np.ndarray, rounds: int = 2) -> list[int]:
        """Grid levels fitted block by block on ``rows``: each block in turn takes the level with the
        least mean H, the others held; ``rounds`` passes over the blocks."""
        idx = list(idx)
        p = self.model_probs[rows]
        for _ in range(rounds):
            for b in range(self.n_layer):
                base = self.counts(idx, rows)
                mean_h = []
                for level in range(len(self.levels[b])):
                    base[:, b] = self.cum[b][rows, level]
                    approx = blend_or_unigram(base, weights, blend, self.unigram)[0]
                    mean_h.append(hellinger(p, approx).mean())
                idx[b] = int(np.argmin(mean_h))
        return idx

    # --- files -------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Written whole, then moved into place (a stop never leaves half a table)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        arrays = {"model_probs": self.model_probs, "unigram": self.unigram,
                  "info": np.array(json.dumps(self.info))}
        for b in range(self.n_layer):
            arrays[f"levels{b}"], arrays[f"cum{b}"], arrays[f"sizes{b}"] = self.levels[b], self.cum[b], self.sizes[b]
        np.savez(tmp, **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "TuningTable":
        with np.load(path) as z:
            info = json.loads(str(z["info"]))
            L = info["n_layer"]
            return cls([z[f"levels{b}"] for b in range(L)], [z[f"cum{b}"] for b in range(L)],
                       [z[f"sizes{b}"] for b in range(L)], z["model_probs"], z["unigram"], info)


def build_table(engine: Engine, prompts, describe: str = "", settings: QuerySettings | None = None,
                batch_size: int = 64, max_bytes: int = MAX_BYTES, progress=None,
                levels: list[np.ndarray] | None = None) -> TuningTable:
    """The table for ``prompts`` (pool rows or (N, T) ids) over grids around ``settings``'
    thresholds (default: the store's calibrated ones), or over ``levels`` (another table's, so
    that one prompt's table indexes as the sample's does); ``progress(done, total)`` is called
    after each batch of prompts."""
    st = engine.store
    s = (settings or QuerySettings()).resolved(st)
    ids, self_rows = prompt_ids(st, prompts)
    N, L, V = len(ids), st.n_layer, st.counts.vocab_size
    given = levels is not None
    levels = [np.asarray(lv) for lv in levels] if given else [grid(t) for t in s.thresholds]
    capped = False
    while not given and N * sum(len(lv) for lv in levels) * V * 4 > max_bytes and max(len(lv) for lv in levels) > 2:
        b = int(np.argmax([len(lv) for lv in levels]))
        levels[b], capped = levels[b][1:], True  # the lowest level goes first
    lv32 = [lv.astype(np.float32) for lv in levels]
    cum = [np.zeros((N, len(lv), V), dtype=np.int32) for lv in levels]
    sizes = [np.zeros((N, len(lv)), dtype=np.int32) for lv in levels]
    probs = np.zeros((N, V))
    t0 = time.time()
    for a in range(0, N, batch_size):
        sr = self_rows[a : a + batch_size]
        B = len(sr)
        p, ffn = engine.forward(ids[a : a + B])
        probs[a : a + B] = p
        ex = torch.from_numpy(sr.copy()) if s.exclude_self else None
        for b in range(L):
            G = len(levels[b])
            qi, rows, sims = engine.search.batch_threshold(b, unit(ffn[b]), float(levels[b][0]), ex, sims=True)
            # the pair counts at level l exactly when its similarity exceeds level l (float32, as
            # the search compares): file it under the highest such level, then sum downwards
            top = np.searchsorted(lv32[b], np.asarray(sims, dtype=np.float32), side="left") - 1
            keep = top >= 0
            group = qi[keep] * G + top[keep]
            c = st.counts.sum_rows_grouped(rows[keep], group, B * G).reshape(B, G, V)
            n = np.bincount(group, minlength=B * G).reshape(B, G)
            cum[b][a : a + B] = c[:, ::-1].cumsum(1)[:, ::-1]
            sizes[b][a : a + B] = n[:, ::-1].cumsum(1)[:, ::-1]
        if progress:
            progress(a + B, N)
    info = {"version": VERSION, "n_layer": L, "prompts": N, "sample": describe,
            "exclude_self": bool(s.exclude_self), "backend": engine.search.name,
            "centre": [float(t) for t in s.thresholds], "span": list(SPAN), "steps": STEPS,
            "capped": capped, "seconds": round(time.time() - t0, 1)}
    table = TuningTable(levels, cum, sizes, probs, engine.unigram.astype(np.float64), info)
    table.info["bytes"] = table.nbytes()
    return table


def cache_path(engine: Engine, n: int = SAMPLE, seed: int = SEED) -> Path:
    """Where the table of this store and sample is kept: a folder beside the store, the file named
    by what it depends on (the model, the vectors, the corpus, the calibrated thresholds, the
    sample and the grid), so a rebuilt store never reads another's table."""
    st = engine.store
    m = st.manifest
    key = json.dumps([VERSION, m.get("model_sha256"), m.get("unit_fingerprint"), m.get("corpus_sha256"),
                      m.get("defaults", {}).get("thresholds"), n, seed, SPAN, STEPS, MAX_BYTES])
    return st.path.with_name(st.path.name + ".tuning") / (
        f"sample{n}-seed{seed}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz")


def load_or_build(engine: Engine, n: int = SAMPLE, seed: int = SEED, progress=None) -> TuningTable:
    """The cached table, or a new one built and cached."""
    path = cache_path(engine, n, seed)
    if path.exists():
        try:
            return TuningTable.load(path)
        except (OSError, ValueError, KeyError):
            pass  # unreadable: built again
    prompts, describe = sample_prompts(engine, n, seed)
    table = build_table(engine, prompts, describe, progress=progress)
    table.save(path)
    return table


# --- the live instrument ---------------------------------------------------------------------
WEIGHT_GRID = [0.0] + [round(10 ** (k / 8), 4) for k in range(-24, 9)]  # a weight slider's stops


def weight_stop(w: float) -> int:
    """The weight slider's stop nearest to ``w`` (in log scale; 0 is its own stop)."""
    if w <= 0:
        return 0
    return 1 + int(np.abs(np.log10(np.asarray(WEIGHT_GRID[1:])) - math.log10(w)).argmin())


class Tuner:
    """The tuning table of one engine's store, built once in the background (cached beside the
    store), and the tables of the prompts typed on the page (a few kept), so that every slider
    move is a lookup."""

    def __init__(self, engine: Engine, n: int = SAMPLE, seed: int = SEED, keep_prompts: int = 32):
        self.engine, self.n, self.seed, self.keep_prompts = engine, n, seed, keep_prompts
        self._table: TuningTable | None = None
        self._state = {"done": 0, "total": n, "error": None, "started": None}
        self._lock = threading.Lock()
        self._thread = None
        self._prompts: OrderedDict = OrderedDict()

    def table(self) -> TuningTable | None:
        """The table when it is ready; else None, its build started (in a thread) if need be."""
        with self._lock:
            if self._table is not None or self._state["error"]:
                return self._table
            if self._thread is None:
                self._state["started"] = time.time()
                self._thread = threading.Thread(target=self._build, name="ffnlens-tuning", daemon=True)
                self._thread.start()
        return None

    def _build(self) -> None:
        def progress(done, total):
            self._state.update(done=done, total=total)
        try:
            table = load_or_build(self.engine, self.n, self.seed, progress)
        except Exception as e:  # reported on the page, never half-served
            self._state["error"] = f"the tuning table could not be built: {e}"
            return
        with self._lock:
            self._table = table

    def wait(self, timeout: float | None = None) -> TuningTable | None:
        """Block until the table is built (tests, the benchmark, the CLI)."""
        self.table()
        if self._thread is not None:
            self._thread.join(timeout)
        return self._table

    def progress(self) -> dict:
        st = dict(self._state)
        st["seconds"] = round(time.time() - st["started"], 1) if st["started"] else 0.0
        return st

    def prompt_table(self, prompt: str, levels) -> TuningTable:
        """One prompt's table over the sample's ``levels`` (one search per block, when the prompt
        is first seen; kept for the next slider moves)."""
        with self._lock:
            if prompt in self._prompts:
                self._prompts.move_to_end(prompt)
                return self._prompts[prompt]
        ids = self.engine.encode(prompt)
        t = build_table(self.engine, ids[None], prompt, levels=levels)
        with self._lock:
            self._prompts[prompt] = t
            while len(self._prompts) > self.keep_prompts:
                self._prompts.popitem(last=False)
        return t
