"""The reproduction's rows, group by group: METHOD.md's published figure, ours computed the same
way (:mod:`app.study.repro_measures`), and the verdict (:mod:`app.study.repro_rows`). Each
group function returns its rows; a figure that cannot be computed on this model is a row saying
why, never left out."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..approx import Engine, QueryError, QuerySettings
from ..metrics import hellinger
from .evaluation import evaluate
from .repro_measures import block_alone_sweep, easy_hard, own_continuation, seen_mask
from .repro_rows import RUN, SAMPLE, SIZES, count_tol, judge, missing, row, scaled, share_tol

SEEDS = (1442, 88, 99999)
NOISE = {1442: (0.1064, 0.0823, 0.8351), 88: (0.1057, 0.0817, 0.7881), 99999: (0.1053, 0.0828, 0.8743)}
TOPK_PUBLISHED = {"1": (0.806, None), "2": (0.502, 0.568), "3": (0.342, 0.405), "5": (0.209, 0.248)}
REF_CMD = "ffnlens eval --report --thresholds reference"


def card(info: dict | None) -> dict:
    """The model's card.json (beside its config, ``info["dir"]``), or {} when there is none."""
    info = info or {}
    if "card" in info:
        return info["card"] or {}
    path = Path(info["dir"]) / "card.json" if info.get("dir") else None
    return json.loads(path.read_text()) if path is not None and path.exists() else {}


def model_rows(engine: Engine, info: dict) -> list:
    """Parameters and the losses (the config's, and the card's CPU recheck when there is one)."""
    g = "the model"
    out = [row("parameters", 10_788_929, int(engine.model.num_params()), "model.num_params()",
               group=g, tol=0, fmt="{:,}", reason="another architecture than METHOD.md's")]
    losses = (info or {}).get("losses") or {}
    recheck = card(info).get("cpu_recheck")
    for key, name, pub in (("train", "train loss", 0.9334), ("val", "validation loss", 1.5063)):
        if losses.get(key) is None:
            out.append(missing(name, pub, "the model's config records no losses", group=g))
            continue
        text = f"{losses[key]:.4f}"
        if recheck and recheck.get(key) is not None:
            text += f" (CPU recheck {recheck[key]:.4f} on {recheck.get('batches')} batches)"
        out.append(row(name, pub, float(losses[key]), "the model's config (the recipe's estimate "
                       "on 200 batches); card.json cpu_recheck", group=g, tol=0.03, ours_text=text,
                       reason=RUN + "; the estimate itself moves by about 0.01 with the batches"))
    return out


def headline_rows(summary: dict, arrays: dict, H: np.ndarray) -> list:
    """H mean, std, min, max, the counts below 0.2 and above 0.99 (and what those prompts'
    neighbour sets were), top-k agreement in order and as sets."""
    g, N = "evaluation (reference settings)", len(H)
    h = summary["hellinger"]
    how = f"{REF_CMD} --prompts {N}: the approximation against the model's softmax"
    out = [row("H mean", 0.1677, h["mean"], how, group=g, tol=0.01, reason=RUN),
           row("H std", 0.1215, h["std"], how, group=g, tol=0.01, reason=RUN),
           row("H min", 0.0013, h["min"], how, group=g, tol=0.01, reason=SAMPLE),
           row("H max", 0.9994, h["max"], how, group=g, tol=0.01, reason=SAMPLE)]
    for name, key, pub in (("prompts with H < 0.2", "below_0.2", 13779),
                           ("prompts with H > 0.99", "above_0.99", 8)):
        p = scaled(pub, N)
        out.append(row(name, p, h[key], how, group=g, tol=count_tol(pub, N), reason=RUN,
                       published_text=f"{pub:,}" + ("" if N == 20000 else f" (≈{p:,.1f} on {N:,})")))
    high = H > 0.99
    so = arrays["self_only"][high]
    every, some = int(so.all(1).sum()), int(so.any(1).sum())
    sizes = arrays["sizes"][high]
    text = (f"{every} of {int(high.sum())} self-only in every block, {some} in some block"
            + (f"; median set sizes {np.median(sizes, 0).astype(int).tolist()}" if high.any() else ""))
    out.append(row("neighbour sets of the prompts with H > 0.99", None, every, how, group=g,
                   published_text="all 8 had only themselves", ours_text=text,
                   status=("not computed" if not high.any() else
                           "matches" if every == int(high.sum()) else "differs"),
                   verdict=("not computed: no prompt lies above 0.99 here" if not high.any() else
                            "matches: every such prompt found only itself" if every == int(high.sum())
                            else "differs: some found more than themselves; likely: " + RUN)))
    for k, (order, as_set) in TOPK_PUBLISHED.items():
        ours = summary["topk"][k]
        name = "top-1" if k == "1" else f"top-{k} in order"
        out.append(row(name, order, ours["order"], how, group=g, tol=share_tol(order, N),
                       fmt="{:.3f}", reason=RUN))
        if as_set is not None:
            out.append(row(f"top-{k} as a set", as_set, ours["set"], how, group=g,
                           tol=share_tol(as_set, N), fmt="{:.3f}", reason=RUN))
    return out


