"""The HTML pages (Jinja templates over the same data as their JSON twins) and the API docs pages.
A refusal is the page itself with its message inline, and the form keeps what was typed."""
from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse

from . import exports, place
from .errors import server_timing, with_retry_after
from .explorer import Explorer
from .params import BlockParams, CorpusParams, QueryParams, ReportParams, StripParams, TuneParams
from .safety import CSP_DOCS, csp_with_inline_styles
from .views import (REPORT_COST, block_context, corpus_context, find_report, get_explorer, query_context,
                    rebase_urls, report_command, strip_context, interventions_context, story_context,
                    tune_context)

router = APIRouter()
Ex = Annotated[Explorer, Depends(get_explorer)]
BAD = {400: {"description": "a parameter to fix: the page shows what to fix"}}


# The views a page can be downloaded as (?export=1; app/web/exports.py), by template.
VIEWS = {"index.html": "query", "block.html": "block", "strip.html": "strip", "tune.html": "tune",
         "story.html": "story", "interventions.html": "interventions"}


def _page(request: Request, template: str, ctx: dict, status: int = 200):
    t0 = time.perf_counter()
    view = VIEWS.get(template)
    export = view is not None and request.query_params.get("export") == "1" and status == 200
    # the main page's answer changes as one types: its own links (templates/_results.html) follow it
    if view not in (None, "query") and status == 200 and exports.view_data(ctx) is not None:
        b = _base(request)
        path = request.url.path[len(b):] if request.url.path.startswith(b) else request.url.path
        ctx["downloads"] = exports.downloads(b, path, dict(request.query_params), view)
    if export:
        ctx["export"] = exports.export_context(ctx, view, str(request.base_url))
    r = request.app.state.templates.TemplateResponse(request, template, ctx, status_code=status)
    if export:
        r.headers["Content-Disposition"] = f'attachment; filename="{exports.filename(view, ctx, "html")}"'
        r.headers["Content-Security-Policy"] = csp_with_inline_styles(r.body.decode())
    server_timing(r, ctx, render=1e3 * (time.perf_counter() - t0))
    return with_retry_after(r, ctx, status)


def _base(request: Request) -> str:
    return request.app.state.explorer.base if hasattr(request.app.state, "explorer") else ""


@router.get("/", response_class=HTMLResponse, summary="Main page (JSON twin: /api/query)",
            responses=BAD)
def index(request: Request, q: Annotated[QueryParams, Query()], ex: Ex):
    ctx, status = query_context(ex, q, need_prompt=False)
    return _page(request, "index.html", ctx, status)


@router.get("/results", response_class=HTMLResponse, include_in_schema=False)
def results(request: Request, q: Annotated[QueryParams, Query()], ex: Ex):
    """The results part of the main page, for htmx; pushes the canonical URL."""
    ctx, status = query_context(ex, q, need_prompt=True)
    r = _page(request, "_results.html", ctx, status)
    r.headers["HX-Push-Url"] = ctx["permalink"]
    return r


@router.get("/blocks/{block}", response_class=HTMLResponse,
            summary="One block's neighbours in their corpus context (JSON twin: /api/blocks/{block})",
            responses=BAD)
def block_page(request: Request, block: Annotated[int, Path(description="the block, from 0")],
               q: Annotated[BlockParams, Query()], ex: Ex):
    ctx, status = block_context(ex, block, q)
    return _page(request, "block.html", ctx, status)


@router.get("/strip", response_class=HTMLResponse,
            summary="Every position of the prompt at once (JSON twin: /api/strip)", responses=BAD)
def strip_page(request: Request, q: Annotated[StripParams, Query()], ex: Ex):
    ctx, status = strip_context(ex, q)
    return _page(request, "strip.html", ctx, status)


@router.get("/interventions", response_class=HTMLResponse,
            summary="Each block's attention and FFN output dropped in turn (JSON twin: /api/interventions)",
            responses=BAD)
def interventions_page(request: Request, q: Annotated[QueryParams, Query()], ex: Ex):
    ctx, status = interventions_context(ex, q)
    return _page(request, "interventions.html", ctx, status)


@router.get("/strings/{row}", response_class=HTMLResponse,
            summary="A pool string's story: its occurrences, its cosine to the prompt in every block, "
            "its class in each block, the prompt's n-gram (JSON twin: /api/strings/{row})", responses=BAD)
