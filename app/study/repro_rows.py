"""The side-by-side table's rows: one published figure next to ours with a plain verdict.

A row is ``{figure, group, setting, published, ours, published_value, ours_value, status,
verdict, tolerance, how}``: ``status`` is "matches" (within the stated tolerance), "differs"
(the verdict says by how much and the likely reason), "ours only" (METHOD.md publishes no such
figure) or "not computed" (the verdict says why). Values may be numbers or lists of numbers (one
per block); a list matches when every element does.
"""
from __future__ import annotations

import math

# Likely reasons for a difference, by kind of figure (said, never tuned away).
RUN = ("another model than the write-up's checkpoint (at best the recipe retrained: its seeds "
       "differ from each other by H about 0.106)")
SIZES = ("a threshold is a cosine cut on this model's FFN outputs; another run spreads them "
         "differently, and set sizes grow steeply as the cut falls")
SAMPLE = "a small sample: extremes and rare counts move with the prompts drawn"


def tolerance_text(tol, kind: str) -> str:
    if tol is None:
        return ""
    if kind == "abs":
        return f"±{tol:.3g}"
    if kind == "rel":
        return f"±{tol:.0%}"
    return f"within ×{tol:g}"


def within(p: float, o: float, tol: float, kind: str) -> bool:
    if kind == "abs":
        return abs(o - p) <= tol + 1e-12
    if kind == "rel":
        return abs(o - p) <= tol * abs(p) + 1e-12
    if p == 0 or o == 0:
        return p == o
    return max(o / p, p / o) <= tol + 1e-12


def difference(p: float, o: float, kind: str) -> str:
    """How far ours lies from the published value, in the row's terms."""
    if kind == "abs":
        return f"{o - p:+.4g}"
    if kind == "rel":
        return f"{(o - p) / p:+.0%}" if p else f"{o - p:+.4g}"
    return f"×{o / p:.2f}" if p else f"{o - p:+.4g}"


def judge(published, ours, tol, kind: str = "abs", reason: str | None = None,
          label="block") -> tuple[str, str]:
    """(status, verdict) for a published value and ours (numbers, or lists of one per block;
    ``label`` names a list's elements: a word followed by the index, or a list of names)."""
    if ours is None:
        return "not computed", "not computed"
    if published is None or tol is None:
        return "ours only", "no published figure: ours only"
    if isinstance(published, (list, tuple)):
        if len(published) != len(ours):
            return "differs", f"differs: {len(ours)} values against {len(published)}"
        bad = [(i, p, o) for i, (p, o) in enumerate(zip(published, ours))
               if o is None or not within(p, o, tol, kind)]
        if not bad:
            return "matches", f"matches ({tolerance_text(tol, kind)} each)"
        names = label if isinstance(label, (list, tuple)) else [f"{label} {i}" for i in range(len(ours))]
        text = ", ".join(f"{names[i]} ({difference(p, o, kind) if o is not None else 'none'})"
                         for i, p, o in bad)
        return "differs", f"differs on {text}" + (f"; likely: {reason}" if reason else "")
    if within(float(published), float(ours), tol, kind):
        return "matches", f"matches ({tolerance_text(tol, kind)})"
    return "differs", (f"differs by {difference(float(published), float(ours), kind)}"
                       + (f"; likely: {reason}" if reason else ""))


def show(v, fmt: str = "{:.4f}") -> str:
    """A value as the table prints it: numbers with ``fmt``, lists joined, None as a dash."""
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple)):
        if len(v) == 2 and isinstance(v[0], str):  # (character, probability)
            return f"{v[0]!r} {v[1]:.3f}"
        return ", ".join(show(x, fmt) for x in v)
    if isinstance(v, float) and not math.isfinite(v):
        return "–"
    if isinstance(v, int) and fmt == "{:.4f}":
        return f"{v:,}"
    return fmt.format(v)


def row(figure: str, published, ours, how: str, *, group: str, tol=None, kind: str = "abs",
        reason: str | None = None, fmt: str = "{:.4f}", setting: str = "reference",
        published_text: str | None = None, ours_text: str | None = None,
        status: str | None = None, verdict: str | None = None, label="block") -> dict:
    """One row of the side-by-side table (see the module docstring); ``status``/``verdict`` given
    override the comparison (for figures compared by hand, e.g. top characters)."""
    st, vd = judge(published, ours, tol, kind, reason, label)
    return {"figure": figure, "group": group, "setting": setting,
            "published": published_text if published_text is not None else show(published, fmt),
            "ours": ours_text if ours_text is not None else show(ours, fmt),
            "published_value": published, "ours_value": ours,
            "status": status or st, "verdict": verdict or vd,
            "tolerance": tolerance_text(tol, kind), "how": how}


def missing(figure: str, published, why: str, *, group: str, fmt: str = "{:.4f}",
            published_text: str | None = None) -> dict:
    """A row that could not be computed on this model, saying why."""
    return row(figure, published, None, "", group=group, fmt=fmt, published_text=published_text,
               status="not computed", verdict=f"not computed: {why}")


def share_tol(p: float, n: int) -> float:
    """Tolerance for a share: three binomial standard errors at n prompts, at least 0.01."""
    return max(0.01, 3 * math.sqrt(max(p * (1 - p), 1e-12) / max(n, 1)))


def count_tol(count: int, n: int, published_n: int = 20000) -> float:
    """Tolerance for a count of prompts: three Poisson standard deviations of the published count,
    scaled to n prompts."""
    return 3 * math.sqrt(max(count, 1) * n / published_n)


def scaled(count: int, n: int, published_n: int = 20000) -> float:
    """A published count on 20,000 prompts scaled to n prompts."""
    return count * n / published_n


def top_verdict(published: list, ours: list, tol: float = 0.05) -> tuple[str, str]:
    """(status, verdict) for two top-k lists of (character, probability): the same characters in
    the same order, each probability within ``tol``."""
    if [c for c, _ in published] != [c for c, _ in ours]:
        return "differs", ("differs in order: " + " ".join(repr(c) for c, _ in ours)
                           + f"; likely: {RUN}")
    worst = max(abs(p - o) for (_, p), (_, o) in zip(published, ours))
    if worst <= tol:
        return "matches", f"matches (same order, each probability ±{tol:g})"
    return "differs", f"same order, probabilities differ by up to {worst:.3f}; likely: {RUN}"


def markdown(rows: list, title: str | None = None) -> str:
    """The rows as a Markdown table (figure, published, ours, verdict, how)."""
    def cell(s) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    lines = [f"### {title}", ""] if title else []
    lines += ["| figure | published | ours | verdict | how |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append("| " + " | ".join(cell(r[k]) for k in ("figure", "published", "ours", "verdict",
                                                              "how")) + " |")
    return "\n".join(lines) + "\n"
