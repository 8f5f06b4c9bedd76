"""The work a page and its JSON twin share: read the URL into settings, ask the explorer once, and
return the data both render (a context dict and a status). Nothing here knows HTML from JSON."""
from __future__ import annotations

from dataclasses import asdict, replace
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlencode

from fastapi import Request

from ..approx import Engine, QueryError, QueryResult
from ..interventions import intervention_dict, sublayer_effects
from ..present import block_dict, context, query_dict
from ..search.sharded import ShardUnavailable
from . import place
from .errors import Rejected
from .explorer import DEFAULT_STORE, Explorer
from .gate import Busy
from .params import (SORTS, BlockParams, CorpusParams, QueryParams, StripParams, TuneParams,
                     ViewParams, check_range, parse)


def get_explorer(request: Request) -> Explorer:
    """The explorer of the app (or mounted model) answering the request."""
    return request.app.state.explorer


# What a view answers with a message instead of a result (``refused``).
REFUSALS = (QueryError, Rejected, Busy, ShardUnavailable)


def refused(ctx: dict, e: QueryError | Rejected | Busy | ShardUnavailable) -> int:
    """Put a refusal's message (and a busy server's wait) into ``ctx``; returns its status: 400
    for a prompt or setting to fix, the route's own for a Rejected, 503 when the gate is full or a
    shard of a store searched on Ray is restarting (no answer rather than a partial one)."""
    if isinstance(e, (Busy, ShardUnavailable)):
        ctx["error"], ctx["retry_after"] = e.message, e.retry_after
        return 503
    if isinstance(e, Rejected):
        ctx["error"] = e.message
        return e.status
    ctx["error"] = str(e)
    return 400


def query_context(ex: Explorer, q: QueryParams, need_prompt: bool, present=None, check=None,
                  run=None) -> tuple[dict, int]:
    """Parse ``q``, run ``check(vp, engine)`` (raises Rejected), then present the engine's answer:
    ``present(result, engine)`` returns what to add to the context (default: the main page's
    data); or, given ``run(vp, engine)``, add what it returns instead (a view that asks the
    engine something else). Returns (context, status); a refusal leaves its message in
    ``context["error"]``."""
    p = q.form()
    ctx = {"form": p, "about": ex.about, "defaults": None, "data": None, "error": None,
           "permalink": ex.base + "/?" + urlencode({k: v for k, v in p.items() if v}), "vp": None}
    try:
        vp = parse(p)
        ctx["vp"] = vp
        ctx["permalink"] = ex.base + "/?" + vp.query_string(on=ex.stamp)
        ctx["provenance"] = ex.provenance(p.get("on", ""))
        ctx["defaults"] = ex.defaults(vp.store)
        if vp.prompt or need_prompt:
            eng = ex.engine_for(vp)
            if vp.intervention:
                try:
                    vp.intervention.check(eng.model.cfg.n_layer)
                except ValueError as e:  # it names blocks the model does not have
                    raise QueryError(str(e)) from e
            if check:
                check(vp, eng)
            ctx["qs"] = vp.query_string()

            def main_page(res, eng):
                d = query_dict(res, eng.store, eng.tok.chars)
                d["store"]["label"] = vp.store or DEFAULT_STORE
                if not eng.store.context:  # a pool string's story (/strings/{row})
                    for blk in d["blocks"]:
                        for t in blk["top"]:
                            t["url"] = f"{ex.base}/strings/{t['row']}?{vp.query_string()}"
                if vp.intervention:
                    d["intervention"] = intervention_dict(eng, res.prompt, vp.intervention,
                                                          res.model_probs)
                return {"data": d}

            ctx.update(run(vp, eng) if run else ex.run(vp, present or main_page))
        return ctx, 200
    except REFUSALS as e:
        return ctx, refused(ctx, e)
    finally:  # a refusal before the settings were read shows the default store's
        if ctx["defaults"] is None:
            ctx["defaults"] = ex.defaults()


