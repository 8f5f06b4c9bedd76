"""Taking a view away (app/web/exports.py): any page as one self-contained HTML file with its data
and a caption, its chart as SVG or PNG."""
from __future__ import annotations

import html
import json
import re
import xml.etree.ElementTree as ET

import pytest

PAGES = [("/", {"prompt": "the king"}, "query"), ("/blocks/3", {"prompt": "the king"}, "block"),
         ("/strip", {"prompt": "the king is"}, "strip"), ("/strings/5", {"prompt": "the king"}, "story"),
         ("/interventions", {"prompt": "the king"}, "interventions")]


def embedded(text: str):
    m = re.search(r'<pre id="ffnlens-data" hidden>(.*?)</pre>', text, re.S)
    assert m, "no embedded data"
    return json.loads(html.unescape(m.group(1)))


@pytest.mark.parametrize("path,params,view", PAGES)
def test_a_page_downloads_as_one_file(client, path, params, view):
    page = client.get(path, params=params)
    assert page.status_code == 200 and "export=1" in page.text  # the page links its download
    r = client.get(path, params={**params, "export": "1"})
    assert r.status_code == 200
    assert r.headers["content-disposition"].startswith(f'attachment; filename="ffnlens-{view}')
    body = r.text
    assert "<script" not in body and 'rel="stylesheet"' not in body and "<style>" in body
    assert "model micro" in body and "permalink http://testserver/" in body
    data = embedded(body)
    assert isinstance(data, dict) and data


def test_the_embedded_data_is_the_json_twins(client):
    twin = client.get("/api/query", params={"prompt": "the king"}).json()
    data = embedded(client.get("/", params={"prompt": "the king", "export": "1"}).text)
    assert data["hellinger"] == twin["hellinger"] and data["model_top"] == twin["model_top"]
    strip = client.get("/api/strip", params={"prompt": "the king is"}).json()
    got = embedded(client.get("/strip", params={"prompt": "the king is", "export": "1"}).text)
    assert [p["hellinger"] for p in got["positions"]] == [p["hellinger"] for p in strip["positions"]]


def test_an_error_page_is_not_a_download(client):
    r = client.get("/", params={"prompt": "the \u20ac", "export": "1"})
    assert r.status_code == 400 and "content-disposition" not in r.headers


@pytest.mark.parametrize("view,params", [("query", {"prompt": "the king"}), ("block", {"prompt": "the king", "block": "2"}),
                                         ("strip", {"prompt": "the king is"})])
def test_charts_as_svg_and_png(client, view, params):
    svg = client.get(f"/chart/{view}.svg", params=params)
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    root = ET.fromstring(svg.content)
    texts = " ".join(t.text for t in root.iter() if t.text)
    assert "model micro" in texts and "permalink" in texts  # the caption
    png = client.get(f"/chart/{view}.png", params=params)
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"


@pytest.mark.parametrize("url,status,message", [
    ("/chart/query.gif?prompt=the", 400, "svg or png"), ("/chart/report.svg", 404, "query, block, strip, tune"),
    ("/chart/query.svg?prompt=the+%E2%82%AC", 400, "vocabulary"), ("/chart/block.svg?prompt=the&block=x", 400, "parameter")])
def test_bad_chart_requests_say_what_to_fix(client, url, status, message):
    r = client.get(url)
    assert r.status_code == status and message in r.text


def test_the_report_downloads_with_its_data(report_client):
    page = report_client.get("/report")
    assert "export=1" in page.text
    r = report_client.get("/report", params={"export": "1"})
    assert r.status_code == 200 and r.headers["content-disposition"].startswith('attachment; filename="ffnlens-report-')
    data = embedded(r.text)
    assert "headline" in data and "per_prompt" not in data and "<script" not in r.text
