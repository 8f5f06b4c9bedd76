"""The evaluation report: metrics on hand-made cases, strata, neighbour statistics, weight fitting,
splits, permalinks, SVG figures, and one end-to-end report on the micro engine."""
from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from app.approx import QuerySettings, blend
from app.metrics import hellinger
from app.metrics import agreement_arrays, entropy
from app.study import plots
from app.study.headline import paired, score
from app.study.interesting import interesting
from app.study.jsonable import to_jsonable
from app.study.methods import APPROX
from app.study.neighbours import log_edges, neighbour_stats
from app.links import encode as permalink
from app.study.strata import strata
from app.study.weights import fit_weights, split_prompts


# --- score -------------------------------------------------------------------------------------
def test_score_known_values():
    P = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    same = P.copy()
    disjoint = np.array([[0.0, 0.0, 1.0], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]])
    onehot = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    s = score(P, {"same": same, "disjoint": disjoint, "onehot": onehot})
    assert s["same"]["hellinger"]["mean"] == pytest.approx(0.0, abs=1e-12)
    assert s["same"]["hellinger"]["below_0.2"] == 3 and s["same"]["hellinger"]["above_0.99"] == 0
    assert s["disjoint"]["hellinger"]["mean"] == pytest.approx(1.0)
    assert s["disjoint"]["hellinger"]["min"] == pytest.approx(1.0)
    assert s["disjoint"]["hellinger"]["above_0.99"] == 3
    # H([.5, .5], [1, 0]) = sqrt(1 - sqrt(.5)) by hand; the second prompt matches exactly.
    h = math.sqrt(1 - math.sqrt(0.5))
    o = s["onehot"]["hellinger"]
    assert o["mean"] == pytest.approx(2 * h / 3)
    assert o["median"] == pytest.approx(h) and o["min"] == 0.0 and o["max"] == pytest.approx(h)
    assert o["std"] == pytest.approx(np.std([h, 0.0, h]))
    assert o["below_0.2"] == 1 and o["above_0.99"] == 0
    # top-1: the model's [.5, .5] ranks token 0 first (ties by id), so onehot agrees on 2 of 3.
    assert s["onehot"]["topk"]["1"]["order"] == pytest.approx(2 / 3)
    assert s["same"]["topk"]["5"] == {"order": 1.0, "set": 1.0}
    with pytest.raises(ValueError):
        score(P, {"bad": P[:, :2]})


def test_topk_ties_break_by_token_id():
    p = np.array([[0.4, 0.3, 0.3, 0.0]])
    q_swapped = np.array([[0.4, 0.29, 0.31, 0.0]])  # ranks 0, 2, 1: same set of three, other order
    a = agreement_arrays(p, q_swapped, ks=(1, 2, 3))
    assert a[1]["order"][0] and a[1]["set"][0]
    assert not a[2]["order"][0] and not a[2]["set"][0]
    assert not a[3]["order"][0] and a[3]["set"][0]
    # Ties resolve to the smaller id, as approx.ranking does: [.3, .3] ranks token 1 before 2,
    # so a q without the tie agrees in order only when it also puts 1 before 2.
    tied = np.array([[0.5, 0.25, 0.25, 0.0]])
    b = agreement_arrays(p, tied, ks=(2, 3))
    assert b[2]["order"][0] and b[3]["order"][0]
    c = agreement_arrays(p, np.array([[0.5, 0.2, 0.3, 0.0]]), ks=(2, 3))
    assert not c[2]["order"][0] and not c[2]["set"][0] and c[3]["set"][0]


def test_paired_difference():
    r = paired(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.2, 0.2, 0.5, 0.3]))
    assert r["mean_diff"] == pytest.approx(0.05)
    assert r["approx_closer"] == 0.5 and r["other_closer"] == 0.25
    d = np.array([0.1, 0.0, 0.2, -0.1])
    assert r["ci95"] == pytest.approx(1.96 * d.std(ddof=1) / 2)


