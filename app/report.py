"""The evaluation report: METHOD.md's reference study reproduced, then the weaknesses it lists
measured (baselines, entropy strata, neighbour-set sizes, weights fitted on a tuning split and
scored on a disjoint test split, a threshold sweep, the prompts worth looking at).

Typical use (one report per mode, "reference" or "held-out")::

    from app.baselines import LogitLens, SuffixNgram, Unigram
    from app.evaluate import reference_prompts
    from app.report import build_report, write_report

    rows = reference_prompts(engine.store, 2000, 1337)
    baselines = {"ngram": SuffixNgram(corpus_ids, V), "unigram": Unigram(corpus_ids, V),
                 **{f"logit-lens-{b}": LogitLens(engine.model, b) for b in range(L)}}
    report, figures = build_report(engine, rows, settings, baselines, "reference", base_url="/")
    write_report(out_dir, report, figures)  # report.json, figures/*.svg, report.html

Every metric function works on plain arrays, so it is tested on hand-made cases; ``build_report``
only gathers the arrays (one batched :func:`app.evaluate.evaluate` run) and calls them.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, replace
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import torch

from . import figures as fig
from .approx import Engine, QuerySettings, blend as blend_counts, blend_or_unigram
from .metrics import TOPK, agreement_arrays, entropy, hellinger, ranking
from .evaluate import block_counts, evaluate, prompt_ids
from .present import visible
from .templating import environment
from .search import unit

ROOT = Path(__file__).resolve().parent.parent
APPROX = "approximation"

# Strata of the model's next-character entropy, in nats: (name, low, high), low <= H < high.
ENTROPY_BINS = (
    ("near-deterministic", 0.0, 0.5),
    ("moderate", 0.5, 1.5),
    ("uncertain", 1.5, math.inf),
)

# METHOD.md's published figures of the reference study (its own model, 20,000 pool prompts).
PUBLISHED = {
    "label": "reference study (its own model, 20,000 pool prompts)",
    "prompts": 20000,
    "hellinger": {"mean": 0.1677, "std": 0.1215, "min": 0.0013, "median": None, "max": 0.9994,
                  "below_0.2": 13779, "above_0.99": 8},
    "topk": {"1": {"order": 0.806, "set": 0.806}, "2": {"order": 0.502, "set": 0.568},
             "3": {"order": 0.342, "set": 0.405}, "5": {"order": 0.209, "set": 0.248}},
    "noise_floor_hellinger_mean": 0.106,
}


# --- per-prompt metrics ------------------------------------------------------------------------
def summarise(H: np.ndarray, agree: dict) -> dict:
    """Per-prompt Hellinger distances and agreement arrays -> the headline numbers."""
    H = np.asarray(H, dtype=np.float64)
    n = len(H)
    if n == 0:
        return {"prompts": 0, "hellinger": None, "topk": None}
    return {
        "prompts": int(n),
        "hellinger": {"mean": float(H.mean()), "std": float(H.std()),
                      "sem": float(H.std(ddof=1) / math.sqrt(n)) if n > 1 else None,
                      "min": float(H.min()), "median": float(np.median(H)), "max": float(H.max()),
                      "below_0.2": int((H < 0.2).sum()), "above_0.99": int((H > 0.99).sum())},
        "topk": {str(k): {"order": float(a["order"].mean()), "set": float(a["set"].mean())}
                 for k, a in agree.items()},
    }


def score(model_probs: np.ndarray, dists: dict, ks=TOPK) -> dict:
    """Each method's distributions (name -> (N, V)) against the model's (N, V): Hellinger mean,
    std, sem, min, median, max, prompts below 0.2 and above 0.99, and top-k agreement (k = 1, 2,
    3, 5) in order and as sets. -> {name: summary}."""
    P = np.atleast_2d(np.asarray(model_probs, dtype=np.float64))
    out = {}
    for name, q in dists.items():
        Q = np.atleast_2d(np.asarray(q, dtype=np.float64))
        if Q.shape != P.shape:
            raise ValueError(f"{name}: shape {Q.shape}, the model's is {P.shape}")
        out[name] = summarise(hellinger(P, Q), agreement_arrays(P, Q, ks))
    return out


def paired(h_approx: np.ndarray, h_other: np.ndarray) -> dict:
    """Paired comparison of per-prompt distances: mean of (other - approximation) with a 95 %
    normal interval, and the share of prompts where the approximation is strictly closer / the
    other is strictly closer."""
    d = np.asarray(h_other, dtype=np.float64) - np.asarray(h_approx, dtype=np.float64)
    n = len(d)
    half = float(1.96 * d.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {"mean_diff": float(d.mean()) if n else float("nan"), "ci95": half,
            "approx_closer": float((d > 0).mean()) if n else float("nan"),
            "other_closer": float((d < 0).mean()) if n else float("nan")}


# --- strata ------------------------------------------------------------------------------------
def _bin_label(lo: float, hi: float) -> str:
    if lo <= 0:
        return f"H < {hi:g} nats"
    if math.isinf(hi):
        return f"H >= {lo:g} nats"
    return f"{lo:g} <= H < {hi:g} nats"


def strata(model_probs: np.ndarray, H: dict, top1: dict, bins=ENTROPY_BINS) -> dict:
    """Prompts grouped by the model's entropy (nats; each bin is low <= entropy < high).
    ``H``: method -> (N,) Hellinger distances; ``top1``: method -> (N,) bools (top-1 agreement).
    -> {"unit": "nats", "bins": [{name, label, lo, hi, count, share, methods: {name:
    {hellinger_mean, top1}}}]}; an empty bin's means are None."""
    e = entropy(model_probs)
    N = len(e)
    out = []
    for name, lo, hi in bins:
        m = (e >= lo) & (e < hi)
        c = int(m.sum())
        methods = {}
        for meth in H:
            h = np.asarray(H[meth], dtype=np.float64)
            t = np.asarray(top1[meth]) if meth in top1 else None
            methods[meth] = {
                "hellinger_mean": float(h[m].mean()) if c else None,
                "top1": float(t[m].mean()) if (c and t is not None) else None,
            }
        out.append({"name": name, "label": _bin_label(lo, hi), "lo": float(lo),
                    "hi": None if math.isinf(hi) else float(hi), "count": c,
                    "share": c / N if N else 0.0, "methods": methods})
    return {"unit": "nats", "bins": out, "entropy_mean": float(e.mean()) if N else None}