def story_page(request: Request, row: Annotated[int, Path(description="the pool string's row, from 0")],
               q: Annotated[QueryParams, Query()], ex: Ex):
    ctx, status = story_context(ex, row, q, request.app.state.reports)
    return _page(request, "story.html", ctx, status)


@router.get("/tune", response_class=HTMLResponse,
            summary="Tune the method live: sliders per block, the sample's accuracy as they move "
            "(JSON twin: /api/tune)", responses=BAD)
def tune_page(request: Request, q: Annotated[TuneParams, Query()], ex: Ex):
    t0 = time.perf_counter()
    ctx, status = tune_context(ex, q)
    ctx["timing"] = {"lookup": 1e3 * (time.perf_counter() - t0)}
    r = _page(request, "tune.html", ctx, status)
    if status == 202:
        r.headers["Refresh"] = "2"  # the table is being built: the page asks again
    return r


@router.get("/tune/figures", response_class=HTMLResponse, include_in_schema=False)
def tune_figures(request: Request, q: Annotated[TuneParams, Query()], ex: Ex):
    """The figures part of /tune, for static/js/tune.js (no search: lookups in the table)."""
    t0 = time.perf_counter()
    ctx, status = tune_context(ex, q)
    ctx["timing"] = {"lookup": 1e3 * (time.perf_counter() - t0)}
    return _page(request, "_tune_figures.html", ctx, status)


@router.get("/corpus", response_class=HTMLResponse, summary="A stretch of the corpus around a position",
            responses=BAD)
def corpus_page(request: Request, q: Annotated[CorpusParams, Query()], ex: Ex):
    c, err = corpus_context(ex, q)
    ctx = {"c": c, "error": err, "about": ex.about}
    if c:
        ctx["text"] = place.numbered(c["before"], c["match"], c["after"], c["first_line"])
    return _page(request, "corpus.html", ctx, 400 if err else 200)


@router.get("/report", response_class=HTMLResponse,
            summary="The evaluation report: the approximation against every baseline (JSON twin: /api/report)",
            responses=BAD)
def report_page(request: Request, q: Annotated[ReportParams, Query()], ex: Ex):
    from ..study.render import render_html
    from ..study.storage import load_report

    folder, err = find_report(request.app.state.reports, q.mode)
    if err and err[1] == 404:  # none yet: how to make one, and how long it takes
        return _page(request, "noreport.html", {"about": ex.about, "page": "report",
                                                "command": report_command(ex.about), "cost": REPORT_COST}, 404)
    if err:
        return _page(request, "error.html", {"error": err[0], "about": ex.about, "page": "report"}, err[1])
    report, figures = load_report(folder)
    if ex.base:  # the report's permalinks were written for an explorer at "/"
        rebase_urls(report, ex.base)
    export = None
    if request.query_params.get("export") == "1":
        link = f"{ex.base}/report?mode={folder.name}&on={ex.stamp}"
        export = exports.export_context({"about": ex.about, "permalink": link}, "report",
                                        str(request.base_url),
                                        data={k: v for k, v in report.items() if k != "per_prompt"})
    page = render_html(report, figures, figure_dir=f"{ex.base}/report/figures",
                       figure_query=f"?mode={folder.name}", export=export)
    # The page inlines static/style.css (it also stands alone on disk) and colours its swatches
    # with style attributes: those exact styles are allowed by hash; scripts stay external.
    headers = {"Content-Security-Policy": csp_with_inline_styles(page)}
    if export:
        headers["Content-Disposition"] = f'attachment; filename="ffnlens-report-{folder.name}.html"'
    return HTMLResponse(page, headers=headers)


@router.get("/report/figures/{name}.{fmt}", summary="One of the report's figures as a file: SVG, "
            "PNG (twice the page's resolution) or PDF, drawn by matplotlib", responses={
                **BAD, 404: {"description": "no such figure, or no report yet"}})