def neighbour_rows(engine: Engine, ref: QuerySettings, arrays: dict) -> list:
    """Neighbour-set sizes on `And only l` per block, and block 4's on the first 500 prompts."""
    g = "neighbour sets (reference thresholds)"
    pub = [94, 47, 70, 108, 175, 2237]
    try:
        r = engine.query("And only l", ref)
        out = [row("neighbour sets on 'And only l'", pub, [br.n for br in r.blocks],
                   "ffnlens query 'And only l' --thresholds reference", group=g, tol=1.5,
                   kind="factor", reason=SIZES)]
    except QueryError as e:
        out = [missing("neighbour sets on 'And only l'", pub, str(e), group=g)]
    first = arrays["sizes"][:500, 4]
    how = f"the report's evaluation, block 4's set sizes on its first {len(first)} prompts"
    out += [row("block 4 set size on the first 500 prompts (mean)", 3284, float(first.mean()), how,
                group=g, tol=1.5, kind="factor", fmt="{:,.1f}", reason=SIZES),
            row("block 4 set size on the first 500 prompts (max)", 61657, int(first.max()), how,
                group=g, tol=2.0, kind="factor", reason=SIZES + "; " + SAMPLE)]
    return out


def density(values: np.ndarray, edges: np.ndarray) -> list:
    """A histogram as a density (integrates to 1 over the edges)."""
    h = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)[0]
    return (h / max(1, len(values)) / np.diff(edges)).tolist()


def noise_rows(P: np.ndarray, A: np.ndarray, H: np.ndarray, seeds: dict, model: str | None):
    """The model against each seed model (mean ± std, max) and the approximation against each
    seed; -> (rows, the densities of H for the chart)."""
    g = "noise floor"
    edges = np.linspace(0, 1, 41)
    dens = {"edges": edges.tolist(), "series": {"approximation": density(H, edges)},
            "means": {"approximation": float(H.mean())}}
    out, maxima, against = [], [], []
    for seed in SEEDS:
        name = f"seed-{seed}"
        mean, std, mx = NOISE[seed]
        fig = f"noise floor: model against seed {seed}"
        if name not in seeds:
            out.append(missing(fig, mean, f"no committed seed model {model}-seed{seed}", group=g,
                               published_text=f"{mean} ± {std}"))
            maxima.append(None)
            continue
        Hs = hellinger(P, seeds[name])
        dens["series"][name] = density(Hs, edges)
        dens["means"][name] = float(Hs.mean())
        maxima.append(float(Hs.max()))
        out.append(row(fig, mean, float(Hs.mean()), f"H between the model's and {model}-seed{seed}'s "
                       "softmax on the same prompts", group=g, tol=0.01, reason=RUN,
                       published_text=f"{mean} ± {std}", ours_text=f"{Hs.mean():.4f} ± {Hs.std():.4f}"))
        against.append(f"{name} {hellinger(seeds[name], A).mean():.4f}")
    pub_max = [NOISE[s][2] for s in SEEDS]
    if all(m is None for m in maxima):
        out.append(missing("noise floor maxima", pub_max, "no committed seed models", group=g))
        out.append(missing("approximation against each seed model", None, "no committed seed models",
                           group=g))
        return out, dens
    out.append(row("noise floor maxima", pub_max, maxima, "the largest H over the prompts, per seed",
                   group=g, tol=0.1, reason=SAMPLE, label="seed #"))
    out.append(row("approximation against each seed model", None, against[0] if against else None,
                   "H between each seed model's softmax and the approximation (of this model)",
                   group=g, ours_text="; ".join(against) + f" (against this model: {H.mean():.4f})"))
    return out, dens


