"""The command line, run as a user runs it: a subprocess, its output and its exit code."""
import json
import os
import subprocess
import sys

import pytest

from .conftest import REPO


def ffnlens(*args, home, check=None):
    env = {**os.environ, "FFNLENS_HOME": str(home), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "app.cli", *map(str, args)], capture_output=True,
                       text=True, env=env, cwd=REPO, timeout=600)
    if check is not None:
        assert p.returncode == check, p.stdout + p.stderr
    return p


@pytest.fixture(scope="module")
def cli(engine, micro_model_dir, micro_corpus, home):
    def run(*args, check=None):
        return ffnlens(*args, "--model", micro_model_dir, "--corpus", micro_corpus, home=home,
                       check=check)
    return run


def test_query_text_and_json(cli):
    out = cli("query", "the king ", "--quiet", check=0).stdout
    assert "block 5" in out and "Hellinger distance" in out and "backend bound" in out
    assert "backend exact" in cli("query", "the king ", "--quiet", "--exact", check=0).stdout
    assert "backend exact" in cli("query", "the king ", "--quiet", "--backend", "exact", check=0).stdout
    bad = cli("query", "the king ", "--quiet", "--exact", "--backend", "bound", check=2)
    assert "give one" in bad.stderr
    d = json.loads(cli("query", "the king ", "--json", "--mode", "topk", "--k", "4", check=0).stdout)
    assert d["backend"] == "bound" and len(d["blocks"]) == 6
    assert all(b["neighbours"] == 4 for b in d["blocks"])
    assert abs(sum(d["approximation"].values()) - 1) < 1e-9 and 0 <= d["hellinger"] <= 1


@pytest.mark.parametrize("prompt, message", [
    ("", "the prompt is empty"),
    ("the Zing", "not in the model's vocabulary: 'Z'"),
    ("x" * 40, "this model reads at most 32"),
])
def test_bad_prompts_exit_2(cli, prompt, message):
    p = cli("query", prompt, check=2)
    assert message in p.stderr and "Traceback" not in p.stderr


def test_bad_settings_exit_2(cli):
    p = cli("query", "the king ", "--thresholds", "0.9,0.9", check=2)
    assert "one value per block" in p.stderr
    p = cli("query", "the king ", "--weights", "a,b", check=2)
    assert "comma-separated numbers" in p.stderr


def test_missing_and_mismatched_stores_exit_2(cli, tmp_path, micro_model_dir, home):
    p = cli("query", "the king ", "--store", tmp_path / "nothing", check=2)
    assert "no store" in p.stderr and "ffnlens index" in p.stderr
    other = tmp_path / "other.txt"
    other.write_text("the king and the queen. " * 50)
    p = ffnlens("query", "the king ", "--model", micro_model_dir, "--corpus", other, home=home,
                check=2)
    assert "is not the one model" in p.stderr and "--allow-other-corpus" in p.stderr
    p = ffnlens("query", "the king ", "--model", tmp_path / "nomodel", home=home, check=2)
    assert "no model at" in p.stderr


def test_eval_prints_the_reference_statistics(cli):
    d = json.loads(cli("eval", "--prompts", "64", "--json", "--quiet", check=0).stdout)
    assert d["prompts"] == 64 and 0 <= d["hellinger"]["mean"] <= 1
    assert set(d["topk"]) == {"1", "2", "3", "5"}
    out = cli("eval", "--prompts", "32", "--quiet", "--exclude-self", check=0).stdout
    assert "Hellinger  mean" in out and "self excluded" in out