def report_figure(request: Request, name: Annotated[str, Path(description="the figure's name, e.g. hellinger")],
                  fmt: Annotated[str, Path(description="svg, png or pdf")],
                  q: Annotated[ReportParams, Query()], ex: Ex):
    from fastapi.responses import FileResponse, PlainTextResponse

    from ..study.render import FORMATS
    from ..study.storage import safe_name

    folder, err = find_report(request.app.state.reports, q.mode)
    if err:
        return PlainTextResponse(err[0], status_code=err[1])
    if fmt not in FORMATS:
        return PlainTextResponse(f"the format must be one of {', '.join(FORMATS)}, not {fmt[:10]!r}", 400)
    path = folder / "figures" / f"{safe_name(name)}.{fmt}"
    if safe_name(name) != name or not path.is_file():
        have = sorted(p.stem for p in (folder / "figures").glob("*.svg"))
        return PlainTextResponse(f"this report has no figure {name[:40]!r} as {fmt}; it has: "
                                 f"{', '.join(have)}", 404)
    media = {"svg": "image/svg+xml", "png": "image/png", "pdf": "application/pdf"}[fmt]
    return FileResponse(path, media_type=media, filename=f"ffnlens-{folder.name}-{name}.{fmt}",
                        content_disposition_type="inline")


@router.get("/chart/{view}.{fmt}", summary="A view's chart as a file (SVG or PNG, drawn by matplotlib, "
            "captioned with the model, store, settings and permalink): view 'query' (the main page), "
            "'block' (give block=N), 'strip' or 'tune', with that page's parameters", responses={
                **BAD, 404: {"description": "no such view"}})
def chart_file(request: Request, view: Annotated[str, Path(description="query, block, strip or tune")],
               fmt: Annotated[str, Path(description="svg or png")], ex: Ex):
    from fastapi.responses import PlainTextResponse, Response
    from pydantic import ValidationError

    from ..study.plots import render

    if view not in exports.CHART_VIEWS:
        return PlainTextResponse(f"there is no chart of {view[:20]!r}: the views with one are "
                                 f"{', '.join(exports.CHART_VIEWS)}", 404)
    if fmt not in ("svg", "png"):
        return PlainTextResponse(f"the format must be svg or png, not {fmt[:10]!r}", 400)
    items = dict(request.query_params)
    try:
        if view == "block":
            block = int(items.pop("block", "0"))
            ctx, status = block_context(ex, block, BlockParams(**items))
        elif view == "strip":
            ctx, status = strip_context(ex, StripParams(**items))
        elif view == "tune":
            ctx, status = tune_context(ex, TuneParams(**items))
        else:
            ctx, status = query_context(ex, QueryParams(**items), need_prompt=True)
    except (ValidationError, ValueError) as e:
        return PlainTextResponse(f"a parameter to fix: {str(e).splitlines()[0][:300]}", 400)
    if status != 200:
        msg = ctx.get("error") or ("the tuning table is still being built: ask again in a moment"
                                   if status == 202 else "no chart")
        return PlainTextResponse(msg, status if status != 202 else 503, headers={"Retry-After": "2"} if status in (202, 503) else None)
    fig = exports.chart(view, ctx, exports.caption(ctx, view, str(request.base_url)))
    if fig is None:
        return PlainTextResponse("this view has nothing to draw", 404)
    body = render(fig, (fmt,))[fmt]
    return Response(body.encode() if fmt == "svg" else body,
                    media_type="image/svg+xml" if fmt == "svg" else "image/png",
                    headers={"Content-Disposition": f'inline; filename="{exports.filename(view, ctx, fmt)}"'})


@router.get("/docs", include_in_schema=False)
def swagger_ui(request: Request, ex: Ex):
    """Swagger UI over /openapi.json, from our own static files (static/vendor, installed from npm;
    its initialiser static/js/docs.js), under :data:`app.web.safety.CSP_DOCS`."""
    ctx = {"openapi_url": ex.base + request.app.openapi_url}
    r = request.app.state.templates.TemplateResponse(request, "docs.html", ctx)
    r.headers["Content-Security-Policy"] = CSP_DOCS
    return r


@router.get("/redoc", include_in_schema=False)
def redoc(request: Request, ex: Ex):
    """ReDoc is not installed: a page pointing to /docs (and the OpenAPI description)."""
    ctx = {"openapi_url": ex.base + request.app.openapi_url, "about": ex.about}
    return request.app.state.templates.TemplateResponse(request, "redoc.html", ctx)