def block_context(ex: Explorer, block: int, q: BlockParams) -> tuple[dict, int]:
    """One block's neighbours for the prompt in ``q``, paged and sorted as ``q`` says."""
    def check(vp: ViewParams, eng: Engine) -> None:  # before any engine work
        n = eng.store.n_layer
        if not 0 <= block < n:
            raise Rejected(f"block {block} does not exist: this model has blocks 0 to {n - 1}", 404)
        if q.sort not in SORTS:
            raise Rejected(f"sort must be one of {', '.join(SORTS)}, not {q.sort[:20]!r}")
        if bad := check_range("per_page", q.per_page):
            raise Rejected(bad)

    def present(res: QueryResult, eng: Engine) -> dict:
        b = block_dict(res, eng.store, eng.tok.chars, block, q.page, q.per_page, q.sort)
        if not eng.store.context:
            for t in b["items"]:
                t["url"] = f"{ex.base}/strings/{t['row']}?{ctx_qs(q)}"
        return {"block": b,
                "data": {"settings": asdict(res.settings)}, "n_layer": eng.store.n_layer}

    ctx, status = query_context(ex, q, need_prompt=True, present=present, check=check)
    if ctx.get("block"):  # the corpus links come back here (from=): this page, as it is paged and sorted
        b = ctx["block"]
        ctx["from_here"] = place.here_for(f"/blocks/{block}", f"{ctx['qs']}&sort={b['sort']}&per_page="
                                          f"{b['per_page']}&page={b['page']}")
    return ctx, status


def ctx_qs(q: QueryParams) -> str:
    """The query string of a page's prompt and settings, as the links out of it carry them."""
    return parse(q.form()).query_string()


def strip_context(ex: Explorer, q: StripParams) -> tuple[dict, int]:
    """Every position of the prompt in ``q`` (see app/strip.py), the focused one (``q.pos``, -1:
    the last) named, with the links each position opens."""
    def check(vp: ViewParams, eng: Engine) -> None:
        if q.pos >= len(vp.prompt):
            raise Rejected(f"pos must lie within the prompt: 0 to {len(vp.prompt) - 1} (or -1 for "
                           f"the last), not {q.pos}")

    def present(vp: ViewParams, eng: Engine) -> dict:
        chosen = vp
        if vp.store is None and len(vp.prompt) > eng.store.pool.n:  # read long prompts in context
            label = next((lb for lb, es in ex.engines.items()
                          if next(iter(es.values())).store.context >= len(vp.prompt)), None)
            if label:
                chosen = replace(vp, store=label)
        d = ex.strip(chosen)
        focus = q.pos if q.pos >= 0 else len(vp.prompt) - 1
        if not vp.intervention:  # the other readings are of the unmodified model
            d["comparisons"] = ex.comparisons(chosen, vp.prompt[: focus + 1])
        label, context = chosen.store or DEFAULT_STORE, ex.engine_for(chosen).store.context
        d.update({"focus": focus, "store": label, "n_layer": eng.store.n_layer, "n": eng.store.pool.n,
                  "store_note": (f"each position read with up to {context} characters of context, "
                                 "against the positions of the in-context store, read the same way")
                  if context else ("each position's activation searched among the pool strings, "
                                   "each read alone")})
        qs = vp.query_string()
        for p in d["positions"]:
            p["url"] = f"{ex.base}/strip?{qs}&pos={p['pos']}&on={ex.stamp}"
            p["query_url"] = f"{ex.base}/?{vp.query_string(prompt=vp.prompt[: p['pos'] + 1])}"
        return {"strip": d, "timing": d["timing"]}

    return query_context(ex, q, need_prompt=True, check=check, run=present)


