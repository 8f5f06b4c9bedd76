"""Safe rendering in a real browser: hostile prompts in the URL and typed into the box, a normal
session under the strict policy, and the templates' escaping alone keeping markup inert."""
import os
import shutil
from urllib.parse import urlencode

import pytest

from ..conftest import REPO
from .hostile import RAW_MARKUP, XSS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_escaping_and_csp_in_a_real_browser(live, client):
    if not CHROMIUM:
        if os.environ.get("CI"):
            raise RuntimeError("the browser test needs Debian's chromium: `make test` installs it as root")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    from fastapi.templating import Jinja2Templates
    from playwright.sync_api import sync_playwright

    from app.present import visible
    from app.web import fragments
    from app.web.place import numbered

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
        tpl.env.globals.update(fragments.GLOBALS)  # as create_app does
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
                     c={"pos": 0, "before": nasty, "match": nasty, "after": nasty, "line": 1, "column": 1,
                        "length": 100, "place": {"play": nasty, "act": nasty, "scene": nasty, "speaker": nasty},
                        "earlier": None, "later": "/corpus?pos=50", "back": "/?" + urlencode({"prompt": nasty}),
                        "back_to": nasty, "use_as_prompt": "/?" + urlencode({"prompt": nasty})},
                     text=numbered(nasty, nasty, nasty, 1), about=about),
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
