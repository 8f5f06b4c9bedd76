"""The app factory: one explorer, the page and API routers, the static files and the error
handlers, and other models mounted beside this one.

Each route reads its URL into one settings object, asks the engine once (through a bounded gate),
and renders the resulting dict as HTML (a Jinja template) or as JSON (the same dict). Bad input is a
4xx with a message (JSON ``{"detail"}`` under /api/, inline on pages; app/web/errors.py), a full
gate a 503 with Retry-After, anything unexpected a logged, safe 500 (app/web/safety.py)."""
from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from .. import __version__
from ..approx import Engine
from ..templating import environment
from . import api, errors, fragments, pages
from .explorer import Explorer
from .gate import Gate
from .safety import Guard

ROOT = Path(__file__).resolve().parent.parent.parent
VENDOR = ROOT / "static" / "vendor" / "htmx.min.js"


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
        docs_url=None, redoc_url=None,  # served by the pages router from our own static files
    )
    app.add_middleware(Guard)
    explorer = Explorer(engine, about or {}, stores=stores, gate=gate)
    explorer.base = base
    templates = Jinja2Templates(env=environment())
    templates.env.globals["base"] = base
    templates.env.globals.update(fragments.GLOBALS)
    templates.env.globals["htmx_available"] = VENDOR.exists()
    templates.env.globals["swagger_available"] = (VENDOR.parent / "swagger-ui-bundle.js").exists()
    if models is not None:  # the root explorer: mount the others, and let every page list them all
        names = {(about or {}).get("model", "default"): ""}
        names.update({name: f"/m/{name}" for name in models})
        explorer.about["models"] = names
        for name, (eng, ab, rep, st) in models.items():
            sub = create_app(eng, {**ab, "models": names}, rep, st, explorer.gate, base=f"/m/{name}")
            app.mount(f"/m/{name}", sub)
    app.state.explorer, app.state.templates, app.state.reports = explorer, templates, reports
    errors.install(app)
    app.include_router(pages.router)
    app.include_router(api.router)
    app.mount("/static", StaticFiles(directory=str(ROOT / "static")), name="static")
    app.openapi = lambda: _without_422(app)
    return app


def _without_422(app: FastAPI) -> dict:
    """The OpenAPI schema, without the 422 FastAPI declares for every route with parameters: a bad
    parameter here answers 400 (app/web/errors.py), which each route declares."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)  # FastAPI's own, kept as app.openapi_schema: edited in place
        for ops in schema.get("paths", {}).values():
            for op in ops.values():
                op.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
    return app.openapi_schema
