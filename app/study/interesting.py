"""The report's interesting prompts: the worst and best, confident misses and where a rival baseline
wins, each with its numbers and a permalink into the explorer."""
from __future__ import annotations

import numpy as np

from ..approx import QuerySettings
from ..metrics import entropy, hellinger, ranking
from ..present import visible
from .methods import APPROX
from ..links import encode as permalink


def top_chars(p: np.ndarray, chars: str | None, k: int = 3) -> list[dict]:
    """The k most likely characters of ``p`` (those with p > 0): char, visible label, p."""
    out = []
    for i in ranking(p)[:k]:
        if p[i] <= 0:
            break
        c = chars[int(i)] if chars else str(int(i))
        out.append({"char": c, "label": visible(c), "p": float(p[i])})
    return out


def interesting(prompts: list[str], H: np.ndarray, model_probs: np.ndarray, dists: dict,
                settings: QuerySettings | None = None, base_url: str = "/", n: int = 5,
                chars: str | None = None, defaults: QuerySettings | None = None,
                backend: str | None = None, approx: str = APPROX, rival: str | None = "ngram",
                confident: float = 0.9) -> dict:
    """A few prompts worth opening in the explorer, each with its text, its numbers and a
    permalink (:func:`permalink`):

    - ``worst``: the n largest Hellinger distances ``H`` (the approximation's, (N,));
    - ``best``: the n smallest;
    - ``confident_miss``: surprising ones: the model is confident (top probability >= ``confident``)
      yet the approximation's top-1 differs (needs ``dists[approx]``); largest H first;
    - ``rival_wins``: surprising too: where the ``rival`` baseline (in ``dists``; default the
      n-gram) is closer to the model than the approximation by the most.
    ``dists``: method -> (N, V) distributions; ``chars``: the vocabulary (to name characters)."""
    H = np.asarray(H, dtype=np.float64)
    P = np.atleast_2d(np.asarray(model_probs, dtype=np.float64))
    N = len(H)
    if len(prompts) != N or len(P) != N:
        raise ValueError("prompts, H and model_probs must have one entry per prompt")
    others = {m: hellinger(P, np.asarray(d, dtype=np.float64)) for m, d in dists.items() if m != approx}
    ent = entropy(P)

    def entry(i: int, why: str) -> dict:
        e = {"index": int(i), "prompt": prompts[i], "label": visible(prompts[i]),
             "url": permalink(prompts[i], settings, base_url, defaults, backend),
             "hellinger": float(H[i]), "entropy": float(ent[i]), "why": why,
             "model_top": top_chars(P[i], chars), "others": {m: float(h[i]) for m, h in others.items()}}
        if approx in dists:
            e["approx_top"] = top_chars(np.asarray(dists[approx][i], dtype=np.float64), chars)
        return e

    order = np.lexsort((np.arange(N), -H))  # largest H first, ties by index
    out = {"worst": [entry(i, "") for i in order[:n]],
           "best": [entry(i, "") for i in np.lexsort((np.arange(N), H))[:n]]}
    if approx in dists:
        A = np.asarray(dists[approx], dtype=np.float64)
        top_m = np.array([ranking(P[i])[0] for i in range(N)], dtype=np.int64)
        top_a = np.array([ranking(A[i])[0] for i in range(N)], dtype=np.int64)
        pmax = P[np.arange(N), top_m] if N else np.zeros(0)
        cand = np.flatnonzero((pmax >= confident) & (top_m != top_a))
        cand = cand[np.lexsort((cand, -H[cand]))][:n]
        out["confident_miss"] = [entry(i, f"the model gives {pmax[i]:.0%} to its top character, "
                                          f"the approximation ranks another first") for i in cand]
    if rival and rival in others:
        gain = H - others[rival]  # > 0: the rival is closer to the model
        cand = np.flatnonzero(gain > 0)
        cand = cand[np.lexsort((cand, -gain[cand]))][:n]
        out["rival_wins"] = [entry(i, f"{rival} H = {others[rival][i]:.3f} against the "
                                      f"approximation's {H[i]:.3f}") for i in cand]
        out["rival"] = rival
    return out
