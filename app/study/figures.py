"""Small hand-written SVG charts for the evaluation report: no plotting library, no script.

Every function returns one self-contained ``<svg>`` element as a string (valid XML, also valid
inline in HTML), deterministic for the same input: coordinates are printed with fixed precision,
series keep the order they were given in, and every piece of text (titles, labels, legend entries,
category names) is escaped. Colours follow ``static/style.css``: the model is blue (#2563eb), the
approximation orange (#ea580c); other series take the fixed palette below, in order.

- :func:`histogram_panels`: several samples' histograms over shared bins as small multiples, one
  panel per series, optionally with a reference series (the approximation) drawn over every panel.
- :func:`line_chart`: y against x for several named series (linear or log y axis).
- :func:`grouped_bars`: one group of bars per category, one bar per series.
"""
from __future__ import annotations

import math
from html import escape

import numpy as np

MODEL = "#2563eb"
APPROX = "#ea580c"
INK = "#1f2937"
MUTED = "#6b7280"
LINE = "#e5e7eb"
# Other series, in order (none of them close to the model's blue or the approximation's orange).
PALETTE = ("#15803d", "#6b7280", "#7c3aed", "#0891b2", "#be185d", "#a16207", "#1e3a8a",
           "#4d7c0f", "#9f1239", "#0f766e", "#78350f", "#111827")
FONT = "system-ui, -apple-system, Segoe UI, Roboto, sans-serif"


def esc(text) -> str:
    """Text escaped for XML content and attribute values (& < > \" ')."""
    return escape(str(text), quote=True)


def series_colors(names, fixed: dict | None = None) -> dict:
    """A colour per series name: ``fixed`` first, then "model..." blue, "approx..." orange, the
    rest from :data:`PALETTE` in order."""
    out, i = {}, 0
    for name in names:
        low = str(name).lower()
        if fixed and name in fixed:
            out[name] = fixed[name]
        elif low.startswith("model"):
            out[name] = MODEL
        elif low.startswith("approx"):
            out[name] = APPROX
        else:
            out[name] = PALETTE[i % len(PALETTE)]
            i += 1
    return out