# --- neighbour statistics ------------------------------------------------------------------------
def log_edges(max_value: int) -> list[int]:
    """Integer bin edges 0, 1, 3, 10, 30, 100, ... (1-3-10 steps) past ``max_value``: bins are
    [edge_i, edge_{i+1}), the first one holding exactly 0."""
    edges, step = [0, 1], 0
    while edges[-1] <= max_value:
        edges.append(edges[-1] * (3 if step % 2 == 0 else 10) // (1 if step % 2 == 0 else 3))
        step += 1
    return edges


def _edge_labels(edges) -> list[str]:
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        out.append(str(a) if b - a == 1 else f"{a:,}–{b - 1:,}")
    return out


def neighbour_stats(sizes: np.ndarray, self_only: np.ndarray | None = None) -> dict:
    """Neighbour-set sizes (N, L) per prompt and block -> per block quantiles (min, p10, median,
    p90, max, mean), the share of prompts with an empty set and with a self-only set (the prompt's
    own string and nothing else), a log-scale histogram (1-3-10 bins), and shares over blocks."""
    S = np.asarray(sizes, dtype=np.int64)
    N, L = S.shape
    so = np.zeros_like(S, dtype=bool) if self_only is None else np.asarray(self_only, dtype=bool)
    edges = log_edges(int(S.max()) if S.size else 0)
    blocks, hist = [], []
    for b in range(L):
        s = S[:, b]
        q = np.percentile(s, [0, 10, 50, 90, 100]) if N else [0] * 5
        blocks.append({"block": b, "min": int(q[0]), "p10": float(q[1]), "median": float(q[2]),
                       "p90": float(q[3]), "max": int(q[4]), "mean": float(s.mean()) if N else 0.0,
                       "empty_share": float((s == 0).mean()) if N else 0.0,
                       "self_only_share": float(so[:, b].mean()) if N else 0.0})
        idx = np.searchsorted(edges, s, side="right") - 1
        hist.append(np.bincount(idx, minlength=len(edges) - 1)[: len(edges) - 1].tolist())
    poor = (S == 0) | so
    return {
        "blocks": blocks,
        "histogram": {"edges": edges, "labels": _edge_labels(edges), "counts": hist},
        "any_empty_share": float((S == 0).any(1).mean()) if N else 0.0,
        "all_empty_share": float((S == 0).all(1).mean()) if N else 0.0,
        "any_self_only_share": float(so.any(1).mean()) if N else 0.0,
        "all_empty_or_self_only_share": float(poor.all(1).mean()) if N else 0.0,
    }


# --- weights fitted on a tuning split -------------------------------------------------------------
def split_prompts(n: int, seed: int = 0, tune_share: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint sorted index arrays (tune, test) covering range(n): a seeded permutation, the
    first round(n * tune_share) to tuning."""
    if not 0.0 <= tune_share <= 1.0:
        raise ValueError("tune_share must lie in [0, 1]")
    perm = np.random.default_rng(seed).permutation(n)
    m = int(round(n * tune_share))
    return np.sort(perm[:m]).astype(np.int64), np.sort(perm[m:]).astype(np.int64)


def blended(counts: np.ndarray, weights, mode: str, fallback: np.ndarray) -> np.ndarray:
    """(N, L, V) counts blended with ``weights`` (``mode`` raw or normalised), all-zero rows
    replaced by ``fallback`` (V,), as :func:`app.evaluate.evaluate` does."""
    return blend_or_unigram(counts, weights, mode, fallback)[0]


def mean_shares(counts: np.ndarray, weights, mode: str) -> np.ndarray:
    """Each block's share of the blend, averaged over prompts (under the given blend mode)."""
    _, raw, norm = blend_counts(counts, np.asarray(weights, dtype=np.float64), mode)
    s = raw if mode == "raw" else norm
    return s.mean(0) if len(s) else np.zeros(np.shape(counts)[1])


def fit_weights(counts: np.ndarray, model_probs: np.ndarray, blend: str = "raw", init=None,
                steps: int = 300, lr: float = 0.1) -> np.ndarray:
    """Nonnegative per-block weights (L,) minimising the mean Hellinger distance between the blend
    of ``counts`` (N, L, V) and ``model_probs`` (N, V).

    Weights are w = softplus(theta) / scale, where scale is each block's mean count total under the
    raw blend (so the optimiser sees blocks on a common footing) and 1 under the normalised blend;
    Adam on theta, full batch, float64, ``steps`` steps from ``init`` (default: equal weights).
    Prompts whose blocks are all empty (the blend does not depend on the weights) are left out.
    The blend is scale-invariant, so the best weights found are returned scaled to a maximum of 1.
    Deterministic: no randomness, fixed step count."""
    if blend not in ("raw", "normalised"):
        raise ValueError(f"blend must be 'raw' or 'normalised', not {blend!r}")
    C = torch.as_tensor(np.asarray(counts, dtype=np.float64))
    P = torch.as_tensor(np.asarray(model_probs, dtype=np.float64))
    if C.ndim != 3 or P.shape != (C.shape[0], C.shape[2]):
        raise ValueError(f"counts must be (N, L, V) and model_probs (N, V): {tuple(C.shape)}, "
                         f"{tuple(P.shape)}")
    L = C.shape[1]
    tot = C.sum(-1)  # (N, L)
    keep = tot.sum(-1) > 0
    C, P, tot = C[keep], P[keep], tot[keep]
    w0 = np.ones(L) if init is None else np.asarray(init, dtype=np.float64)
    if w0.shape != (L,) or (w0 < 0).any() or not np.isfinite(w0).all():
        raise ValueError(f"init must be {L} nonnegative finite weights")
    if len(C) == 0:
        return w0 / w0.max() if w0.max() > 0 else np.ones(L)
    if blend == "raw":
        scale = tot.mean(0).clamp_min(1.0)  # (L,)
        X = C / scale[None, :, None]
    else:
        scale = torch.ones(L, dtype=torch.float64)
        X = torch.where(tot[..., None] > 0, C / tot.clamp_min(1.0)[..., None], torch.zeros_like(C))
    Xt = X.permute(0, 2, 1).contiguous()  # (N, V, L)
    u0 = torch.as_tensor(w0) * scale
    u0 = u0 / u0.max() if u0.max() > 0 else torch.ones(L, dtype=torch.float64)
    u0 = u0.clamp_min(1e-3)
    theta = torch.log(torch.expm1(u0)).clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=lr)

    def loss_of(th):
        u = torch.nn.functional.softplus(th)
        mix = Xt @ u  # (N, V)
        q = mix / mix.sum(-1, keepdim=True).clamp_min(1e-300)
        bc = torch.sqrt((P * q).clamp_min(1e-30)).sum(-1)
        return torch.sqrt((1.0 - bc).clamp_min(1e-12)).mean()

    best, best_theta = math.inf, theta.detach().clone()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: one thread is faster, and the sums' order is fixed
    try:
        for _ in range(steps):
            opt.zero_grad()
            loss = loss_of(theta)
            if loss.item() < best:
                best, best_theta = loss.item(), theta.detach().clone()
            loss.backward()
            opt.step()
        with torch.no_grad():
            last = loss_of(theta).item()
            if last < best:
                best, best_theta = last, theta.detach().clone()
            w = (torch.nn.functional.softplus(best_theta) / scale).numpy()
    finally:
        torch.set_num_threads(threads)
    return w / w.max()


# --- threshold sweep -------------------------------------------------------------------------------
def default_sweep_values(threshold: float) -> list[float]:
    """Thresholds around ``threshold``: 1 - (1 - t) x (4, 2.5, 1.6, 1.25, 1, 0.8, 0.6, 0.4, 0.25),
    clipped to [-1, 1], rounded to 6 places, increasing, without repeats."""
    gap = 1.0 - float(threshold)
    vals = {round(float(np.clip(1.0 - gap * f, -1.0, 1.0)), 6)
            for f in (4, 2.5, 1.6, 1.25, 1, 0.8, 0.6, 0.4, 0.25)}
    return sorted(vals)


def threshold_sweep(engine: Engine, prompts, settings: QuerySettings | None, block: int, values,
                    batch_size: int = 256) -> list[dict]:
    """Mean Hellinger distance, top-1 agreement and neighbour-set sizes when ``block``'s threshold
    takes each of ``values`` and everything else stays as ``settings`` (threshold mode; resolved
    against the store). ``prompts``: pool rows (N,) or token ids (N, T), as for evaluate.

    The result for each value is what :func:`app.evaluate.evaluate` gives with that threshold
    (same search, blend and unigram fallback); the forward pass and the other blocks' neighbours
    are computed once and only ``block`` is searched again per value.
    -> [{threshold, mean_h, top1, mean_neighbours, median_neighbours, empty_share,
    self_only_share, fallback_share}]"""
    store = engine.store
    s = replace(settings or QuerySettings(), mode="threshold").resolved(store)
    L = store.n_layer
    if not 0 <= block < L:
        raise ValueError(f"block must be in [0, {L})")
    ids, self_rows = prompt_ids(store, prompts)
    N, V = len(ids), store.counts.vocab_size
    probs = np.zeros((N, V))
    counts = np.zeros((N, L, V))
    queries = []
    for a in range(0, N, batch_size):
        sr = self_rows[a : a + batch_size]
        p, ffn = engine.forward(ids[a : a + len(sr)])
        probs[a : a + len(sr)] = p
        Q = unit(ffn[block])
        ex = torch.from_numpy(sr.copy()) if s.exclude_self else None
        queries.append((a, Q, ex, sr))
        for b in range(L):
            if b != block:
                counts[a : a + len(sr), b] = block_counts(engine, b, unit(ffn[b]), s, ex, sr)[0]
    out = []
    for t in values:
        t = float(t)
        st = replace(s, thresholds=[t if b == block else x for b, x in enumerate(s.thresholds)])
        st = st.resolved(store)  # checks the value
        sizes, hits = np.zeros(N, np.int64), np.zeros(N, np.int64)
        for a, Q, ex, sr in queries:
            c, n, h = block_counts(engine, block, Q, st, ex, sr)
            counts[a : a + len(sr), block] = c
            sizes[a : a + len(sr)], hits[a : a + len(sr)] = n, h
        approx, empty, _, _ = blend_or_unigram(counts, st.weights, st.blend, engine.unigram)
        H = hellinger(probs, approx)
        top1 = agreement_arrays(probs, approx, ks=(1,))[1]["order"]
        out.append({"threshold": t, "mean_h": float(H.mean()) if N else None,
                    "top1": float(top1.mean()) if N else None,
                    "mean_neighbours": float(sizes.mean()) if N else None,
                    "median_neighbours": float(np.median(sizes)) if N else None,
                    "empty_share": float((sizes == 0).mean()) if N else None,
                    "self_only_share": float(((sizes == 1) & (hits == 1)).mean()) if N else None,
                    "fallback_share": float(empty.mean()) if N else None})
    return out


# --- permalinks and interesting prompts --------------------------------------------------------------
def _num_list(vals) -> str:
    return ",".join(repr(float(v)) for v in vals)


def _same(a, b) -> bool:
    return a is not None and b is not None and len(a) == len(b) and \
        all(abs(float(x) - float(y)) <= 1e-12 for x, y in zip(a, b))


def permalink(prompt: str, settings: QuerySettings | None = None, base_url: str = "/",
              defaults: QuerySettings | None = None, backend: str | None = None) -> str:
    """The explorer's URL for ``prompt`` under ``settings``: only parameters that differ from the
    explorer's defaults are written (mode, thresholds, k, weights, blend, exclude_self=1, backend;
    thresholds and weights are left out when None or equal to ``defaults``' resolved values)."""
    s = settings or QuerySettings()
    items = {"prompt": prompt}
    if s.mode != "threshold":
        items["mode"] = s.mode
    if s.thresholds is not None and not (defaults is not None and _same(s.thresholds, defaults.thresholds)):
        items["thresholds"] = _num_list(s.thresholds)
    if s.weights is not None and not (defaults is not None and _same(s.weights, defaults.weights)):
        items["weights"] = _num_list(s.weights)
    if s.k != 200:
        items["k"] = str(int(s.k))
    if s.blend != "raw":
        items["blend"] = s.blend
    if s.exclude_self:
        items["exclude_self"] = "1"
    if backend:
        items["backend"] = backend
    sep = "&" if "?" in base_url else "?"
    return base_url + sep + urlencode(items)


def _top(p: np.ndarray, chars: str | None, k: int = 3) -> list[dict]:
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
             "model_top": _top(P[i], chars), "others": {m: float(h[i]) for m, h in others.items()}}
        if approx in dists:
            e["approx_top"] = _top(np.asarray(dists[approx][i], dtype=np.float64), chars)
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