# --- strata --------------------------------------------------------------------------------------
def test_strata_bins_by_entropy():
    V = 8
    onehot = np.eye(V)[0]  # entropy 0
    two = np.array([0.5, 0.5] + [0.0] * 6)  # ln 2 = 0.69: moderate
    flat = np.full(V, 1 / V)  # ln 8 = 2.08: uncertain
    P = np.stack([onehot, onehot, onehot, two, two, flat])
    assert entropy(P) == pytest.approx([0, 0, 0, math.log(2), math.log(2), math.log(8)])
    H = {APPROX: np.array([0.1, 0.2, 0.3, 0.5, 0.7, 0.9]), "ngram": np.zeros(6)}
    t1 = {APPROX: np.array([1, 1, 0, 1, 0, 0], bool), "ngram": np.ones(6, bool)}
    st = strata(P, H, t1)
    assert st["unit"] == "nats"
    names = [b["name"] for b in st["bins"]]
    assert names == ["near-deterministic", "moderate", "uncertain"]
    assert [b["count"] for b in st["bins"]] == [3, 2, 1]
    assert sum(b["share"] for b in st["bins"]) == pytest.approx(1.0)
    near, mid, unc = st["bins"]
    assert near["methods"][APPROX]["hellinger_mean"] == pytest.approx(0.2)
    assert near["methods"][APPROX]["top1"] == pytest.approx(2 / 3)
    assert mid["methods"][APPROX]["hellinger_mean"] == pytest.approx(0.6)
    assert unc["methods"]["ngram"] == {"hellinger_mean": 0.0, "top1": 1.0}
    empty = strata(np.stack([onehot]), {APPROX: np.array([0.5])}, {APPROX: np.array([True])})
    assert empty["bins"][2]["count"] == 0 and empty["bins"][2]["methods"][APPROX]["hellinger_mean"] is None


# --- neighbour statistics ----------------------------------------------------------------------------
def test_neighbour_stats():
    sizes = np.array([[0, 5], [1, 50], [2, 500], [10, 5000]])
    self_only = np.array([[False, False], [True, False], [False, False], [False, False]])
    nb = neighbour_stats(sizes, self_only)
    b0, b1 = nb["blocks"]
    assert (b0["min"], b0["median"], b0["max"], b0["mean"]) == (0, 1.5, 10, 3.25)
    assert b0["p10"] == pytest.approx(np.percentile([0, 1, 2, 10], 10))
    assert b0["empty_share"] == 0.25 and b0["self_only_share"] == 0.25
    assert b1["empty_share"] == 0.0 and b1["max"] == 5000
    assert nb["histogram"]["edges"] == log_edges(5000) == [0, 1, 3, 10, 30, 100, 300, 1000, 3000, 10000]
    assert nb["histogram"]["labels"][:3] == ["0", "1–2", "3–9"]
    assert nb["histogram"]["counts"][0] == [1, 2, 0, 1, 0, 0, 0, 0, 0]  # 0 | 1, 2 | 10
    assert nb["histogram"]["counts"][1] == [0, 0, 1, 0, 1, 0, 1, 0, 1]  # 5 | 50 | 500 | 5000
    assert nb["any_empty_share"] == 0.25 and nb["all_empty_share"] == 0.0
    assert nb["any_self_only_share"] == 0.25


# --- weights -------------------------------------------------------------------------------------------
def _synthetic(N=60, L=4, V=12, good=2, seed=0):
    rng = np.random.default_rng(seed)
    target = rng.dirichlet(np.full(V, 0.5), size=N)
    counts = rng.integers(0, 40, size=(N, L, V)).astype(np.float64)
    counts[:, good] = target * rng.integers(50, 3000, size=(N, 1))  # proportional to the target
    return counts, target


@pytest.mark.parametrize("mode", ["raw", "normalised"])
def test_fit_weights_recovers_the_block_that_equals_the_target(mode):
    counts, target = _synthetic()
    L = counts.shape[1]

    def mean_h(w):
        a, _, _ = blend(counts, w, mode)
        return hellinger(target, a).mean()

    before = mean_h(np.ones(L))
    w = fit_weights(counts, target, mode)
    assert w.shape == (L,) and (w >= 0).all() and w.max() == pytest.approx(1.0)
    _, raw_sh, norm_sh = blend(counts, w, mode)
    share = (raw_sh if mode == "raw" else norm_sh).mean(0)
    assert share[2] > 0.97, share
    assert mean_h(w) < 0.5 * before and mean_h(w) < 0.05
    assert np.array_equal(w, fit_weights(counts, target, mode))  # deterministic


