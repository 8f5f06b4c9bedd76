"""Taking a view away: any page as one self-contained HTML file, and its chart as SVG or PNG.

- ``?export=1`` on a page (the main page, a block, the strip, the tuning page, a string's story,
  the sublayer table, the report) answers the same page as a download: the stylesheet inlined, no
  script, the page's data embedded as JSON (``<pre id="ffnlens-data" hidden>``), and a caption
  naming the model, the store, the settings and the permalink, so the file opens offline and says
  what it shows.
- ``/chart/{view}.{svg|png}`` with a page's parameters draws that page's chart with matplotlib
  (app/study/plots.py), the same caption under it: the main page's model against the
  approximation, a block's follow-on distribution against the model, the strip's H at each
  position, the tuning sample's H histogram.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import urlencode

import numpy as np

ROOT = Path(__file__).resolve().parent.parent.parent
DATA_KEYS = ("tune", "strip", "block", "story", "effects", "data")  # where a page's context keeps its data
CHART_VIEWS = ("query", "block", "strip", "tune")


def view_data(ctx: dict):
    """The data a page shows (its JSON twin's), or None."""
    for key in DATA_KEYS:
        if ctx.get(key):
            return ctx[key]
    return None


def caption(ctx: dict, view: str, origin: str) -> str:
    """One line: what the view is, on which model and store, with which settings, and its
    permalink (absolute, from ``origin``)."""
    about = ctx.get("about") or {}
    data = view_data(ctx) or {}
    settings = data.get("settings") if isinstance(data, dict) else None
    if not settings and isinstance(ctx.get("data"), dict):
        settings = ctx["data"].get("settings")
    parts = [f"ffnlens · {view}", f"model {about.get('model', '?')} "
             f"({about.get('params', 0):,} parameters)",
             f"corpus {about.get('corpus', '?')}, pool {about.get('pool_size', 0):,} strings of {about.get('n', '?')}"]
    if not settings and ctx.get("vp") is not None:  # the settings as the URL gave them
        raw = {k: v for k, v in ctx["vp"].raw.items() if k != "prompt"}
        parts.append("settings " + ("; ".join(f"{k} {v}" for k, v in raw.items()) or "the store's defaults"))
    if settings:
        shown = {k: settings[k] for k in ("mode", "thresholds", "k", "weights", "blend") if k in settings}
        if shown.get("mode") == "threshold":
            shown.pop("k", None)
        parts.append("settings " + "; ".join(f"{k} {_short(v)}" for k, v in shown.items()))
    link = ctx.get("permalink") or ""
    if view == "strip" and isinstance(data, dict) and data.get("positions"):
        link = data["positions"][data["focus"]]["url"]
    if link:
        parts.append("permalink " + origin.rstrip("/") + link)
    return " · ".join(parts)


def _short(v) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(f"{x:.6g}" if isinstance(x, float) else str(x) for x in v)
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def export_context(ctx: dict, view: str, origin: str, data=None) -> dict:
    """What a page needs to be written as a file: the stylesheet, the caption, and its data
    (``data``, else what :func:`view_data` finds in ``ctx``) as JSON."""
    data = view_data(ctx) if data is None else data
    return {"css": (ROOT / "static" / "style.css").read_text(), "caption": caption(ctx, view, origin),
            "json": json.dumps(data, default=_plain, ensure_ascii=False, indent=1),
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def _plain(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


def filename(view: str, ctx: dict, ext: str) -> str:
    prompt = ""
    data = view_data(ctx)
    if isinstance(data, dict) and isinstance(data.get("prompt"), str):
        prompt = "".join(c if c.isalnum() else "-" for c in data["prompt"][:24]).strip("-")
    return f"ffnlens-{view}{'-' + prompt if prompt else ''}.{ext}"


def downloads(base: str, path: str, query: dict, view: str) -> dict:
    """The download links of a page: its HTML file, and its chart when the view has one."""
    q = {k: v for k, v in query.items() if k != "export"}
    out = {"html": f"{base}{path}?{urlencode({**q, 'export': '1'})}"}
    if view == "block":
        q["block"] = path.rstrip("/").rsplit("/", 1)[-1]
    if view in CHART_VIEWS:
        qs = urlencode(q)
        out["svg"] = f"{base}/chart/{view}.svg{'?' + qs if qs else ''}"
        out["png"] = f"{base}/chart/{view}.png{'?' + qs if qs else ''}"
    return out


# --- charts ------------------------------------------------------------------------------------
def chart(view: str, ctx: dict, cap: str):
    """The view's chart as a matplotlib figure, captioned; None when the page has no data."""
    from ..study import plots

    data = view_data(ctx)
    if data is None:
        return None
    if view == "query":
        top = data["chart"]["top"]
        fig = plots.grouped_bars([t["label"] for t in top],
                                 {"model": [t["model"] for t in top], "approximation": [t["approx"] for t in top]},
                                 f"After {data['prompt']!r}: the model and the approximation (H {data['hellinger']:.3f})",
                                 "probability", y_range=(0, 1), width=760, labels=False)
    elif view == "block":
        items = data.get("distribution") or []
        labels = [t["label"] for t in items][:12]
        fig = plots.grouped_bars(labels, {f"block {data['block']}'s neighbours' follow-on": [t["p"] for t in items][:12]},
                                 f"Block {data['block']} after {data['prompt']!r}: what followed its "
                                 f"{data.get('neighbours', 0):,} neighbours", "share", y_range=(0, 1),
                                 width=760, labels=False)
    elif view == "strip":
        pos = data["positions"]
        fig = plots.grouped_bars([p["char"] if p["char"].strip() else "␣" for p in pos],
                                 {"H (model vs approximation)": [p["hellinger"] for p in pos]},
                                 f"H at each position of {data['prompt'][:60]!r} (mean {data['mean_hellinger']:.3f})",
                                 "Hellinger distance", y_range=(0, 1), width=max(640, 14 * len(pos)), labels=False)
    elif view == "tune":
        f = data["figures"]
        edges = np.linspace(0, 1, len(f["h_hist"]) + 1)
        values = np.repeat((edges[:-1] + edges[1:]) / 2, f["h_hist"])
        fig = plots.histogram_panels({"approximation": values}, edges,
                                     f"H over {data['sample']}: mean {f['mean_h']:.4f}, top-1 {100 * f['top1']:.1f} %",
                                     "Hellinger distance", "prompts", columns=1, panel_width=640, panel_height=220)
    else:
        return None
    fig.legends.clear()  # the caption takes the bottom: a legend goes inside the axes
    if view == "query":
        fig.axes[0].legend(loc="upper right", fontsize=8)
    lines = _wrap(cap, int(fig.get_figwidth() * 100 / 5.2))
    fig.text(0.01, 0.01, lines, fontsize=6.5, color=plots.MUTED, ha="left", va="bottom")
    low = (lines.count("\n") + 1) * 11 / (fig.get_figheight() * 100) + 0.02  # the caption's share of the height
    fig.get_layout_engine().set(rect=(0, low, 1, 1 - low))
    return fig


def _wrap(s: str, width: int) -> str:
    from textwrap import wrap

    from ..study.plots import text

    return text("\n".join(wrap(s, width)))
