"""The report's figures, drawn with matplotlib: SVG for the page, PNG and PDF for papers.

Each chart function returns a matplotlib ``Figure`` (the Agg backend: no display, no GUI);
:func:`render` turns one into SVG text, PNG bytes and PDF bytes, deterministically: the SVG's ids
come from a fixed hash salt, no format carries a date, and text stays text in the SVG (its
characters escaped by matplotlib's writer; a "$" in a label is taken literally, never as math).
Colours follow ``static/style.css``: the model blue, the approximation orange, other series from
the palette below in order.

- :func:`histogram_panels`: several samples' histograms over shared bins as small multiples, one
  panel per series, optionally with a reference series drawn over every other panel.
- :func:`line_chart`: y against x for several named series (linear or log y axis).
- :func:`grouped_bars`: one group of bars per category, one bar per series.
"""
from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .colors import APPROX, INK, LINE, MODEL, MUTED, PALETTE, series_colors, shades  # noqa: E402,F401

DPI = 100  # a width of W pixels is W / DPI inches; PNGs are drawn at 2x
STYLE = {"svg.hashsalt": "ffnlens", "svg.fonttype": "none", "font.family": "DejaVu Sans",
         "font.size": 9, "axes.edgecolor": MUTED, "axes.labelcolor": INK, "text.color": INK,
         "xtick.color": MUTED, "ytick.color": MUTED, "axes.spines.top": False,
         "axes.spines.right": False, "axes.grid": True, "grid.color": LINE, "grid.linewidth": 0.8,
         "axes.axisbelow": True, "legend.frameon": False, "axes.titlesize": 9,
         "axes.titleweight": "bold", "figure.titlesize": 11, "figure.titleweight": "bold"}


def text(s) -> str:
    """A label as matplotlib should print it: literally (a "$" never opens math)."""
    return str(s).replace("$", r"\$")


def _figure(width: int, height: int, rows: int = 1, cols: int = 1, **kw):
    with plt.rc_context(STYLE):
        fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False, **kw)
    return fig, axes


def _histograms(series: dict, edges: np.ndarray, share: bool) -> dict:
    out = {}
    for name, values in series.items():
        v = np.asarray(values, dtype=np.float64)
        v = np.clip(v[np.isfinite(v)], edges[0], edges[-1])
        h = np.histogram(v, bins=edges)[0].astype(np.float64)
        out[name] = h / max(1, len(v)) if share else h
    return out


