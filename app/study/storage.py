"""The report on disk: report.json, figures/NAME.{svg,png,pdf} and report.html written, and read back."""
from __future__ import annotations

import json
from pathlib import Path

from .jsonable import to_jsonable
from .render import FORMATS, render_html


def safe_name(name) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(name))


def write_report(out_dir, report: dict, figures: dict) -> Path:
    """Write ``out_dir``/report.json, each figure (a matplotlib Figure, app/study/plots.py) as
    ``out_dir``/figures/NAME.svg, .png and .pdf, and ``out_dir``/report.html (the SVGs embedded, so
    the page stands alone); returns the HTML file's path."""
    from .plots import render

    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    data = to_jsonable(report)
    (out / "report.json").write_text(json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False))
    svgs = {}
    for name, fig in figures.items():
        safe = safe_name(name)
        files = render(fig, FORMATS)
        for fmt, body in files.items():
            path = out / "figures" / f"{safe}.{fmt}"
            path.write_text(body) if isinstance(body, str) else path.write_bytes(body)
        svgs[safe] = files["svg"]
    page = out / "report.html"
    page.write_text(render_html(data, svgs))
    return page


def typical_h(reports: Path | None) -> float | None:
    """The approximation's mean Hellinger distance in a store's reference report (the model's
    typical H, shown beside each answer for context), or None when there is none."""
    path = Path(reports) / "reference" / "report.json" if reports else None
    if path is None or not path.exists():
        return None
    try:
        h = json.loads(path.read_text())["headline"]["approximation"]["hellinger"]["mean"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(h) if isinstance(h, (int, float)) else None


def load_report(out_dir) -> tuple[dict, dict]:
    """Read back what :func:`write_report` wrote: (report, figures as SVG text)."""
    out = Path(out_dir)
    report = json.loads((out / "report.json").read_text())
    figs = {p.stem: p.read_text() for p in sorted((out / "figures").glob("*.svg"))}
    return report, figs
