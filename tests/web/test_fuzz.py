"""Every route fuzzed: plausible settings with hostile values mixed in; no 500, a message with
every 4xx, the safety headers on every answer, nothing unescaped."""
import os
import re
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings, strategies as st

from ..conftest import micro_text
from .hostile import RAW_MARKUP, XSS

NASTY = XSS + ["'", '"', "&", "&amp;", "&#60;", "\n", "\r\n", "\t", "\x00", "%00", "%", "+", "é",
               "日本語", "🙂", "\u202e", "e\u0301", "\ufeff", "-1", "-0", "0", "1", "2", "7", " 1 ", "1.5",
               "1e3", "1_000", "0x10", "９", "NaN", "nan", "-nan", "inf", "-inf", "Infinity", "1e308",
               "1e999", "-1e-400", "9" * 30, "9" * 5000, "-" + "9" * 25, "", " ", "null", "true", "[]",
               "{}", "../../etc/passwd", "%2e%2e%2f", "x" * 1001, "the king " * 200]
QUERY_PARAMS = ("prompt", "mode", "thresholds", "k", "weights", "blend", "exclude_self", "show",
                "backend", "exact", "store", "page", "per_page", "sort", "pos", "drop_attn", "drop_ffn")
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
    "pos": st.integers(-3, 50).map(str),
    "drop_attn": st.sampled_from(["", "0", "2,5", "7", "x", "-1"]),
    "drop_ffn": st.sampled_from(["", "4", "0,1,2,3,4,5", "1,,3"]),
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
    """/api/query, /, /results, /blocks/{i}, /api/blocks/{i}, /strip, /api/strip, /interventions and
    /api/interventions, each with the same fuzzed URL: plausible settings (many reach the engine) with up to three parameters made
    hostile."""
    params = {**params, **hostile}
    for path in ("/api/query", "/", "/results", f"/blocks/{quote(block, safe='')}",
                 f"/api/blocks/{quote(block, safe='')}", "/strip", "/api/strip", "/interventions",
                 "/api/interventions"):
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
