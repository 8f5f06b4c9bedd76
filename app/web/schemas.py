"""The JSON twins' answers as pydantic models, so the OpenAPI schema declares them. They describe
the fields the routes send and allow more; the routes send the presenting functions' dicts as they
are (app/present.py, the report's report.json), so these models never reorder or reformat a field."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Open(BaseModel):
    """A described object that may carry more fields than it names."""

    model_config = ConfigDict(extra="allow")


class Detail(BaseModel):
    """A refusal: what to fix (400), what is missing (404), or that the server is busy (503)."""

    detail: str = Field(description="the message, in plain words")
    retry_after: int | None = Field(None, description="with a 503: seconds to wait before trying again")


class Token(Open):
    char: str = Field(description="the character")
    label: str = Field(description="the character as shown (spaces and newlines made visible)")
    p: float = Field(description="its probability")


class Settings(Open):
    mode: str = Field(description="'threshold' or 'topk'")
    thresholds: list[float] | None = Field(description="per-block cosine thresholds as used")
    k: int = Field(description="neighbours per block in topk mode")
    weights: list[float] | None = Field(description="per-block blend weights as used")
    blend: str = Field(description="'raw' or 'normalised'")
    exclude_self: bool = Field(description="whether the pool string equal to the prompt was left out")
    show: int = Field(description="neighbours listed per block panel")


class Neighbour(Open):
    row: int = Field(description="the pool string's row in the store")
    text: str = Field(description="the pool string")
    similarity: float = Field(description="its cosine similarity to the prompt's activation")
    is_self: bool = Field(description="whether it is the prompt's own last n characters")
    shared: int = Field(description="how many final characters it shares with the prompt")
    head: str = Field(description="its unshared beginning, as shown")
    tail: str = Field(description="its shared end, as shown")


class BlockSummary(Open):
    block: int = Field(description="the block, from 0")
    neighbours: int = Field(description="how many neighbours the block found")
    weight: float = Field(description="the block's blend weight")
    share_raw: float = Field(description="the block's share of the raw blend")
    share_normalised: float = Field(description="the block's share of the normalised blend")
    count_total: int = Field(description="the neighbours' follow-on counts, summed")
    counts: dict[str, int] = Field(description="follow-on counts by character (non-zero only)")
    distribution: list[Token] = Field(description="the block's own next-character distribution, top first")
    top: list[Neighbour] = Field(description="the nearest neighbours (``show`` of them)")


class StoreRef(Open):
    path: str = Field(description="the store's folder on the server")
    pool_size: int = Field(description="pool strings in the store")
    defaults_rule: str = Field(description="how the store's default thresholds were chosen")
    label: str = Field(description="the store's label ('pool', 'context256', ...)")


class QueryAnswer(Open):
    """GET /api/query."""

    prompt: str
    backend: str = Field(description="the search backend that answered")
    settings: Settings
    hellinger: float = Field(description="Hellinger distance between the model's and the approximation's distributions")
    agreement: dict[str, Any] = Field(description="top-k agreement, by k")
    fallback: str | None = Field(description="what filled in where the neighbours had no counts, if anything")
    provenance: dict[str, Any] | None = Field(None, description="serving (what this server runs: "
                                              "MODEL.WEIGHTS.VECTORS), link (the on= the request "
                                              "carried), matches, and when they differ a message "
                                              "saying what differs and the command to serve the original")
    intervention: dict[str, Any] | None = Field(None, description="with drop_attn / drop_ffn: the "
                                                "sublayers dropped, the unmodified model's top "
                                                "characters (original_top) and distribution "
                                                "(original), and hellinger_to_original")
    model: dict[str, float] = Field(description="the model's next-character distribution")
    approximation: dict[str, float] = Field(description="the approximation's next-character distribution")
    model_top: list[Token]
    approximation_top: list[Token]
    chart: dict[str, list[dict[str, Any]]] = Field(description="bars of the comparison chart ('top', 'all')")
    blocks: list[BlockSummary]
    store: StoreRef
    permalink: str = Field(description="the canonical URL of this view")


class CorpusStretch(Open):
    """GET /api/corpus (and each context of a neighbour)."""

    pos: int = Field(description="the position in the corpus")
    before: str = Field(description="the text before it")
    match: str = Field(description="the pool string at the position")
    after: str = Field(description="the text after it")


class Place(Open):
    """Where a position is in the default corpus (the plays), read from the text's headings; each
    null where the text does not say (e.g. a cast list before the first act)."""

    play: str | None = Field(description="the play's title, as its first line has it")
    act: str | None = Field(description="e.g. 'Act II'")
    scene: str | None = Field(description="e.g. 'Scene I (Elsinore. A platform before the Castle)'")
    speaker: str | None = Field(description="the speaker, as the speech's heading names them (e.g. 'Ham')")


class CorpusPlace(CorpusStretch):
    """GET /api/corpus: the stretch, where it is, and where to go from it."""

    start: int = Field(description="the position of the first character of 'before'")
    length: int = Field(description="characters in the corpus")
    line: int = Field(description="the line of the position, from 1")
    column: int = Field(description="its column, from 1")
    first_line: int = Field(description="the line 'before' starts on")
    place: Place | None = Field(description="play, act, scene and speaker (the default corpus only; "
                                "null for other texts)")
    earlier: str | None = Field(description="the stretch before this one (null at the start)")
    later: str | None = Field(description="the stretch after this one (null at the end)")
    back: str | None = Field(description="the page given in from= (null without one)")
    use_as_prompt: str = Field(description="the main page with the string at the position as its "
                               "prompt (and from='s settings)")


class BlockItem(Neighbour):
    frequency: int = Field(description="how often the string occurs with a follower")
    occurrences: int = Field(description="how often it occurs in the corpus")
    follow: list[dict[str, Any]] = Field(description="its followers: char, label, count, most first")
    contexts: list[CorpusStretch] = Field(description="a few of its occurrences in context")


class BlockPage(Open):
    """GET /api/blocks/{block}."""

    prompt: str
    backend: str
    block: int
    neighbours: int
    weight: float
    share_raw: float
    share_normalised: float
    distribution: list[Token]
    sort: str = Field(description="'similarity' or 'frequency'")
    page: int
    pages: int
    per_page: int
    items: list[BlockItem]


class Report(Open):
    """GET /api/report: report.json as `ffnlens eval --report` wrote it."""

    title: str
    meta: dict[str, Any] = Field(description="what was evaluated, and how")
    headline: dict[str, Any] = Field(description="each method's headline numbers")


class Info(Open):
    """GET /api/info."""

    model: str
    params: int = Field(description="the model's parameter count")
    val_loss: float | None = Field(description="the model's validation loss")
    corpus: str
    corpus_sha256: str
    pool_size: int
    n: int = Field(description="pool string length")
    pool_mode: str
    n_layer: int
    backend: str = Field(description="the default search backend")
    backends: list[str] = Field(description="the backends the default store has")
    stamp: str | None = Field(None, description="what permalinks are made on: MODEL.WEIGHTS.VECTORS "
                              "(the model's name, its weights' and the store's vectors' hash prefixes)")
    store: str
    stores: dict[str, dict[str, Any]] = Field(description="every store served, by label")
    device: str
    defaults: dict[str, str] = Field(description="the default store's thresholds, weights and their rule")
    models: dict[str, str] | None = Field(None, description="every model served, by name: its path")


class StripPosition(Open):
    pos: int = Field(description="the position, from 0: it stands for the prefix ending there")
    char: str = Field(description="the prompt's character at this position")
    hellinger: float = Field(description="H between the model's and the approximation's next-character distributions")
    model: list[list[Any]] = Field(description="the model's most likely next characters: [character, probability]")
    approx: list[list[Any]] = Field(description="the approximation's most likely next characters: [character, probability]")
    agree_top1: bool = Field(description="whether both put the same character first")
    neighbours: list[int] = Field(description="each block's neighbour count")
    fallback: str | None = Field(description="'unigram' when no block found a neighbour")
    in_pool: bool = Field(description="whether the prefix's last n characters are a pool string")
    url: str = Field(description="this view focused on this position")
    query_url: str = Field(description="the main page for this prefix")


class Strip(Open):
    """Every position of a prompt at once (/api/strip)."""

    prompt: str = Field(description="the prompt")
    positions: list[StripPosition] = Field(description="one per character")
    focus: int = Field(description="the focused position")
    store: str = Field(description="the store searched")
    mean_hellinger: float = Field(description="H averaged over the positions")
    agree_top1: float = Field(description="the share of positions whose top-1 characters agree")
    timing: dict[str, float] = Field(description="milliseconds in the forward pass, the searches and the blend")
    comparisons: list[dict[str, Any]] | None = Field(None, description="for the focused prefix (without an "
                                                   "intervention): every reading of the next character, "
                                                   "each with name, kind, hellinger to the model, top, note")
    permalink: str = Field(description="this view's URL")


class Effects(Open):
    """Each block's sublayers dropped in turn (/api/interventions)."""

    prompt: str = Field(description="the prompt")
    model_top: list[Token] = Field(description="the unmodified model's most likely next characters")
    blocks: list[dict[str, Any]] = Field(description="per block: drop_attn and drop_ffn, each with "
                                         "hellinger (to the unmodified model), top (its most likely "
                                         "characters) and url (the main page so intervened)")
    timing: dict[str, float] = Field(description="milliseconds in the forward passes")


