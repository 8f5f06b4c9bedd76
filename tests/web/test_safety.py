"""What every response gets and every request must pass (app/web/safety.py): the security headers,
the docs' and the report's own policies, the read-only server's limits, and unexpected exceptions
logged, never shown."""


def test_every_response_has_the_safety_headers(client):
    seen = set()
    for path in ("/", "/?prompt=the+king+", "/api/info", "/static/style.css", "/static/app.js",
                 "/nowhere", "/api/nowhere", "/blocks/abc", "/api/query", "/openapi.json"):
        r = client.get(path)
        assert r.headers["content-security-policy"] == (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"), path
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "same-origin"
        assert "server-timing" in r.headers
        seen.add(r.headers["x-request-id"])
    assert len(seen) == 10  # one id per request
    page = client.get("/nowhere")
    assert page.status_code == 404 and 'class="error"' in page.text  # pages get a page
    assert client.get("/api/nowhere").json() == {"detail": "Not Found"}


def test_docs_pages_come_from_our_own_files(client):
    """/docs is Swagger UI from static/vendor (npm), started by static/js/docs.js: the strict policy
    (plus connect-src 'self'), no inline script, nothing from another origin; /redoc points to it."""
    r = client.get("/docs")
    csp = dict(d.strip().split(" ", 1) for d in r.headers["content-security-policy"].split(";"))
    assert r.status_code == 200 and csp["script-src"] == "'self'" and csp["style-src"] == "'self'"
    assert csp["connect-src"] == "'self'" and csp["frame-ancestors"] == "'none'"
    assert "http" not in r.headers["content-security-policy"]
    assert "/static/js/docs.js" in r.text and 'data-openapi="/openapi.json"' in r.text
    assert "<script>" not in r.text and "style=" not in r.text and "https://" not in r.text
    for asset in ("/static/js/docs.js", "/static/vendor/swagger-ui-bundle.js", "/static/vendor/swagger-ui.css"):
        assert client.get(asset).status_code == 200, asset
    redoc = client.get("/redoc")
    assert redoc.status_code == 200 and 'href="/docs"' in redoc.text and "https://" not in redoc.text


def test_report_policy_allows_its_own_inline_styles_only(report_client):
    r = report_client.get("/report")
    assert r.status_code == 200
    csp = dict(d.strip().split(" ", 1) for d in r.headers["content-security-policy"].split(";"))
    assert csp["script-src"] == "'self'" and "'unsafe-inline'" not in csp["style-src"]
    assert "'sha256-" in csp["style-src"] and csp["object-src"] == "'none'"


def test_read_only_server_limits(client):
    r = client.post("/api/query", params={"prompt": "the king "})
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD" and "read-only" in r.json()["detail"]
    assert client.put("/").status_code == 405 and client.delete("/api/info").status_code == 405
    r = client.request("GET", "/api/info", content=b"x" * 10)
    assert r.status_code == 413 and "no body" in r.json()["detail"]
    r = client.get("/api/query", params={"prompt": "the king ", "weights": "1," * 5000})
    assert r.status_code == 414 and "at most 8,192" in r.json()["detail"]
    page = client.get("/", params={"prompt": "x" * 9000})
    assert page.status_code == 414 and 'class="error"' in page.text
    assert client.head("/api/info").status_code == 200


def test_unexpected_exceptions_are_logged_not_shown(client, monkeypatch, caplog):
    ex = client.app.state.explorer

    def broken(*a, **k):
        raise RuntimeError("secret internals /etc/shadow")

    monkeypatch.setattr(ex, "run", broken)
    with caplog.at_level("ERROR", logger="ffnlens.web"):
        r = client.get("/api/query", params={"prompt": "the king "})
        page = client.get("/", params={"prompt": "the king "})
    assert r.status_code == 500 and page.status_code == 500
    body = r.json()
    assert set(body) == {"detail", "request_id"} and body["request_id"] == r.headers["x-request-id"]
    for resp in (r, page):
        assert "secret" not in resp.text and "Traceback" not in resp.text and "RuntimeError" not in resp.text
        assert resp.headers["content-security-policy"].startswith("default-src 'self'")
    assert page.headers["content-type"].startswith("text/html") and page.headers["x-request-id"] in page.text
    logged = "\n".join(f"{rec.getMessage()}\n{rec.exc_text or ''}" for rec in caplog.records)
    assert body["request_id"] in logged and "RuntimeError: secret internals" in logged
