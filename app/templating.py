"""The one Jinja environment of ffnlens: the templates folder, autoescaping everywhere, and the
filters both the explorer's pages and the written report use."""
from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from .present import visible

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def _number(v, fmt: str = "{:.4f}") -> str:
    return "–" if v is None else fmt.format(v)


def _percent(v, digits: int = 1) -> str:
    return "–" if v is None else f"{100 * v:.{digits}f} %"


def environment() -> Environment:
    """A fresh environment (the explorer adds per-mount globals to its own)."""
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.filters["visible"] = visible
    env.filters["f"] = _number
    env.filters["pct"] = _percent
    return env
