"""Routes. Each parses its URL into one settings object, asks the engine once, and renders the
resulting dict as HTML (a Jinja template) or as JSON (the same dict)."""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from pathlib import Path
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from .. import __version__
from ..approx import Engine, QueryError, QueryResult
from ..search import available_backends, make_search
from ..present import SORTS, block_dict, context, query_dict, visible
from .params import ViewParams, parse, raw_params

ROOT = Path(__file__).resolve().parent.parent.parent
VENDOR = ROOT / "static" / "vendor" / "htmx.min.js"
DEFAULT_STORE = "pool"


class Explorer:
    """What the app serves: the default store's engine (its search the default backend), the same
    engine under every other backend the store has (``backend=`` in a URL), the engines of other
    stores of the same model and pool (``store=``), a description, and a small answer cache."""

    def __init__(self, engine: Engine, about: dict, cache_size: int = 64,
                 stores: dict[str, Engine] | None = None):
        self.engine = engine
        self.engines = {label: self._backends(e)
                        for label, e in {DEFAULT_STORE: engine, **(stores or {})}.items()}
        self.about = {**about, "backends": list(self.engines[DEFAULT_STORE]),
                      "stores": {label: {"size": next(iter(es.values())).store.size,
                                         "context": next(iter(es.values())).store.context,
                                         "activation": next(iter(es.values())).activation,
                                         "backends": list(es)}
                                 for label, es in self.engines.items()}}
        self._cache: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.cache_size = cache_size

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

    def query(self, vp: ViewParams) -> tuple[QueryResult, Engine]:
        engine = self.engine_for(vp)
        key = (vp.prompt, repr(vp.settings), vp.store or DEFAULT_STORE, engine.search.name)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key], engine
        res = engine.query(vp.prompt, vp.settings)
        with self._lock:
            self._cache[key] = res
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return res, engine

    def defaults(self, store: str | None = None) -> dict:
        es = self.engines.get(store or DEFAULT_STORE) or self.engines[DEFAULT_STORE]
        st = next(iter(es.values())).store
        from ..approx import QuerySettings

        s = QuerySettings().resolved(st)
        return {"thresholds": ",".join(f"{t:.4f}" for t in s.thresholds),
                "weights": ",".join(f"{w:g}" for w in s.weights),
                "rule": st.defaults.get("rule", "METHOD.md's reference thresholds"),
                "rule_text": st.defaults.get("rule_text", "")}