def histogram_panels(series: dict, edges, title: str, x_label: str = "", y_label: str = "prompts",
                     colors: dict | None = None, share: bool = False,
                     reference: str | None = None, columns: int = 3, panel_width: int = 250,
                     panel_height: int = 150, tick_labels: list[str] | None = None,
                     notes: dict | None = None) -> Figure:
    """Small multiples: one histogram panel per series (bars in its colour) on a shared y scale;
    with ``reference`` (a series name), that series is drawn in every other panel too, as a step
    line. ``notes``: name -> a short text after the panel's name (e.g. the mean).

    ``series``: name -> values; ``edges``: the K + 1 increasing bin edges (values outside are
    clipped into the end bins); ``share=True`` plots each series' fraction of its values instead of
    counts; ``tick_labels`` (K strings) draws the bins as equal-width categories labelled by them."""
    edges = np.asarray(edges, dtype=np.float64)
    names = list(series)
    colors = colors or series_colors(names)
    hists = _histograms(series, edges, share)
    cols = max(1, min(columns, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    fig, axes = _figure(cols * panel_width + 60, rows * panel_height + 70, rows, cols,
                        sharex=True, sharey=True)
    pos = np.arange(len(edges)) if tick_labels is not None else edges
    top = max([float(h.max()) for h in hists.values() if len(h)] + [1e-9])
    with plt.rc_context(STYLE):
        for i, ax in enumerate(axes.flat):
            if i >= len(names):
                ax.set_visible(False)
                continue
            name = names[i]
            ax.bar(pos[:-1], hists[name], width=np.diff(pos), align="edge",
                   color=colors.get(name, MUTED), alpha=0.85, linewidth=0)
            if reference is not None and reference in hists and name != reference:
                ax.stairs(hists[reference], pos, color=colors.get(reference, APPROX), linewidth=1.2,
                          label=text(reference))
            note = f" ({notes[name]})" if notes and name in notes else ""
            label = f"{name}{note}"
            ax.set_title(text(label), loc="left", fontsize=8.5 if len(label) < 32 else 7.5)
            ax.set_ylim(0, top * 1.08)
            if tick_labels is not None:
                ax.set_xticks(np.arange(len(tick_labels)), [text(t) for t in tick_labels],
                              rotation=45 if len(tick_labels) > 6 else 0, fontsize=7)
            if i % cols == 0:
                ax.set_ylabel(text(y_label))
        if reference is not None and reference in hists and len(names) > 1:
            from matplotlib.lines import Line2D

            fig.legend([Line2D([], [], color=colors.get(reference, APPROX), linewidth=1.2)],
                       [text(f"{reference}, drawn over every other panel")], loc="outside lower right",
                       fontsize=8)
        if x_label:
            fig.supxlabel(text(x_label), fontsize=9)
        fig.suptitle(text(title), x=0.01, ha="left")
    return fig


def line_chart(x, series: dict, title: str, x_label: str = "", y_label: str = "",
               colors: dict | None = None, y_log: bool = False, y_range: tuple | None = None,
               width: int = 640, height: int = 300, markers: bool = True,
               x_ticks: list[float] | None = None, x_categorical: bool = False) -> Figure:
    """y against x for several named series (``series``: name -> y values, len(x) each; NaN leaves
    a gap). ``y_log`` draws a log10 y axis (non-positive values left out); ``x_categorical``
    spaces the x values evenly and labels each (for geometric sweeps)."""
    x = np.asarray(x, dtype=np.float64)
    names = list(series)
    colors = colors or series_colors(names)
    ys = {n: np.asarray(series[n], dtype=np.float64) for n in names}
    for n in names:
        if ys[n].shape != x.shape:
            raise ValueError(f"series {n!r} has {ys[n].size} values for {x.size} x values")
    fig, axes = _figure(width, height)
    ax = axes[0, 0]
    xs = np.arange(len(x)) if x_categorical else x
    with plt.rc_context(STYLE):
        for n in names:
            y = ys[n].copy()
            if y_log:
                y[~(y > 0)] = np.nan
            ax.plot(xs, y, color=colors.get(n, MUTED), linewidth=1.6, label=text(n),
                    marker="o" if markers else None, markersize=3.5)
        if y_log:
            ax.set_yscale("log")
        if y_range is not None:
            ax.set_ylim(*y_range)
        if x_categorical:
            ax.set_xticks(xs, [f"{v:g}" for v in x], rotation=45 if len(x) > 6 else 0, fontsize=7.5)
        elif x_ticks is not None:
            ax.set_xticks(x_ticks)
        ax.set_xlabel(text(x_label))
        ax.set_ylabel(text(y_label))
        ax.set_title(text(title), loc="left")
        fig.legend(loc="outside lower center", ncols=min(3, len(names)), fontsize=8)
    return fig


def grouped_bars(categories, series: dict, title: str, y_label: str = "",
                 colors: dict | None = None, y_range: tuple | None = None, width: int = 640,
                 height: int = 300, value_format: str = "{:.2f}", labels: bool = True) -> Figure:
    """One group per category, one bar per series within it (``series``: name -> one value per
    category; NaN draws no bar). With ``labels``, values are printed above the bars when there is
    room."""
    cats = [str(s) for s in categories]
    names = list(series)
    colors = colors or series_colors(names)
    vals = {n: np.asarray(series[n], dtype=np.float64) for n in names}
    for n in names:
        if vals[n].shape != (len(cats),):
            raise ValueError(f"series {n!r} needs one value per category ({len(cats)})")
    fig, axes = _figure(width, height)
    ax = axes[0, 0]
    w = 0.8 / max(1, len(names))
    room = labels and len(cats) * len(names) <= 24
    with plt.rc_context(STYLE):
        for j, n in enumerate(names):
            v = vals[n]
            xs = np.arange(len(cats)) - 0.4 + w * (j + 0.5)
            ok = np.isfinite(v)
            bars = ax.bar(xs[ok], v[ok], width=w, color=colors.get(n, MUTED), label=text(n), linewidth=0)
            if room:
                ax.bar_label(bars, labels=[value_format.format(x) for x in v[ok]], fontsize=6.5,
                             padding=1, color=INK)
        ax.grid(axis="x", visible=False)
        ax.set_xticks(np.arange(len(cats)), [text(c) for c in cats],
                      rotation=30 if max(map(len, cats), default=0) * len(cats) > 90 else 0, fontsize=7.5)
        if y_range is not None:
            ax.set_ylim(*y_range)
        ax.set_ylabel(text(y_label))
        ax.set_title(text(title), loc="left")
        fig.legend(loc="outside lower center", ncols=min(4, len(names)), fontsize=8)
    return fig


def render(fig: Figure, formats=("svg", "png", "pdf")) -> dict:
    """The figure as ``{"svg": str, "png": bytes, "pdf": bytes}`` (those asked for), each the same
    bytes for the same figure: the SVG's ids from the fixed hash salt, no dates."""
    out = {}
    meta = {"svg": {"Date": None}, "png": {"Software": None}, "pdf": {"CreationDate": None, "ModDate": None}}
    with plt.rc_context(STYLE):
        for f in formats:
            buf = io.BytesIO()
            fig.savefig(buf, format=f, dpi=2 * DPI if f == "png" else DPI, metadata=meta[f])
            out[f] = buf.getvalue().decode() if f == "svg" else buf.getvalue()
    return out