# --- building the report ------------------------------------------------------------------------------
def _distributions(obj, ids: np.ndarray, N: int, V: int) -> np.ndarray:
    d = obj if isinstance(obj, np.ndarray) else obj.distributions(ids)
    d = np.asarray(d, dtype=np.float64)
    if d.shape != (N, V):
        raise ValueError(f"a baseline gave shape {d.shape}, expected {(N, V)}")
    return d


def _renamed(p: dict) -> dict:
    """paired(as set, fitted) under names that say which is which."""
    return {"mean_diff_fitted_minus_as_set": p["mean_diff"], "ci95": p["ci95"],
            "as_set_closer": p["approx_closer"], "fitted_closer": p["other_closer"]}


def _verdicts(headline: dict, pairs: dict, identical: set) -> list[dict]:
    """Plain sentences, one per baseline, saying which is closer to the model, whichever way it
    goes (kind "baseline_wins", "approx_wins" or "identity"), led by a one-line summary."""
    a = headline[APPROX]
    ha, t1a = a["hellinger"]["mean"], a["topk"]["1"]["order"]
    out, winners = [], []
    for name, p in pairs.items():
        b = headline[name]
        hb, t1b = b["hellinger"]["mean"], b["topk"]["1"]["order"]
        if name in identical:
            out.append({"kind": "identity", "method": name, "text":
                        f"{name} is the model's own softmax (mean Hellinger {hb:.4f}): a check of "
                        f"the pipeline, not a rival; it matches the model by construction."})
            continue
        noise = math.isfinite(p["ci95"]) and abs(p["mean_diff"]) <= p["ci95"]
        diff = f"difference {abs(p['mean_diff']):.4f} ± {p['ci95']:.4f} at 95 %"
        if hb < ha:
            winners.append(name)
            text = (f"The {name} baseline beats the approximation: mean Hellinger {hb:.4f} against "
                    f"{ha:.4f} ({diff}); it is closer to the model on {p['other_closer']:.1%} of "
                    f"prompts")
        else:
            text = (f"The approximation beats {name}: mean Hellinger {ha:.4f} against {hb:.4f} "
                    f"({diff}); it is closer to the model on {p['approx_closer']:.1%} of prompts")
        if t1b > t1a:
            text += f"; {name} agrees with the model's top character more often ({t1b:.3f} against {t1a:.3f})"
        elif t1b < t1a:
            text += f"; top-1 agreement {t1a:.3f} against {t1b:.3f}"
        else:
            text += f"; the same top-1 agreement ({t1a:.3f})"
        text += "." + (" The difference in mean Hellinger is within the noise of this sample." if noise else "")
        out.append({"kind": "baseline_wins" if hb < ha else "approx_wins", "method": name, "text": text})
    rivals = [m for m in pairs if m not in identical]
    if rivals:
        if winners:
            head = (f"{len(winners)} of {len(rivals)} baselines are closer to the model than the "
                    f"approximation on mean Hellinger: {', '.join(winners)}.")
        else:
            head = (f"The approximation is closer to the model than every baseline "
                    f"({len(rivals)}) on mean Hellinger.")
        out.insert(0, {"kind": "summary_bad" if winners else "summary_good", "method": None, "text": head})
    return out


