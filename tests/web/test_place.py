"""The corpus page is a place (issue 17, item 8): where in the text a position is (line and column
for any text; play, act, scene and speaker for the default corpus), earlier and later stretches,
back to the page it came from, and the string as a prompt."""
import re
from urllib.parse import parse_qs, urlsplit

import pytest

from app.web.place import TextIndex, links, numbered, read_from

PLAYS = """THE FIRST PLAY

by William Shakespeare

PERSONS REPRESENTED.

Duke, a duke.

SCENE. Somewhere.

ACT I.

Scene I. A room.

[Enter Duke and Page.]

Duke.
Good morrow, page.
How now?

Page.
Good morrow, my lord.

Scene II. A garden.

Duke.
Fair flowers.

A SECOND PLAY

by William Shakespeare

ACT

SCENE

BOATSWAIN.
Heigh, my hearts!

ACT

SCENE I.--Another part of the island

LADY ANNE.
[Within.] Who's there?
"""


def at(text: str, s: str) -> int:
    return text.index(s)


def test_a_one_pass_index_reads_the_plays_headings():
    ix = TextIndex(PLAYS, plays=True)
    assert ix.place(at(PLAYS, "PERSONS")) == {"play": "THE FIRST PLAY", "act": None, "scene": None, "speaker": None}
    assert ix.place(at(PLAYS, "How now")) == {"play": "THE FIRST PLAY", "act": "Act I", "scene": "Scene I (A room)",
                                              "speaker": "Duke"}
    assert ix.place(at(PLAYS, "my lord"))["speaker"] == "Page"
    garden = ix.place(at(PLAYS, "Fair flowers"))
    assert garden["scene"] == "Scene II (A garden)" and garden["speaker"] == "Duke"
    assert ix.place(at(PLAYS, "[Enter Duke"))["speaker"] is None  # a new scene: nobody has spoken yet
    # Acts and scenes without numerals are counted; a new play starts afresh.
    assert ix.place(at(PLAYS, "Heigh")) == {"play": "A SECOND PLAY", "act": "Act I", "scene": "Scene I",
                                            "speaker": "BOATSWAIN"}
    last = ix.place(at(PLAYS, "Who's there"))
    assert last["act"] == "Act II" and last["scene"] == "Scene I (Another part of the island)"
    assert last["speaker"] == "LADY ANNE"
    # Line numbers for any text, from 1.
    plain = TextIndex("one\ntwo\nthree", plays=False)
    assert plain.line(0) == (1, 1) and plain.line(4) == (2, 1) and plain.line(10) == (3, 3)
    assert plain.place(5) is None


def test_the_default_corpus_names_play_act_and_speaker():
    from app.corpus import default_corpus

    text = default_corpus().text
    ix = TextIndex(text, plays=True)
    assert len(ix.marks["play"][0]) == 8 and len(ix.marks["act"][0]) == 40
    p = ix.place(at(text, "Who's there?\n\nFran."))
    assert p == {"play": "HAMLET, PRINCE OF DENMARK", "act": "Act I",
                 "scene": "Scene I (Elsinore. A platform before the Castle)", "speaker": "Ber"}
    p = ix.place(at(text, "Is this a dagger which I see before me"))
    assert p["play"] == "MACBETH" and p["act"] == "Act II" and p["speaker"] == "MACBETH"


def test_from_is_a_page_of_this_explorer_only():
    keys = {"prompt", "mode", "k"}
    assert read_from("", keys) == ("", {})
    assert read_from("/blocks/3?prompt=the+king&mode=topk&page=2&evil=x", keys) == (
        "/blocks/3", {"prompt": "the king", "mode": "topk", "page": "2"})
    assert read_from("/?prompt=a", keys) == ("/", {"prompt": "a"})
    for bad in ("https://elsewhere.example/", "//elsewhere.example/", "/etc/passwd", "javascript:alert(1)",
                "/blocks/x", "/corpus?pos=3", "/?prompt=a#frag"):
        assert read_from(bad, keys) is None, bad
    l = links("/m/x", 100, 20, 1000, 10, "the king ", ("/blocks/2", {"prompt": "a b", "page": "3", "k": "5"}))
    assert l["back"] == "/m/x/blocks/2?prompt=a+b&page=3&k=5" and l["back_to"] == "block 2"
    assert l["earlier"].startswith("/m/x/corpus?pos=50&width=20&from=%2Fblocks%2F2%3F")
    assert parse_qs(urlsplit(l["use_as_prompt"]).query) == {"prompt": ["the king "], "k": ["5"]}
    edge = links("", 0, 1500, 1000, 10, "abc", ("", {}))
    assert edge["earlier"] is None and edge["later"] == "/corpus?pos=990#here" and edge["back"] is None
    assert links("", 990, 1500, 1000, 10, "abc", ("", {}))["later"] is None


def test_line_numbers_are_drawn_not_copied():
    html = str(numbered("a<b\nc", "d\ne", "f", 7))
    assert html.count('class="ln"') == 3 and 'data-n="7"' in html and 'data-n="9"' in html
    assert "a&lt;b" in html and '<mark id="here">d\n<span class="ln" data-n="9"' in html


def test_the_corpus_page_and_its_twin(client):
    """From a block page's context link: where it is, earlier / later, back, use as prompt."""
    block = client.get("/blocks/1", params={"prompt": "the king ", "mode": "topk", "k": "20"})
    link = re.search(r'href="(/corpus\?[^"]+)"', block.text).group(1).replace("&amp;", "&")
    q = parse_qs(urlsplit(link).query)
    assert q["from"] == ["/blocks/1?prompt=the+king+&mode=topk&k=20&sort=similarity&per_page=50&page=1"]
    page = client.get(link)
    assert page.status_code == 200
    assert 'href="/blocks/1?prompt=the+king+&amp;mode=topk&amp;k=20&amp;sort=similarity' in page.text
    assert "← back to block 1" in page.text and "line " in page.text and 'class="ln"' in page.text
    data = client.get("/api/corpus", params={"pos": q["pos"][0], "width": "30", "from": q["from"][0]}).json()
    assert {"pos", "before", "match", "after"} <= data.keys()  # the fields it always had
    assert data["line"] >= 1 and data["column"] >= 1 and data["first_line"] <= data["line"]
    assert data["start"] == data["pos"] - len(data["before"]) and data["place"] is None  # not the plays
    assert data["back"].startswith("/blocks/1?prompt=the+king+")
    use = parse_qs(urlsplit(data["use_as_prompt"]).query)
    assert use == {"prompt": [data["match"]], "mode": ["topk"], "k": ["20"]}
    later = client.get("/api" + data["later"].split("#")[0]).json()
    assert later["pos"] == data["pos"] + 2 * 30 + len(data["match"]) and later["back"] == data["back"]
    assert client.get(data["use_as_prompt"]).status_code == 200
    top = client.get("/api/corpus", params={"pos": "0"}).json()
    assert top["earlier"] is None and top["line"] == 1 and top["back"] is None and top["first_line"] == 1
