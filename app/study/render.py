"""The report as an HTML page: the one Jinja environment's report.html, its figures embedded or linked."""
from __future__ import annotations

import base64
import re
from pathlib import Path

from markupsafe import Markup, escape

from ..templating import environment
from .methods import APPROX

ROOT = Path(__file__).resolve().parent.parent.parent
FORMATS = ("svg", "png", "pdf")  # each figure's files (app/study/storage.py writes them)
_TITLE = re.compile(r"<text\b[^>]*>([^<]{1,300})</text>")


def figure_html(name: str, svg: str, embed: bool, figure_dir: str, query: str = "") -> Markup:
    """One figure: the SVG as an image (embedded as a data: URI, so the page stands alone and its
    CSP stays strict: a matplotlib SVG's own styles live inside the image), its first text as the
    alternative text, and links to its SVG, PNG and PDF files."""
    alt = _TITLE.search(svg)
    alt_text = alt.group(1) if alt else name
    src = ("data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode() if embed
           else f"{figure_dir}/{name}.svg{query}")
    links = " · ".join(f'<a href="{escape(figure_dir)}/{escape(name)}.{f}{escape(query)}" download>{f.upper()}</a>'
                       for f in FORMATS)
    return Markup(f'<img src="{escape(src)}" alt="{escape(alt_text)}">'
                  f'<figcaption class="downloads">{links}</figcaption>')


def render_html(report: dict, figures: dict, embed: bool = True, figure_dir: str = "figures",
                figure_query: str = "", export: dict | None = None) -> str:
    """The report page (templates/report.html, autoescaped); ``figures``: name -> SVG text. With
    ``embed`` the SVGs are embedded as images; otherwise they are linked as ``figure_dir/NAME.svg``.
    Each figure links its files under ``figure_dir`` (+ ``figure_query``). Works for a file on disk
    and for a web route alike; ``export`` (app/web/exports.py) adds its caption and data."""
    figs = {name: figure_html(name, svg, embed, figure_dir, figure_query) for name, svg in figures.items()}
    site_css = Markup((ROOT / "static" / "style.css").read_text())  # our own file, not user text
    return environment().get_template("report.html").render(
        r=report, figs=figs, embed=embed, figure_dir=figure_dir, figure_query=figure_query, approx=APPROX,
        site_css=site_css, export=export)
