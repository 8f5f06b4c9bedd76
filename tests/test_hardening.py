"""Hardening: every route fuzzed, the gate, safe headers and errors, escaping in a real browser,
concurrent users and memory on a live server, and kill -9 during an index build."""
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote, urlencode

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from app.web.gate import Busy, Gate

from .conftest import REPO, micro_text
from .test_readme_commands import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]
XSS = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "'><svg onload=alert(1)>",
       "javascript:alert(1)"]
RAW_MARKUP = ("<script>alert", "<img src=x", "<svg onload")  # must never reach a page unescaped
NASTY = XSS + ["'", '"', "&", "&amp;", "&#60;", "\n", "\r\n", "\t", "\x00", "%00", "%", "+", "é",
               "日本語", "🙂", "\u202e", "e\u0301", "\ufeff", "-1", "-0", "0", "1", "2", "7", " 1 ", "1.5",
               "1e3", "1_000", "0x10", "９", "NaN", "nan", "-nan", "inf", "-inf", "Infinity", "1e308",
               "1e999", "-1e-400", "9" * 30, "9" * 5000, "-" + "9" * 25, "", " ", "null", "true", "[]",
               "{}", "../../etc/passwd", "%2e%2e%2f", "x" * 1001, "the king " * 200]
QUERY_PARAMS = ("prompt", "mode", "thresholds", "k", "weights", "blend", "exclude_self", "show",
                "backend", "exact", "store", "page", "per_page", "sort")
REQUESTS = {"query": 0, "other": 0}
STATUSES: dict[str, dict[int, int]] = {"query": {}, "other": {}}

# --- strategies ------------------------------------------------------------------------------------
VOCAB = "".join(sorted(set(micro_text())))
number = st.floats(-1.5, 1.5, allow_nan=False).map(lambda x: f"{x:.3f}")
floats6 = st.one_of(st.lists(number, min_size=6, max_size=6), st.lists(number, max_size=8)).map(",".join)
VALID = {
    "prompt": st.one_of(st.text(VOCAB, min_size=1, max_size=40), st.sampled_from(["the king ", "my lord"])),
    "mode": st.sampled_from(["threshold", "topk"]),
    "thresholds": st.one_of(st.sampled_from(["", "reference", "0.9,0.9,0.9,0.9,0.9,0.9"]), floats6),
    "k": st.integers(-3, 6000).map(str),
    "weights": st.one_of(st.sampled_from(["", "1,1,1,1,1,1"]), floats6),
    "blend": st.sampled_from(["raw", "normalised"]),
    "exclude_self": st.sampled_from(["1", "0", "true", "", "on"]),
    "show": st.integers(-2, 120).map(str),
    "backend": st.sampled_from(["", "bound", "exact", "ivf"]),
    "exact": st.sampled_from(["", "1", "0"]),
    "store": st.sampled_from(["", "pool", "context16"]),
    "page": st.integers(-2, 12).map(str),
    "per_page": st.integers(-2, 600).map(str),
    "sort": st.sampled_from(["similarity", "frequency"]),
    "pos": st.integers(-10, 7000).map(str),
    "width": st.integers(-5, 6000).map(str),
    "mode_report": st.sampled_from(["", "reference", "held-out"]),
    "block": st.integers(-2, 8).map(str),
}
anything = st.one_of(st.sampled_from(NASTY), st.text(st.characters(exclude_categories=("Cs",)), max_size=30),
                     st.integers().map(str), st.floats().map(str))


def value(name: str):
    return st.one_of(VALID[name], VALID[name], anything)  # mostly plausible, often hostile


def check(r, path: str, group: str = "other") -> None:
    """No 500, a message with every 4xx, the safety headers, nothing unescaped."""
    REQUESTS[group] += 1
    STATUSES[group][r.status_code] = STATUSES[group].get(r.status_code, 0) + 1
    assert r.status_code < 500, (path, r.status_code, r.text[:300])
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])
    assert r.headers["content-security-policy"].startswith("default-src 'self'")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "Traceback" not in r.text
    is_html = r.headers.get("content-type", "").startswith("text/html")
    if r.status_code >= 400:
        if is_html:
            m = re.search(r'class="error" role="alert">([^<]+)<', r.text)
            assert m and m.group(1).strip(), (path, r.status_code, r.text[:300])
        else:
            detail = r.json()["detail"]
            assert isinstance(detail, str) and detail.strip(), (path, r.status_code, detail)
    if is_html:
        assert not any(s in r.text for s in RAW_MARKUP), path