def test_fit_weights_ignores_all_empty_prompts_and_checks_input():
    counts, target = _synthetic(N=20)
    counts[:5] = 0
    w = fit_weights(counts, target, "raw", init=[1, 1, 1, 1])
    assert np.isfinite(w).all() and int(np.argmax(w * counts[5:].sum(-1).mean(0))) == 2
    with pytest.raises(ValueError):
        fit_weights(counts, target, "sum")
    with pytest.raises(ValueError):
        fit_weights(counts, target, "raw", init=[1, -1, 1, 1])


def test_split_prompts_disjoint_and_covering():
    tune, test = split_prompts(101, seed=3, tune_share=0.5)
    assert len(tune) == 50 and len(test) == 51  # round(50.5) == 50
    assert not set(tune) & set(test)
    assert sorted(np.concatenate([tune, test]).tolist()) == list(range(101))
    t2, s2 = split_prompts(101, seed=3)
    assert np.array_equal(tune, t2) and np.array_equal(test, s2)
    assert not np.array_equal(tune, split_prompts(101, seed=4)[0])
    assert len(split_prompts(10, 0, 0.0)[0]) == 0 and len(split_prompts(10, 0, 1.0)[1]) == 0


# --- permalinks and interesting prompts --------------------------------------------------------------
def _parse_url(url):
    from app.web.params import parse

    parts = urlsplit(url)
    q = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    p = {"prompt": "", "mode": "threshold", "thresholds": "", "k": "200", "weights": "",
         "blend": "raw", "exclude_self": "", "show": "10", "backend": "", "exact": "", **q}
    return parts, q, parse(p)


def test_permalink_round_trips_through_the_web_parameters():
    defaults = QuerySettings(thresholds=[0.9, 0.8, 0.7], weights=[1.0, 2.0, 3.0])
    s = QuerySettings(mode="topk", k=50, thresholds=[0.9, 0.8, 0.7], weights=[0.5, 0.25, 1 / 3],
                      blend="normalised", exclude_self=True)
    prompt = "To be, or &not?\n#"
    url = permalink(prompt, s, "/", defaults, backend="exact")
    parts, q, vp = _parse_url(url)
    assert parts.path == "/" and "thresholds" not in q  # equal to the defaults: left out
    assert vp.prompt == prompt and vp.settings.mode == "topk" and vp.settings.k == 50
    assert vp.settings.weights == [0.5, 0.25, 1 / 3]  # exact float round trip
    assert vp.settings.blend == "normalised" and vp.settings.exclude_self and vp.backend == "exact"
    plain = permalink("abc", QuerySettings(), "http://host:8000/")
    assert plain == "http://host:8000/?prompt=abc"
    _, q2, vp2 = _parse_url(permalink("x", QuerySettings(thresholds=[0.5, 0.6, 0.7]), "/", defaults))
    assert vp2.settings.thresholds == [0.5, 0.6, 0.7] and "weights" not in q2


def test_interesting_prompts():
    V = 4
    P = np.array([[0.95, 0.05, 0, 0], [0.25] * 4, [0.5, 0.5, 0, 0], [0.97, 0.01, 0.01, 0.01]])
    approx = np.array([[0.1, 0.9, 0, 0], [0.25] * 4, [0.4, 0.6, 0, 0], [0.9, 0.1, 0, 0]])
    ngram = np.array([[0.9, 0.1, 0, 0], [0, 0, 0, 1.0], [0.5, 0.5, 0, 0], [0.1, 0.9, 0, 0]])
    H = hellinger(P, approx)
    prompts = ["first", "se cond", "third\n", "fourth"]
    s = QuerySettings(mode="topk", k=7)
    r = interesting(prompts, H, P, {APPROX: approx, "ngram": ngram}, s, "/x/", n=2, chars="abcd")
    assert [e["index"] for e in r["worst"]] == [0, 3]  # H 0.69, 0.18, 0.07, 0
    assert [e["index"] for e in r["best"]] == [1, 2]
    assert [e["index"] for e in r["confident_miss"]] == [0]  # 95 % on 'a', approx says 'b'
    assert [e["index"] for e in r["rival_wins"]] == [0, 2]  # ngram closer by 0.6.., then 0.07..
    assert r["worst"][0]["model_top"][0] == {"char": "a", "label": "a", "p": 0.95}
    assert r["worst"][0]["approx_top"][0]["char"] == "b"
    assert r["best"][0]["label"] == "se␣cond"
    for group in ("worst", "best", "rival_wins"):
        for e in r[group]:
            parts, q, vp = _parse_url(e["url"])
            assert parts.path == "/x/" and vp.prompt == prompts[e["index"]]
            assert vp.settings.mode == "topk" and vp.settings.k == 7 and q["k"] == "7"
    json.dumps(to_jsonable(r))