def interventions_context(ex: Explorer, q: QueryParams) -> tuple[dict, int]:
    """Each block's attention and FFN output dropped in turn, for the prompt in ``q``: how far the
    model moves (see app/interventions.py), each cell linking to the main page so intervened."""
    def present(vp: ViewParams, eng: Engine) -> dict:
        with ex.gate:
            d = sublayer_effects(eng, vp.prompt)
        for row in d["blocks"]:
            for name in ("drop_attn", "drop_ffn"):
                row[name]["url"] = f"{ex.base}/?{vp.query_string(**{name: str(row['block'])})}"
        return {"effects": d, "timing": d["timing"]}

    return query_context(ex, q, need_prompt=True, run=present)


def story_context(ex: Explorer, row: int, q: QueryParams, reports: Path | None = None) -> tuple[dict, int]:
    """Pool string ``row``'s story (app/story.py), against the prompt in ``q`` when it has one;
    each occurrence placed in the corpus, each string linking to its own story; and when the store
    has a reference report (in ``reports``), which of its prompts found the string."""
    p = q.form()
    ctx = {"form": p, "about": ex.about, "error": None, "story": None, "defaults": ex.defaults(),
           "permalink": ex.base + "/?" + urlencode({k: v for k, v in p.items() if v})}
    try:
        vp = parse(p)
        eng = ex.engine_for(vp)
        if eng.store.context:
            raise Rejected("a string's story needs a pool store: this store holds positions read in "
                           "context, not pool strings; leave store= out")
        if not 0 <= row < eng.store.size:
            raise Rejected(f"row {row} does not exist: the pool has rows 0 to {eng.store.size - 1}", 404)
        d = ex.story(vp, row)
    except REFUSALS as e:
        return ctx, refused(ctx, e)
    idx = place.text_index(ex)
    qs = vp.query_string()
    for c in d["contexts"]:
        c["line"] = idx.line(c["pos"])[0]
        c["place"] = idx.place(c["pos"])
        c["url"] = f"{ex.base}/corpus?pos={c['pos']}"
    for b in d["blocks"]:
        for t in b["class"]:
            t["url"] = f"{ex.base}/strings/{t['row']}?{qs}"
    folder, _ = find_report(reports, "reference") if reports else (None, None)
    if folder is not None:
        from ..story import finders

        prompts, settings = _report_prompts(folder, (folder / "report.json").stat().st_mtime_ns)
        with ex.gate:
            d["finders"] = finders(eng, prompts, row, settings)
        d["finders"]["report"] = f"{ex.base}/report?mode=reference"
    d["permalink"] = f"{ex.base}/strings/{row}?" + vp.query_string(on=ex.stamp)
    d["provenance"] = ex.provenance(p.get("on", ""))
    ctx["provenance"] = d["provenance"]
    ctx.update({"story": d, "vp": vp, "qs": qs})
    return ctx, 200


@lru_cache(maxsize=4)
def _report_prompts(folder: Path, version: int) -> tuple[list[str], dict]:
    """A report's prompts and settings (``version``: report.json's mtime, so a rewritten report is
    read again); the JSON of 20,000 prompts is 7 MB, read once rather than on every story."""
    import json

    rep = json.loads((folder / "report.json").read_text())
    return rep["per_prompt"]["prompts"], rep["meta"]["settings"]


