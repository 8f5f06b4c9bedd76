"""The report's methods: the approximation's name (:data:`APPROX`), each method's colour, and the
gathering of every method's (N, V) distributions (the approximation, the baselines, each block's
neighbours alone)."""
from __future__ import annotations

import numpy as np

from ..approx import blend_or_unigram
from . import colors as fig

APPROX = "approximation"


def check_distributions(obj, ids: np.ndarray, N: int, V: int) -> np.ndarray:
    """A baseline's (N, V) float64 distributions for the prompts ``ids``: ``obj`` is an object with
    ``distributions(ids)`` or a ready array; the shape is checked."""
    d = obj if isinstance(obj, np.ndarray) else obj.distributions(ids)
    d = np.asarray(d, dtype=np.float64)
    if d.shape != (N, V):
        raise ValueError(f"a baseline gave shape {d.shape}, expected {(N, V)}")
    return d


def method_distributions(arrays: dict, ids: np.ndarray, baselines: dict | None, unigram: np.ndarray,
                         single_blocks: bool = True) -> dict:
    """method -> (N, V) distributions: the approximation (``arrays``: evaluate's kept arrays), then
    each baseline in order, then with ``single_blocks`` each block's neighbours alone ("block-b-alone":
    its summed follow-on counts, normalised; the unigram where it has none)."""
    N, V = arrays["approx"].shape
    dists = {APPROX: arrays["approx"]}
    for name, bl in (baselines or {}).items():
        if name == APPROX:
            raise ValueError(f"{APPROX!r} names the approximation; give the baseline another name")
        dists[name] = check_distributions(bl, ids, N, V)
    if single_blocks:
        for b in range(arrays["counts"].shape[1]):
            alone = arrays["counts"][:, b : b + 1]
            dists[f"block-{b}-alone"] = blend_or_unigram(alone, [1.0], "raw", unigram)[0]
    return dists


def method_colors(methods) -> dict:
    """The report's colours: the approximation orange and the model blue (as in the explorer),
    the n-gram green, the unigram grey, the logit lens of each block a shade of violet (lighter
    for earlier blocks), anything else from the figures' palette."""
    lens = sorted((m for m in methods if str(m).startswith("logit-lens-")),
                  key=lambda m: (len(m), m))
    fixed = {"ngram": "#15803d", "unigram": "#6b7280", **dict(zip(lens, fig.shades(len(lens))))}
    return fig.series_colors(methods, fixed)
