"""The explorer's URL for a prompt under given settings, as the report links its prompts (only
parameters that differ from the explorer's defaults are written)."""
from __future__ import annotations

from urllib.parse import urlencode

from ..approx import QuerySettings


def _num_list(vals) -> str:
    """Numbers as the URL writes them: exact reprs, comma-separated."""
    return ",".join(repr(float(v)) for v in vals)


def _same(a, b) -> bool:
    """Both given, of one length and equal within 1e-12."""
    return a is not None and b is not None and len(a) == len(b) and \
        all(abs(float(x) - float(y)) <= 1e-12 for x, y in zip(a, b))


def permalink(prompt: str, settings: QuerySettings | None = None, base_url: str = "/",
              defaults: QuerySettings | None = None, backend: str | None = None) -> str:
    """The explorer's URL for ``prompt`` under ``settings``: only parameters that differ from the
    explorer's defaults are written (mode, thresholds, k, weights, blend, exclude_self=1, backend;
    thresholds and weights are left out when None or equal to ``defaults``' resolved values)."""
    s = settings or QuerySettings()
    items = {"prompt": prompt}
    if s.mode != "threshold":
        items["mode"] = s.mode
    if s.thresholds is not None and not (defaults is not None and _same(s.thresholds, defaults.thresholds)):
        items["thresholds"] = _num_list(s.thresholds)
    if s.weights is not None and not (defaults is not None and _same(s.weights, defaults.weights)):
        items["weights"] = _num_list(s.weights)
    if s.k != 200:
        items["k"] = str(int(s.k))
    if s.blend != "raw":
        items["blend"] = s.blend
    if s.exclude_self:
        items["exclude_self"] = "1"
    if backend:
        items["backend"] = backend
    sep = "&" if "?" in base_url else "?"
    return base_url + sep + urlencode(items)