# --- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reports(engine, tmp_path_factory):
    """A small real report (16 prompts), as `ffnlens eval --report` writes it."""
    from app.approx import QuerySettings
    from app.study.baselines.unigram import Unigram
    from app.study.prompts import reference_prompts
    from app.study.report import build_report
    from app.study.storage import write_report

    out = tmp_path_factory.mktemp("reports")
    rows = reference_prompts(engine.store, 16, seed=3)
    report, figs = build_report(engine, rows, QuerySettings(),
                                {"unigram": Unigram(engine.store.corpus_ids, engine.store.counts.vocab_size)},
                                "reference", sweep_prompts=8, fit_steps=10, single_blocks=False)
    write_report(out / "reference", report, figs)
    return out


@pytest.fixture(scope="module")
def report_client(workspace, engine, reports):
    from fastapi.testclient import TestClient

    from app.web import create_app
    from app.workspace import about

    return TestClient(create_app(engine, about(workspace, engine), reports=reports))


@pytest.fixture(scope="module")
def live(workspace, engine, reports):
    """The explorer on loopback (uvicorn in a thread), with its default gate, and its app."""
    import uvicorn

    from app.web import create_app
    from app.workspace import about

    app = create_app(engine, about(workspace, engine), reports=reports)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    yield port, app
    srv.should_exit = True
    t.join(timeout=10)


# --- fuzzing -----------------------------------------------------------------------------------------
# 400 x 5 + 100 x 5 requests; FFNLENS_FUZZ_SCALE=10 for a longer run, FFNLENS_FUZZ_RANDOM=1 for new cases.
SCALE = float(os.environ.get("FFNLENS_FUZZ_SCALE", "1"))


def fuzz(examples: int):
    return settings(max_examples=int(examples * SCALE), deadline=None, database=None,
                    derandomize=not os.environ.get("FFNLENS_FUZZ_RANDOM"),
                    suppress_health_check=list(HealthCheck))


@fuzz(400)
@given(params=st.fixed_dictionaries({"prompt": VALID["prompt"]},
                                    optional={k: VALID[k] for k in QUERY_PARAMS if k != "prompt"}),
       hostile=st.dictionaries(st.sampled_from(QUERY_PARAMS), anything, max_size=3),
       block=value("block"))
def test_fuzz_query_routes(client, params, hostile, block):
    """/api/query, /, /results, /blocks/{i} and /api/blocks/{i}, each with the same fuzzed URL:
    plausible settings (many reach the engine) with up to three parameters made hostile."""
    params = {**params, **hostile}
    for path in ("/api/query", "/", "/results", f"/blocks/{quote(block, safe='')}",
                 f"/api/blocks/{quote(block, safe='')}"):
        check(client.get(path, params=params), path, "query")


@fuzz(100)
@given(corpus=st.fixed_dictionaries({}, optional={"pos": value("pos"), "width": value("width")}),
       mode=st.fixed_dictionaries({}, optional={"mode": value("mode_report")}),
       extra=st.fixed_dictionaries({}, optional={k: anything for k in ("prompt", "x", "pos")}))
def test_fuzz_other_routes(report_client, corpus, mode, extra):
    """/corpus, /api/corpus, /report, /api/report and /api/info (with stray parameters)."""
    for path, params in (("/corpus", corpus), ("/api/corpus", corpus), ("/report", mode),
                         ("/api/report", mode), ("/api/info", extra)):
        check(report_client.get(path, params=params), path)


def test_fuzzing_sent_at_least_2000_requests():
    total = sum(REQUESTS.values())
    print(f"\nfuzzing: {total:,} requests ({REQUESTS['query']:,} query routes, {REQUESTS['other']:,} "
          f"others); statuses {', '.join(f'{g}: {dict(sorted(c.items()))}' for g, c in STATUSES.items())}")
    if REQUESTS["query"] and REQUESTS["other"]:  # both fuzz tests ran in this session
        assert total >= 2000


# --- headers, limits, errors ----------------------------------------------------------------------
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


def test_docs_pages_get_their_own_policy(client):
    for path in ("/docs", "/redoc"):
        r = client.get(path)
        csp = r.headers["content-security-policy"]
        assert r.status_code == 200 and "https://cdn.jsdelivr.net" in csp and "frame-ancestors 'none'" in csp
        assert "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]


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