def tune_context(ex: Explorer, q: TuneParams) -> tuple[dict, int]:
    """The tuning instrument (app/study/tuning.py) at ``q``'s thresholds (moved to their grids),
    weights and blend: the sample's figures, each block's slider stops, the prompt's answer, and
    with ``q.fit`` the fitted values and their figures on the other half. 202 while the sample's
    table is being built (``building``: its progress)."""
    from ..study.tuning import WEIGHT_GRID, weight_stop
    from ..study.weights import split_prompts

    p = q.form()
    ctx = {"form": p, "about": ex.about, "error": None, "tune": None, "building": None,
           "provenance": ex.provenance(p.get("on", "")), "permalink": ex.base + "/tune"}
    tuner = ex.tuner()
    table = tuner.table()
    if table is None:
        state = tuner.progress()
        if state["error"]:
            ctx["error"] = state["error"]
            return ctx, 503
        ctx["building"] = state
        return ctx, 202
    try:
        if q.fit not in ("", "weights", "thresholds"):
            raise QueryError(f"fit must be 'weights' or 'thresholds', not {q.fit[:20]!r}")
        vp = parse({"prompt": q.prompt, "mode": "threshold", "thresholds": q.thresholds,
                    "weights": q.weights, "k": "200", "show": "10", "blend": q.blend, "exclude_self": ""})
        s = vp.settings.resolved(ex.engine.store)
        idx, weights = table.snap(s.thresholds), list(s.weights)
        fit = None
        if q.fit:
            tune, test = split_prompts(table.n, seed=0)
            before = table.score(idx, weights, s.blend, test)
            if q.fit == "weights":
                weights = table.fit_weights(idx, s.blend, tune)
            else:
                idx = table.fit_thresholds(idx, weights, s.blend, tune)
            after = table.score(idx, weights, s.blend, test)
            fit = {"what": q.fit, "tuning_prompts": int(len(tune)), "test_prompts": int(len(test)),
                   "test_before": _figures(before), "test_after": _figures(after)}
        answer = None
        if vp.prompt:
            with ex.gate:  # the prompt's own searches, once per prompt
                pt = tuner.prompt_table(vp.prompt, table.levels)
            answer = _prompt_answer(pt, idx, weights, s.blend, ex.engine.tok.chars)
    except (QueryError, Busy, ShardUnavailable) as e:
        return ctx, refused(ctx, e)
    thresholds = table.thresholds(idx)
    items = {"prompt": vp.prompt, "thresholds": ",".join(f"{t:g}" for t in thresholds),
             "weights": ",".join(f"{w:g}" for w in weights), "blend": s.blend}
    qs = urlencode({k: v for k, v in items.items() if v and not (k == "blend" and v == "raw")})
    cli = (f"--thresholds {items['thresholds']} --weights {items['weights']}"
           + (f" --blend {s.blend}" if s.blend != "raw" else ""))
    ctx["tune"] = {
        "sample": table.info["sample"], "prompts": table.n, "table": {
            k: table.info.get(k) for k in ("bytes", "seconds", "capped", "span", "steps", "exclude_self", "backend")},
        "settings": {"thresholds": thresholds, "weights": weights, "blend": s.blend},
        "text": {"thresholds": items["thresholds"], "weights": items["weights"]},
        "blocks": [{"block": b, "levels": [float(x) for x in table.levels[b]], "level": int(i),
                    "threshold": thresholds[b], "weight": weights[b], "weight_stop": weight_stop(weights[b])}
                   for b, i in enumerate(idx)],
        "weight_grid": WEIGHT_GRID,
        "figures": _figures(table.score(idx, weights, s.blend)),
        "fit": fit, "prompt": answer,
        "permalink": f"{ex.base}/tune?{qs}{'&' if qs else ''}on={ex.stamp}",
        "explorer": f"{ex.base}/?{qs}", "cli": cli,
        "eval_command": _eval_command(ex, table.n, cli),
    }
    ctx["permalink"] = ctx["tune"]["permalink"]
    return ctx, 200


def _eval_command(ex: Explorer, n: int, cli: str) -> str | None:
    """The ``ffnlens eval`` that gives the tuning figures (it draws the same reference prompts);
    None for a held-out store, whose sample ``ffnlens eval`` does not draw."""
    from ..corpus import DEFAULT_CORPUS

    if ex.engine.store.manifest.get("mode") == "heldout":
        return None
    corpus = "" if ex.about.get("corpus", DEFAULT_CORPUS) == DEFAULT_CORPUS else " --corpus YOUR_TEXT"
    return f"ffnlens eval --model {ex.about.get('model') or 'MODEL'}{corpus} --prompts {n} {cli}"