def test_train_runs_and_resumes(tmp_path, micro_corpus):
    # The blog-cpu recipe, architecture shrunk, on a micro corpus: 2 steps, then resume to 3.
    args = ("train", "--preset", "blog-cpu", "--corpus", micro_corpus, "--quiet",
            "--arch", "n_embd=48,n_head=2,block_size=64", "--recipe", "eval_iters=2",
            "--run-dir", tmp_path / "run", "--out", tmp_path / "m")
    p = ffnlens(*args, "--steps", "2", home=tmp_path, check=0)
    assert "trained blog-cpu for 2 steps" in p.stdout
    p = ffnlens(*args, "--steps", "3", home=tmp_path, check=0)
    assert "resumed at step 2" in p.stdout
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["arch"]["n_embd"] == 48 and cfg["arch"]["n_layer"] == 6 and cfg["steps"] == 3
    assert cfg["recipe"]["batch_size"] == 8 and cfg["recipe"]["phases"][0]["until"] == 3000
    p = ffnlens(*args[:-4], "--arch", "n_emb=3", home=tmp_path, check=2)
    assert "unknown field 'n_emb'" in p.stderr


def test_index_adds_missing_indexes_to_a_store(cli, engine, tmp_path):
    import shutil

    dst = tmp_path / "store"
    shutil.copytree(engine.store.path, dst)
    m = json.loads((dst / "manifest.json").read_text())
    del m["ivf"], m["bound"]
    (dst / "manifest.json").write_text(json.dumps(m))
    assert "no bound index" in cli("query", "the king ", "--store", dst, "--backend", "bound", check=2).stderr
    out = cli("index", "--store", dst, "--quiet", check=0).stdout
    assert "added the bound index" in out and "added the ivf index" in out
    assert "backend ivf" in cli("query", "the king ", "--store", dst, "--backend", "ivf", check=0).stdout
    assert "store already built" in cli("index", "--store", dst, "--quiet", check=0).stdout


def test_eval_writes_reports_the_explorer_serves(cli, engine, workspace, settings, micro_model_dir,
                                                 micro_corpus, tmp_path):
    from fastapi.testclient import TestClient

    from app.web import create_app
    from app.workspace import about

    reports = tmp_path / "reports"
    cli("index", "--activation", "attn", "--ivf", "none", "--quiet", check=0)
    ref = cli("eval", "--prompts", "40", "--quiet", "--report", reports / "reference", check=0).stdout
    held = cli("eval", "--prompts", "30", "--quiet", "--pool", "heldout", "--build", "--report",
               reports / "held-out", check=0).stdout
    assert "neighbours-attn" in ref and "seed-" not in ref  # the micro model has no other seeds
    for out, mode in ((ref, "reference"), (held, "held-out")):
        assert f"{mode} report on" in out and "ngram" in out and "unigram" in out
        assert (reports / mode / "report.html").exists() and list((reports / mode / "figures").glob("*.svg"))
    client = TestClient(create_app(engine, about(workspace, engine), reports=reports))
    for mode in ("reference", "held-out"):
        page = client.get("/report", params={"mode": mode})
        data = client.get("/api/report", params={"mode": mode}).json()
        assert page.status_code == 200 and "ngram" in page.text
        assert f"{data['headline']['approximation']['hellinger']['mean']:.4f}" in page.text  # the headline table
        # the report's links open the very prompts it names
        for e in data["interesting"]["worst"][:2]:
            got = client.get("/api" + e["url"].replace("/?", "/query?", 1)).json()
            assert got["prompt"] == e["prompt"]
    from app.store import open_store
    from app.workspace import open_workspace

    ws = open_workspace(settings, model=str(micro_model_dir), corpus=str(micro_corpus), mode="heldout")
    heldout = open_store(ws.store_dir, ws.spec, corpus_ids=ws.ids)
    held_prompts = [e["prompt"] for k in ("worst", "best") for e in data["interesting"][k]]
    assert held_prompts and all(heldout.find(engine.tok.encode(p)) is None for p in held_prompts)
    assert all(engine.store.find(engine.tok.encode(p)) is not None for p in held_prompts)
    assert client.get("/report", params={"mode": "nope"}).status_code == 400
    empty = TestClient(create_app(engine, about(workspace, engine), reports=tmp_path / "none"))
    r = empty.get("/report")
    # the page names the command for the served model (issue 17: the report is findable)
    assert r.status_code == 404 and "ffnlens eval --model" in r.text and "--report" in r.text
