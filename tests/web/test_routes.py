"""Every route through the real app: HTML and JSON, permalinks, bad input."""
import html
import re
from urllib.parse import parse_qs, urlparse

import pytest

ALL_SETTINGS = {"prompt": "the king ", "mode": "topk", "k": "7", "thresholds": "0.9,0.9,0.9,0.9,0.9,0.9",
                "weights": "1,1,1,1,2,0", "blend": "normalised", "exclude_self": "1", "show": "5"}


def test_landing_page_and_static_files(client):
    r = client.get("/")
    assert r.status_code == 200 and "Type a prompt" in r.text
    assert '<script src="/static/vendor/htmx.min.js"' in r.text and "cdn" not in r.text.lower()
    assert client.get("/static/vendor/htmx.min.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200
    assert client.get("/openapi.json").json()["paths"].keys() >= {"/api/query", "/api/blocks/{block}", "/api/corpus"}


def test_page_and_json_show_the_same_result(client):
    page = client.get("/", params={"prompt": "the king "})
    api = client.get("/api/query", params={"prompt": "the king "}).json()
    assert page.status_code == 200
    assert f"{api['hellinger']:.3f}" in page.text
    for b in api["blocks"]:
        assert f"block {b['block']}" in page.text
        assert f"{b['neighbours']:,} neighbour" in page.text
        for t in b["top"]:
            assert f"{t['similarity']:.4f}" in page.text
    for bar in api["chart"]["top"]:
        assert f"{bar['model']:.3f}" in page.text and f"{bar['approx']:.3f}" in page.text
    assert api["backend"] == "bound" and "search: bound" in page.text
    for params in ({"exact": "1"}, {"backend": "exact"}):
        full = client.get("/api/query", params={"prompt": "the king ", **params}).json()
        assert full["backend"] == "exact" and "backend=exact" in full["permalink"]
        def no_links(blocks):  # a neighbour's story link carries the backend of its page
            return [{**b, "top": [{k: v for k, v in t.items() if k != "url"} for t in b["top"]]} for b in blocks]
        assert no_links(full["blocks"]) == no_links(api["blocks"]) and full["hellinger"] == api["hellinger"]
    page = client.get("/", params={"prompt": "the king ", "backend": "exact"})
    assert "search: exact" in page.text
    ivf = client.get("/api/query", params={"prompt": "the king ", "backend": "ivf"}).json()
    assert ivf["backend"] == "ivf" and "backend=ivf" in ivf["permalink"]
    assert client.get("/api/info").json()["backends"] == ["bound", "exact", "ivf"]


@pytest.mark.parametrize("params, message", [
    ({"backend": "annoy"}, "backend must be one of bound, exact, ivf"),
    ({"backend": "bound", "exact": "1"}, "give one of them"),
])
def test_bad_backends_are_a_400(client, params, message):
    r = client.get("/api/query", params={"prompt": "the king ", **params})
    assert r.status_code == 400 and message in r.json()["detail"]
    page = client.get("/", params={"prompt": "the king ", **params})
    assert page.status_code == 400 and message in page.text


def test_permalink_with_every_setting_reproduces_the_view(client):
    api = client.get("/api/query", params=ALL_SETTINGS).json()
    assert api["settings"]["mode"] == "topk" and api["settings"]["k"] == 7
    assert api["settings"]["weights"] == [1, 1, 1, 1, 2, 0] and api["settings"]["exclude_self"]
    assert all(b["neighbours"] == 7 and len(b["top"]) == 5 for b in api["blocks"])
    link = api["permalink"]
    assert parse_qs(urlparse(link).query) == {**{k: [v] for k, v in ALL_SETTINGS.items()},
                                              "on": [api["provenance"]["serving"]]}
    again = client.get("/api" + urlparse(link).path.rstrip("/") + "/query?" + urlparse(link).query).json() \
        if False else client.get("/api/query?" + urlparse(link).query).json()
    assert again["hellinger"] == api["hellinger"] and again["blocks"] == api["blocks"]
    page = client.get(link)
    assert page.status_code == 200 and f"{api['hellinger']:.3f}" in page.text
    assert 'value="1,1,1,1,2,0"' in page.text  # the form shows the settings


def test_defaults_are_left_out_of_the_url(client):
    r = client.get("/results", params={"prompt": "the king ", "mode": "threshold", "k": "200",
                                       "blend": "raw", "thresholds": "", "weights": "", "show": "10"})
    assert r.status_code == 200
    assert r.headers["HX-Push-Url"] == "/?prompt=the+king+&on=" + client.get("/api/info").json()["stamp"]


def test_block_page_and_its_json_twin(client):
    api = client.get("/api/blocks/4", params={"prompt": "the king ", "per_page": "5"}).json()
    assert api["block"] == 4 and len(api["items"]) == min(5, api["neighbours"])
    first = api["items"][0]
    assert first["contexts"] and first["contexts"][0]["match"] == first["text"]
    assert sum(f["count"] for f in first["follow"]) == first["frequency"]
    page = client.get("/blocks/4", params={"prompt": "the king ", "per_page": "5"})
    assert page.status_code == 200
    for it in api["items"]:
        assert f"{it['similarity']:.4f}" in page.text
    by_freq = client.get("/api/blocks/4", params={"prompt": "the king ", "sort": "frequency",
                                                   "per_page": "500"}).json()["items"]
    assert [i["frequency"] for i in by_freq] == sorted((i["frequency"] for i in by_freq), reverse=True)
    p2 = client.get("/api/blocks/4", params={"prompt": "the king ", "per_page": "1", "page": "2"}).json()
    assert p2["page"] == 2 and p2["items"][0]["row"] == client.get(
        "/api/blocks/4", params={"prompt": "the king ", "per_page": "2"}).json()["items"][1]["row"]
    ctx = first["contexts"][0]
    c = client.get("/api/corpus", params={"pos": ctx["pos"], "width": 50}).json()
    assert c["match"] == first["text"] and client.get("/corpus", params={"pos": ctx["pos"]}).status_code == 200


@pytest.mark.parametrize("params, status, message", [
    ({"prompt": ""}, 400, "the prompt is empty"),
    ({"prompt": "the Zing"}, 400, "not in the model&#39;s vocabulary"),
    ({"prompt": "x" * 40}, 400, "reads at most 32"),
    ({"prompt": "the king ", "thresholds": "1.5,0,0,0,0,0"}, 400, "[-1, 1]"),
    ({"prompt": "the king ", "weights": "1,2"}, 400, "one value per block"),
    ({"prompt": "the king ", "weights": "1,1,1,1,1,-1"}, 400, "zero or positive"),
    ({"prompt": "the king ", "weights": "1,1,1,nan,1,1"}, 400, "finite"),
    ({"prompt": "the king ", "k": "many"}, 400, "whole numbers"),
    ({"prompt": "the king ", "mode": "topk", "k": "0"}, 400, "k must be"),
])
def test_bad_input_is_a_4xx_with_an_inline_message(client, params, status, message):
    api = client.get("/api/query", params=params)
    assert api.status_code == status
    assert html.unescape(message) in api.json()["detail"]
    part = client.get("/results", params=params)
    assert part.status_code == status and 'class="error"' in part.text and message in part.text
    if params["prompt"]:
        page = client.get("/", params=params)
        assert page.status_code == status and 'class="error"' in page.text and message in page.text
        assert "<textarea" in page.text  # the form stays, with what was typed


def test_block_out_of_range_and_bad_paging(client):
    r = client.get("/blocks/6", params={"prompt": "the king "})
    assert r.status_code == 404 and "blocks 0 to 5" in r.text
    assert client.get("/api/blocks/-1", params={"prompt": "the king "}).status_code == 404
    assert client.get("/api/blocks/1", params={"prompt": "the king ", "sort": "x"}).status_code == 400
    assert client.get("/api/blocks/1", params={"prompt": "the king ", "per_page": "0"}).status_code == 400
    assert client.get("/api/corpus", params={"pos": "-5"}).status_code == 400
    assert client.get("/corpus", params={"pos": "999999999"}).status_code == 400


def test_strings_are_escaped(client):
    r = client.get("/", params={"prompt": "<b>the"})
    assert r.status_code == 400 and "<b>the" not in r.text and "&lt;b&gt;the" in r.text


def test_parameters_of_the_wrong_type_get_a_readable_400(client):
    r = client.get("/blocks/abc", params={"prompt": "the king "})
    assert r.status_code == 400 and 'class="error"' in r.text and "block" in r.text
    r = client.get("/blocks/1", params={"prompt": "the king ", "page": "0"})
    assert r.status_code == 400 and 'class="error"' in r.text and "page" in r.text
    r = client.get("/api/blocks/1", params={"prompt": "the king ", "per_page": "x"})
    assert r.status_code == 400 and "per_page" in r.json()["detail"]
    assert client.get("/corpus").status_code == 400


def test_server_timing_names_the_parts(client):
    import re

    prompt = "shall go t"
    first = client.get("/results", params={"prompt": prompt})
    parts = dict(re.findall(r"(\w+);dur=([0-9.]+)", first.headers["server-timing"]))
    assert {"forward", "search", "blend", "present", "render"} <= set(parts)
    assert all(float(v) >= 0 for v in parts.values())
    again = client.get("/api/query", params={"prompt": prompt})  # the same answer, from the cache
    parts = dict(re.findall(r"(\w+);dur=([0-9.]+)", again.headers["server-timing"]))
    assert {"cache", "present", "json"} <= set(parts) and "search" not in parts
    assert "server-timing" in client.get("/api/blocks/2", params={"prompt": prompt}).headers


def test_strip_page_and_its_json_twin(client):
    """/strip and /api/strip: the same positions; the focus from pos= (default the last); each
    position links to itself focused and to the main page for its prefix; bad input is a 400."""
    j = client.get("/api/strip", params={"prompt": "the king", "pos": 2}).json()
    assert [p["char"] for p in j["positions"]] == list("the king") and j["focus"] == 2
    assert j["permalink"] == "/strip?prompt=the+king&pos=2&on=" + j["provenance"]["serving"]
    assert j["positions"][3]["query_url"] == "/?prompt=the+"
    assert client.get("/api/strip", params={"prompt": "the king"}).json()["focus"] == 7
    r = client.get("/strip", params={"prompt": "the king", "pos": 2})
    assert r.status_code == 200 and 'aria-current="true"' in r.text
    assert f'{j["positions"][2]["hellinger"]:.3f}' in r.text and "/?prompt=the" in r.text
    assert "server-timing" in r.headers and "search;dur=" in r.headers["server-timing"]
    for params, message in (({"prompt": "the", "pos": 3}, "pos must lie within the prompt"),
                            ({"prompt": "the", "pos": -2}, "pos must be at least -1"),
                            ({"prompt": ""}, "the prompt is empty"),
                            ({"prompt": "the", "mode": "topk", "k": "0"}, "k must be")):
        for path in ("/api/strip", "/strip"):
            r = client.get(path, params=params)
            assert r.status_code == 400 and message in r.text, (path, params, r.text[:200])
    assert "/strip?prompt=the+king" in client.get("/results", params={"prompt": "the king"}).text


def test_an_intervention_in_the_url_and_the_sublayer_table(client, engine):
    """drop_attn / drop_ffn: the answer is the intervened model's (the engine's own answer with the
    same intervention), beside the unmodified model; the permalink keeps them, in order; the
    sublayer table has one row per block, each cell linking to its intervention."""
    from model.gpt import Intervention

    j = client.get("/api/query", params={"prompt": "the king", "drop_ffn": "2,0", "drop_attn": "1"}).json()
    ref = engine.query("the king", None, Intervention(drop_attn=frozenset({1}), drop_ffn=frozenset({0, 2})))
    plain = engine.query("the king")
    assert j["hellinger"] == pytest.approx(ref.hellinger) and j["hellinger"] != pytest.approx(plain.hellinger)
    iv = j["intervention"]
    assert iv["drop_ffn"] == [0, 2] and iv["drop_attn"] == [1]
    assert iv["original_top"][0]["p"] == pytest.approx(float(plain.model_probs.max()))
    assert j["permalink"] == "/?prompt=the+king&drop_attn=1&drop_ffn=0%2C2&on=" + j["provenance"]["serving"]
    assert "ran without" in client.get(j["permalink"]).text
    assert "intervention" not in client.get("/api/query", params={"prompt": "the king"}).json()
    e = client.get("/api/interventions", params={"prompt": "the king"}).json()
    assert [r["block"] for r in e["blocks"]] == list(range(engine.store.n_layer))
    assert all(0 <= r[n]["hellinger"] <= 1 for r in e["blocks"] for n in ("drop_attn", "drop_ffn"))
    assert e["blocks"][3]["drop_ffn"]["url"] == "/?prompt=the+king&drop_ffn=3"
    assert "attention left out" in client.get("/interventions", params={"prompt": "the king"}).text
    for params, message in (({"prompt": "ab", "drop_ffn": "99"}, "the model has blocks"),
                            ({"prompt": "ab", "drop_attn": "x"}, "drop_attn must be block numbers")):
        for path in ("/api/query", "/", "/api/interventions"):
            r = client.get(path, params=params)
            assert r.status_code == 400 and message in r.text, (path, r.text[:200])


def test_a_strings_story_and_its_json_twin(client, engine):
    """/strings/{row}: every occurrence (the pool's own positions), what followed it, its cosine
    to the prompt in every block (a neighbour exactly when above the block's threshold), its class
    in each block, and the prompt's longest suffix in the corpus with what followed it."""
    import numpy as np
    import torch

    from app.search import unit

    prompt = engine.tok.decode(engine.store.pool.strings(engine.store.corpus_ids)[40])
    j = client.get("/api/query", params={"prompt": prompt}).json()
    blk = next(b for b in j["blocks"] if b["top"])
    t = blk["top"][0]
    assert t["url"].startswith(f"/strings/{t['row']}?prompt=")
    s = client.get(f"/api/strings/{t['row']}", params={"prompt": prompt}).json()
    assert s["string"] == t["text"]
    text = engine.tok.decode(engine.store.corpus_ids)
    assert s["occurrences"] == sum(text.startswith(t["text"], i) for i in range(len(text) - len(t["text"]) + 1))
    for c in s["contexts"]:
        assert c["match"] == t["text"] and text[c["pos"] + len(t["text"])] == c["next"]
    _, acts = engine.forward(engine.encode(prompt))
    for b in s["blocks"]:
        x = torch.from_numpy(np.asarray(engine.store.unit[b["block"], t["row"]], dtype=np.float32))
        assert b["cosine"] == pytest.approx(float(unit(acts[b["block"]]) @ unit(x)), abs=1e-5)
        assert b["neighbour"] == (b["cosine"] > b["threshold"])
        assert t["row"] not in [c["row"] for c in b["class"]] and len(b["class"]) == 8
    assert s["blocks"][blk["block"]]["neighbour"]
    g = s["ngram"]
    assert prompt.endswith(g["suffix"]) and g["length"] == len(prompt)  # a pool string occurs
    assert g["occurrences"] == sum(text.startswith(prompt, i) for i in range(len(text)))
    r = client.get(t["url"])
    assert r.status_code == 200 and "The story of" in r.text and "n-gram" in r.text
    assert client.get("/api/strings/99999999").status_code == 404
    assert client.get(f"/api/strings/{t['row']}", params={"prompt": "ab{"}).status_code == 400
    assert f"/strings/{t['row']}" in client.get(f"/blocks/{blk['block']}", params={"prompt": prompt}).text


def test_the_strip_compares_every_reading_of_the_focused_prefix(client, engine):
    """The focused prefix's readings: the model (H 0), the approximation (the main page's H), the
    n-gram of its longest suffix, the logit lens at every block but the last (the model itself);
    none under an intervention (they read the unmodified model)."""
    j = client.get("/api/strip", params={"prompt": "the king", "pos": 4}).json()
    rows = {r["name"]: r for r in j["comparisons"]}
    L = engine.store.n_layer
    assert list(rows)[:3] == ["model", "approximation", "n-gram"]
    assert [f"logit lens, block {b}" for b in range(L - 1)] == [n for n in rows if n.startswith("logit")]
    assert rows["model"]["hellinger"] == pytest.approx(0, abs=1e-9)
    q = client.get("/api/query", params={"prompt": "the k"}).json()
    assert rows["approximation"]["hellinger"] == pytest.approx(q["hellinger"])
    assert "comparisons" not in client.get("/api/strip", params={"prompt": "the king", "drop_ffn": "1"}).json()
    assert "Every reading" in client.get("/strip", params={"prompt": "the king", "pos": 4}).text


def test_a_permalink_made_on_another_model_says_so(client):
    """Every permalink carries what it was made on; opening one made elsewhere answers with this
    server's numbers and a notice naming what differs and the command to serve the original;
    the JSON twin says the same in its provenance field."""
    j = client.get("/api/query", params={"prompt": "the king"}).json()
    stamp = client.get("/api/info").json()["stamp"]
    assert j["permalink"].endswith("&on=" + stamp) and j["provenance"] == {
        "serving": stamp, "link": None, "matches": True}
    same = client.get(j["permalink"])
    assert "made on another explorer" not in same.text
    other = "blog.2f434b8e." + stamp.split(".")[2]
    k = client.get("/api/query", params={"prompt": "the king", "on": other}).json()
    assert k["hellinger"] == j["hellinger"] and not k["provenance"]["matches"]
    msg = k["provenance"]["message"]
    assert "the model (blog, weights 2f434b8e)" in msg and "ffnlens serve --model blog" in msg
    assert "vectors" not in msg.split("served")[1].split(".")[0]  # the store's vectors are the same
    page = client.get("/", params={"prompt": "the king", "on": "micro.00000000.00000000"})
    assert "made on another explorer" in page.text and "store&#39;s vectors" in page.text
    assert client.get("/api/query", params={"prompt": "the", "on": "x" * 101}).status_code == 400


def test_a_strings_story_says_which_report_prompts_found_it(report_client, reports, engine):
    """With a reference report served, the story lists, per block, the report's prompts whose
    activation lies above the report's threshold from the string: counted by hand here."""
    import json

    import numpy as np
    import torch

    from app.search import unit

    rep = json.loads((reports / "reference" / "report.json").read_text())
    prompts, thr = rep["per_prompt"]["prompts"], rep["meta"]["settings"]["thresholds"]
    row = engine.store.find(engine.encode(prompts[0]))
    fi = report_client.get(f"/api/strings/{row}").json()["finders"]
    assert fi["answered"] and fi["prompts"] == len(prompts) and fi["thresholds"] == thr
    _, acts = engine.forward(np.stack([engine.encode(p) for p in prompts]))
    x = unit(torch.from_numpy(np.asarray(engine.store.unit[:, row], dtype=np.float32)))
    for b in fi["blocks"]:
        cos = (unit(acts[b["block"]]) @ x[b["block"]]).numpy()
        assert b["found"] == int((cos > thr[b["block"]]).sum()) >= 1  # its own string finds it
        assert prompts[0] in [t["prompt"] for t in b["first"]]
    assert "found it" in report_client.get(f"/strings/{row}").text


def test_report_figures_download_as_svg_png_and_pdf(report_client):
    """The report page embeds each matplotlib figure as an image under the strict CSP and links
    its files; each file comes back in its own format; a wrong name or format says what exists."""
    page = report_client.get("/report")
    assert page.status_code == 200 and 'src="data:image/svg+xml;base64,' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert 'href="/report/figures/hellinger.png?mode=reference"' in page.text
    for fmt, head, media in (("svg", b"<?xml", "image/svg+xml"), ("png", b"\x89PNG", "image/png"),
                             ("pdf", b"%PDF-", "application/pdf")):
        r = report_client.get(f"/report/figures/hellinger.{fmt}", params={"mode": "reference"})
        assert r.status_code == 200 and r.content.startswith(head) and r.headers["content-type"].startswith(media)
    missing = report_client.get("/report/figures/nothing.png")
    assert missing.status_code == 404 and "hellinger" in missing.text
    assert report_client.get("/report/figures/hellinger.gif").status_code == 400