def shades(n: int, light: str = "#c4b5fd", dark: str = "#4c1d95") -> list[str]:
    """n colours from ``light`` to ``dark`` (a family of related series, e.g. one per block)."""
    a = [int(light[i : i + 2], 16) for i in (1, 3, 5)]
    b = [int(dark[i : i + 2], 16) for i in (1, 3, 5)]
    out = []
    for j in range(n):
        t = j / (n - 1) if n > 1 else 1.0
        out.append("#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(a, b)))
    return out


def tick_format(values) -> list[str]:
    """Labels for tick values with one shared number of decimals, the fewest that tells every
    value apart and writes each within 1e-9 (so 0.99995 and 0.99998 stay distinct)."""
    vals = [float(v) for v in values]
    for d in range(0, 10):
        labels = [f"{v:,.{d}f}" for v in vals]
        exact = all(abs(float(lab.replace(",", "")) - v) <= 1e-9 * max(1.0, abs(v))
                    for lab, v in zip(labels, vals))
        if exact and len(set(labels)) == len(set(vals)):
            return labels
    return [f"{v:.10g}" for v in vals]


def _f(x: float) -> str:
    """A coordinate with fixed precision (deterministic text)."""
    v = round(float(x), 2)
    return ("%.2f" % v).rstrip("0").rstrip(".") if v != 0 else "0"


def fmt_num(v: float) -> str:
    """A tick label: short and exact enough."""
    v = float(v)
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 10000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round tick values covering [lo, hi]."""
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) if lo else 1.0)
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step + 1e-9) * step
    ticks, t = [], start
    while t <= hi + step * 1e-6:
        ticks.append(round(t, 12))
        t += step
    if ticks[-1] < hi - step * 1e-6:
        ticks.append(round(t, 12))
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten covering [lo, hi] (lo > 0)."""
    a = math.floor(math.log10(max(lo, 1e-12)))
    b = math.ceil(math.log10(max(hi, lo * 10, 1e-12)))
    return [10.0 ** e for e in range(a, b + 1)]


class _Canvas:
    """Plot area bookkeeping and SVG element helpers."""

    def __init__(self, width: int, height: int, title: str, left=62, right=16, top=34, bottom=48,
                 legend_rows: int = 0):
        self.w, self.h = width, height
        self.top = top + 18 * legend_rows
        self.left, self.right, self.bottom = left, right, bottom
        self.x0, self.x1 = left, width - right
        self.y0, self.y1 = height - bottom, self.top  # y0 bottom (pixels), y1 top
        self.parts: list[str] = []
        self.title = title

    def text(self, x, y, s, anchor="middle", size=12, color=INK, weight=None, rotate=None, cls=None):
        attrs = [f'x="{_f(x)}"', f'y="{_f(y)}"', f'text-anchor="{anchor}"', f'font-size="{size}"',
                 f'fill="{color}"']
        if weight:
            attrs.append(f'font-weight="{weight}"')
        if rotate is not None:
            attrs.append(f'transform="rotate({_f(rotate)} {_f(x)} {_f(y)})"')
        if cls:
            attrs.append(f'class="{esc(cls)}"')
        self.parts.append(f"<text {' '.join(attrs)}>{esc(s)}</text>")

    def line(self, x1, y1, x2, y2, color=LINE, width=1.0, dash=None):
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(f'<line x1="{_f(x1)}" y1="{_f(y1)}" x2="{_f(x2)}" y2="{_f(y2)}" '
                          f'stroke="{color}" stroke-width="{_f(width)}"{d}/>')

    def rect(self, x, y, w, h, color, title=None, opacity=None):
        o = f' fill-opacity="{_f(opacity)}"' if opacity is not None else ""
        inner = f"<title>{esc(title)}</title>" if title else ""
        self.parts.append(f'<rect x="{_f(x)}" y="{_f(y)}" width="{_f(max(w, 0))}" '
                          f'height="{_f(max(h, 0))}" fill="{color}"{o}>{inner}</rect>')

    def path(self, points, color, width=2.0, dash=None):
        if not points:
            return
        d = "M" + " L".join(f"{_f(x)} {_f(y)}" for x, y in points)
        da = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(f'<path d="{d}" fill="none" stroke="{color}" stroke-width="{_f(width)}" '
                          f'stroke-linejoin="round"{da}/>')

    def circle(self, x, y, r, color, title=None):
        inner = f"<title>{esc(title)}</title>" if title else ""
        self.parts.append(f'<circle cx="{_f(x)}" cy="{_f(y)}" r="{_f(r)}" fill="{color}">{inner}</circle>')

    def legend(self, names, colors, kind="line"):
        """Legend entries laid out left to right under the title, wrapping to new rows."""
        x, y = self.left, 44
        for name in names:
            label = str(name)
            width = 26 + 7 * len(label)
            if x + width > self.w - self.right and x > self.left:
                x, y = self.left, y + 18
            if kind == "line":
                self.line(x, y - 4, x + 16, y - 4, colors[name], 3)
            else:
                self.rect(x, y - 10, 12, 12, colors[name])
            self.text(x + 20, y, label, anchor="start", size=12)
            x += width + 12

    def y_axis(self, ticks, to_px, label, fmt=None):
        labels = [fmt(t) for t in ticks] if fmt else tick_format(ticks)
        for t, lab in zip(ticks, labels):
            y = to_px(t)
            self.line(self.x0, y, self.x1, y, LINE, 1)
            self.text(self.x0 - 6, y + 4, lab, anchor="end", size=11, color=MUTED)
        self.line(self.x0, self.y0, self.x0, self.y1, MUTED, 1)
        if label:
            cy = (self.y0 + self.y1) / 2
            self.text(14, cy, label, size=12, color=MUTED, rotate=-90)

    def x_label(self, label):
        if label:
            self.text((self.x0 + self.x1) / 2, self.h - 8, label, size=12, color=MUTED)

    def svg(self, desc: str = "") -> str:
        head = (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {self.w} {self.h}" '
                f'width="{self.w}" height="{self.h}" role="img" font-family="{esc(FONT)}">')
        title = f"<title>{esc(self.title)}</title>"
        d = f"<desc>{esc(desc)}</desc>" if desc else ""
        bg = f'<rect x="0" y="0" width="{self.w}" height="{self.h}" fill="#ffffff"/>'
        heading = (f'<text x="{_f(self.left)}" y="20" font-size="14" font-weight="600" '
                   f'fill="{INK}">{esc(self.title)}</text>')
        return head + title + d + bg + heading + "".join(self.parts) + "</svg>"


def _legend_rows(names, width, left=62, right=16) -> int:
    rows, x = 1, left
    for name in names:
        w = 26 + 7 * len(str(name))
        if x + w > width - right and x > left:
            rows, x = rows + 1, left
        x += w + 12
    return rows


def _clean(values) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64).ravel()
    return a[np.isfinite(a)]


