"""How the explorer answers what it refuses: :class:`Rejected` (a route's own refusal), the one
error response (JSON ``{"detail"}`` under /api/, the error page otherwise), and the exception
handlers :func:`install` puts on an app. A parameter of the wrong type or out of its range is a 400
whose message, one plain sentence per parameter, says what the parameter takes."""
from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..search.sharded import ShardUnavailable
from .gate import Busy
from .params import RANGES, SORTS
from .safety import wants_json

CHOICES = {"sort": SORTS}
TAKES = {"pos": "a position in the corpus, a whole number from 0", "block": "a block number, from 0"}


class Rejected(Exception):
    """A request the routes refuse before asking the engine: a message and its status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message, self.status = message, status


def _shown(value) -> str:
    return repr(str(value)[:20])


def sentence(error: dict) -> str:
    """One of pydantic's validation errors as a plain sentence naming the parameter and what it takes."""
    loc = [str(x) for x in error.get("loc", ())]
    name = ".".join(loc[1:]) or (loc[0] if loc else "a parameter")
    kind, ctx, given = error.get("type", ""), error.get("ctx") or {}, error.get("input")
    if kind == "missing":
        return f"{name} is required: {TAKES.get(name, 'give it in the URL')}"
    if name in RANGES and kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than",
                                   "int_parsing_size"):
        lo, hi = RANGES[name]
        return f"{name} must be between {lo} and {hi}"
    if kind == "int_parsing_size":
        return f"{name} must be a whole number of at most a few digits, not {_shown(given)}"
    if kind.startswith("int_"):
        return f"{name} must be a whole number, not {_shown(given)}"
    if kind == "greater_than_equal":
        return f"{name} must be at least {ctx.get('ge')}"
    if kind == "less_than_equal":
        return f"{name} must be at most {ctx.get('le')}"
    if kind == "literal_error":
        choices = ", ".join(CHOICES[name]) if name in CHOICES else ctx.get("expected", "")
        return f"{name} must be one of {choices}, not {_shown(given)}"
    return f"{name} is not accepted: {str(error.get('msg', 'invalid value')).lower()}"


def plain_message(errors: list[dict]) -> str:
    """Every error's sentence, joined; the same sentence once."""
    return "; ".join(dict.fromkeys(sentence(e) for e in errors)) or "a parameter is not accepted"


def error_response(request: Request, message: str, status: int, headers: dict | None = None):
    """A 4xx/5xx with its message: JSON under /api/, the error page otherwise."""
    if wants_json(request.url.path):
        return JSONResponse({"detail": message}, status_code=status, headers=headers)
    state = request.app.state
    return state.templates.TemplateResponse(request, "error.html",
                                            {"error": message, "about": state.explorer.about},
                                            status_code=status, headers=headers)


async def bad_parameter(request: Request, exc: RequestValidationError):
    """A parameter of the wrong type or out of range: a 400 with a plain message (inline on pages)."""
    return error_response(request, plain_message(list(exc.errors())), 400)


async def http_error(request: Request, exc: StarletteHTTPException):
    """404 and 405 from routing: the same JSON as FastAPI's under /api/, a page otherwise."""
    return error_response(request, str(exc.detail), exc.status_code, exc.headers)


async def busy(request: Request, exc: Busy | ShardUnavailable):
    """The gate was full, or a shard of a store searched on Ray did not answer, where no route
    expected it (the routes answer 503 themselves): a 503 with the message and Retry-After."""
    return error_response(request, exc.message, 503, {"Retry-After": str(exc.retry_after)})


def install(app: FastAPI) -> None:
    """Put the handlers above on ``app``."""
    app.add_exception_handler(RequestValidationError, bad_parameter)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Busy, busy)
    app.add_exception_handler(ShardUnavailable, busy)


def server_timing(response, ctx: dict, **more: float):
    """``response`` with a Server-Timing header naming where the request's time went (forward,
    search, blend, present, and what the route adds, e.g. render), in milliseconds."""
    parts = {**ctx.get("timing", {}), **more}
    if parts:
        response.headers["Server-Timing"] = ", ".join(
            f"{name};dur={ms:.2f}" + (';desc="answer cached"' if name == "cache" else "")
            for name, ms in parts.items())
    return response


def with_retry_after(response, ctx: dict, status: int):
    """``response``, told when to come back if ``status`` is 503 (a full gate)."""
    if status == 503:
        response.headers["Retry-After"] = str(ctx.get("retry_after", 1))
    return response