def create_app(engine: Engine, about: dict | None = None, reports: Path | None = None,
               stores: dict[str, Engine] | None = None) -> FastAPI:
    """The explorer over ``engine``; ``reports``: the folder where ``ffnlens eval --report`` writes
    this store's reports (one subfolder per mode), served at /report; ``stores``: engines over other
    stores of the same model and pool, by label (``store=`` in a URL)."""
    app = FastAPI(
        title="ffnlens",
        version=__version__,
        description="How a small language model's feed-forward blocks predict its next character. "
                    "Every HTML page has a JSON twin under /api taking the same parameters.",
    )
    explorer = Explorer(engine, about or {}, stores=stores)
    templates = Jinja2Templates(directory=str(ROOT / "templates"))

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, exc: RequestValidationError):
        """A parameter of the wrong type: 422 with a readable message (inline on pages)."""
        msg = "; ".join(f"{'.'.join(str(x) for x in e['loc'][1:]) or e['loc'][0]}: {e['msg']}"
                        for e in exc.errors())
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": msg}, status_code=422)
        return templates.TemplateResponse(request, "error.html", {"error": msg, "about": explorer.about},
                                          status_code=422)

    @app.middleware("http")
    async def server_timing(request: Request, call_next):
        t0 = time.perf_counter()
        response = await call_next(request)
        response.headers["Server-Timing"] = f"app;dur={1000 * (time.perf_counter() - t0):.1f}"
        return response

    app.state.explorer = explorer
    templates.env.filters["visible"] = visible
    templates.env.globals["htmx_available"] = VENDOR.exists()
    app.mount("/static", StaticFiles(directory=str(ROOT / "static")), name="static")

    def get_explorer(request: Request) -> Explorer:
        return request.app.state.explorer

    def query_context(ex: Explorer, p: dict, need_prompt: bool) -> tuple[dict, int]:
        ctx = {"form": p, "about": ex.about, "defaults": ex.defaults(), "data": None, "error": None,
               "permalink": "/?" + urlencode({k: v for k, v in p.items() if v}), "vp": None}
        try:
            vp = parse(p)
            ctx["vp"] = vp
            ctx["permalink"] = "/?" + vp.query_string() if vp.raw else "/"
            ctx["defaults"] = ex.defaults(vp.store)
            if vp.prompt or need_prompt:
                res, eng = ex.query(vp)
                ctx["data"] = {**query_dict(res, eng.store, eng.tok.chars),
                               "store": vp.store or DEFAULT_STORE}
                ctx["qs"] = vp.query_string()
            return ctx, 200
        except QueryError as e:
            ctx["error"] = str(e)
            return ctx, 400

    @app.get("/", response_class=HTMLResponse, summary="Main page (JSON twin: /api/query)")
    def index(request: Request, p: dict = Depends(raw_params), ex: Explorer = Depends(get_explorer)):
        ctx, status = query_context(ex, p, need_prompt=False)
        return templates.TemplateResponse(request, "index.html", ctx, status_code=status)

    @app.get("/results", response_class=HTMLResponse, include_in_schema=False)
    def results(request: Request, p: dict = Depends(raw_params), ex: Explorer = Depends(get_explorer)):
        """The results part of the main page, for htmx; pushes the canonical URL."""
        ctx, status = query_context(ex, p, need_prompt=True)
        r = templates.TemplateResponse(request, "_results.html", ctx, status_code=status)
        r.headers["HX-Push-Url"] = ctx["permalink"]
        return r

    @app.get("/api/query", summary="The approximation for a prompt, per block and blended")
    def api_query(p: dict = Depends(raw_params), ex: Explorer = Depends(get_explorer)):
        ctx, status = query_context(ex, p, need_prompt=True)
        if status != 200:
            return JSONResponse({"detail": ctx["error"]}, status_code=status)
        return {**ctx["data"], "permalink": ctx["permalink"]}

    def block_context(ex: Explorer, block: int, p: dict, page: int, per_page: int, sort: str):
        ctx, status = query_context(ex, p, need_prompt=True)
        if status != 200:
            return ctx, status
        eng = ex.engine_for(ctx["vp"])
        n = eng.store.n_layer
        if not 0 <= block < n:
            ctx["error"] = f"block {block} does not exist: this model has blocks 0 to {n - 1}"
            return ctx, 404
        if sort not in SORTS:
            ctx["error"] = f"sort must be one of {', '.join(SORTS)}"
            return ctx, 400
        if not 1 <= per_page <= 500:
            ctx["error"] = "per_page must be between 1 and 500"
            return ctx, 400
        res, eng = ex.query(ctx["vp"])
        ctx["block"] = block_dict(res, eng.store, eng.tok.chars, block, page, per_page, sort)
        ctx["n_layer"] = n
        return ctx, 200

    @app.get("/blocks/{block}", response_class=HTMLResponse,
             summary="One block's neighbours in their corpus context (JSON twin: /api/blocks/{block})")
    def block_page(request: Request, block: int, p: dict = Depends(raw_params),
                   page: int = Query(1, ge=1, le=1_000_000), per_page: int = Query(50),
                   sort: str = Query("similarity", description="'similarity' or 'frequency'"),
                   ex: Explorer = Depends(get_explorer)):
        ctx, status = block_context(ex, block, p, page, per_page, sort)
        return templates.TemplateResponse(request, "block.html", ctx, status_code=status)

    @app.get("/api/blocks/{block}", summary="One block's neighbours, paged, with corpus contexts")
    def api_block(block: int, p: dict = Depends(raw_params), page: int = Query(1, ge=1, le=1_000_000),
                  per_page: int = Query(50), sort: str = Query("similarity"),
                  ex: Explorer = Depends(get_explorer)):
        ctx, status = block_context(ex, block, p, page, per_page, sort)
        if status != 200:
            return JSONResponse({"detail": ctx["error"]}, status_code=status)
        return ctx["block"]

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
        from ..report import load_report, render_html

        folder, err = find_report(mode)
        if err:
            return templates.TemplateResponse(request, "error.html", {"error": err[0], "about": ex.about},
                                              status_code=err[1])
        return HTMLResponse(render_html(*load_report(folder)))

    @app.get("/api/report", summary="The evaluation report as data")
    def api_report(mode: str = Query("", description="'reference' or 'held-out'")):
        from ..report import load_report

        folder, err = find_report(mode)
        if err:
            return JSONResponse({"detail": err[0]}, status_code=err[1])
        return load_report(folder)[0]

    @app.get("/api/info", summary="The model, corpus and store being served, and their defaults")
    def api_info(ex: Explorer = Depends(get_explorer)):
        return {**ex.about, "defaults": ex.defaults()}

    return app
