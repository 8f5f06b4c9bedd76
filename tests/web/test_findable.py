"""The report is findable (issue 17, item 9): every page's header links to it, and without one the
page says which command writes it and how long that takes."""


def test_every_page_links_to_the_report(client):
    for path in ("/", "/?prompt=the+king+", "/blocks/1?prompt=the+king+", "/corpus?pos=5", "/redoc",
                 "/nowhere", "/report"):
        r = client.get(path)
        header = r.text.split("<header", 1)[1].split("</header>", 1)[0]
        assert 'href="/report"' in header and 'href="/docs"' in header, path


def test_without_a_report_the_page_says_how_to_make_one(client):
    r = client.get("/report")
    assert r.status_code == 404
    assert "ffnlens eval --model" in r.text and "--report" in r.text and "2,000 prompts" in r.text
    assert "minutes" in r.text and "--pool heldout" in r.text
    assert 'aria-current="page"' in r.text.split("</header>", 1)[0]
    data = client.get("/api/report")
    assert data.status_code == 404 and "ffnlens eval --report" in data.json()["detail"]
    assert "2,000 prompts" in data.json()["detail"]