def build_report(engine: Engine, prompts, settings: QuerySettings | None = None,
                 baselines: dict | None = None, mode_label: str = "reference",
                 base_url: str = "/", *, about: dict | None = None, tune_share: float = 0.5,
                 split_seed: int = 0, sweep_prompts: int = 256, sweep_block: int | None = None,
                 sweep_values=None, n_interesting: int = 5, fit_steps: int = 300,
                 batch_size: int = 256, progress: bool = False, backend: str | None = None,
                 published: bool | None = None, extra: dict | None = None,
                 single_blocks: bool = True) -> tuple[dict, dict]:
    """Evaluate ``prompts`` (pool rows (N,) or token ids (N, T)) under ``settings`` and compare
    the approximation with every baseline (name -> an object with ``distributions(ids)``, or a
    ready (N, V) array), for one mode (``mode_label``, e.g. "reference" or "held-out").

    Returns (report, figures): ``report`` is JSON-ready (plain Python types) and ``figures`` maps a
    name to an SVG string; :func:`write_report` writes both. Sections: meta, headline (every
    method), paired comparisons and verdicts, strata by entropy, neighbour statistics, weights
    fitted on a tuning split and scored on the disjoint test split (both blends), a threshold
    sweep of the dominant block on the tuning split (threshold mode only), interesting prompts with
    permalinks under ``base_url`` (``backend`` is added to them when given), and METHOD.md's
    published figures when ``published`` (default: when the mode label starts with "reference").
    ``about``: workspace.about(...) for the page header; ``extra``: any more JSON to keep;
    ``single_blocks``: add each block's own neighbours alone as a method ("block-b-alone")."""
    store = engine.store
    s = (settings or QuerySettings()).resolved(store)
    defaults = QuerySettings().resolved(store)
    L, V = store.n_layer, store.counts.vocab_size
    ev = evaluate(engine, prompts, s, batch_size=batch_size, progress=progress, keep=True,
                  keep_counts=True)
    arr = ev["arrays"]
    ids, self_rows = prompt_ids(store, prompts)
    N = len(ids)
    chars = engine.tok.chars
    texts = [engine.tok.decode(r) for r in ids]
    P = arr["model_probs"]
    dists = {APPROX: arr["approx"]}
    for name, bl in (baselines or {}).items():
        if name == APPROX:
            raise ValueError(f"{APPROX!r} names the approximation; give the baseline another name")
        dists[name] = _distributions(bl, ids, N, V)
    if single_blocks:  # each block's neighbours alone (its summed follow-on counts, normalised)
        for b in range(L):
            dists[f"block-{b}-alone"] = blended(arr["counts"][:, b : b + 1], [1.0], "raw",
                                                engine.unigram)
    methods = list(dists)
    colors = method_colors(methods)

    # Headline: every method against the model, per prompt then summarised.
    Hs, agrees = {}, {}
    for m in methods:
        Hs[m] = hellinger(P, dists[m])
        agrees[m] = agreement_arrays(P, dists[m])
    headline = {m: summarise(Hs[m], agrees[m]) for m in methods}
    pairs = {m: paired(Hs[APPROX], Hs[m]) for m in methods if m != APPROX}
    identical = {m for m in pairs if float(Hs[m].max(initial=0.0)) < 1e-6}
    verdicts = _verdicts(headline, pairs, identical)
    rivals = [m for m in pairs if m not in identical]
    best_rival = min(rivals, key=lambda m: headline[m]["hellinger"]["mean"]) if rivals else None

    notes = []
    in_pool = float((self_rows >= 0).mean()) if N else 0.0
    if not s.exclude_self and in_pool > 0:
        notes.append(f"{in_pool:.0%} of the prompts are pool strings and self-exclusion is off: each of "
                     "those finds itself among its neighbours (cosine 1) and its own corpus "
                     "continuations count in the approximation (METHOD.md, weakness 1).")
    if s.exclude_self:
        notes.append("Self-exclusion is on: a prompt's own pool string (all its occurrences) is left "
                     "out of every block's neighbours. The baselines are not changed by it.")
    if ev["fallback_share"] > 0:
        notes.append(f"{ev['fallback_share']:.1%} of prompts had no neighbour in any block; their "
                     "approximation is the unigram distribution.")

    # Strata by the model's entropy.
    st = strata(P, Hs, {m: agrees[m][1]["order"] for m in methods})

    # Neighbour-set sizes.
    nb = neighbour_stats(arr["sizes"], arr["self_only"])

    # Weights fitted on a tuning split, scored on the test split.
    tune, test = split_prompts(N, split_seed, tune_share)
    counts = arr["counts"]
    fit = {"tune_prompts": int(len(tune)), "test_prompts": int(len(test)), "split_seed": split_seed,
           "steps": fit_steps, "rows": [], "note": None}
    if len(tune) >= 2 and len(test) >= 1:
        Pt = P[test]
        as_set = arr["approx"][test]
        h_set = hellinger(Pt, as_set)
        t1_set = agreement_arrays(Pt, as_set, ks=(1,))[1]["order"]
        fit["rows"].append({
            "label": f"as set ({s.blend} blend)", "blend": s.blend, "fitted": False,
            "weights": [float(w) for w in s.weights],
            "shares": mean_shares(counts[test], s.weights, s.blend).tolist(),
            "tune_h": float(hellinger(P[tune], arr["approx"][tune]).mean()),
            "test_h": float(h_set.mean()), "test_top1": float(t1_set.mean())})
        for mode in (s.blend, "normalised" if s.blend == "raw" else "raw"):
            init = s.weights if mode == s.blend else None
            w = fit_weights(counts[tune], P[tune], mode, init=init, steps=fit_steps)
            a_tune = blended(counts[tune], w, mode, engine.unigram)
            a_test = blended(counts[test], w, mode, engine.unigram)
            h_test = hellinger(Pt, a_test)
            fit["rows"].append({
                "label": f"fitted ({mode} blend)", "blend": mode, "fitted": True,
                "weights": [float(x) for x in w],
                "shares": mean_shares(counts[test], w, mode).tolist(),
                "tune_h": float(hellinger(P[tune], a_tune).mean()),
                "test_h": float(h_test.mean()),
                "test_top1": float(agreement_arrays(Pt, a_test, ks=(1,))[1]["order"].mean()),
                "vs_as_set": _renamed(paired(h_set, h_test))})
        fit["baselines_test_h"] = {m: float(Hs[m][test].mean()) for m in methods if m != APPROX}
        best = min(fit["rows"], key=lambda r: r["test_h"])
        fit["best"] = best["label"]
        if best["fitted"]:
            fit["verdict"] = (f"Weights fitted on the tuning prompts lower the test-split mean "
                              f"Hellinger from {fit['rows'][0]['test_h']:.4f} (as set) to "
                              f"{best['test_h']:.4f} ({best['label']}).")
        else:
            fit["verdict"] = ("Weights fitted on the tuning prompts do no better on the test split "
                              f"than the weights as set ({fit['rows'][0]['test_h']:.4f}).")
        closer = sorted((h, m) for m, h in fit["baselines_test_h"].items()
                        if m in rivals and h < best["test_h"])
        if closer:
            fit["verdict"] += (f" Even so, {len(closer)} baseline(s) are closer to the model on the "
                               f"test split: {', '.join(f'{m} ({h:.4f})' for h, m in closer)}.")
    else:
        fit["note"] = "too few prompts to split into tuning and test sets"

    # Threshold sweep of the dominant block, on tuning prompts.
    sweep = None
    if s.mode == "threshold" and N:
        shares = mean_shares(counts, s.weights, s.blend)
        blk = int(np.argmax(shares)) if sweep_block is None else int(sweep_block)
        vals = default_sweep_values(s.thresholds[blk]) if sweep_values is None else list(sweep_values)
        sub = tune if len(tune) else np.arange(N)
        sub = sub[: max(1, sweep_prompts)]
        prom = np.asarray(prompts)[sub]
        sweep = {"block": blk, "prompts": int(len(sub)), "split": "tuning" if len(tune) else "all",
                 "current": float(s.thresholds[blk]),
                 "points": threshold_sweep(engine, prom, s, blk, vals, batch_size)}

    inter = interesting(texts, Hs[APPROX], P, dists, s, base_url, n_interesting, chars, defaults,
                        backend, rival="ngram" if "ngram" in rivals else best_rival)

    meta = {
        "mode": mode_label, "prompts": int(N), "backend": ev["backend"],
        "settings": ev["settings"], "seconds": ev["seconds"],
        "prompts_in_pool_share": in_pool,
        "pool_size": int(store.size), "pool_mode": store.pool.mode, "n": int(store.pool.n),
        "model_name": store.manifest.get("model_name"), "corpus_name": store.manifest.get("corpus_name"),
        "n_layer": int(L), "vocab_size": int(V),
        "defaults_rule": store.defaults.get("rule"),
        "about": about or {},
    }
    show_pub = mode_label.lower().startswith("reference") if published is None else published
    report = {
        "title": f"ffnlens evaluation report: {mode_label}",
        "meta": meta, "methods": methods, "colors": colors, "headline": headline,
        "paired": pairs, "identical_to_model": sorted(identical), "best_rival": best_rival,
        "verdicts": verdicts, "notes": notes, "strata": st, "neighbours": nb, "fit": fit,
        "sweep": sweep, "interesting": inter, "published": PUBLISHED if show_pub else None,
        "per_prompt": {"prompts": texts,
                       "hellinger": {m: np.round(Hs[m], 6).tolist() for m in methods},
                       "entropy": np.round(entropy(P), 6).tolist(),
                       "sizes": arr["sizes"].tolist()},
        "extra": extra or {},
    }
    return to_jsonable(report), make_figures(report, Hs)


