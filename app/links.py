"""The one rule between a view's settings and its URL, in both directions.

- :func:`decode`: a URL's query items (text) -> :class:`ViewParams` (one ``QuerySettings``, the
  backend, the store, and the canonical items), with every check and its message;
- :func:`encode` / :func:`encode_items`: a prompt and its ``QuerySettings`` -> the explorer's URL
  (the study's permalinks).

Both leave out what is at its default, by the one table :data:`DEFAULTS`, and write what is left in
the one order :data:`ORDER`. Below the web and the study: no FastAPI here."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from model.gpt import Intervention

from .approx import QueryError, QuerySettings
from .search import BACKENDS as SEARCH_BACKENDS

BACKENDS = tuple(b for b in SEARCH_BACKENDS if b != "auto")  # a URL names one (the store may lack it)
MAX_PROMPT = 1000  # characters accepted in a URL before the model's own context check

# The order a canonical URL writes its items in, and the value each is left out at (None: never
# written; thresholds and weights at None mean the store's defaults, backend at None the server's).
ORDER = ("prompt", "mode", "thresholds", "weights", "k", "show", "blend", "exclude_self", "backend",
         "store", "drop_attn", "drop_ffn")
DEFAULTS = {"prompt": "", "mode": "threshold", "thresholds": None, "weights": None, "k": 200,
            "show": 10, "blend": "raw", "exclude_self": False, "backend": None, "store": "pool",
            "drop_attn": None, "drop_ffn": None}
TRUE, FALSE = ("1", "true", "on", "yes"), ("", "0", "false", "off", "no")


@dataclass
class ViewParams:
    prompt: str
    settings: QuerySettings  # thresholds/weights None: the store's defaults
    backend: str | None  # "exact", "bound" or "ivf"; None: the explorer's default
    store: str | None  # a store's label ("pool", "context256", ...); None: the default store
    raw: dict  # the non-default parameters as given, for links and forms
    intervention: Intervention | None = None  # sublayers the model runs without; None: none

    def query_string(self, **extra) -> str:
        items = {**self.raw, **{k: v for k, v in extra.items() if v is not None}}
        return urlencode(items)


def canonical(values: Mapping[str, object]) -> dict[str, str]:
    """``values`` (name -> typed value) as query items: in :data:`ORDER`, without those at their
    default (or None), as text (k and show whole numbers, exclude_self "1")."""
    out = {}
    for name in ORDER:
        v = values.get(name)
        if v is None or v == DEFAULTS[name]:
            continue
        out[name] = str(int(v)) if name in ("k", "show") else "1" if name == "exclude_self" else str(v)
    return out


# --- settings -> URL ------------------------------------------------------------------------------
def number_list(vals) -> str:
    """Numbers as a URL writes them: each float's repr (an exact round trip), comma-separated."""
    return ",".join(repr(float(v)) for v in vals)


def same_numbers(a, b) -> bool:
    return a is not None and b is not None and len(a) == len(b) and \
        all(abs(float(x) - float(y)) <= 1e-12 for x, y in zip(a, b))


def encode_items(prompt: str, settings: QuerySettings | None = None,
                 defaults: QuerySettings | None = None, backend: str | None = None) -> dict[str, str]:
    """The query items of the explorer's view of ``prompt`` under ``settings``: the prompt always,
    then only what differs from the explorer's defaults (thresholds and weights are left out when
    None or equal to ``defaults``' values; show is a display choice, not a setting: left out)."""
    s = settings or QuerySettings()

    def unless_default(vals, default):
        if isinstance(vals, str):  # a named set ("reference")
            return vals
        return None if vals is None or (defaults is not None and same_numbers(vals, default)) \
            else number_list(vals)

    values = {"mode": s.mode, "k": s.k, "blend": s.blend, "exclude_self": bool(s.exclude_self),
              "thresholds": unless_default(s.thresholds, defaults and defaults.thresholds),
              "weights": unless_default(s.weights, defaults and defaults.weights),
              "backend": backend or None}
    return {"prompt": prompt, **canonical(values)}


def encode(prompt: str, settings: QuerySettings | None = None, base_url: str = "/",
           defaults: QuerySettings | None = None, backend: str | None = None) -> str:
    """The explorer's URL for ``prompt`` under ``settings`` at ``base_url`` (see :func:`encode_items`)."""
    sep = "&" if "?" in base_url else "?"
    return base_url + sep + urlencode(encode_items(prompt, settings, defaults, backend))