def _figures(score: dict) -> dict:
    """A score without its per-prompt array (the JSON and the page show the histogram)."""
    return {k: v for k, v in score.items() if k != "per_prompt_h"}


def _prompt_answer(pt, idx, weights, blend: str, chars: str) -> dict:
    """The typed prompt at these settings: H, the model's and the approximation's first choices,
    each block's neighbours."""
    from ..present import top_tokens

    sc = pt.score(idx, weights, blend)
    return {"prompt": pt.info["sample"], "hellinger": float(sc["per_prompt_h"][0]),
            "agree_top1": bool(sc["top1"] == 1.0), "fallback": bool(sc["fallback_share"] > 0),
            "neighbours": [int(n) for n in sc["median_neighbours"]],
            "model": top_tokens(pt.model_probs[0], chars, 5),
            "approx": top_tokens(pt.approx(idx, weights, blend)[0], chars, 5)}


def corpus_context(ex: Explorer, q: CorpusParams) -> tuple[dict | None, str | None]:
    """(the corpus around ``q.pos``, where it is and the links on from it, None) or (None, what to fix)."""
    ids = ex.engine.store.corpus_ids
    if not 0 <= q.pos < len(ids):
        return None, f"pos must be between 0 and {len(ids) - 1}"
    if bad := check_range("width", q.width):
        return None, bad
    came = place.read_from(q.from_, set(QueryParams.model_fields))
    if came is None:
        return None, ("from must be a page of this explorer: '/' or '/blocks/N' with its query "
                      "string, e.g. /blocks/3?prompt=the+king")
    n = ex.engine.store.pool.n
    c = context(ex.engine.tok.chars, ids, q.pos, n, q.width, q.width, lines=None)
    idx = place.text_index(ex)
    start = q.pos - len(c["before"])
    line, column = idx.line(q.pos)
    c.update({"start": start, "length": len(ids), "line": line, "column": column,
              "first_line": idx.line(start)[0], "place": idx.place(q.pos)})
    c.update(place.links(ex.base, q.pos, q.width, len(ids), n, c["match"], came))
    return c, None


# Measured (2026-11-30, `ffnlens eval --report` on the `tiny` model, default corpus, 2 CPU cores
# shared with other work): 2,000 prompts (the default) 1 min 54 s; --prompts 200: 19 s.
REPORT_COST = ("It takes about 2 minutes on the `tiny` model with the default 2,000 prompts on 2 CPU "
               "cores (about 20 s with --prompts 200); the time grows with the number of prompts and "
               "the model's size.")


def report_command(about: dict) -> str:
    """The command that writes this store's report (the served model's name; the corpus as a
    placeholder unless it is the default, whose path the server does not show)."""
    from ..corpus import DEFAULT_CORPUS

    model = about.get("model") or "MODEL"
    corpus = "" if about.get("corpus", DEFAULT_CORPUS) == DEFAULT_CORPUS else " --corpus YOUR_TEXT"
    return f"ffnlens eval --model {model}{corpus} --report"


def find_report(reports: Path | None, mode: str) -> tuple[Path | None, tuple[str, int] | None]:
    """(report folder, None) or (None, (message, status))."""
    have = sorted(p.parent.name for p in reports.glob("*/report.json")) if reports else []
    if not have:
        return None, ("no report for this store yet: run `ffnlens eval --report` (add `--pool "
                      "heldout` for the held-out mode) with this model and corpus; " + REPORT_COST, 404)
    if mode and mode not in have:
        return None, (f"mode must be one of {', '.join(have)}, not {mode[:20]!r}", 400)
    return reports / (mode or ("reference" if "reference" in have else have[0])), None


def rebase_urls(obj, base: str) -> None:
    """Prefix every root-relative "url" in a report (in place) with the explorer's mount path."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "url" and isinstance(v, str) and v.startswith("/"):
                obj[k] = base + v
            else:
                rebase_urls(v, base)
    elif isinstance(obj, list):
        for v in obj:
            rebase_urls(v, base)