def method_colors(methods) -> dict:
    """The report's colours: the approximation orange and the model blue (as in the explorer),
    the n-gram green, the unigram grey, the logit lens of each block a shade of violet (lighter
    for earlier blocks), anything else from the figures' palette."""
    lens = sorted((m for m in methods if str(m).startswith("logit-lens-")),
                  key=lambda m: (len(m), m))
    fixed = {"ngram": "#15803d", "unigram": "#6b7280", **dict(zip(lens, fig.shades(len(lens))))}
    return fig.series_colors(methods, fixed)


def _short_count(v: int) -> str:
    return f"{v // 1000}k" if v >= 1000 and v % 1000 == 0 else (f"{v / 1000:g}k" if v >= 1000 else str(v))


def make_figures(report: dict, per_prompt_h: dict | None = None) -> dict:
    """The report's SVG charts from its own data (``per_prompt_h``: method -> (N,) distances;
    default: the report's per_prompt section). Methods identical to the model (the last block's
    logit lens) are left out of the charts: they would only draw H = 0."""
    colors = report["colors"]
    methods = [m for m in report["methods"] if m not in set(report.get("identical_to_model") or [])]
    Hs = per_prompt_h or {m: np.asarray(v) for m, v in report["per_prompt"]["hellinger"].items()}
    head = report["headline"]
    out = {}
    out["hellinger"] = fig.histogram_panels(
        {m: Hs[m] for m in methods}, np.linspace(0, 1, 21),
        "Hellinger distance to the model, per prompt (0: identical, 1: disjoint)",
        "Hellinger distance", "share of prompts", colors, share=True, reference=APPROX,
        notes={m: f"mean {head[m]['hellinger']['mean']:.3f}" for m in methods})
    ks = list(head[methods[0]]["topk"] or {})
    cats = [(k, how) for k in ks for how in ("order", "set") if not (k == "1" and how == "set")]
    out["topk"] = fig.grouped_bars(
        [f"top-{k} {how}" for k, how in cats],
        {m: [head[m]["topk"][k][how] for k, how in cats] for m in methods},
        "Top-k agreement with the model (higher is better)", "share of prompts", colors,
        y_range=(0, 1), width=780)
    bins = report["strata"]["bins"]
    out["strata"] = fig.grouped_bars(
        [f"{b['name']} ({b['count']})" for b in bins],
        {m: [b["methods"][m]["hellinger_mean"] if b["methods"][m]["hellinger_mean"] is not None
             else float("nan") for b in bins] for m in methods},
        "Mean Hellinger distance by the model's entropy (lower is better; prompts per stratum)",
        "mean Hellinger", colors, y_range=(0, 1), width=780, value_format="{:.2f}")
    nb = report["neighbours"]
    L = len(nb["blocks"])
    edges = nb["histogram"]["edges"]
    out["neighbours"] = fig.histogram_panels(
        {f"block {b}": np.repeat(np.arange(len(c)) + 0.5, c) for b, c in enumerate(nb["histogram"]["counts"])},
        np.arange(len(edges)), "Neighbour-set size per block (log bins: 0, 1-2, 3-9, 10-29, ...)",
        "neighbours (strings), bins from their lower edge", "prompts",
        dict(zip([f"block {b}" for b in range(L)], fig.shades(L, "#fdba74", "#9a3412"))),
        tick_labels=[_short_count(e) for e in edges[:-1]],
        notes={f"block {b['block']}": f"median {b['median']:g}" for b in nb["blocks"]})
    fit = report["fit"]
    if fit["rows"]:
        labels = [r["label"] for r in fit["rows"]]
        out["weights"] = fig.grouped_bars(
            [f"block {b}" for b in range(L)], {r["label"]: r["shares"] for r in fit["rows"]},
            "Each block's mean share of the blend on the test prompts", "share of the blend",
            dict(zip(labels, [fig.APPROX, "#7c3aed", "#0891b2", "#be185d"])), y_range=(0, 1),
            width=780)
    sw = report["sweep"]
    if sw and sw["points"]:
        x = [p["threshold"] for p in sw["points"]]
        out["sweep"] = fig.line_chart(
            x, {f"{APPROX} (mean H)": [p["mean_h"] for p in sw["points"]],
                "top-1 agreement": [p["top1"] for p in sw["points"]]},
            f"Block {sw['block']}'s threshold against mean Hellinger and top-1 ({sw['prompts']} prompts)",
            f"block {sw['block']} threshold (now {sw['current']!r}; evenly spaced, not to scale)", "",
            {f"{APPROX} (mean H)": fig.APPROX, "top-1 agreement": "#15803d"}, y_range=(0, 1),
            x_categorical=True, width=700)
        out["sweep_sizes"] = fig.line_chart(
            x, {"mean": [p["mean_neighbours"] for p in sw["points"]],
                "median": [p["median_neighbours"] for p in sw["points"]]},
            f"Block {sw['block']}'s neighbour-set size against its threshold",
            f"block {sw['block']} threshold (evenly spaced)", "strings (log scale)", y_log=True,
            colors={"mean": "#7c3aed", "median": "#0891b2"}, x_categorical=True, width=700)
    return out