def _histograms(series: dict, edges: np.ndarray, share: bool) -> dict:
    out = {}
    for name, values in series.items():
        v = _clean(values)
        h = np.histogram(np.clip(v, edges[0], edges[-1]), bins=edges)[0].astype(np.float64)
        out[name] = h / max(1, len(v)) if share else h
    return out


def _pct(t: float) -> str:
    return f"{t:.0%}"


def _x_bins(c: "_Canvas", edges: np.ndarray, tick_labels, x0: float, x1: float, y0: float,
            size: int = 11) -> np.ndarray:
    """Draw the x axis of a histogram between x0 and x1 (pixels) and return the bins' edges in
    pixels: equal-width labelled categories with ``tick_labels``, else linear in the edges."""
    K = len(edges) - 1
    if tick_labels is not None:
        if len(tick_labels) != K:
            raise ValueError(f"tick_labels needs {K} labels, one per bin")
        pos = np.linspace(x0, x1, K + 1)
        for i, lab in enumerate(tick_labels):
            c.text((pos[i] + pos[i + 1]) / 2, y0 + 14, lab, size=size, color=MUTED)
        return pos
    span = edges[-1] - edges[0]
    pos = x0 + (edges - edges[0]) / span * (x1 - x0)
    ticks = [t for t in nice_ticks(edges[0], edges[-1], 5) if edges[0] - 1e-12 <= t <= edges[-1] + 1e-12]
    for t, lab in zip(ticks, tick_format(ticks)):
        x = x0 + (t - edges[0]) / span * (x1 - x0)
        c.line(x, y0, x, y0 + 4, MUTED, 1)
        c.text(x, y0 + 14, lab, size=size, color=MUTED)
    return pos


def _steps(pos, h, ypx) -> list:
    pts = [(pos[0], ypx(0))]
    for i in range(len(h)):
        pts += [(pos[i], ypx(h[i])), (pos[i + 1], ypx(h[i]))]
    return pts + [(pos[-1], ypx(0))]


def _prepare(series: dict, edges, colors: dict | None, share: bool):
    """Checked edges, series names, their colours and their histograms."""
    edges = np.asarray(edges, dtype=np.float64)
    if len(edges) < 2:
        raise ValueError("a histogram needs at least two edges")
    names = list(series)
    colors = colors or series_colors(names)
    return edges, names, colors, _histograms(series, edges, share)


