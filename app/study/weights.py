"""The report's weight fit: per-block blend weights fitted on a tuning split of the prompts and
scored on the disjoint test split, against the weights as set (both blends)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..approx import QuerySettings, blend as blend_counts, blend_or_unigram
from ..metrics import agreement_arrays, hellinger
from .headline import paired


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
    replaced by ``fallback`` (V,), as :func:`app.study.evaluation.evaluate` does."""
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


def renamed_pair(p: dict) -> dict:
    """paired(as set, fitted) under names that say which is which."""
    return {"mean_diff_fitted_minus_as_set": p["mean_diff"], "ci95": p["ci95"],
            "as_set_closer": p["approx_closer"], "fitted_closer": p["other_closer"]}


@dataclass
class WeightFit:
    """The report's "fit" section: the weights as set and the fitted ones (``rows``), scored on the
    test split; ``note`` says why there are no rows; with rows, the baselines' test-split means,
    the best row's label and a verdict."""
    tune_prompts: int
    test_prompts: int
    split_seed: int
    steps: int
    rows: list = field(default_factory=list)
    note: str | None = None
    baselines_test_h: dict | None = None
    best: str | None = None
    verdict: str | None = None

    def to_json(self) -> dict:
        """The section as report.json holds it (the last three keys only when there are rows)."""
        out = {"tune_prompts": self.tune_prompts, "test_prompts": self.test_prompts,
               "split_seed": self.split_seed, "steps": self.steps, "rows": self.rows, "note": self.note}
        if self.baselines_test_h is not None:
            out.update(baselines_test_h=self.baselines_test_h, best=self.best, verdict=self.verdict)
        return out


def _row(label: str, mode: str, fitted: bool, w, counts, P, tune, test, a_tune, a_test) -> dict:
    """One row of the fit table: weights ``w`` under blend ``mode``, the approximation ``a_tune`` /
    ``a_test`` they give, scored on the tuning and test prompts."""
    Pt = P[test]
    return {"label": label, "blend": mode, "fitted": fitted, "weights": [float(x) for x in w],
            "shares": mean_shares(counts[test], w, mode).tolist(),
            "tune_h": float(hellinger(P[tune], a_tune).mean()),
            "test_h": float(hellinger(Pt, a_test).mean()),
            "test_top1": float(agreement_arrays(Pt, a_test, ks=(1,))[1]["order"].mean())}


def _verdict(rows: list, baselines_test_h: dict, rivals: list) -> tuple[str, str]:
    """(the best row's label, the sentence saying whether fitting helped and which baselines
    still do better on the test split)."""
    best = min(rows, key=lambda r: r["test_h"])
    if best["fitted"]:
        text = (f"Weights fitted on the tuning prompts lower the test-split mean "
                f"Hellinger from {rows[0]['test_h']:.4f} (as set) to "
                f"{best['test_h']:.4f} ({best['label']}).")
    else:
        text = ("Weights fitted on the tuning prompts do no better on the test split "
                f"than the weights as set ({rows[0]['test_h']:.4f}).")
    closer = sorted((h, m) for m, h in baselines_test_h.items() if m in rivals and h < best["test_h"])
    if closer:
        text += (f" Even so, {len(closer)} baseline(s) are closer to the model on the "
                 f"test split: {', '.join(f'{m} ({h:.4f})' for h, m in closer)}.")
    return best["label"], text


def fit_section(P: np.ndarray, approx: np.ndarray, counts: np.ndarray, s: QuerySettings,
                tune: np.ndarray, test: np.ndarray, H: dict, rivals: list, unigram: np.ndarray,
                split_seed: int, fit_steps: int) -> WeightFit:
    """The weights as set (``s``, resolved) and weights fitted on the ``tune`` prompts under both
    blends (from the current weights under the current blend, from equal weights under the other),
    each scored on the ``test`` prompts. ``P``: the model's (N, V); ``approx``: the approximation
    (N, V) as set; ``counts``: (N, L, V) each block's summed follow-on counts; ``H``: baseline ->
    (N,) Hellinger distances (the approximation left out); ``rivals``: the baselines not identical
    to the model."""
    fit = WeightFit(int(len(tune)), int(len(test)), split_seed, fit_steps)
    if not (len(tune) >= 2 and len(test) >= 1):
        fit.note = "too few prompts to split into tuning and test sets"
        return fit
    h_set = hellinger(P[test], approx[test])
    fit.rows.append(_row(f"as set ({s.blend} blend)", s.blend, False, s.weights, counts, P, tune,
                         test, approx[tune], approx[test]))
    for mode in (s.blend, "normalised" if s.blend == "raw" else "raw"):
        init = s.weights if mode == s.blend else None
        w = fit_weights(counts[tune], P[tune], mode, init=init, steps=fit_steps)
        a_tune = blended(counts[tune], w, mode, unigram)
        a_test = blended(counts[test], w, mode, unigram)
        row = _row(f"fitted ({mode} blend)", mode, True, w, counts, P, tune, test, a_tune, a_test)
        row["vs_as_set"] = renamed_pair(paired(h_set, hellinger(P[test], a_test)))
        fit.rows.append(row)
    fit.baselines_test_h = {m: float(h[test].mean()) for m, h in H.items()}
    fit.best, fit.verdict = _verdict(fit.rows, fit.baselines_test_h, rivals)
    return fit