# --- writing ---------------------------------------------------------------------------------------------
def to_jsonable(obj):
    """Plain JSON types: numpy scalars and arrays to Python, NaN and infinities to None, tuples
    and sets to lists, dict keys to strings."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        items = sorted(obj) if isinstance(obj, set) else obj
        return [to_jsonable(v) for v in items]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, QuerySettings):
        return to_jsonable(asdict(obj))
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def render_html(report: dict, figures: dict, embed: bool = True, figure_dir: str = "figures") -> str:
    """The report page (templates/report.html, autoescaped). With ``embed`` the SVGs are inlined
    (they are generated here, every text in them escaped); otherwise they are linked as
    ``figure_dir/NAME.svg``. Works for a file on disk and for a web route alike."""
    from markupsafe import Markup

    figs = {name: (Markup(svg) if embed else None) for name, svg in figures.items()}
    site_css = Markup((ROOT / "static" / "style.css").read_text())  # our own file, not user text
    return environment().get_template("report.html").render(
        r=report, figs=figs, embed=embed, figure_dir=figure_dir, approx=APPROX, site_css=site_css)


def write_report(out_dir, report: dict, figures: dict) -> Path:
    """Write ``out_dir``/report.json, ``out_dir``/figures/NAME.svg and ``out_dir``/report.html
    (the SVGs inlined, so the page stands alone); returns the HTML file's path."""
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    data = to_jsonable(report)
    (out / "report.json").write_text(json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False))
    for name, svg in figures.items():
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(name))
        (out / "figures" / f"{safe}.svg").write_text(svg)
    page = out / "report.html"
    page.write_text(render_html(data, figures))
    return page


def load_report(out_dir) -> tuple[dict, dict]:
    """Read back what :func:`write_report` wrote: (report, figures)."""
    out = Path(out_dir)
    report = json.loads((out / "report.json").read_text())
    figs = {p.stem: p.read_text() for p in sorted((out / "figures").glob("*.svg"))}
    return report, figs
