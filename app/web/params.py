"""URL parameters <-> one settings object. Everything a page shows is determined by its URL;
parameters at their defaults are left out of the canonical URL."""
from __future__ import annotations

import math
from dataclasses import dataclass
from urllib.parse import urlencode

from fastapi import Query

from ..approx import REFERENCE_THRESHOLDS, QueryError, QuerySettings
from ..search import BACKENDS as SEARCH_BACKENDS

BACKENDS = tuple(b for b in SEARCH_BACKENDS if b != "auto")  # a URL names one (the store may lack it)
MAX_PROMPT = 1000  # characters accepted in a URL before the model's own context check


@dataclass
class ViewParams:
    prompt: str
    settings: QuerySettings  # thresholds/weights None: the store's defaults
    backend: str | None  # "exact", "bound" or "ivf"; None: the explorer's default
    store: str | None  # a store's label ("pool", "context256", ...); None: the default store
    raw: dict  # the non-default parameters as given, for links and forms

    def query_string(self, **extra) -> str:
        items = {**self.raw, **{k: v for k, v in extra.items() if v is not None}}
        return urlencode(items)


def _floats(text: str, name: str) -> list[float]:
    try:
        vals = [float(x) for x in text.replace(" ", "").split(",") if x != ""]
    except ValueError:
        raise QueryError(f"{name} must be comma-separated numbers, e.g. 0.99,0.99,0.98,0.98,0.98,0.9")
    if not all(math.isfinite(v) for v in vals):
        raise QueryError(f"{name} must be finite numbers (no NaN or infinity)")
    return vals


TRUE, FALSE = ("1", "true", "on", "yes"), ("", "0", "false", "off", "no")


def _flag(value: str, name: str) -> bool:
    v = value.strip().lower()
    if v in TRUE or v in FALSE:
        return v in TRUE
    raise QueryError(f"{name} must be 1 or 0, not {value[:20]!r}")


def raw_params(
    prompt: str = Query("", description="the text whose next character is predicted"),
    mode: str = Query("threshold", description="'threshold' (cosine above a per-block value) or 'topk'"),
    thresholds: str = Query("", description="per-block cosine thresholds, comma-separated, or "
                            "'reference' for METHOD.md's; empty: the store's calibrated defaults"),
    k: str = Query("200", description="neighbours per block in topk mode"),
    weights: str = Query("", description="per-block blend weights, comma-separated; empty: "
                         "METHOD.md's 0.01,0.01,0.1,1.5,6,0.01"),
    blend: str = Query("raw", description="'raw' (weight x summed counts) or 'normalised'"),
    exclude_self: str = Query("", description="1 to leave out the pool string equal to the prompt"),
    show: str = Query("10", description="neighbours listed per block panel"),
    backend: str = Query("", description="search backend: 'bound' (exact, pruned; the default when "
                         "built), 'exact' (full scan: the same answers, slower), 'ivf' (faiss, "
                         "approximate); empty: the default"),
    exact: str = Query("", description="1: the same as backend=exact"),
    store: str = Query("", description="which store to search: 'pool' (each pool string read "
                       "alone: the method), or another the server has, e.g. 'context256' (every "
                       "position read in context); /api/info lists them; empty: 'pool'"),
) -> dict:
    """The shared query parameters as given (FastAPI documents them from this signature)."""
    return {"prompt": prompt, "mode": mode, "thresholds": thresholds, "k": k, "weights": weights,
            "blend": blend, "exclude_self": exclude_self, "show": show, "backend": backend,
            "exact": exact, "store": store}


def parse(p: dict) -> ViewParams:
    """Check the parameters; raises QueryError with a message that says what to fix."""
    prompt, mode, thresholds, weights = p["prompt"], p["mode"], p["thresholds"], p["weights"]
    k, show, blend, exclude_self = p["k"], p["show"], p["blend"], p["exclude_self"]
    if len(prompt) > MAX_PROMPT:
        raise QueryError(f"the prompt has {len(prompt)} characters; at most {MAX_PROMPT} are accepted")
    raw: dict = {"prompt": prompt} if prompt else {}
    if mode not in ("threshold", "topk"):
        raise QueryError(f"mode must be 'threshold' or 'topk', not {mode[:20]!r}")
    if mode != "threshold":
        raw["mode"] = mode
    ths = None
    if thresholds.strip():
        ths = list(REFERENCE_THRESHOLDS) if thresholds.strip() == "reference" else _floats(thresholds, "thresholds")
        raw["thresholds"] = thresholds.strip()
    ws = None
    if weights.strip():
        ws = _floats(weights, "weights")
        raw["weights"] = weights.strip()
    try:
        kk = int(k or 200)
        n_show = int(show or 10)
    except ValueError:
        raise QueryError("k and show must be whole numbers")
    if kk != 200:
        raw["k"] = str(kk)
    if not 0 <= n_show <= 100:
        raise QueryError("show must be between 0 and 100")
    if n_show != 10:
        raw["show"] = str(n_show)
    if blend not in ("raw", "normalised"):
        raise QueryError(f"blend must be 'raw' or 'normalised', not {blend[:20]!r}")
    if blend != "raw":
        raw["blend"] = blend
    ex = _flag(exclude_self, "exclude_self")
    if ex:
        raw["exclude_self"] = "1"
    backend = p.get("backend", "").strip() or None
    if _flag(p.get("exact", ""), "exact"):
        if backend not in (None, "exact"):
            raise QueryError(f"exact=1 asks for the full scan, backend={backend[:20]!r} for another: "
                             "give one of them")
        backend = "exact"
    if backend is not None:
        if backend not in BACKENDS:
            raise QueryError(f"backend must be one of {', '.join(BACKENDS)}, not {backend[:20]!r}")
        raw["backend"] = backend
    store = p.get("store", "").strip() or None
    if store is not None:
        if len(store) > 40 or not store.replace("-", "").isalnum():
            raise QueryError(f"store must be a store's name such as 'pool' or 'context256', not {store[:20]!r}")
        if store != "pool":
            raw["store"] = store
    qs = QuerySettings(mode=mode, thresholds=ths, k=kk, weights=ws, blend=blend,
                       exclude_self=ex, show=n_show)
    return ViewParams(prompt=prompt, settings=qs, backend=backend, store=store, raw=raw)
