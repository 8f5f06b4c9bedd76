"""The report as an HTML page: the one Jinja environment's report.html, its figures inlined or linked."""
from __future__ import annotations

from pathlib import Path

from markupsafe import Markup

from ..templating import environment
from .methods import APPROX

ROOT = Path(__file__).resolve().parent.parent.parent


def render_html(report: dict, figures: dict, embed: bool = True, figure_dir: str = "figures") -> str:
    """The report page (templates/report.html, autoescaped). With ``embed`` the SVGs are inlined
    (they are generated here, every text in them escaped); otherwise they are linked as
    ``figure_dir/NAME.svg``. Works for a file on disk and for a web route alike."""
    figs = {name: (Markup(svg) if embed else None) for name, svg in figures.items()}
    site_css = Markup((ROOT / "static" / "style.css").read_text())  # our own file, not user text
    return environment().get_template("report.html").render(
        r=report, figs=figs, embed=embed, figure_dir=figure_dir, approx=APPROX, site_css=site_css)