# --- figures ---------------------------------------------------------------------------------------------
EVIL = 'a <script>&"\'b'


def _check_svg(svg):
    root = ET.fromstring(svg)  # well-formed XML
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert "<script" not in svg and "&lt;script&gt;&amp;" in svg
    texts = [t.text for t in root.iter() if t.text]
    assert any(EVIL in t for t in texts)  # the label reads back exactly ("$" not taken as math)
    return root


def test_figures_are_valid_escaped_and_deterministic():
    """matplotlib's figures (app/study/plots.py): valid SVG with every label kept as escaped text,
    and the same bytes in SVG, PNG and PDF for the same input (no dates, fixed ids)."""
    from app.study.plots import render

    rng = np.random.default_rng(0)
    series = {APPROX: rng.random(50), "model": rng.random(50), EVIL: rng.random(50)}
    make = lambda: plots.histogram_panels(series, np.linspace(0, 1, 11), EVIL, "x " + EVIL,  # noqa: E731
                                          share=True, reference=APPROX, notes={EVIL: EVIL})
    first, again = render(make()), render(make())
    assert first == again and first["png"][:8] == b"\x89PNG\r\n\x1a\n" and first["pdf"][:5] == b"%PDF-"
    _check_svg(first["svg"])
    cat = plots.histogram_panels({"b": [0.5, 1.5, 1.5]}, [0, 1, 2], "t", tick_labels=["0", EVIL])
    _check_svg(render(cat, ("svg",))["svg"])
    line = plots.line_chart([0.9, 0.95, 0.99], {EVIL: [1, 10, float("nan")], "m": [3, 2, 1]},
                            "sweep", EVIL, "H", y_log=True)
    _check_svg(render(line, ("svg",))["svg"])
    bars = render(plots.grouped_bars(["top-1", EVIL], {APPROX: [0.8, 0.5], "ngram": [0.6, float("nan")]},
                                     EVIL, "share", y_range=(0, 1)), ("svg",))["svg"]
    _check_svg(bars)
    assert bars.count(plots.APPROX) >= 3  # two approximation bars and the legend's
    with pytest.raises(ValueError):
        plots.grouped_bars(["a"], {"x": [1, 2]}, "t")


