"""The report's charts: its figures (:mod:`app.study.plots`, matplotlib) drawn from its own data."""
from __future__ import annotations

import numpy as np

from . import plots as fig
from .methods import APPROX


def short_count(v: int) -> str:
    """A bin edge as a tick: 3000 -> "3k", 1500 -> "1.5k", 300 -> "300"."""
    return f"{v // 1000}k" if v >= 1000 and v % 1000 == 0 else (f"{v / 1000:g}k" if v >= 1000 else str(v))


def make_figures(report: dict, per_prompt_h: dict | None = None) -> dict:
    """The report's charts (matplotlib figures) from its own data (``per_prompt_h``: method -> (N,) distances;
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
        tick_labels=[short_count(e) for e in edges[:-1]],
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
