"""The reproduction's figures, the ones readers of the write-up know: the distribution of H over
the prompts with the noise-floor distributions on the same axes (its density plot), and the
worked examples' per-block bars (the model, each block alone, the blend, on the top characters)."""
from __future__ import annotations

import numpy as np

from . import plots as fig


def char_label(c: str) -> str:
    """A character as a chart label: newline and space made visible."""
    return {"\n": "⏎", " ": "␣"}.get(c, c)


def density_chart(dens: dict) -> str:
    """H's density over the prompts, the approximation against the model beside the model against
    each seed model, on the same axes."""
    edges = np.asarray(dens["edges"])
    centres = (edges[:-1] + edges[1:]) / 2
    series, colors = {}, {}
    seed_colors = iter(("#15803d", "#7c3aed", "#0891b2", "#be185d"))
    for name, d in dens["series"].items():
        label = (f"approximation vs model (mean {dens['means'][name]:.3f})" if name == "approximation"
                 else f"model vs {name} (mean {dens['means'][name]:.3f})")
        series[label] = d
        colors[label] = fig.APPROX if name == "approximation" else next(seed_colors, fig.MUTED)
    return fig.line_chart(centres, series, "Distribution of H over the prompts: the approximation "
                          "and the noise floor", "Hellinger distance", "density", colors,
                          markers=False, width=760, x_ticks=[0, 0.2, 0.4, 0.6, 0.8, 1.0])


def example_chart(ex: dict, chars: list, k: int = 6) -> str:
    """One worked example: the model, each block alone and the blend on the top ``k`` characters
    (the model's, then the blend's)."""
    model = np.asarray(ex["model"])
    blend = np.asarray(ex["blend"])
    order = list(np.argsort(-model, kind="stable")[:k])
    for i in np.argsort(-blend, kind="stable"):
        if len(order) >= k + 2:
            break
        if i not in order and blend[i] > 0.02:
            order.append(i)
    cats = [char_label(chars[i]) for i in order]
    series = {"model": [model[i] for i in order]}
    for b, blk in enumerate(ex["blocks"]):
        series[f"block {b} alone ({blk['size']:,})"] = [blk["dist"][i] for i in order]
    series[f"blend (H {ex['hellinger']:.3f})"] = [blend[i] for i in order]
    names = list(series)
    shades = fig.shades(len(ex["blocks"]), "#c4b5fd", "#4c1d95")
    colors = {names[0]: fig.MODEL, names[-1]: fig.APPROX, **dict(zip(names[1:-1], shades))}
    return fig.grouped_bars(cats, series, f"'{ex['prompt']}': the model, each block alone (set size) "
                            "and the blend", "probability", colors, y_range=(0, 1), width=860,
                            labels=False)


def reproduction_figures(section: dict) -> dict:
    """name -> matplotlib figure: "repro_density" and one "repro_example_N" per worked example."""
    out = {}
    if section.get("density"):
        out["repro_density"] = density_chart(section["density"])
    chars = section.get("chars")
    for i, ex in enumerate(section.get("examples") or []):
        if chars:
            out[f"repro_example_{i}"] = example_chart(ex, chars)
    return out