# --- end to end on the micro engine --------------------------------------------------------------------
def test_build_and_write_report(engine, tmp_path):
    from app.study.baselines.logit_lens import LogitLens
    from app.study.baselines.ngram import SuffixNgram
    from app.study.baselines.unigram import Unigram
    from app.study.evaluation import evaluate
    from app.study.prompts import reference_prompts
    from app.study.report import build_report
    from app.study.storage import load_report, write_report
    from app.study.sweep import threshold_sweep

    store = engine.store
    V, L = store.counts.vocab_size, store.n_layer
    rows = reference_prompts(store, 48, seed=5)
    baselines = {"ngram": SuffixNgram(store.corpus_ids, V), "unigram": Unigram(store.corpus_ids, V),
                 "logit-lens-0": LogitLens(engine.model, 0), f"logit-lens-{L - 1}": LogitLens(engine.model, L - 1)}
    s = QuerySettings()
    report, figs = build_report(engine, rows, s, baselines, "reference", base_url="/",
                                sweep_prompts=16, fit_steps=60)

    # evaluate() keeps per-prompt arrays that agree with its summary.
    ev = evaluate(engine, rows, s, progress=False, keep=True, keep_counts=True)
    arr = ev["arrays"]
    assert arr["model_probs"].shape == (48, V) and arr["counts"].shape == (48, L, V)
    assert np.allclose(hellinger(arr["model_probs"], arr["approx"]), ev["per_prompt_h"])
    assert np.array_equal(arr["sizes"], np.asarray(report["per_prompt"]["sizes"]))
    assert (arr["counts"].sum(-1) > 0).sum() <= (arr["sizes"] > 0).sum()
    assert report["headline"][APPROX]["hellinger"]["mean"] == pytest.approx(ev["hellinger"]["mean"])
    assert report["headline"][APPROX]["topk"] == ev["topk"]
    assert report["identical_to_model"] == [f"logit-lens-{L - 1}"]
    # Each block alone: its neighbours' summed counts, normalised (the unigram where it has none).
    for b in (0, L - 1):
        c = arr["counts"][:, b]
        tot = c.sum(-1, keepdims=True)
        alone = np.where(tot > 0, c / np.maximum(tot, 1), engine.unigram)
        assert np.allclose(report["per_prompt"]["hellinger"][f"block-{b}-alone"],
                           hellinger(arr["model_probs"], alone))
    assert report["headline"]["unigram"]["hellinger"]["mean"] > 0

    # The sweep equals evaluate() with the block's threshold replaced.
    sw = report["sweep"]
    t = sw["points"][0]["threshold"]
    ths = list(QuerySettings().resolved(store).thresholds)
    ths[sw["block"]] = t
    tune = np.asarray(split_prompts(48, 0, 0.5)[0])[:16]
    ref = evaluate(engine, rows[tune], QuerySettings(thresholds=ths), progress=False)
    assert sw["points"][0]["mean_h"] == pytest.approx(ref["hellinger"]["mean"], abs=1e-12)
    again = threshold_sweep(engine, rows[tune], s, sw["block"], [t])
    assert again[0] == sw["points"][0]

    # Prompts given as token ids give the same answers; self-only flags mean "only itself".
    ids = store.pool.strings(store.corpus_ids, rows)
    ev_ids = evaluate(engine, ids, s, progress=False, keep=True)
    assert np.array_equal(ev_ids["per_prompt_h"], ev["per_prompt_h"])
    assert np.array_equal(ev_ids["arrays"]["self_rows"], rows)
    assert np.array_equal(ev_ids["arrays"]["self_only"], arr["self_only"])
    one = arr["sizes"] == 1
    assert arr["self_only"].any() and (arr["self_only"] <= one).all()
    i, b = np.argwhere(arr["self_only"])[0]
    row_counts = store.counts.row(int(rows[i])).astype(np.float64)
    assert np.array_equal(arr["counts"][i, b], row_counts)  # its own follow-on counts, nothing else
    ev_ex = evaluate(engine, rows, QuerySettings(exclude_self=True), progress=False, keep=True)
    assert not ev_ex["arrays"]["self_only"].any()

    fit = report["fit"]
    assert fit["tune_prompts"] + fit["test_prompts"] == 48 and len(fit["rows"]) == 3
    assert all(len(r["weights"]) == L for r in fit["rows"])

    page = write_report(tmp_path / "rep", report, figs)
    assert page == tmp_path / "rep" / "report.html"
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    alone = {f"block-{b}-alone" for b in range(L)}
    assert data["headline"][APPROX]["prompts"] == 48 and set(data["methods"]) == {APPROX, *baselines, *alone}
    for name in ("hellinger", "topk", "strata", "neighbours", "weights", "sweep"):
        ET.fromstring((tmp_path / "rep" / "figures" / f"{name}.svg").read_text())
        assert (tmp_path / "rep" / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (tmp_path / "rep" / "figures" / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
    html = page.read_text()
    assert 'id="headline-table"' in html and "ngram" in html and "logit-lens-0" in html
    assert 'src="data:image/svg+xml;base64,' in html and "near-deterministic" in html
    assert 'href="figures/hellinger.pdf"' in html and "<script" not in html
    for e in report["interesting"]["worst"]:
        assert e["url"].replace("&", "&amp;") in html
    if report["headline"]["ngram"]["hellinger"]["mean"] < report["headline"][APPROX]["hellinger"]["mean"]:
        assert "The ngram baseline beats the approximation" in html
    else:
        assert "The approximation beats ngram" in html
    back, figs2 = load_report(tmp_path / "rep")
    assert back == data and set(figs2) == set(figs)
