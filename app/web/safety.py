"""What every response gets and every request must pass, whatever route answers it.

:class:`Guard` is an ASGI middleware around the whole app (inside Starlette's last-resort error
middleware, outside the routes and their exception handlers). For each request it

- gives it an id (uuid4 hex; ``request.state.request_id``), sent back as ``X-Request-ID``;
- turns away what this read-only server never needs: methods other than GET and HEAD (405), a
  request body (413), a query string over ``max_query`` bytes (414);
- adds the security headers (a strict Content-Security-Policy unless the route set its own,
  ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: same-origin``) and ``Server-Timing``;
- answers an unexpected exception with a safe 500 (JSON ``{"detail", "request_id"}`` under /api/,
  a plain page otherwise) and logs its traceback with the request id; the traceback never leaves
  the server.
"""
from __future__ import annotations

import base64
import hashlib
import html
import json
import logging
import re
import time
import uuid

from starlette.datastructures import MutableHeaders

log = logging.getLogger("ffnlens.web")

# Every page's policy: scripts and styles from our own files only (static/app.js and htmx; no
# inline script, style element or style attribute), nothing embedded, no <base>, forms submit here,
# and no framing.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}
MAX_QUERY = 8192  # bytes of query string; a prompt at MAX_PROMPT characters fits several times over
METHODS = ("GET", "HEAD")

_STYLE_ELEMENT = re.compile(r"<style\b[^>]*>(.*?)</style\s*>", re.S | re.I)
_STYLE_ATTR = re.compile(r"""\sstyle\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.I)
_SCRIPT_ELEMENT = re.compile(r"<script\b([^>]*)>(.*?)</script\s*>", re.S | re.I)


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def style_hashes(page: str) -> list[str]:
    """CSP sources allowing exactly the inline styles of ``page`` (our own generated HTML): each
    <style> element's text, and, after 'unsafe-hashes', each style attribute's value."""
    blocks = sorted({_sha256(m) for m in _STYLE_ELEMENT.findall(page)})
    attrs = sorted({_sha256(html.unescape(a or b)) for a, b in _STYLE_ATTR.findall(page)})
    return blocks + (["'unsafe-hashes'", *attrs] if attrs else [])


def csp_with_inline_styles(page: str) -> str:
    """The strict policy, its style-src widened to the inline styles of ``page`` by hash (the
    report page: it inlines static/style.css so that it also stands alone on disk, and colours its
    legend swatches with style attributes). Scripts stay external only."""
    return CSP.replace("style-src 'self'", " ".join(["style-src 'self'", *style_hashes(page)]))


# /docs: Swagger UI from our own static files (static/vendor/swagger-ui-bundle.js and its CSS,
# started by static/js/docs.js): the page's policy is the strict one plus connect-src 'self' (it
# fetches /openapi.json, and "Try it out" calls this server's API). img-src data: stays for the
# icons its stylesheet draws as data: URIs. No inline script, no inline style, no other origin.
CSP_DOCS = CSP.replace("object-src", "connect-src 'self'; object-src")


def plain_page(message: str, status: int, request_id: str | None = None) -> bytes:
    """A page that needs nothing that could itself fail (no template, no engine)."""
    rid = f'<p class="small">request id <code>{html.escape(request_id)}</code></p>' if request_id else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{status} · ffnlens'
            f'</title><link rel="stylesheet" href="/static/style.css"></head><body><main>'
            f'<p class="error" role="alert">{html.escape(message)}</p>{rid}'
            f'<p><a href="/">← the main page</a></p></main></body></html>').encode()


def wants_json(path: str) -> bool:
    return path.startswith(("/api/", "/static/", "/openapi")) or path == "/api"


class Guard:
    """The ASGI middleware described in this module's docstring."""

    def __init__(self, app, max_query: int = MAX_QUERY):
        self.app = app
        self.max_query = max_query

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        path = scope.get("path", "")
        t0 = time.perf_counter()
        started = False

        async def send_with_headers(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                h = MutableHeaders(scope=message)
                h["X-Request-ID"] = rid
                total = f"app;dur={1000 * (time.perf_counter() - t0):.1f}"  # the whole request
                parts = h.get("Server-Timing")  # the route's own parts (forward, search, ...)
                h["Server-Timing"] = f"{parts}, {total}" if parts else total
                if "content-security-policy" not in h:
                    h["Content-Security-Policy"] = CSP
                for k, v in HEADERS.items():
                    h[k] = v
            elif head and message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        method = scope.get("method", "GET")
        head = method == "HEAD"  # answered as GET without the body (FastAPI's routes are GET only)
        if head:
            scope = {**scope, "method": "GET"}
        if method not in METHODS:
            return await self._reject(send_with_headers, path, 405,
                                      f"this server is read-only: {method[:10]} is not accepted, only GET",
                                      rid, {"Allow": ", ".join(METHODS)})
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"0").strip() or b"0"
        if b"transfer-encoding" in headers or not length.isdigit() or int(length) > 0:
            return await self._reject(send_with_headers, path, 413,
                                      "requests here have no body: every parameter goes in the URL", rid)
        qs = scope.get("query_string", b"")
        if len(qs) > self.max_query:
            return await self._reject(send_with_headers, path, 414,
                                      f"the query string has {len(qs):,} bytes; at most "
                                      f"{self.max_query:,} are accepted", rid)
        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            log.exception("request %s failed: %s %s?%s", rid, method, path,
                          qs[:200].decode("latin-1"))
            if started:  # too late for an error response: the connection is cut
                raise
            await self._reject(send_with_headers, path, 500,
                               "something went wrong on the server; it has been logged under this "
                               "request id", rid)

    @staticmethod
    async def _reject(send, path: str, status: int, message: str, rid: str,
                      extra: dict | None = None) -> None:
        if wants_json(path):
            body = json.dumps({"detail": message, "request_id": rid}).encode()
            ctype = b"application/json"
        else:
            body = plain_page(message, status, rid)
            ctype = b"text/html; charset=utf-8"
        headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in (extra or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
