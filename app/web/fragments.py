"""The results' repetitive markup built in Python (the templates' macros call these): the bars, the
top-16 comparison, the whole-vocabulary chart, a block's follow-on distribution and its neighbour
list. Jinja macros called once per character or neighbour were most of /results' render time; the
markup is the same. Everything from the data is escaped here; the result is Markup."""
from __future__ import annotations

from markupsafe import Markup, escape


def _e(s) -> str:
    return str(escape(s))


def _hbar(frac: float, cls: str) -> str:
    return (f'<svg class="bar {cls}" viewBox="0 0 100 10" preserveAspectRatio="none" aria-hidden="true">'
            f'<rect width="{100 * frac:.2f}" height="10"/></svg>')


def hbar(frac: float, cls: str) -> Markup:
    return Markup(_hbar(frac, _e(cls)))


def comparison_rows(chart: dict, model_top=None, approx_top=None) -> Markup:
    """The table body of the top-16 comparison, ordered by the model's probability; each side's
    first choice marked (default: the largest value shown)."""
    rows = sorted(chart["top"], key=lambda b: b["model"], reverse=True)
    if not rows:
        return Markup("")
    m1 = model_top if model_top is not None else rows[0]["char"]
    a1 = approx_top if approx_top is not None else sorted(chart["top"], key=lambda b: b["approx"], reverse=True)[0]["char"]
    out = []
    for b in rows:
        mt = ' <b class="top1" title="the model\'s most likely character">1st</b>' if b["char"] == m1 else ""
        at = ' <b class="top1" title="the approximation\'s most likely character">1st</b>' if b["char"] == a1 else ""
        out.append(f'<tr>\n    <th scope="row" class="ch">{_e(b["label"])}</th>\n'
                   f'    <td class="side">{_hbar(b["model_frac"], "model")}<span class="num model">{b["model"]:.3f}</span>{mt}</td>\n'
                   f'    <td class="side">{_hbar(b["approx_frac"], "approx")}<span class="num approx">{b["approx"]:.3f}</span>{at}</td>\n'
                   f'  </tr>')
    return Markup("\n  ".join(out))


def vocabulary_columns(chart: dict) -> Markup:
    """One <g> per character of the whole-vocabulary chart (hit area, model bar up, approximation down)."""
    out = []
    for i, b in enumerate(chart["all"]):
        label, m, a = _e(b["label"]), b["model"], b["approx"]
        mh, ah = 60 * b["model_frac"], 60 * b["approx_frac"]
        out.append(f'<g data-label="{label}" data-model="{m:.4f}" data-approx="{a:.4f}"><title>{label}  model '
                   f'{m:.4f}  approximation {a:.4f}</title>\n'
                   f'        <rect class="hit" x="{10 * i}" y="0" width="10" height="124"/>\n'
                   f'        <rect class="model" x="{10 * i + 1}" y="{62 - mh:.2f}" width="8" height="{mh:.2f}"/>\n'
                   f'        <rect class="approx" x="{10 * i + 1}" y="62" width="8" height="{ah:.2f}"/></g>')
    return Markup("\n        ".join(out))


def vocabulary_labels(chart: dict) -> Markup:
    return Markup("".join(f"<span>{_e(b['label'])}</span>" for b in chart["all"]))


def vocabulary_top(chart: dict) -> float:
    """The chart's scale: the largest probability of either side."""
    return max([b["model"] for b in chart["all"]] + [b["approx"] for b in chart["all"]] + [0.0])


def distribution(dist: list[dict]) -> Markup:
    items = "".join(f'\n  <span class="d"><span class="ch">{_e(t["label"])}</span>{_hbar(t["p"], "approx")}'
                    f'<span class="num">{100 * t["p"]:.0f}%</span></span>' for t in dist)
    return Markup(f'<div class="dist">{items}\n</div>')


def neighbour(t: dict) -> Markup:
    """A pool string with the ending it shares with the prompt marked; a link to its story when the
    answer gives one (``url``)."""
    inner = f'<span class="head">{_e(t["head"])}</span><mark>{_e(t["tail"])}</mark>'
    if t.get("url"):
        return Markup(f'<a class="str" href="{_e(t["url"])}" title="this string\'s story">{inner}</a>')
    return Markup(f'<span class="str">{inner}</span>')


def neighbour_list(top: list[dict]) -> Markup:
    """A block panel's neighbours: similarity, the string with its shared ending marked."""
    return Markup("\n      ".join(
        f'<li><span class="sim">{t["similarity"]:.4f}</span> {neighbour(t)}'
        + (' <small class="self">the prompt itself</small>' if t["is_self"] else "") + "</li>"
        for t in top))


GLOBALS = {"fr_hbar": hbar, "fr_comparison_rows": comparison_rows, "fr_vocabulary_columns": vocabulary_columns,
           "fr_vocabulary_labels": vocabulary_labels, "fr_vocabulary_top": vocabulary_top,
           "fr_distribution": distribution, "fr_neighbour": neighbour, "fr_neighbour_list": neighbour_list}