# --- URL -> settings ------------------------------------------------------------------------------
def _floats(text: str, name: str) -> list[float]:
    try:
        vals = [float(x) for x in text.replace(" ", "").split(",") if x != ""]
    except ValueError:
        raise QueryError(f"{name} must be comma-separated numbers, e.g. 0.99,0.99,0.98,0.98,0.98,0.9")
    if not all(math.isfinite(v) for v in vals):
        raise QueryError(f"{name} must be finite numbers (no NaN or infinity)")
    return vals


def _flag(value: str, name: str) -> bool:
    v = value.strip().lower()
    if v in TRUE or v in FALSE:
        return v in TRUE
    raise QueryError(f"{name} must be 1 or 0, not {value[:20]!r}")


def _backend(backend: str, exact: str) -> str | None:
    name = backend.strip() or None
    if _flag(exact, "exact"):
        if name not in (None, "exact"):
            raise QueryError(f"exact=1 asks for the full scan, backend={name[:20]!r} for another: "
                             "give one of them")
        name = "exact"
    if name is not None and name not in BACKENDS:
        raise QueryError(f"backend must be one of {', '.join(BACKENDS)}, not {name[:20]!r}")
    return name


def _store(text: str) -> str | None:
    store = text.strip() or None
    if store is not None and (len(store) > 40 or not store.replace("-", "").isalnum()):
        raise QueryError(f"store must be a store's name such as 'pool' or 'context256', not {store[:20]!r}")
    return store


def _blocks(text: str, name: str) -> frozenset[int]:
    """A comma-separated list of block numbers (checked against the model by the engine)."""
    try:
        blocks = frozenset(int(x) for x in text.replace(" ", "").split(",") if x != "")
    except ValueError:
        raise QueryError(f"{name} must be block numbers separated by commas, e.g. 0,3, not {text[:20]!r}")
    if any(b < 0 for b in blocks):
        raise QueryError(f"{name} must be block numbers from 0")
    return blocks


def decode(p: Mapping[str, str]) -> ViewParams:
    """Check the query items (prompt, mode, thresholds, k, weights, blend, exclude_self, show; backend,
    exact, store, drop_attn and drop_ffn optional); raises QueryError with a message that says what
    to fix."""
    prompt, mode, thresholds, weights = p["prompt"], p["mode"], p["thresholds"], p["weights"]
    k, show, blend, exclude_self = p["k"], p["show"], p["blend"], p["exclude_self"]
    if len(prompt) > MAX_PROMPT:
        raise QueryError(f"the prompt has {len(prompt)} characters; at most {MAX_PROMPT} are accepted")
    if mode not in ("threshold", "topk"):
        raise QueryError(f"mode must be 'threshold' or 'topk', not {mode[:20]!r}")
    ths = ws = None
    if thresholds.strip():
        ths = "reference" if thresholds.strip() == "reference" else _floats(thresholds, "thresholds")
    if weights.strip():
        ws = _floats(weights, "weights")
    try:
        kk = int(k or 200)
        n_show = int(show or 10)
    except ValueError:
        raise QueryError("k and show must be whole numbers")
    if not 0 <= n_show <= 100:
        raise QueryError("show must be between 0 and 100")
    if blend not in ("raw", "normalised"):
        raise QueryError(f"blend must be 'raw' or 'normalised', not {blend[:20]!r}")
    ex = _flag(exclude_self, "exclude_self")
    backend = _backend(p.get("backend", ""), p.get("exact", ""))
    store = _store(p.get("store", ""))
    drop_attn, drop_ffn = (_blocks(p.get(name, ""), name) for name in ("drop_attn", "drop_ffn"))
    iv = Intervention(drop_attn=drop_attn, drop_ffn=drop_ffn) if drop_attn or drop_ffn else None
    raw = canonical({"prompt": prompt, "mode": mode, "thresholds": thresholds.strip() or None,
                     "weights": weights.strip() or None, "k": kk, "show": n_show, "blend": blend,
                     "exclude_self": ex, "backend": backend, "store": store,
                     "drop_attn": ",".join(map(str, sorted(drop_attn))) or None,
                     "drop_ffn": ",".join(map(str, sorted(drop_ffn))) or None})
    qs = QuerySettings(mode=mode, thresholds=ths, k=kk, weights=ws, blend=blend,
                       exclude_self=ex, show=n_show)
    return ViewParams(prompt=prompt, settings=qs, backend=backend, store=store, raw=raw,
                      intervention=iv)
