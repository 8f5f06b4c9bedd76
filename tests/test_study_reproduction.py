"""The reproduction, side by side: verdicts on hand-made numbers, the interventions row against a
hand-written forward pass, and the section built, rendered and printed as Markdown from a micro
report (the micro model is 6 blocks deep and has no seed models: those rows say so)."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch

from app.approx import QuerySettings
from app.metrics import hellinger
from app.study import reproduction
from app.study.prompts import prompt_ids, reference_prompts
from app.study.repro_measures import interventions, threshold_grid
from app.study.repro_rows import judge, markdown, row, top_verdict
from app.study.report import ReportOptions, build_report
from app.study.reproduction import FIGURES, ReproductionOptions, reproduction_section
from app.study.storage import write_report

SMALL = dict(forward_prompts=None, sweep_prompts=16, test_prompts=16, long_prompts=6)


# --- verdicts ------------------------------------------------------------------------------------
def test_verdicts_on_hand_made_numbers():
    assert judge(0.1677, 0.1700, 0.01) == ("matches", "matches (±0.01)")
    st, vd = judge(0.1677, 0.1836, 0.01, reason="another run")
    assert st == "differs" and vd == "differs by +0.0159; likely: another run"
    assert judge(100, 140, 1.5, "factor")[0] == "matches"
    st, vd = judge([94, 47, 70], [90, 200, 20], 1.5, "factor")
    assert st == "differs" and "block 1 (×4.26)" in vd and "block 2 (×0.29)" in vd and "block 0" not in vd
    assert judge([5.0, 4.0], [5.5, 4.1], 0.2, "rel")[0] == "matches"
    assert judge(2.0, 3.0, 0.2, "rel")[1].startswith("differs by +50%")
    assert judge(0.5, None, 0.1)[0] == "not computed"
    assert judge(None, 0.3, None)[0] == "ours only"
    assert judge(8, 8, 0)[0] == "matches" and judge(8, 9, 0)[0] == "differs"
    assert top_verdict([("i", 0.437), ("o", 0.204)], [("i", 0.45), ("o", 0.19)])[0] == "matches"
    assert top_verdict([("i", 0.437), ("o", 0.204)], [("o", 0.45), ("i", 0.19)])[0] == "differs"
    assert "up to 0.100" in top_verdict([("a", 0.8)], [("a", 0.7)])[1]
    r = row("H mean", 0.1677, 0.2, "how", group="g", tol=0.01)
    assert r["published"] == "0.1677" and r["ours"] == "0.2000" and r["tolerance"] == "±0.01"
    md = markdown([r, row("x | y", None, None, "", group="g")])
    assert md.splitlines()[0] == "| figure | published | ours | verdict | how |"
    assert "x \\| y" in md and "| H mean | 0.1677 | 0.2000 | differs by +0.0323 | how |" in md
    assert threshold_grid(0.95)[0] == 0.91 and threshold_grid(0.95)[-1] == 0.98
    assert threshold_grid(0.99)[-1] == 0.998 and len(threshold_grid(0.5)) == 36


# --- interventions against a hand-written forward pass ------------------------------------------
@torch.inference_mode()
def _by_hand(model, idx, drop_attn=(), drop_ffn=()):
    T = idx.shape[1]
    x = model.tok_emb(idx) + model.pos_emb(torch.arange(T))
    for i, blk in enumerate(model.blocks):
        if i not in drop_attn:
            x = x + blk.attn(blk.ln1(x))
        if i not in drop_ffn:
            x = x + blk.ffn(blk.ln2(x))
    return torch.softmax(model.head(model.ln_f(x))[:, -1].double(), -1).numpy()


def test_interventions_row_equals_a_direct_computation(engine):
    rows = reference_prompts(engine.store, 5, 1337)
    ids, _ = prompt_ids(engine.store, rows)
    idx = torch.from_numpy(ids.astype(np.int64))
    P = _by_hand(engine.model, idx)
    iv = interventions(engine, ids, P)
    L = engine.store.n_layer
    assert len(iv["drop_attn"]) == len(iv["drop_ffn"]) == L
    for b in range(L):
        want_a = hellinger(P, _by_hand(engine.model, idx, drop_attn={b})).mean()
        want_f = hellinger(P, _by_hand(engine.model, idx, drop_ffn={b})).mean()
        assert iv["drop_attn"][b] == pytest.approx(want_a, abs=1e-5)
        assert iv["drop_ffn"][b] == pytest.approx(want_f, abs=1e-5)
    assert max(iv["drop_ffn"]) > 0


# --- the section on the micro world ----------------------------------------------------------------
def test_section_with_a_seed_model_and_other_settings(engine, workspace):
    """Seed distributions given (the model itself as a stand-in: H 0) and the report's settings
    not the reference ones (the section evaluates the reference settings itself)."""
    rows = reference_prompts(engine.store, 40, 1337)
    ev_P = engine.forward(prompt_ids(engine.store, rows)[0])[0]
    section, figs = reproduction_section(
        engine, rows, QuerySettings(), None, {"seed-88": ev_P}, None,
        ReproductionOptions(model_info=workspace.model_info, **SMALL))
    by = {r["figure"]: r for r in section["rows"]}
    assert [r["figure"] for r in section["rows"]] == list(FIGURES)
    seed = by["noise floor: model against seed 88"]
    assert seed["ours_value"] == pytest.approx(0.0, abs=1e-6) and seed["status"] == "differs"
    assert by["noise floor: model against seed 1442"]["status"] == "not computed"
    assert by["noise floor maxima"]["ours_value"][1] == pytest.approx(0.0, abs=1e-6)
    assert by["fitted weights"]["status"] == "not computed"
    assert "seed-88" in section["density"]["series"] and "repro_density" in figs
    assert by["prompts with H > 0.99"]["published_value"] == pytest.approx(8 * 40 / 20000)


def test_reproduction_section_renders_from_a_micro_report(engine, workspace, tmp_path, capsys):
    store = engine.store
    rows = reference_prompts(store, 48, 1337)
    s = QuerySettings(thresholds="reference")
    report, figs = build_report(engine, rows, s, {}, options=ReportOptions(
        mode_label="reference", fit_steps=20, sweep_prompts=8,
        reproduction=ReproductionOptions(model_info=workspace.model_info, **SMALL)))
    rp = report["reproduction"]
    names = [r["figure"] for r in rp["rows"]]
    assert names == list(FIGURES) and len(set(names)) == len(names)
    statuses = {r["status"] for r in rp["rows"]}
    assert statuses <= {"matches", "differs", "ours only", "not computed"}
    by = {r["figure"]: r for r in rp["rows"]}
    for r in rp["rows"]:
        assert r["verdict"] and r["published"] and r["ours"]
        if r["status"] == "differs" and r["published_value"] is not None and r["tolerance"]:
            assert "differs" in r["verdict"] or "H:" in r["verdict"]
    # No seed models are committed for the micro model: those rows say so.
    for seed in (1442, 88, 99999):
        r = by[f"noise floor: model against seed {seed}"]
        assert r["status"] == "not computed" and "no committed seed model" in r["verdict"]
    # The evaluation rows are the report's own numbers (same prompts, same settings).
    h = report["headline"]["approximation"]["hellinger"]
    assert by["H mean"]["ours_value"] == pytest.approx(h["mean"])
    assert by["top-2 as a set"]["ours_value"] == pytest.approx(report["headline"]["approximation"]["topk"]["2"]["set"])
    sizes = np.asarray(report["per_prompt"]["sizes"])
    assert by["block 4 set size on the first 500 prompts (max)"]["ours_value"] == sizes[:500, 4].max()
    assert by["parameters"]["ours_value"] == engine.model.num_params()
    assert by["fitted weights"]["status"] in ("matches", "differs")
    r = by["256-character prompts, last block alone at 0.91: top-1"]
    assert "32-character prompts" in r["how"]  # the micro model's context is 32
    assert len(rp["sweep"]) == store.n_layer and all(len(b["grid"]) == len(b["mean_h"]) for b in rp["sweep"])
    assert rp["counts"] and sum(rp["counts"].values()) == len(FIGURES)
    # The figures: the density plot and the worked examples that the micro vocabulary allows.
    assert "repro_density" in figs
    from app.study.plots import render

    for name, fig in figs.items():
        if name.startswith("repro_"):
            ET.fromstring(render(fig, ("svg",))["svg"])
    # Written, rendered and printed as Markdown from disk.
    page = write_report(tmp_path / "rep", report, figs)
    html = page.read_text()
    assert 'id="reproduction-table"' in html and "The reproduction, side by side" in html
    assert html.count("<tr class=\"reference\">") + html.count("<tr class=\"ours\">") == len(FIGURES)
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    md = reproduction.markdown_table(data["reproduction"])
    assert md.count("\n| ") == len(FIGURES) + 1  # the header's separator row starts with "|---"
    assert reproduction.main([str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "| H mean | 0.1677 |" in out and "| parameters | 10,788,929 |" in out
    # A report made without the section renders as before and the CLI says there is none.
    plain, pf = build_report(engine, rows[:8], s, {}, options=ReportOptions(fit_steps=5, sweep_prompts=4))
    assert plain["reproduction"] is None and not any(n.startswith("repro_") for n in pf)
    write_report(tmp_path / "plain", plain, pf)
    assert 'id="reproduction-table"' not in (tmp_path / "plain" / "report.html").read_text()
    assert reproduction.main([str(tmp_path / "plain")]) == 1


def test_no_reproduction_flag_reaches_the_report_options():
    from app.cli import build_parser
    from app.study.eval_report import EvalReportOptions

    args = build_parser().parse_args(["eval", "--report", "out", "--no-reproduction"])
    assert args.no_reproduction is True
    assert build_parser().parse_args(["eval", "--report", "out"]).no_reproduction is False
    assert EvalReportOptions().reproduction is True