def prompt_rows(engine: Engine, rows: np.ndarray, P: np.ndarray, H: np.ndarray, arrays: dict) -> list:
    """The own-continuation baseline, easy and hard prompts, seen and unseen prompts."""
    N = len(rows)
    own = own_continuation(engine, rows, P)
    out = [row("own continuation alone: top-1", 0.606, own["top1"], "each prompt's own pool string's "
               "follow-on counts (every occurrence's next character), normalised, top-1 against the "
               "model", group="baselines", tol=share_tol(0.606, N), fmt="{:.3f}", reason=RUN)]
    g = "easy and hard prompts"
    eh = easy_hard(P, arrays["agree"][1]["order"])
    for key, label, pub_n, pub_t in (("easy", "easy prompts (top > 0.99)", 3057, 0.998),
                                     ("top_two", "top two > 0.85", 10710, 0.936)):
        n, t1 = eh[key]["count"], eh[key]["top1"]
        how = f"the model's top probability {'> 0.99' if key == 'easy' else 'pair > 0.85'}, " \
              "the approximation's top-1 agreement on them"
        out.append(row(f"{label}: count", scaled(pub_n, N), n, how, group=g, tol=count_tol(pub_n, N),
                       published_text=f"{pub_n:,}", reason=RUN))
        out.append(row(f"{label.split(' (')[0]}: top-1", pub_t, t1, how, group=g,
                       tol=share_tol(pub_t, max(n, 1)), fmt="{:.3f}", reason=RUN,
                       verdict=None if n else "not computed: no such prompt here"))
    seen, n_train = seen_mask(engine.store, rows)
    g = "seen and unseen"
    how = (f"seen: the prompt occurs in the training split (the first {n_train:,} characters, 90 %); "
           "the write-up's seen: inside the random 256-character windows its training drew (nearly "
           "all of the training split), so the two differ only at the margins")
    for name, mask, pub_n, pub_h in (("seen", seen, 18171, 0.1649), ("unseen", ~seen, 1829, 0.2014)):
        n = int(mask.sum())
        out.append(row(f"{name} prompts: count", scaled(pub_n, N), n, how, group=g,
                       tol=count_tol(pub_n, N), published_text=f"{pub_n:,}", reason=RUN))
        out.append(row(f"{name} prompts: mean H", pub_h, float(H[mask].mean()) if n else None, how,
                       group=g, tol=0.015, reason=RUN))
    return out