def histogram_panels(series: dict, edges, title: str, x_label: str = "", y_label: str = "prompts",
                     colors: dict | None = None, share: bool = False,
                     reference: str | None = None, columns: int = 3, panel_width: int = 250,
                     panel_height: int = 150, tick_labels: list[str] | None = None,
                     notes: dict | None = None) -> str:
    """Small multiples: one histogram panel per series (filled bars in its colour) on a shared
    y scale; with ``reference`` (a series name), that series is drawn in every other panel too,
    as a step line, to compare against. ``notes``: name -> a short text under the panel's name
    (e.g. the mean).

    ``series``: name -> values (a 1-D array); ``edges``: the K + 1 increasing bin edges (a value v
    falls in [edges[i], edges[i+1]); the last bin also takes v == edges[-1]; values outside are
    clipped into the end bins). ``share=True`` plots each series' fraction of its values instead
    of counts. ``tick_labels`` (K strings) draws the bins as equal-width categories labelled by
    them (for log-spaced or irregular bins); otherwise the x axis is linear in the edges."""
    edges, names, colors, hists = _prepare(series, edges, colors, share)
    cols = max(1, min(columns, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    left, gap_x, head, gap_y, foot = 56, 18, 50, 26, 40
    width = left + cols * panel_width + (cols - 1) * gap_x + 12
    height = head + rows * (panel_height + gap_y) + foot
    c = _Canvas(width, height, title, left=left, top=head, bottom=foot)
    ymax = max([h.max() for h in hists.values()] + [1e-12])
    yt = nice_ticks(0, ymax, 3)
    top = yt[-1]
    labels = [_pct(t) for t in yt] if share else tick_format(yt)
    K = len(edges) - 1
    for idx, name in enumerate(names):
        r, k = divmod(idx, cols)
        px0 = left + k * (panel_width + gap_x)
        px1 = px0 + panel_width
        py1 = head + r * (panel_height + gap_y) + 18  # plot top (below the panel's name)
        py0 = head + r * (panel_height + gap_y) + panel_height - 14  # plot bottom

        def ypx(v, py0=py0, py1=py1):
            return py0 - (py0 - py1) * (v / top if top > 0 else 0)

        note = f" ({notes[name]})" if notes and name in notes else ""
        c.rect(px0, py1 - 16, 11, 11, colors[name])
        c.text(px0 + 15, py1 - 6, f"{name}{note}", anchor="start", size=12, weight="600")
        for t, lab in zip(yt, labels):
            c.line(px0, ypx(t), px1, ypx(t), LINE, 1)
            if k == 0:
                c.text(px0 - 5, ypx(t) + 4, lab, anchor="end", size=10, color=MUTED)
        pos = _x_bins(c, edges, tick_labels, px0, px1, py0 + 1, size=9 if tick_labels else 10)
        h = hists[name]
        for i in range(K):
            if h[i] > 0:
                c.rect(pos[i] + 0.5, ypx(h[i]), pos[i + 1] - pos[i] - 1, py0 - ypx(h[i]), colors[name],
                       f"{name}: {fmt_num(h[i]) if not share else _pct(h[i])}", opacity=0.75)
        if reference is not None and reference in hists and name != reference:
            c.path(_steps(pos, hists[reference], ypx), colors[reference], 1.5)
        c.line(px0, py0, px1, py0, MUTED, 1)
    if y_label:
        c.text(14, head + rows * (panel_height + gap_y) / 2, y_label, size=12, color=MUTED, rotate=-90)
    if reference is not None and reference in hists and len(names) > 1:
        c.line(left, 36, left + 16, 36, colors[reference], 2)
        c.text(left + 20, 40, f"{reference}, drawn in every panel for comparison", anchor="start",
               size=11, color=MUTED)
    c.x_label(x_label)
    desc = "; ".join(f"{n}: " + ", ".join(fmt_num(v) for v in hists[n]) for n in names)
    return c.svg(f"bins {', '.join(fmt_num(e) for e in edges)}. {desc}")


def line_chart(x, series: dict, title: str, x_label: str = "", y_label: str = "",
               colors: dict | None = None, y_log: bool = False, y_range: tuple | None = None,
               width: int = 640, height: int = 300, markers: bool = True,
               x_ticks: list[float] | None = None, x_categorical: bool = False) -> str:
    """y against x for several named series (``series``: name -> y values, len(x) each; NaN
    leaves a gap). ``y_log`` draws a log10 y axis (non-positive values are left out);
    ``x_categorical`` spaces the x values evenly and labels each (for geometric sweeps)."""
    x = np.asarray(x, dtype=np.float64)
    names = list(series)
    colors = colors or series_colors(names)
    ys = {n: np.asarray(series[n], dtype=np.float64) for n in names}
    for n in names:
        if ys[n].shape != x.shape:
            raise ValueError(f"series {n!r} has {ys[n].size} values for {x.size} x values")
    c = _Canvas(width, height, title, legend_rows=_legend_rows(names, width))
    allv = np.concatenate([v[np.isfinite(v) & ((v > 0) if y_log else True)] for v in ys.values()]
                          + [np.zeros(0)])
    if y_range is not None:
        lo, hi = y_range
    elif len(allv):
        lo, hi = float(allv.min()), float(allv.max())
        if not y_log:
            lo = min(lo, 0.0)
    else:
        lo, hi = (1.0, 10.0) if y_log else (0.0, 1.0)
    if y_log:
        yt = log_ticks(max(lo, 1e-12), max(hi, lo))
        llo, lhi = math.log10(yt[0]), math.log10(yt[-1])
        lhi = lhi if lhi > llo else llo + 1

        def ypx(v):
            return c.y0 - (c.y0 - c.y1) * (math.log10(v) - llo) / (lhi - llo)
    else:
        yt = nice_ticks(lo, hi, 4)
        tlo, thi = yt[0], yt[-1]

        def ypx(v):
            return c.y0 - (c.y0 - c.y1) * (v - tlo) / (thi - tlo if thi > tlo else 1)
    c.y_axis(yt, ypx, y_label)
    if x_categorical:
        n_x = len(x)
        index = {float(xv): i for i, xv in enumerate(x)}

        def xpx(v):
            return c.x0 + 32 + (c.x1 - c.x0 - 64) * (index[float(v)] / max(1, n_x - 1))

        for xv, lab in zip(x, tick_format(x)):
            c.line(xpx(xv), c.y0, xpx(xv), c.y0 + 4, MUTED, 1)
            c.text(xpx(xv), c.y0 + 16, lab, size=10 if n_x > 7 else 11, color=MUTED)
    else:
        fx = x[np.isfinite(x)]
        xlo, xhi = (float(fx.min()), float(fx.max())) if len(fx) else (0.0, 1.0)
        if xhi <= xlo:
            xlo, xhi = xlo - 0.5, xhi + 0.5

        def xpx(v):
            return c.x0 + 8 + (c.x1 - c.x0 - 16) * (v - xlo) / (xhi - xlo)

        ticks = x_ticks if x_ticks is not None else (list(x) if len(x) <= 8 else nice_ticks(xlo, xhi, 6))
        ticks = [t for t in ticks if xlo - 1e-12 <= t <= xhi + 1e-12]
        for t, lab in zip(ticks, tick_format(ticks)):
            c.line(xpx(t), c.y0, xpx(t), c.y0 + 4, MUTED, 1)
            c.text(xpx(t), c.y0 + 16, lab, size=11, color=MUTED)
    c.line(c.x0, c.y0, c.x1, c.y0, MUTED, 1)
    for n in names:
        seg, pts = [], []
        for xv, yv in zip(x, ys[n]):
            ok = math.isfinite(xv) and math.isfinite(yv) and (yv > 0 if y_log else True)
            if ok:
                seg.append((xpx(xv), ypx(yv)))
                pts.append((xpx(xv), ypx(yv), xv, yv))
            elif seg:
                c.path(seg, colors[n], 2)
                seg = []
        c.path(seg, colors[n], 2)
        if markers:
            for px, py, xv, yv in pts:
                c.circle(px, py, 3, colors[n], f"{n}: x = {xv:.10g}, y = {yv:.6g}")
    c.legend(names, colors, "line")
    c.x_label(x_label)
    return c.svg("; ".join(f"{n}: " + ", ".join(f"({xv:.10g}, {yv:.6g})" for xv, yv in zip(x, ys[n]))
                           for n in names))


def grouped_bars(categories, series: dict, title: str, y_label: str = "",
                 colors: dict | None = None, y_range: tuple | None = None, width: int = 640,
                 height: int = 300, value_format: str = "{:.2f}", labels: bool = True) -> str:
    """One group per category, one bar per series within it (``series``: name -> one value per
    category; NaN draws no bar). Values are printed above the bars when there is room."""
    cats = [str(s) for s in categories]
    names = list(series)
    colors = colors or series_colors(names)
    vals = {n: np.asarray(series[n], dtype=np.float64) for n in names}
    for n in names:
        if vals[n].shape != (len(cats),):
            raise ValueError(f"series {n!r} needs one value per category ({len(cats)})")
    c = _Canvas(width, height, title, legend_rows=_legend_rows(names, width))
    allv = np.concatenate([v[np.isfinite(v)] for v in vals.values()] + [np.zeros(1)])
    lo, hi = y_range if y_range is not None else (min(0.0, float(allv.min())), float(allv.max()))
    yt = nice_ticks(lo, hi, 4)
    tlo, thi = yt[0], yt[-1]

    def ypx(v):
        return c.y0 - (c.y0 - c.y1) * (v - tlo) / (thi - tlo if thi > tlo else 1)

    c.y_axis(yt, ypx, y_label)
    G = max(1, len(cats))
    gw = (c.x1 - c.x0) / G
    bw = gw * 0.8 / max(1, len(names))
    for gi, cat in enumerate(cats):
        gx = c.x0 + gi * gw + gw * 0.1
        for si, n in enumerate(names):
            v = vals[n][gi]
            if not math.isfinite(v):
                continue
            x = gx + si * bw
            y, base = ypx(max(v, tlo)), ypx(max(min(0.0, thi), tlo))
            c.rect(x + 1, min(y, base), bw - 2, abs(base - y), colors[n], f"{n}, {cat}: {value_format.format(v)}")
            if labels and bw >= 26:
                c.text(x + bw / 2, min(y, base) - 3, value_format.format(v), size=10, color=MUTED)
        c.text(c.x0 + gi * gw + gw / 2, c.y0 + 16, cat, size=11, color=MUTED)
    c.line(c.x0, ypx(max(min(0.0, thi), tlo)), c.x1, ypx(max(min(0.0, thi), tlo)), MUTED, 1)
    c.legend(names, colors, "box")
    return c.svg("; ".join(f"{n}: " + ", ".join(f"{cat} {value_format.format(v)}"
                                                for cat, v in zip(cats, vals[n])) for n in names))
