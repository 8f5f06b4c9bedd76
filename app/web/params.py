"""The query parameters of each family of routes, as pydantic models (so /docs documents each one),
and their reading into one settings object through the settings <-> URL codec (app/links.py).

The prompt's settings stay text here: a page shows them back in its form exactly as typed, and an
empty field means the default; :func:`parse` checks them with the codec. Numbers that only a route
reads (block, page, per_page, pos, width) are typed: one that is not a whole number, or a page out
of :data:`RANGES`, is a 400 from the validation handler (app/web/errors.py); the ranges of per_page
and width, and sort's choices, are checked by their routes (:func:`check_range`), which answer with
their own page and the message inline, as before."""
from __future__ import annotations

from pydantic import BaseModel, Field

from ..links import BACKENDS, MAX_PROMPT, ViewParams, decode
from ..present import SORTS

MAX_PER_PAGE = 500
RANGES = {"page": (1, 1_000_000), "per_page": (1, MAX_PER_PAGE), "width": (1, 5000)}

__all__ = ["BACKENDS", "MAX_PROMPT", "MAX_PER_PAGE", "RANGES", "ViewParams", "QueryParams",
           "BlockParams", "StripParams", "TuneParams", "CorpusParams", "ReportParams", "SORTS", "check_range", "parse"]


class QueryParams(BaseModel):
    """The prompt and its settings: /, /results, /api/query (and the block routes)."""

    prompt: str = Field("", description="the text whose next character is predicted")
    mode: str = Field("threshold", description="'threshold' (cosine above a per-block value) or 'topk'")
    thresholds: str = Field("", description="per-block cosine thresholds, comma-separated, or "
                            "'reference' for METHOD.md's; empty: the store's calibrated defaults")
    k: str = Field("200", description="neighbours per block in topk mode (a whole number)")
    weights: str = Field("", description="per-block blend weights, comma-separated; empty: "
                         "METHOD.md's 0.01,0.01,0.1,1.5,6,0.01")
    blend: str = Field("raw", description="'raw' (weight x summed counts) or 'normalised'")
    exclude_self: str = Field("", description="1 to leave out the pool string equal to the prompt")
    show: str = Field("10", description="neighbours listed per block panel (0 to 100)")
    backend: str = Field("", description="search backend: 'bound' (exact, pruned; the default when "
                         "built), 'exact' (full scan: the same answers, slower), 'ivf' (faiss, "
                         "approximate); empty: the default")
    exact: str = Field("", description="1: the same as backend=exact")
    store: str = Field("", description="which store to search: 'pool' (each pool string read "
                       "alone: the method), or another the server has, e.g. 'context256' (every "
                       "position read in context); /api/info lists them; empty: 'pool'")
    drop_attn: str = Field("", description="blocks whose attention output the model runs without, "
                           "comma-separated, e.g. 0,3 (the answer then shows the unmodified model "
                           "beside it); empty: none")
    drop_ffn: str = Field("", description="blocks whose FFN output the model runs without, "
                          "comma-separated; empty: none")
    on: str = Field("", max_length=100, description="the model and store a permalink was made on "
                    "(MODEL.WEIGHTS.VECTORS, hash prefixes; every permalink the server writes "
                    "carries it): when it differs from what this server runs, the answer is this "
                    "server's, with a notice saying what differs")

    def form(self) -> dict:
        """The parameters as given, in the form's order (the page shows them back)."""
        return self.model_dump(include=set(QueryParams.model_fields))


class BlockParams(QueryParams):
    """One block's neighbours, paged: /blocks/{block} and /api/blocks/{block}."""

    page: int = Field(1, ge=RANGES["page"][0], le=RANGES["page"][1],
                      description="which page of neighbours, from 1")
    # per_page, sort and width are checked by their routes (check_range, SORTS), which answer with
    # their page and the message inline; their schema still says what they take.
    per_page: int = Field(50, description=f"neighbours per page, 1 to {MAX_PER_PAGE}",
                          json_schema_extra={"minimum": 1, "maximum": MAX_PER_PAGE})
    sort: str = Field("similarity", description="'similarity' (to the prompt's activation) or "
                      "'frequency' (in the corpus)", json_schema_extra={"enum": list(SORTS)})


class StripParams(QueryParams):
    """Every position of the prompt: /strip and /api/strip."""

    pos: int = Field(-1, ge=-1, le=RANGES["page"][1],
                     description="the focused position (the prefix ending there), from 0; -1: the "
                     "last; a position past the prompt's end is a 400")


class TuneParams(BaseModel):
    """The tuning instrument: /tune, /tune/figures and /api/tune."""

    prompt: str = Field("", description="a prompt whose answer is shown beside the sample's "
                        "figures (optional)")
    thresholds: str = Field("", description="per-block cosine thresholds, comma-separated; each is "
                            "moved to the nearest level of its block's grid; empty: the store's "
                            "calibrated ones")
    weights: str = Field("", description="per-block blend weights, comma-separated; empty: "
                         "METHOD.md's 0.01,0.01,0.1,1.5,6,0.01")
    blend: str = Field("raw", description="'raw' (weight x summed counts) or 'normalised'")
    fit: str = Field("", description="'weights': fit the weights on the tuning half of the sample; "
                     "'thresholds': fit the thresholds block by block on it; either is reported on "
                     "the other half; empty: none", json_schema_extra={"enum": ["", "weights", "thresholds"]})
    on: str = Field("", max_length=100, description="the model and store a permalink was made on "
                    "(see /api/query)")

    def form(self) -> dict:
        return self.model_dump(include=set(TuneParams.model_fields))


class CorpusParams(BaseModel):
    """A stretch of the corpus: /corpus and /api/corpus."""

    pos: int = Field(description="the position in the corpus (a character index, from 0)")
    width: int = Field(1500, description="characters shown on each side, 1 to 5000",
                       json_schema_extra={"minimum": RANGES["width"][0], "maximum": RANGES["width"][1]})
    from_: str = Field("", alias="from", max_length=4000,
                       description="the page this stretch was opened from, linked back to: '/' or "
                       "'/blocks/N' with its query string (the prompt and its settings), from the "
                       "explorer's root, e.g. /blocks/3?prompt=the+king; the 'use as prompt' link "
                       "keeps its settings; empty: none")


class ReportParams(BaseModel):
    """Which evaluation report: /report and /api/report."""

    mode: str = Field("", description="'reference' or 'held-out' (the modes written for this "
                      "store); empty: reference when there is one")


def check_range(name: str, value: int) -> str | None:
    """What to fix when ``value`` lies outside ``name``'s range in :data:`RANGES`, else None."""
    lo, hi = RANGES[name]
    return None if lo <= value <= hi else f"{name} must be between {lo} and {hi}"


def parse(p: dict) -> ViewParams:
    """Check the prompt's parameters (as text); raises QueryError with a message that says what to
    fix. The codec's :func:`app.links.decode`."""
    return decode(p)