class Story(Open):
    """A pool string's story (/api/strings/{row})."""

    row: int = Field(description="the pool string's row")
    string: str = Field(description="the pool string")
    occurrences: int = Field(description="how many times it occurs in the corpus")
    contexts: list[dict[str, Any]] = Field(description="its first occurrences: pos, before, match, after, "
                                           "next (the character that followed), line, place, url")
    follow: list[Token] = Field(description="what followed it in the corpus, as a distribution")
    follow_total: int = Field(description="how many times something followed it")
    blocks: list[dict[str, Any]] = Field(description="per block: threshold, class (its nearest pool "
                                         "strings), class_follow, and with a prompt its cosine and "
                                         "whether it is a neighbour")
    prompt: str = Field(description="the prompt it is read against ('' for none)")
    finders: dict[str, Any] | None = Field(None, description="when the store has a reference report: "
                                           "which of its prompts (the first 2,000) found this string, "
                                           "per block, at the report's thresholds")
    ngram: dict[str, Any] | None = Field(None, description="with a prompt: its longest suffix found in "
                                         "the corpus, how often, and what followed it")
    permalink: str = Field(description="this view's URL")


class TuneFigures(Open):
    """The approximation's accuracy over a sample at one setting."""

    prompts: int = Field(description="how many prompts the figures are over")
    mean_h: float = Field(description="mean Hellinger distance to the model")
    median_h: float = Field(description="median Hellinger distance")
    top1: float = Field(description="share of prompts whose most likely character agrees")
    topk: dict[str, float] = Field(description="share whose k most likely characters are the same set, per k")
    fallback_share: float = Field(description="share where no block found a neighbour (the unigram answers)")
    h_hist: list[int] = Field(description="prompts per H bin, 20 bins over [0, 1]")
    median_neighbours: list[float] = Field(description="each block's median neighbour count")


