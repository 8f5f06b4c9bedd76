"""The study's colours, as static/style.css has them: the model blue, the approximation orange,
other series from a fixed palette in order (none close to either); shared by the report's figures
and its method list."""
from __future__ import annotations

MODEL = "#2563eb"
APPROX = "#ea580c"
INK = "#1f2937"
MUTED = "#6b7280"
LINE = "#e5e7eb"
PALETTE = ("#15803d", "#6b7280", "#7c3aed", "#0891b2", "#be185d", "#a16207", "#1e3a8a",
           "#4d7c0f", "#9f1239", "#0f766e", "#78350f", "#111827")


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
