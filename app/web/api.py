"""The JSON API: the twin of every page, under /api/, taking the same parameters. Each answer is the
presenting function's dict, sent as it is; its model (app/web/schemas.py) documents it."""
from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from .errors import server_timing, with_retry_after
from .explorer import Explorer
from .params import BlockParams, CorpusParams, QueryParams, ReportParams, StripParams, TuneParams
from .schemas import (BlockPage, CorpusPlace, Detail, Effects, Info, QueryAnswer, Report, Story,
                      Strip, Tune, TuneBuilding)
from .views import (block_context, corpus_context, find_report, get_explorer, interventions_context,
                    query_context, story_context, strip_context, tune_context)

router = APIRouter(prefix="/api")
Ex = Annotated[Explorer, Depends(get_explorer)]
BAD = {400: {"model": Detail, "description": "a parameter to fix: the message says what to fix"}}
MISSING = {404: {"model": Detail, "description": "no such block, or no report yet"}}
ERRORS = {**BAD, 503: {"model": Detail, "description": "the server is busy: try again after Retry-After"}}


def _json(data) -> JSONResponse:
    """``data`` as FastAPI sends a returned dict, bypassing the response model (no re-encoding)."""
    return JSONResponse(jsonable_encoder(data))


def _timed(body: dict, ctx: dict) -> JSONResponse:
    """``body`` sent as it is (plain data: no re-encoding), with Server-Timing naming the engine's
    parts and the JSON encoding's."""
    t0 = time.perf_counter()
    r = JSONResponse(body)
    return server_timing(r, ctx, json=1e3 * (time.perf_counter() - t0))


def _refusal(ctx: dict, status: int) -> JSONResponse:
    body = {"detail": ctx["error"]}
    if status == 503:
        body["retry_after"] = ctx.get("retry_after", 1)
    return with_retry_after(JSONResponse(body, status_code=status), ctx, status)


@router.get("/query", summary="The approximation for a prompt, per block and blended",
            response_model=QueryAnswer, responses=ERRORS)
def api_query(q: Annotated[QueryParams, Query()], ex: Ex):
    ctx, status = query_context(ex, q, need_prompt=True)
    if status != 200:
        return _refusal(ctx, status)
    return _timed({**ctx["data"], "permalink": ctx["permalink"], "provenance": ctx["provenance"]}, ctx)


@router.get("/blocks/{block}", summary="One block's neighbours, paged, with corpus contexts",
            response_model=BlockPage, responses={**ERRORS, **MISSING})
def api_block(block: Annotated[int, Path(description="the block, from 0")],
              q: Annotated[BlockParams, Query()], ex: Ex):
    ctx, status = block_context(ex, block, q)
    if status != 200:
        return _refusal(ctx, status)
    return _timed(ctx["block"], ctx)


@router.get("/strip", summary="Every position of the prompt: the model's and the approximation's "
            "next characters and H at each prefix", response_model=Strip, responses=ERRORS)
def api_strip(q: Annotated[StripParams, Query()], ex: Ex):
    ctx, status = strip_context(ex, q)
    if status != 200:
        return _refusal(ctx, status)
    strip = ctx["strip"]
    return _timed({**strip, "permalink": strip["positions"][strip["focus"]]["url"],
                   "provenance": ctx["provenance"]}, ctx)


@router.get("/interventions", summary="Each block's attention and FFN output dropped in turn: how "
            "far the model's next-character distribution moves", response_model=Effects, responses=ERRORS)
def api_interventions(q: Annotated[QueryParams, Query()], ex: Ex):
    ctx, status = interventions_context(ex, q)
    if status != 200:
        return _refusal(ctx, status)
    return server_timing(_json(ctx["effects"]), ctx)


@router.get("/strings/{row}", summary="A pool string's story: its occurrences, its cosine to the "
            "prompt in every block, its class in each block, the prompt's n-gram", response_model=Story,
            responses={**ERRORS, **MISSING})
def api_story(request: Request, row: Annotated[int, Path(description="the pool string's row, from 0")],
              q: Annotated[QueryParams, Query()], ex: Ex):
    ctx, status = story_context(ex, row, q, request.app.state.reports)
    if status != 200:
        return _refusal(ctx, status)
    return _json(ctx["story"])


@router.get("/tune", summary="Tune the method: the approximation's accuracy over a fixed sample at "
            "any thresholds and weights, by lookup in a precomputed table (never a search)",
            response_model=Tune, responses={**ERRORS, 202: {"model": TuneBuilding, "description":
                                            "the table is being built: ask again after Retry-After"}})
def api_tune(q: Annotated[TuneParams, Query()], ex: Ex):
    t0 = time.perf_counter()
    ctx, status = tune_context(ex, q)
    if status == 202:
        return JSONResponse({"building": ctx["building"]}, status_code=202, headers={"Retry-After": "2"})
    if status != 200:
        return _refusal(ctx, status)
    ctx["timing"] = {"lookup": 1e3 * (time.perf_counter() - t0)}
    return _timed({**ctx["tune"], "provenance": ctx["provenance"]}, ctx)


@router.get("/corpus", summary="A stretch of the corpus around a position: where it is (line; play, "
                      "act, scene and speaker for the default corpus) and links on", response_model=CorpusPlace,
            responses=BAD)
def api_corpus(q: Annotated[CorpusParams, Query()], ex: Ex):
    c, err = corpus_context(ex, q)
    if err:
        return JSONResponse({"detail": err}, status_code=400)
    c.pop("back_to", None)  # the page's wording
    return _json(c)


@router.get("/report", summary="The evaluation report as data", response_model=Report,
            responses={**BAD, **MISSING})
def api_report(request: Request, q: Annotated[ReportParams, Query()]):
    from ..study.storage import load_report

    folder, err = find_report(request.app.state.reports, q.mode)
    if err:
        return JSONResponse({"detail": err[0]}, status_code=err[1])
    return _json(load_report(folder)[0])


@router.get("/info", summary="The model, corpus and store being served, and their defaults",
            response_model=Info)
def api_info(ex: Ex):
    return _json({**ex.about, "defaults": ex.defaults(), "stamp": ex.stamp})