class Tune(Open):
    """The tuning instrument (/api/tune): the sample's figures at these settings, by lookup."""

    sample: str = Field(description="the sample: which prompts, how many, their seed")
    prompts: int = Field(description="the sample's size")
    table: dict[str, Any] = Field(description="the precomputed table: bytes, seconds to build, whether "
                                  "its grids were capped in memory, the grid (span, steps)")
    settings: dict[str, Any] = Field(description="thresholds (moved to their grids), weights, blend")
    blocks: list[dict[str, Any]] = Field(description="per block: levels (its threshold grid), level, "
                                         "threshold, weight, weight_stop")
    weight_grid: list[float] = Field(description="the weight sliders' stops")
    figures: TuneFigures = Field(description="the whole sample's figures")
    fit: dict[str, Any] | None = Field(None, description="with fit=: what was fitted on the tuning "
                                       "half and the other half's figures before and after")
    prompt: dict[str, Any] | None = Field(None, description="with a prompt: its H, the model's and "
                                          "the approximation's first choices")
    permalink: str = Field(description="this setting's URL")
    explorer: str = Field(description="the explorer with these settings")
    cli: str = Field(description="these settings as CLI flags")
    eval_command: str | None = Field(description="the ffnlens eval command that gives the same figures "
                                     "(None for a held-out store)")


class TuneBuilding(Open):
    """The tuning table is being built (202)."""

    building: dict[str, Any] = Field(description="done and total prompts, seconds so far")