# --- the gate ----------------------------------------------------------------------------------------
def test_gate_turns_away_at_once_when_full():
    g = Gate(running=1, waiting=0)
    with g:
        t0 = time.perf_counter()
        with pytest.raises(Busy) as e:
            g.acquire()
        assert time.perf_counter() - t0 < 0.1 and e.value.retry_after >= 1
    with g:  # free again
        pass
    assert g.rejected == 1 and g.active == 0


def test_gate_queues_first_come_first_served_and_times_out():
    g = Gate(running=1, waiting=3, timeout=5)
    order, threads = [], []
    g.acquire()
    for i in range(3):
        def wait(i=i):
            with g:
                order.append(i)
        threads.append(threading.Thread(target=wait))
        threads[-1].start()
        while g.queued < i + 1:
            time.sleep(0.001)
    with pytest.raises(Busy):  # 1 running, 3 waiting: the fifth is turned away
        g.acquire()
    g.release()
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2] and g.active == 0 and g.queued == 0
    impatient = Gate(running=1, waiting=1, timeout=0.05)
    with impatient:
        t0 = time.perf_counter()
        with pytest.raises(Busy):
            impatient.acquire()
        assert 0.04 < time.perf_counter() - t0 < 2 and impatient.queued == 0


def test_gate_never_lets_more_than_running_in():
    g = Gate(running=2, waiting=64, timeout=None)
    now, peak, lock = [0], [0], threading.Lock()

    def work():
        for _ in range(200):
            with g:
                with lock:
                    now[0] += 1
                    peak[0] = max(peak[0], now[0])
                time.sleep(0)
                with lock:
                    now[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 2 and g.active == 0 and g.rejected == 0


def test_a_full_gate_is_an_immediate_503(client, monkeypatch):
    full = Gate(running=1, waiting=0)
    monkeypatch.setattr(client.app.state.explorer, "gate", full)
    with full:  # someone else's query holds the only place
        for path in ("/api/query", "/api/blocks/1", "/", "/results", "/blocks/1"):
            t0 = time.perf_counter()
            r = client.get(path, params={"prompt": "the king "})
            assert r.status_code == 503 and r.headers["retry-after"] == "1", path
            assert time.perf_counter() - t0 < 2
            if path.startswith("/api/"):
                assert r.json()["detail"] == "the server is busy; try again"
            else:
                assert "the server is busy; try again" in r.text and 'class="error"' in r.text
        assert client.get("/api/info").status_code == 200  # no engine work: not gated
    assert client.get("/api/query", params={"prompt": "the king "}).status_code == 200


# --- safe rendering in a real browser --------------------------------------------------------------
def test_escaping_and_csp_in_a_real_browser(live, client):
    if not CHROMIUM:
        if os.environ.get("CI"):
            raise RuntimeError("the browser test needs Debian's chromium: `make test` installs it as root")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    from fastapi.templating import Jinja2Templates
    from playwright.sync_api import sync_playwright

    from app.present import visible

    port, _ = live
    base = f"http://127.0.0.1:{port}"
    dialogs, violations, errors = [], [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page = browser.new_page()
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
        page.on("pageerror", lambda e: errors.append(str(e)))

        # Hostile prompts in the URL: a 400 with the message inline, the prompt back in the form.
        for payload in XSS:
            for path in ("/", "/blocks/1"):
                resp = page.goto(f"{base}{path}?" + urlencode({"prompt": payload, "weights": payload}))
                assert resp.status == 400
                assert resp.headers["content-security-policy"].startswith("default-src 'self'")
                assert page.locator(".error").first.is_visible()
            page.goto(f"{base}/?" + urlencode({"prompt": payload}))
            assert page.locator("#prompt").input_value() == payload
            assert "not in the model's vocabulary" in page.locator(".error").inner_text()

        # Typed into the box: htmx swaps the 400 in; nothing runs.
        page.goto(base + "/")
        page.locator("#prompt").fill("")
        page.locator("#prompt").type('"><img src=x onerror=alert(1)>', delay=5)
        page.wait_for_selector("#results .error")
        assert page.locator("img").count() == 0
        # A normal session under the policy: results, a block page, the corpus, the report.
        page.locator("#prompt").fill("the king ")
        page.wait_for_selector("article.block >> nth=5")
        page.goto(f"{base}/blocks/4?prompt=the+king+")
        page.wait_for_selector("h1")
        if page.locator("a.morectx").count():
            page.locator("a.morectx").first.click()
            page.wait_for_selector("pre.corpus")
        resp = page.goto(f"{base}/report")
        assert resp.status == 200 and "'sha256-" in resp.headers["content-security-policy"]
        # The inline styles allowed by hash apply: the inlined site CSS (the header is a flex row)
        # and the swatches' style attributes (.sw alone has no background).
        assert page.evaluate("getComputedStyle(document.querySelector('header.top')).display") == "flex"
        assert page.evaluate("getComputedStyle(document.querySelector('table.headline i.sw'))"
                             ".backgroundColor") not in ("", "rgba(0, 0, 0, 0)")

        # Corpus strings and neighbours with markup, rendered by the real templates with no CSP
        # as a safety net: escaping alone must keep them inert.
        tpl = Jinja2Templates(directory=str(REPO / "templates"))
        tpl.env.filters["visible"] = visible
        nasty = XSS[0] + XSS[1] + "&<>'\""
        item = {"row": 1, "text": nasty, "similarity": 0.5, "is_self": False, "shared": 0, "head": nasty,
                "tail": nasty, "frequency": 1, "occurrences": 1, "follow": [{"label": nasty, "count": 1}],
                "contexts": [{"pos": 0, "before": nasty, "match": nasty, "after": nasty}]}
        block = {"block": 1, "prompt": nasty, "backend": "exact", "neighbours": 1, "weight": 1.0,
                 "share_raw": 1.0, "share_normalised": 1.0, "distribution": [{"label": nasty, "p": 1.0}],
                 "sort": "similarity", "page": 1, "pages": 1, "per_page": 50, "items": [item]}
        about = {"model": nasty, "params": 1, "val_loss": 1.0, "corpus": nasty, "pool_size": 1, "n": 10}
        form = {"prompt": nasty, "thresholds": nasty, "weights": nasty, "k": nasty, "show": nasty}
        pages = [tpl.env.get_template("block.html").render(
                     block=block, form=form, about=about, permalink="/?" + urlencode({"prompt": nasty}),
                     qs=urlencode({"prompt": nasty}), n_layer=2, data={"settings": {"mode": "topk"}}),
                 tpl.env.get_template("corpus.html").render(
                     c={"pos": 0, "before": nasty, "match": nasty, "after": nasty}, about=about),
                 tpl.env.get_template("index.html").render(form=form, about=about, error=nasty,
                                                           defaults={"thresholds": nasty, "weights": nasty})]
        for text in pages:
            assert not any(s in text for s in RAW_MARKUP)
            page.set_content(text)
            assert page.locator("img").count() == 0 and page.locator("svg[onload]").count() == 0
            assert nasty.replace("\n", "") in page.locator("body").inner_text().replace("\n", "") or \
                nasty in page.locator("#prompt").input_value()
        browser.close()
    assert not dialogs, dialogs
    assert not violations, violations
    assert not errors, errors


# --- load and memory on a live server ----------------------------------------------------------------
def _prompts(count: int, seed: int = 0) -> list[str]:
    text = micro_text()
    rng = np.random.default_rng(seed)
    out = set()
    while len(out) < count:
        a = int(rng.integers(0, len(text) - 40))
        out.add(text[a : a + int(rng.integers(4, 32))])
    return sorted(out)


def _get(conn_box: list, port: int, url: str) -> tuple[int, bytes]:
    for attempt in range(3):
        try:
            if conn_box[0] is None:
                conn_box[0] = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn_box[0].request("GET", url)
            r = conn_box[0].getresponse()
            return r.status, r.read()
        except (ConnectionError, http.client.HTTPException):
            if conn_box[0] is not None:
                conn_box[0].close()
            conn_box[0] = None
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def test_50_concurrent_clients(live):
    port, app = live
    prompts = _prompts(400)
    urls = [f"/api/query?" + urlencode({"prompt": p, **({"mode": "topk", "k": "20"} if i % 3 == 0 else {})})
            for i, p in enumerate(prompts)]
    n_req, n_clients = 2000, 50
    todo = iter(range(n_req))
    take = threading.Lock()
    latencies, statuses, busy, failures = [], {}, [0], []
    answers: dict[str, set] = {}  # url -> the distinct answers it got (one each: no mixing)

    def client():
        conn, rng = [None], np.random.default_rng(threading.get_ident())
        while True:
            with take:
                i = next(todo, None)
            if i is None:
                break
            t0 = time.perf_counter()
            for attempt in range(400):
                status, body = _get(conn, port, urls[i % len(urls)])
                statuses[status] = statuses.get(status, 0) + 1
                if status != 503:
                    break
                busy[0] += 1
                time.sleep(0.05 + 0.1 * rng.random())  # a short pause, not Retry-After's second
            d = json.loads(body) if status == 200 else {}
            if d.get("prompt") == prompts[i % len(prompts)]:
                latencies.append(time.perf_counter() - t0)
                answers.setdefault(urls[i % len(urls)], set()).add(
                    (d["hellinger"], tuple((b["neighbours"], tuple(t["row"] for t in b["top"])) for b in d["blocks"])))
            else:
                failures.append((i, status, body[:200]))
        if conn[0] is not None:
            conn[0].close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = np.asarray(latencies) * 1000
    print(f"\nload: {n_req:,} requests from {n_clients} clients in {wall:.1f} s "
          f"({n_req / wall:.0f}/s); statuses {dict(sorted(statuses.items()))}; {busy[0]:,} answered "
          f"503 and retried; failed {len(failures)}; latency p50 {np.percentile(lat, 50):.0f} ms, "
          f"p99 {np.percentile(lat, 99):.0f} ms, max {lat.max():.0f} ms")
    assert not failures, failures[:5]
    assert set(statuses) <= {200, 503} and len(latencies) == n_req
    assert all(len(a) == 1 for a in answers.values())  # the same URL, the same answer, however busy
    assert app.state.explorer.gate.active == 0 and app.state.explorer.gate.queued == 0


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
def test_memory_stays_bounded_over_10000_requests(live):
    port, _ = live
    prompts = _prompts(96, seed=1)  # the cache keeps 64: about two requests in three are hits
    rng = np.random.default_rng(2)
    paths = ["/api/query?" + urlencode({"prompt": prompts[int(i)]}) for i in rng.integers(0, 96, 10_000)]
    conn = [None]
    for p in paths[:300]:  # warm: caches full, lazy structures built
        assert _get(conn, port, p)[0] == 200
    before = _rss_mb()
    t0 = time.perf_counter()
    for p in paths:
        status, _ = _get(conn, port, p)
        assert status == 200
    wall = time.perf_counter() - t0
    after = _rss_mb()
    print(f"\nmemory: 10,000 requests in {wall:.1f} s; RSS {before:.0f} MB before, {after:.0f} MB after "
          f"({after - before:+.0f} MB)")
    assert after - before < 100


# --- kill -9 during an index build -------------------------------------------------------------------
def test_kill_9_during_an_index_build_then_rebuild(workspace, engine, micro_model_dir, micro_corpus,
                                                   tmp_path):
    import torch

    from app.approx import Engine, QuerySettings
    from app.search import make_search
    from app.store import StoreError, open_store

    # The session's store was built in this process with torch's thread count: the same here, so the
    # rebuilt vectors can be compared bit for bit.
    env = {**os.environ, "FFNLENS_HOME": str(tmp_path), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    cmd = [sys.executable, "-m", "app.cli", "index", "--model", str(micro_model_dir), "--corpus",
           str(micro_corpus), "--ivf", "none", "--quiet"]
    store_dir = tmp_path / "stores" / workspace.spec.dirname()
    part = store_dir.with_name(store_dir.name + ".partial")
    # Killed twice: as soon as the build's folder appears, then, resumed, once its arrays are
    # allocated and being filled (progress.json); neither leaves a store that loads.
    for stage in (part, part / "progress.json"):
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 120
        while not stage.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.002)
        assert stage.exists(), proc.communicate()
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert proc.returncode == -signal.SIGKILL
        print(f"\nkill -9: the build left {part.name} with {sorted(p.name for p in part.iterdir())}")
        with pytest.raises(StoreError, match="only partly built; run `ffnlens index`"):
            open_store(store_dir, workspace.spec)

    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not part.exists()
    st = open_store(store_dir, workspace.spec, corpus_ids=workspace.ids)
    assert np.array_equal(np.asarray(st.unit), np.asarray(engine.store.unit))
    assert st.defaults["thresholds"] == engine.store.defaults["thresholds"]
    rebuilt = Engine(workspace.model, workspace.tok, st, make_search(st, "exact"), "cpu")
    reference = engine.with_search(make_search(engine.store, "exact"))
    for prompt, s in (("the king ", QuerySettings()), ("my lord", QuerySettings(mode="topk", k=9))):
        a, b = rebuilt.query(prompt, s), reference.query(prompt, s)
        assert a.hellinger == b.hellinger and np.array_equal(a.approx, b.approx)
        for x, y in zip(a.blocks, b.blocks):
            assert np.array_equal(x.neighbours.rows, y.neighbours.rows)
            assert np.array_equal(x.neighbours.sims, y.neighbours.sims)