def block_rows(engine: Engine, rows: np.ndarray, P: np.ndarray, ref: QuerySettings, H: np.ndarray,
               o) -> tuple[list, list]:
    """Each block alone with its best threshold (a sweep on the first prompts, the tuning split),
    the blend re-tuned with those thresholds and the store's calibrated thresholds (both scored on
    the next prompts, the test split, beside the reference thresholds on the same prompts)."""
    g = "thresholds"
    n_s = min(o.sweep_prompts, len(rows))
    sweep = block_alone_sweep(engine, rows[:n_s], P[:n_s], ref.thresholds)
    how = (f"each block's neighbours alone on the first {n_s} prompts, thresholds from the "
           "reference's - 0.04 to + 0.03 in steps of 0.002 (app/study/repro_measures.py)")
    best = [b["best"] for b in sweep]
    edge = [b for b, sw in enumerate(sweep) if sw["best"] in (sw["grid"][0], sw["grid"][-1])]
    if edge:
        how += (f"; block(s) {', '.join(map(str, edge))} best at the grid's edge: the best may lie "
                "beyond it")
    out = [row("each block alone: best threshold", [0.944, 0.948, 0.853, 0.756, 0.792, 0.889], best,
               how, group=g, tol=0.01, fmt="{:.3f}", reason=SIZES),
           row("each block alone: best mean H", [0.2289, 0.2206, 0.1887, 0.1764, 0.1810, 0.1874],
               [b["best_h"] for b in sweep], how, group=g, tol=0.02, reason=RUN)]
    test = np.arange(n_s, min(len(rows), n_s + o.test_prompts))
    if len(test) == 0:
        why = f"no prompts after the {n_s} tuning prompts to test on"
        return out + [missing("re-tuned thresholds: blend mean H", 0.1692, why, group=g),
                      missing("ours: calibrated thresholds, mean H", None, why, group=g)], sweep
    h_ref = float(H[test].mean())
    tuned = evaluate(engine, rows[test], QuerySettings(thresholds=best, weights=list(ref.weights)),
                     batch_size=o.batch_size, progress=False)["hellinger"]["mean"]
    where = f"tuned on prompts 0-{n_s - 1}, scored on prompts {n_s}-{test[-1]}"
    out.append(row("re-tuned thresholds: blend mean H", 0.1692, tuned, f"the best thresholds above, "
                   f"reference weights, {where}", group=g, tol=0.01, setting="ours", reason=RUN,
                   published_text="0.1692 (hand-tuned 0.1677)",
                   ours_text=f"{tuned:.4f} (reference thresholds on the same prompts {h_ref:.4f})"))
    cal = engine.store.defaults.get("thresholds")
    if not cal:
        out.append(missing("ours: calibrated thresholds, mean H", None,
                           "the store records no calibrated thresholds", group=g))
        return out, sweep
    h_cal = evaluate(engine, rows[test], QuerySettings(thresholds=list(cal), weights=list(ref.weights)),
                     batch_size=o.batch_size, progress=False)["hellinger"]["mean"]
    out.append(row("ours: calibrated thresholds, mean H", None, h_cal,
                   f"the store's calibrated thresholds {', '.join(f'{t:.4f}' for t in cal)} "
                   f"(rule {engine.store.defaults.get('rule')}), reference weights, prompts "
                   f"{n_s}-{test[-1]}", group=g, setting="ours",
                   ours_text=f"{h_cal:.4f} (reference thresholds on the same prompts {h_ref:.4f})"))
    return out, sweep


def weight_rows(fit: dict | None) -> list:
    """The weights fitted on the report's tuning split (by Hellinger; METHOD.md's by L2)."""
    g = "fitted weights"
    pub = [0.0047, -0.0015, 0.0003, 0.122, 0.816, 0.0001]
    fitted = [r for r in (fit or {}).get("rows") or [] if r["fitted"] and r["blend"] == "raw"]
    if not fitted:
        why = (fit or {}).get("note") or "the report fitted no weights"
        return [missing("fitted weights", pub, why, group=g),
                missing("fitted weights: top-1", 0.806, why, group=g)]
    r, as_set = fitted[0], fit["rows"][0]
    w = np.asarray(r["weights"], dtype=np.float64)
    order = [int(i) for i in np.argsort(-w)[:2]]
    same = order == [4, 3]
    how = (f"app/study/weights.py: Adam on the mean Hellinger distance ({fit['steps']} steps, raw "
           f"blend, from the reference weights) on {fit['tune_prompts']:,} tuning prompts, scored on "
           f"{fit['test_prompts']:,} test prompts; METHOD.md's: AdamW on the L2 distance from a random "
           "start, a 90/10 split")
    out = [row("fitted weights", pub, [float(x) for x in w], how, group=g, setting="ours",
               published_text="0.0047, -0.0015, 0.0003, 0.122, 0.816, 0.0001 (block 4, some of 3)",
               ours_text=", ".join(f"{x:.3g}" for x in w) + " (scaled to a maximum of 1)",
               status="matches" if same else "differs",
               verdict=("matches in shape: block 4 first, block 3 second" if same else
                        f"differs: blocks {order[0]} and {order[1]} lead; likely: fitted by "
                        f"Hellinger, not L2, and {RUN}"))]
    pt = 0.806
    st, vd = judge(pt, r["test_top1"], share_tol(pt, fit["test_prompts"]), "abs", RUN)
    out.append(row("fitted weights: top-1", pt, r["test_top1"], how, group=g, setting="ours",
                   fmt="{:.3f}", published_text="0.806 (no better than hand-tuned)",
                   ours_text=f"{r['test_top1']:.3f} (reference weights on the test split "
                             f"{as_set['test_top1']:.3f})", status=st, verdict=vd))
    return out
