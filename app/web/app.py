"""Routes. Each parses its URL into one settings object, asks the engine once (through a bounded
gate), and renders the resulting dict as HTML (a Jinja template) or as JSON (the same dict).

Bad input is a 4xx with a message (JSON ``{"detail"}`` under /api/, inline on pages), a full gate a
503 with Retry-After, anything unexpected a logged, safe 500 (app/web/safety.py)."""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..approx import Engine, QueryError, QueryResult
from ..search import available_backends, make_search
from ..present import SORTS, block_dict, context, query_dict, visible
from ..templating import environment
from .gate import Busy, Gate
from .params import ViewParams, parse, raw_params
from .safety import Guard, csp_for_docs, csp_with_inline_styles, wants_json

ROOT = Path(__file__).resolve().parent.parent.parent
VENDOR = ROOT / "static" / "vendor" / "htmx.min.js"
DEFAULT_STORE = "pool"
MAX_PER_PAGE = 500


class Rejected(Exception):
    """A request the routes refuse before asking the engine: a message and its status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message, self.status = message, status


class Explorer:
    """What the app serves: the default store's engine (its search the default backend), the same
    engine under every other backend the store has (``backend=`` in a URL), the engines of other
    stores of the same model and pool (``store=``), a description, a small answer cache, and the
    gate every engine call passes.

    The cache holds at most ``cache_size`` answers and ``cache_rows`` neighbours in all (a threshold
    of -1 on a large store makes one answer hold every row of every block). A cached answer is
    shared by requests, and its neighbour lists order themselves and compute similarities lazily,
    so each answer has a lock that reading it (``run``'s ``present``) holds."""

    def __init__(self, engine: Engine, about: dict, cache_size: int = 64,
                 stores: dict[str, Engine] | None = None, gate: Gate | None = None,
                 cache_rows: int = 4_000_000):
        self.engine = engine
        self.base = ""  # the path the explorer is mounted at ("/m/NAME" beside another model)
        self.engines = {label: self._backends(e)
                        for label, e in {DEFAULT_STORE: engine, **(stores or {})}.items()}
        self.about = {**about, "backends": list(self.engines[DEFAULT_STORE]),
                      "stores": {label: {"size": next(iter(es.values())).store.size,
                                         "context": next(iter(es.values())).store.context,
                                         "activation": next(iter(es.values())).activation,
                                         "backends": list(es)}
                                 for label, es in self.engines.items()}}
        self.gate = gate or Gate.from_env()
        self._cache: OrderedDict = OrderedDict()  # key -> (result, its lock, its neighbour rows)
        self._cache_rows = 0
        self._lock = threading.Lock()
        self.cache_size, self.cache_rows = cache_size, cache_rows

    @staticmethod
    def _backends(engine: Engine) -> dict[str, Engine]:
        out = {engine.search.name: engine}
        for name in available_backends(engine.store):
            if name not in out:
                out[name] = engine.with_search(make_search(engine.store, name, engine.device))
        return out

    def engine_for(self, vp: ViewParams) -> Engine:
        label = vp.store or DEFAULT_STORE
        if label not in self.engines:
            raise QueryError(f"this server has no store {label!r}; it has: {', '.join(self.engines)} "
                             "(`ffnlens index --context T` builds an in-context one)")
        backends = self.engines[label]
        engine = backends.get(vp.backend or next(iter(backends)))
        if engine is None:
            raise QueryError(f"this store has no {vp.backend} index; it has: {', '.join(backends)} "
                             "(`ffnlens index` builds the others)")
        return engine

    def _answer(self, vp: ViewParams) -> tuple[QueryResult, Engine, threading.Lock]:
        engine = self.engine_for(vp)
        key = (vp.prompt, repr(vp.settings), vp.store or DEFAULT_STORE, engine.search.name)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                res, lock, _ = self._cache[key]
                return res, engine, lock
        res = engine.query(vp.prompt, vp.settings)
        rows = sum(len(b.neighbours) for b in res.blocks)
        lock = threading.Lock()
        with self._lock:
            if key in self._cache:  # another request answered it meanwhile: share theirs
                res, lock, _ = self._cache[key]
            elif rows <= self.cache_rows:
                self._cache[key] = (res, lock, rows)
                self._cache_rows += rows
                while len(self._cache) > self.cache_size or self._cache_rows > self.cache_rows:
                    self._cache_rows -= self._cache.popitem(last=False)[1][2]
        return res, engine, lock

    def run(self, vp: ViewParams, present):
        """``present(result, engine)`` for the answer to ``vp``: the engine's (or the cache's),
        inside the gate (raises :class:`Busy` when it is full), under the answer's lock."""
        with self.gate:
            res, engine, lock = self._answer(vp)
            with lock:
                return present(res, engine)

    def defaults(self, store: str | None = None) -> dict:
        es = self.engines.get(store or DEFAULT_STORE) or self.engines[DEFAULT_STORE]
        st = next(iter(es.values())).store
        from ..approx import QuerySettings

        s = QuerySettings().resolved(st)
        return {"thresholds": ",".join(f"{t:.4f}" for t in s.thresholds),
                "weights": ",".join(f"{w:g}" for w in s.weights),
                "rule": st.defaults.get("rule", "METHOD.md's reference thresholds"),
                "rule_text": st.defaults.get("rule_text", "")}


def _rebase_urls(obj, base: str) -> None:
    """Prefix every root-relative "url" in a report (in place) with the explorer's mount path."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "url" and isinstance(v, str) and v.startswith("/"):
                obj[k] = base + v
            else:
                _rebase_urls(v, base)
    elif isinstance(obj, list):
        for v in obj:
            _rebase_urls(v, base)


def create_app(engine: Engine, about: dict | None = None, reports: Path | None = None,
               stores: dict[str, Engine] | None = None, gate: Gate | None = None,
               models: dict | None = None, base: str = "") -> FastAPI:
    """The explorer over ``engine``; ``reports``: the folder where ``ffnlens eval --report`` writes
    this store's reports (one subfolder per mode), served at /report; ``stores``: engines over other
    stores of the same model and pool, by label (``store=`` in a URL); ``gate``: how many engine
    calls run at once and wait (default: FFNLENS_MAX_RUNNING=2, FFNLENS_MAX_WAITING=32);
    ``models``: other models served beside this one, {name: (engine, about, reports, stores)},
    each a whole explorer of its own under /m/{name}/ (sharing the gate: they share the cores);
    ``base``: the path this explorer is mounted at (its links start with it)."""
    app = FastAPI(
        title="ffnlens",
        version=__version__,
        description="How a small language model's feed-forward blocks predict its next character. "
                    "Every HTML page has a JSON twin under /api taking the same parameters.",
        docs_url=None, redoc_url=None,  # served below, each with the policy its CDN pages need
    )
    app.add_middleware(Guard)
    explorer = Explorer(engine, about or {}, stores=stores, gate=gate)
    explorer.base = base
    templates = Jinja2Templates(env=environment())
    templates.env.globals["base"] = base
    if models is not None:  # the root explorer: mount the others, and let every page list them all
        names = {(about or {}).get("model", "default"): ""}
        names.update({name: f"/m/{name}" for name in models})
        explorer.about["models"] = names
        for name, (eng, ab, rep, st) in models.items():
            sub = create_app(eng, {**ab, "models": names}, rep, st, explorer.gate, base=f"/m/{name}")
            app.mount(f"/m/{name}", sub)

    def error_response(request: Request, message: str, status: int, headers: dict | None = None):
        """A 4xx/5xx with its message: JSON under /api/, the error page otherwise."""
        if wants_json(request.url.path):
            return JSONResponse({"detail": message}, status_code=status, headers=headers)
        return templates.TemplateResponse(request, "error.html",
                                          {"error": message, "about": request.app.state.explorer.about},
                                          status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, exc: RequestValidationError):
        """A parameter of the wrong type: 422 with a readable message (inline on pages)."""
        msg = "; ".join(f"{'.'.join(str(x) for x in e['loc'][1:]) or e['loc'][0]}: {e['msg']}"
                        for e in exc.errors())
        return error_response(request, msg, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        """404 and 405 from routing: the same JSON as FastAPI's under /api/, a page otherwise."""
        return error_response(request, str(exc.detail), exc.status_code, exc.headers)

    @app.exception_handler(Busy)
    async def busy(request: Request, exc: Busy):
        """The gate was full where no route expected it (the routes answer 503 themselves)."""
        return error_response(request, exc.message, 503, {"Retry-After": str(exc.retry_after)})

    app.state.explorer = explorer
    templates.env.globals["htmx_available"] = VENDOR.exists()
    app.mount("/static", StaticFiles(directory=str(ROOT / "static")), name="static")

    def get_explorer(request: Request) -> Explorer:
        return request.app.state.explorer

    def query_context(ex: Explorer, p: dict, need_prompt: bool, present=None, check=None) -> tuple[dict, int]:
        """Parse ``p``, run ``check(vp)`` (raises Rejected), then present the engine's answer:
        ``present(result, engine)`` returns what to add to the context (default: the main page's
        data). Returns (context, status); a refusal leaves its message in ``context["error"]``."""
        ctx = {"form": p, "about": ex.about, "defaults": ex.defaults(), "data": None, "error": None,
               "permalink": ex.base + "/?" + urlencode({k: v for k, v in p.items() if v}), "vp": None}
        try:
            vp = parse(p)
            ctx["vp"] = vp
            ctx["permalink"] = ex.base + ("/?" + vp.query_string() if vp.raw else "/")
            ctx["defaults"] = ex.defaults(vp.store)
            if vp.prompt or need_prompt:
                eng = ex.engine_for(vp)
                if check:
                    check(vp, eng)
                ctx["qs"] = vp.query_string()
                def main_page(res, eng):
                    d = query_dict(res, eng.store, eng.tok.chars)
                    d["store"]["label"] = vp.store or DEFAULT_STORE
                    return {"data": d}

                ctx.update(ex.run(vp, present or main_page))
            return ctx, 200
        except QueryError as e:
            ctx["error"] = str(e)
            return ctx, 400
        except Rejected as e:
            ctx["error"] = e.message
            return ctx, e.status
        except Busy as e:
            ctx["error"], ctx["retry_after"] = e.message, e.retry_after
            return ctx, 503

    def finish(response, ctx: dict, status: int):
        if status == 503:
            response.headers["Retry-After"] = str(ctx.get("retry_after", 1))
        return response

    def api_error(ctx: dict, status: int) -> JSONResponse:
        body = {"detail": ctx["error"]}
        if status == 503:
            body["retry_after"] = ctx.get("retry_after", 1)
        return finish(JSONResponse(body, status_code=status), ctx, status)

    @app.get("/", response_class=HTMLResponse, summary="Main page (JSON twin: /api/query)")
    def index(request: Request, p: dict = Depends(raw_params), ex: Explorer = Depends(get_explorer)):
        ctx, status = query_context(ex, p, need_prompt=False)
        return finish(templates.TemplateResponse(request, "index.html", ctx, status_code=status), ctx, status)

    @app.get("/results", response_class=HTMLResponse, include_in_schema=False)
    def results(request: Request, p: dict = Depends(raw_params), ex: Explorer = Depends(get_explorer)):
        """The results part of the main page, for htmx; pushes the canonical URL."""
        ctx, status = query_context(ex, p, need_prompt=True)
        r = templates.TemplateResponse(request, "_results.html", ctx, status_code=status)
        r.headers["HX-Push-Url"] = ctx["permalink"]
        return finish(r, ctx, status)

    @app.get("/api/query", summary="The approximation for a prompt, per block and blended")
    def api_query(p: dict = Depends(raw_params), ex: Explorer = Depends(get_explorer)):
        ctx, status = query_context(ex, p, need_prompt=True)
        if status != 200:
            return api_error(ctx, status)
        return JSONResponse({**ctx["data"], "permalink": ctx["permalink"]})  # plain data: no re-encoding

    def block_context(ex: Explorer, block: int, p: dict, page: int, per_page: int, sort: str):
        def check(vp: ViewParams, eng: Engine) -> None:  # before any engine work
            n = eng.store.n_layer
            if not 0 <= block < n:
                raise Rejected(f"block {block} does not exist: this model has blocks 0 to {n - 1}", 404)
            if sort not in SORTS:
                raise Rejected(f"sort must be one of {', '.join(SORTS)}, not {sort[:20]!r}")
            if not 1 <= per_page <= MAX_PER_PAGE:
                raise Rejected(f"per_page must be between 1 and {MAX_PER_PAGE}")

        def present(res: QueryResult, eng: Engine) -> dict:
            return {"block": block_dict(res, eng.store, eng.tok.chars, block, page, per_page, sort),
                    "data": {"settings": asdict(res.settings)}, "n_layer": eng.store.n_layer}

        return query_context(ex, p, need_prompt=True, present=present, check=check)

    @app.get("/blocks/{block}", response_class=HTMLResponse,
             summary="One block's neighbours in their corpus context (JSON twin: /api/blocks/{block})")
    def block_page(request: Request, block: int, p: dict = Depends(raw_params),
                   page: int = Query(1, ge=1, le=1_000_000), per_page: int = Query(50),
                   sort: str = Query("similarity", description="'similarity' or 'frequency'"),
                   ex: Explorer = Depends(get_explorer)):
        ctx, status = block_context(ex, block, p, page, per_page, sort)
        return finish(templates.TemplateResponse(request, "block.html", ctx, status_code=status), ctx, status)

    @app.get("/api/blocks/{block}", summary="One block's neighbours, paged, with corpus contexts")
    def api_block(block: int, p: dict = Depends(raw_params), page: int = Query(1, ge=1, le=1_000_000),
                  per_page: int = Query(50), sort: str = Query("similarity"),
                  ex: Explorer = Depends(get_explorer)):
        ctx, status = block_context(ex, block, p, page, per_page, sort)
        if status != 200:
            return api_error(ctx, status)
        return JSONResponse(ctx["block"])

    def corpus_context(ex: Explorer, pos: int, width: int):
        ids = ex.engine.store.corpus_ids
        if not 0 <= pos < len(ids):
            return None, f"pos must be between 0 and {len(ids) - 1}"
        if not 1 <= width <= 5000:
            return None, "width must be between 1 and 5000"
        n = ex.engine.store.pool.n
        return context(ex.engine.tok.chars, ids, pos, n, width, width, lines=None), None

    @app.get("/corpus", response_class=HTMLResponse, summary="A stretch of the corpus around a position")
    def corpus_page(request: Request, pos: int = Query(...), width: int = Query(1500),
                    ex: Explorer = Depends(get_explorer)):
        c, err = corpus_context(ex, pos, width)
        return templates.TemplateResponse(request, "corpus.html",
                                          {"c": c, "error": err, "about": ex.about},
                                          status_code=400 if err else 200)

    @app.get("/api/corpus", summary="A stretch of the corpus around a position")
    def api_corpus(pos: int = Query(...), width: int = Query(1500), ex: Explorer = Depends(get_explorer)):
        c, err = corpus_context(ex, pos, width)
        if err:
            return JSONResponse({"detail": err}, status_code=400)
        return c

    def find_report(mode: str):
        """(report folder, None) or (None, (message, status))."""
        have = sorted(p.parent.name for p in reports.glob("*/report.json")) if reports else []
        if not have:
            return None, ("no report for this store yet: run `ffnlens eval --report` (add `--pool "
                          "heldout` for the held-out mode) with this model and corpus", 404)
        if mode and mode not in have:
            return None, (f"mode must be one of {', '.join(have)}, not {mode[:20]!r}", 400)
        return reports / (mode or ("reference" if "reference" in have else have[0])), None

    @app.get("/report", response_class=HTMLResponse,
             summary="The evaluation report: the approximation against every baseline (JSON twin: /api/report)")
    def report_page(request: Request, mode: str = Query("", description="'reference' or 'held-out'"),
                    ex: Explorer = Depends(get_explorer)):
        from ..study.render import render_html
        from ..study.storage import load_report

        folder, err = find_report(mode)
        if err:
            return templates.TemplateResponse(request, "error.html", {"error": err[0], "about": ex.about},
                                              status_code=err[1])
        report, figures = load_report(folder)
        if ex.base:  # the report's permalinks were written for an explorer at "/"
            _rebase_urls(report, ex.base)
        page = render_html(report, figures)
        # The page inlines static/style.css (it also stands alone on disk) and colours its swatches
        # with style attributes: those exact styles are allowed by hash; scripts stay external.
        return HTMLResponse(page, headers={"Content-Security-Policy": csp_with_inline_styles(page)})

    @app.get("/api/report", summary="The evaluation report as data")
    def api_report(mode: str = Query("", description="'reference' or 'held-out'")):
        from ..study.storage import load_report

        folder, err = find_report(mode)
        if err:
            return JSONResponse({"detail": err[0]}, status_code=err[1])
        return load_report(folder)[0]

    @app.get("/api/info", summary="The model, corpus and store being served, and their defaults")
    def api_info(ex: Explorer = Depends(get_explorer)):
        return {**ex.about, "defaults": ex.defaults()}

    def docs_page(page: HTMLResponse) -> HTMLResponse:
        page.headers["Content-Security-Policy"] = csp_for_docs(page.body.decode())
        return page

    @app.get("/docs", include_in_schema=False)
    def swagger_ui():
        return docs_page(get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - Swagger UI"))

    @app.get("/redoc", include_in_schema=False)
    def redoc():
        return docs_page(get_redoc_html(openapi_url=app.openapi_url, title=f"{app.title} - ReDoc"))

    return app
