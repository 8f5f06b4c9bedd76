"""A real browser (Debian's chromium, driven by Playwright) against the real server on loopback."""
import os
import re
import shutil
import threading
import time
from pathlib import Path

import pytest

from ..conftest import REPO
from ..test_readme_commands import free_port

ARTIFACTS = REPO / "test-artifacts"
STAMP = "&on=micro."  # every permalink ends with what it was made on (the stamp's hashes follow)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

if not CHROMIUM:
    if os.environ.get("CI"):
        raise RuntimeError("the browser test needs Debian's chromium: `make test` installs it as root")
    pytest.skip("no chromium on this machine (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def server(workspace, engine, reports):
    import uvicorn

    from app.web import create_app
    from app.workspace import about

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(engine, about(workspace, engine), reports=reports),
                                        host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    t.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def test_type_see_click_share(server, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server + "/")
    assert page.locator("text=Type a prompt").is_visible()
    t0 = time.time()
    page.locator("#prompt").type("the king ", delay=30)
    page.wait_for_selector("article.block >> nth=5")
    # Predicates as functions: a bare expression is eval'd in the page, which its CSP forbids.
    page.wait_for_function("() => location.search.includes('prompt=the+king+')")
    typed = time.time() - t0
    h = page.locator(".summary .big").inner_text()
    assert float(h) >= 0
    assert page.locator("article.block").count() == 6
    page.screenshot(path=str(ARTIFACTS / "main.png"), full_page=True)

    # One more keystroke: the panels update in place (timed for the report).
    t1 = time.time()
    page.locator("#prompt").press("a")
    page.wait_for_function("() => location.search.includes('prompt=the+king+a')")
    page.wait_for_selector("article.block >> nth=5")
    print(f"\nbrowser: typing 9 characters took {typed:.2f} s; keystroke to updated panels {time.time() - t1:.3f} s")
    h2 = page.locator(".summary .big").inner_text()
    link = page.url

    # Click a block that has neighbours: its page lists them in their corpus context.
    sizes = [int(re.search(r"([\d,]+) neighbour", t).group(1).replace(",", ""))
             for t in page.locator("article.block").all_inner_texts()]
    blk = next(i for i, n in enumerate(sizes) if n > 0)
    page.locator("article.block h3 a", has_text=f"block {blk}").click()
    page.wait_for_selector("table.nbtable")
    assert f"Block {blk}" in page.locator("h1").inner_text()
    page.screenshot(path=str(ARTIFACTS / "block.png"), full_page=True)
    page.go_back()
    page.wait_for_selector("article.block >> nth=5")
    assert page.locator(".summary .big").inner_text() == h2

    # The permalink in a fresh page shows the same result.
    fresh = browser.new_page()
    fresh.goto(link)
    fresh.wait_for_selector("article.block >> nth=5")
    assert fresh.locator(".summary .big").inner_text() == h2
    assert fresh.locator("#prompt").input_value() == "the king a"
    assert not errors, errors


# --- the main page while typing (static/js/live.js) ---------------------------------------------------
def shown(page) -> str:
    """The prompt whose answer the results region shows."""
    return page.locator("#results").get_attribute("data-prompt")


def wait_shown(page, prompt: str, timeout: float = 15000):
    page.wait_for_function("(p) => document.getElementById('results').dataset.prompt === p", arg=prompt,
                           timeout=timeout)


@pytest.fixture
def page(browser):
    p = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    yield p
    p.close()
    assert not errors, errors


def test_a_newer_prompt_wins_over_a_slow_older_one(server, page):
    held, seen = [], []

    def hold_first(route):
        seen.append(route.request.url)
        if not held:
            held.append(route)  # answered later, by hand
        else:
            route.continue_()

    page.route("**/results?*", hold_first)
    page.goto(server + "/")
    page.locator("#prompt").fill("the k")  # one input event: one request, held
    deadline = time.time() + 10
    while not held and time.time() < deadline:
        page.wait_for_timeout(20)
    assert held and "prompt=the+k" in held[0].request.url
    page.locator("#prompt").type("ing", delay=20)
    page.locator("#prompt").press("Enter")  # at once, whatever is still out
    wait_shown(page, "the king")
    assert page.locator("#results").get_attribute("class") in (None, "")  # not dimmed
    h = page.locator(".summary .big").inner_text()
    # The old request's answer comes in late: it must not replace the newer one.
    try:
        held[0].continue_()
    except Exception:
        pass  # the page had already aborted it
    page.wait_for_timeout(1500)
    assert shown(page) == "the king" and page.locator(".summary .big").inner_text() == h
    assert page.locator("#prompt").input_value() == "the king"
    assert "prompt=the+king" in page.url


def test_a_503_says_the_servers_reason_keeps_the_results_and_retries(server, page):
    """A 503 (the gate full, or a shard of a store on Ray restarting) shows the server's own
    message with the retry, keeps the last results dimmed, and the retry lands the answer."""
    page.goto(server + "/")
    page.locator("#prompt").type("the king", delay=30)
    wait_shown(page, "the king")
    refused = []

    def restarting(route):  # the first request answers as a restarting shard's (app/web/views.py)
        if refused:
            return route.continue_()
        refused.append(route.request.url)
        route.fulfill(status=503, headers={"Retry-After": "1"}, content_type="text/html",
                      body='<p class="error" role="alert">a shard of the store is restarting; '
                           'try again in a moment</p>')

    page.route("**/results?*", restarting)
    page.locator("#prompt").fill("the king o")  # one input event: one request, refused
    deadline = time.time() + 5
    while not refused and time.time() < deadline:
        page.wait_for_timeout(20)
    assert refused
    problem = page.locator("#problem")
    problem.wait_for(state="visible")
    assert problem.inner_text() == ("a shard of the store is restarting; try again in a moment "
                                    "(retrying in 1 s)")
    assert shown(page) == "the king" and "stale" in page.locator("#results").get_attribute("class")
    wait_shown(page, "the king o")  # the retry
    assert not problem.is_visible()


def test_typing_fast_sends_while_typing_not_after(server, page):
    """A throttle, not a debounce: answers arrive while the keys keep coming."""
    page.goto(server + "/")
    page.evaluate("""() => { window.__shown = []; new MutationObserver(() =>
        window.__shown.push(document.getElementById('results').dataset.prompt)).observe(
        document.getElementById('results'), {attributes: true, attributeFilter: ['data-prompt']}); }""")
    text = "the king and the queen and the"
    page.locator("#prompt").type(text, delay=90)
    painted_while_typing = [p for p in page.evaluate("() => window.__shown") if p != text]
    wait_shown(page, text)
    assert painted_while_typing, "nothing was painted until typing stopped"


def test_history_one_entry_per_pause_back_and_forward(server, page):
    page.goto(server + "/")
    h0 = page.evaluate("() => history.length")
    page.locator("#prompt").type("the king", delay=30)
    wait_shown(page, "the king")
    page.wait_for_timeout(1300)  # a pause
    page.locator("#prompt").type(" and", delay=30)
    wait_shown(page, "the king and")
    page.locator("#prompt").press("Enter")  # Enter on what is shown: no duplicate entry
    page.wait_for_timeout(300)
    page.locator("#prompt").press("Enter")
    page.wait_for_timeout(300)
    assert page.evaluate("() => history.length") == h0 + 2
    assert "/?prompt=the+king+and" + STAMP in page.url
    page.locator("#prompt").blur()  # leaving the box sends nothing and pushes nothing
    page.wait_for_timeout(300)
    assert page.evaluate("() => history.length") == h0 + 2

    page.go_back()
    wait_shown(page, "the king")
    assert page.locator("#prompt").input_value() == "the king" and "/?prompt=the+king" + STAMP in page.url
    page.go_back()
    page.wait_for_function("() => document.getElementById('prompt').value === ''")
    page.go_forward()
    wait_shown(page, "the king")
    page.go_forward()
    wait_shown(page, "the king and")

    # A settings change is an entry of its own; back restores the settings too.
    page.locator(".settings summary").click()
    page.locator('input[name="mode"][value="topk"]').check()
    page.wait_for_function("() => location.search.includes('mode=topk')")
    assert page.evaluate("() => history.length") == h0 + 3
    assert page.locator('input[name="thresholds"]').is_disabled()
    page.go_back()
    page.wait_for_function("() => !location.search.includes('mode=topk')")
    assert page.locator('input[name="mode"][value="threshold"]').is_checked()
    assert not page.locator('input[name="thresholds"]').is_disabled()


def test_an_invalid_character_keeps_the_results_and_is_marked(server, page):
    page.goto(server + "/")
    page.locator("#prompt").type("the king ", delay=30)
    wait_shown(page, "the king ")
    page.wait_for_timeout(1200)
    url, n, h = page.url, page.evaluate("() => history.length"), page.locator(".summary .big").inner_text()
    page.locator("#prompt").type("Zo", delay=30)
    page.wait_for_timeout(1500)
    assert shown(page) == "the king " and page.locator(".summary .big").inner_text() == h  # kept
    assert "stale" in page.locator("#results").get_attribute("class")  # dimmed
    assert "not in the model's vocabulary" in page.locator("#problem").inner_text()
    assert page.locator(".promptbox .backdrop mark").all_inner_texts() == ["Z"]
    assert page.locator("#prompt").get_attribute("aria-invalid") == "true"
    assert page.url == url and page.evaluate("() => history.length") == n  # an error pushes nothing
    # Mended: the fresh answer lands, the mark and the message go.
    page.locator("#prompt").press("Backspace")
    page.locator("#prompt").press("Backspace")
    page.locator("#prompt").type("o", delay=30)
    wait_shown(page, "the king o")
    assert not page.locator("#problem").is_visible() and page.locator(".promptbox .backdrop mark").count() == 0
    assert "stale" not in (page.locator("#results").get_attribute("class") or "")


def test_invalid_settings_say_why(server, page):
    page.goto(server + "/?prompt=the+king")
    page.locator(".settings summary").click()
    page.locator('input[name="mode"][value="topk"]').check()
    page.wait_for_function("() => location.search.includes('mode=topk')")
    assert "thresholds" not in page.url  # disabled in top-k mode: left out of the permalink
    n = page.evaluate("() => history.length")
    page.locator('input[name="k"]').fill("-1")
    page.locator('input[name="k"]').press("Enter")
    page.wait_for_timeout(300)
    assert "k must be between 1" in page.locator("#k-msg").inner_text()
    assert "k must be between 1" in page.locator("#problem").inner_text()
    assert page.evaluate("() => history.length") == n and "k=-1" not in page.url
    page.locator('input[name="k"]').fill("20")
    page.locator('input[name="k"]').press("Enter")
    page.wait_for_function("() => location.search.includes('k=20')")
    assert not page.locator("#k-msg").is_visible()
    page.locator('input[name="mode"][value="threshold"]').check()
    page.wait_for_function("() => !location.search.includes('mode=topk')")
    page.locator('input[name="thresholds"]').fill("2,2,2,2,2,2")
    page.locator('input[name="thresholds"]').press("Enter")
    assert "[-1, 1]" in page.locator("#thresholds-msg").inner_text()
    page.locator('input[name="thresholds"]').fill("0.9,0.9")
    assert "one value per block" in page.locator("#thresholds-msg").inner_text()
    page.locator('input[name="thresholds"]').fill("")
    page.locator('input[name="weights"]').fill("1,1,1,-1,1,1")
    assert "zero or positive" in page.locator("#weights-msg").inner_text()


def test_enter_runs_at_once_and_the_live_region_is_short(server, page):
    page.goto(server + "/")
    page.locator("#prompt").type("the", delay=10)
    page.locator("#prompt").press("Enter")
    wait_shown(page, "the")
    page.wait_for_function("() => document.getElementById('announce').textContent.startsWith('H ')")
    said = page.locator("#announce").inner_text()
    assert len(said) < 120 and "first choice" in said
    assert page.locator("#results").get_attribute("aria-live") is None  # not the whole page
    # Keyboard: the whole-vocabulary chart reads out one character per arrow key.
    page.locator("svg.vocab").focus()
    page.keyboard.press("Home")
    assert "model" in page.locator(".readout").inner_text()


PAGES_390 = [("main", "/?prompt=the+king"), ("main-topk", "/?prompt=the+king&mode=topk&k=30"),
             ("block", "/blocks/3?prompt=the+king+&mode=topk&k=30"), ("corpus", "/corpus?pos=200"),
             ("report", "/report"), ("unknown-character", "/?prompt=the+%7BZing%7D+%E2%82%AC"),
             ("bad-block", "/blocks/99?prompt=the"), ("not-found", "/nowhere"),
             ("too-long", "/?prompt=" + "the+king+" * 40),
             ("strip", "/strip?prompt=the+king+is+dead,+long+may+the+king"),
             ("interventions", "/interventions?prompt=the+king"),
             ("intervened", "/?prompt=the+king&drop_attn=0,1&drop_ffn=2"),
             ("story", "/strings/5?prompt=the+king"), ("tune", "/tune?prompt=the+king")]


@pytest.mark.parametrize("name,path", PAGES_390)
def test_no_page_is_wider_than_a_phone(server, browser, name, path):
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(server + path)
    page.wait_for_load_state("load")
    width = page.evaluate("() => document.documentElement.scrollWidth")
    page.screenshot(path=str(ARTIFACTS / f"phone-{name}.png"), full_page=False)
    page.close()
    assert width <= 390, f"{path} is {width} px wide at 390 px"


def shoot(page, url: str, name: str) -> None:
    """Full-page screenshots of ``url`` at desktop and phone widths, into test-artifacts/."""
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(url)
        page.screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"), full_page=True)


def test_tune_a_slider_moves_the_figures_by_lookup(server, page):
    """/tune: the page waits for its table (it reloads itself while the table is built); moving a
    slider rewrites the thresholds field and its label, asks /tune/figures only (a lookup, never
    the main page's search), and the figures and the address follow; fitting the weights reports
    on the other half; "use these" opens the explorer with the settings."""
    page.goto(server + "/tune?prompt=the+king")
    page.wait_for_selector(".tune-figs", timeout=60000)
    before = page.locator(".tune-numbers .big").first.inner_text()
    sent = []
    page.on("request", lambda r: sent.append(r.url))
    slider = page.locator("fieldset[data-block='4'] input.thr")
    start = int(slider.input_value())
    slider.focus()
    for _ in range(12):
        page.keyboard.press("ArrowLeft")
    assert int(slider.input_value()) == max(0, start - 12)
    label = page.locator("fieldset[data-block='4'] output.thr-v").inner_text()
    assert page.input_value("#t-thresholds").split(",")[4] == label
    page.wait_for_url(re.compile(r"thresholds=[^&]*" + re.escape(label)))
    page.wait_for_function("() => !document.getElementById('tune-figures').classList.contains('stale')")
    assert page.locator(".tune-table tbody tr").nth(4).locator("td").nth(1).inner_text() == label
    assert sent and all("/tune/figures?" in u for u in sent), sent
    assert page.locator(".tune-numbers .big").first.inner_text() != before
    page.locator(".tune-actions a", has_text="fit the weights").click()
    page.wait_for_selector(".tune-fit")
    assert "on the other" in page.locator(".tune-fit").inner_text().lower()
    page.locator(".tune-use a.run").click()
    page.wait_for_url(re.compile(r"/\?prompt=the\+king&thresholds=.*&weights="))
    page.wait_for_selector("#results .answer", state="attached")
    shoot(page, server + "/tune?prompt=the+king", "tune")


def test_an_exported_page_opens_offline_with_the_same_numbers(server, page, tmp_path):
    """The main page's download (?export=1) opened from disk: no request leaves the file, and it
    shows the JSON twin's numbers and its caption."""
    import json
    import urllib.request

    twin = json.loads(urllib.request.urlopen(server + "/api/query?prompt=the+king").read())
    path = tmp_path / "view.html"
    path.write_bytes(urllib.request.urlopen(server + "/?prompt=the+king&export=1").read())
    sent = []
    page.on("request", lambda r: sent.append(r.url))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    assert [u for u in sent if not u.startswith("file://")] == []
    assert page.locator(".h .big").inner_text() == f"{twin['hellinger']:.3f}"
    assert "model micro" in page.locator(".export-caption").inner_text()
    data = json.loads(page.locator("#ffnlens-data").text_content())
    assert data["hellinger"] == twin["hellinger"]
    # on the live page, the answer's download links follow the prompt as it is typed
    page.goto(server + "/")
    page.locator("#prompt").type("the king", delay=40)
    wait_shown(page, "the king")
    href = page.locator("#results .tools .downloads a").first.get_attribute("href")
    assert "prompt=the+king" in href and href.endswith("&export=1")


def test_strip_click_a_position_focuses_its_prefix(server, page):
    """/strip: each character is a link; clicking one focuses its prefix (pos= in the URL, the
    panel names the prefix) and the panel's link opens that prefix on the main page."""
    page.goto(server + "/strip?prompt=the+king+is+dead")
    cells = page.locator("ol.strip li a")
    assert cells.count() == len("the king is dead")
    assert page.locator("ol.strip li.focus .ch").inner_text() == "d"
    cells.nth(2).click()
    page.wait_for_url(re.compile(r"pos=2"))
    assert page.locator(".strip-focus h2 code").inner_text() == "the"
    page.locator(".strip-focus a.open-prefix").click()
    page.wait_for_url(re.compile(r"/\?prompt=the$"))
    page.wait_for_selector("#results .answer", state="attached")
    shoot(page, server + "/strip?prompt=the+king+is+dead&pos=5", "strip")


def test_toggle_an_intervention_then_open_the_sublayer_table(server, page):
    """Typing a block into "FFN of blocks" re-runs the prompt without that FFN: the notice names it
    and the address keeps it; the sublayer table's cell for a block opens that intervention."""
    page.goto(server + "/?prompt=the+king")
    page.wait_for_selector("#results .answer", state="attached")
    page.locator("details.settings summary").click()
    page.fill('input[name="drop_ffn"]', "2")
    page.press('input[name="drop_ffn"]', "Enter")
    page.wait_for_selector(".notice.intervention")
    assert "FFN output of block 2" in page.locator(".notice.intervention").inner_text()
    page.wait_for_url(re.compile(r"drop_ffn=2"))
    page.goto(server + "/interventions?prompt=the+king")
    assert page.locator("table.effects tbody tr").count() >= 2
    page.locator("table.effects tbody tr").nth(1).locator("td").nth(1).locator("a").click()
    page.wait_for_url(re.compile(r"drop_attn=1"))
    page.wait_for_selector(".notice.intervention", state="attached")
    shoot(page, server + "/interventions?prompt=the+king", "interventions")


def test_open_a_neighbours_story_and_follow_its_class(server, page):
    """A neighbour string on the main page opens its story; a string of its class in a block opens
    that string's own story, still against the prompt."""
    page.goto(server + "/?prompt=the+king&mode=topk&k=5")
    page.wait_for_selector("#results .answer", state="attached")
    link = page.locator("#results a.str").first
    link.wait_for()
    link.click()
    page.wait_for_url(re.compile(r"/strings/\d+\?prompt=the"))
    assert "The story of" in page.locator("h1").inner_text()
    first = page.url
    page.locator(".story-class a.str").first.click()
    page.wait_for_url(re.compile(r"/strings/\d+\?prompt=the"))
    assert page.url != first and page.locator(".story-vs").count() == 1
    shoot(page, page.url, "story")


# --- /docs offline (issue 17, item 5) ---------------------------------------------------------------
def test_docs_render_with_no_request_leaving_the_machine(server, page):
    """Swagger UI comes from our own static files: every request the page makes goes to the server
    on loopback, the operations list renders, and the page's CSP is never violated."""
    requests, violations = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(server + "/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=20000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert "/api/query" in " ".join(paths) and "/api/corpus" in " ".join(paths)
    page.locator(".opblock-summary-path", has_text="/api/corpus").first.click()
    page.wait_for_selector(".parameters-container td.parameters-col_name", timeout=10000)
    assert "pos" in page.locator(".parameters-container").first.inner_text()
    page.wait_for_timeout(300)
    origin = server + "/"
    outside = [u for u in requests if not (u.startswith(origin) or u.startswith("data:"))]
    assert requests and not outside, outside
    assert any(u.endswith("/openapi.json") for u in requests)
    assert not violations, violations


# --- the corpus page (issue 17, item 8) ----------------------------------------------------------
def test_corpus_page_selection_becomes_the_prompt(server, page):
    page.goto(server + "/corpus?pos=200&width=60&from=" + "%2F%3Fprompt%3Dthe%2Bk%26mode%3Dtopk%26k%3D20")
    link = page.locator("a.useprompt")
    assert "mode=topk" in link.get_attribute("href") and page.locator("nav.crumbs a").inner_text() == "← back to the prompt"
    before = link.get_attribute("href")
    chosen = page.evaluate("""() => {  // the first 8 characters of the first line shown
        const text = document.querySelector('pre.corpus .ln').nextSibling;
        const r = document.createRange(); r.setStart(text, 0); r.setEnd(text, 8);
        const s = window.getSelection(); s.removeAllRanges(); s.addRange(r); return s.toString(); }""")
    assert len(chosen) == 8 and chosen != page.locator("pre.corpus mark").inner_text()
    page.wait_for_function("(b) => document.querySelector('a.useprompt').getAttribute('href') !== b", arg=before)
    link.click()
    page.wait_for_load_state("load")
    assert page.locator("#prompt").input_value() == chosen
    assert page.locator("#results").get_attribute("data-prompt") == chosen
