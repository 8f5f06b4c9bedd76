"""nanoGPT files read safely and checked: no code runs from a checkpoint, meta.pkl or training state;
the vocabulary is found the way nanoGPT lays its files out and checked against the corpus and the
checkpoint's dataset; every bad file gets one line naming it."""
import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from .conftest import REPO
from .test_nanogpt import nanogpt_checkpoint, nanogpt_dict


class Planted:
    """An object that runs code when unpickled: it creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def one_line_naming(error, path: Path) -> str:
    msg = str(error.value if hasattr(error, "value") else error)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


def nanogpt_layout(root: Path, dataset: str = "shakespeare_char", bias: bool = True):
    """nanoGPT's own layout under ``root``: out/ckpt.pt and data/<dataset>/{meta.pkl, input.txt}."""
    ckpt, meta, corpus, sd, args = nanogpt_checkpoint(root, bias, False)
    data = root / "data" / dataset
    data.mkdir(parents=True)
    (root / "out").mkdir()
    ckpt = ckpt.rename(root / "out" / "ckpt.pt")
    torch.save(nanogpt_dict(sd, args, dataset=dataset), ckpt)
    return ckpt, meta.rename(data / "meta.pkl"), corpus.rename(data / "input.txt"), sd, args


def shift(meta: Path) -> tuple[bytes, list[str], list[str]]:
    """Overwrite ``meta`` with another dataset's of the same size (one character else); returns
    the good bytes, the good characters and the shifted ones."""
    good = meta.read_bytes()
    chars = [c for _, c in sorted(pickle.loads(good)["itos"].items())]
    shifted = sorted(chars[:-1] + ["~"])
    with open(meta, "wb") as f:
        pickle.dump({"vocab_size": len(shifted), "itos": dict(enumerate(shifted)),
                     "stoi": {c: i for i, c in enumerate(shifted)}}, f)
    return good, chars, shifted


class Ran:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def cli(*argv, cwd=REPO, home=None):
    """``ffnlens ARGV`` run in this process (its main, as the console script runs it) from ``cwd``
    with FFNLENS_HOME=``home``: the exit code and what it printed."""
    import contextlib
    import io

    from app.cli import main

    out, err, here, before = io.StringIO(), io.StringIO(), os.getcwd(), os.environ.get("FFNLENS_HOME")
    try:
        os.chdir(cwd)
        if home:
            os.environ["FFNLENS_HOME"] = str(home)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in argv])
            except SystemExit as e:
                code = e.code
    finally:
        os.chdir(here)
        if before is None:
            os.environ.pop("FFNLENS_HOME", None)
        else:
            os.environ["FFNLENS_HOME"] = before
    return Ran(code, out.getvalue(), err.getvalue())


# --- no code runs from a file -------------------------------------------------------------------
def test_planted_code_in_a_checkpoint_is_refused_and_never_runs(tmp_path):
    from app.settings import Settings
    from app.workspace import nanogpt_model
    from model.checkpoint import CheckpointError
    from model.nanogpt import import_nanogpt

    ckpt, meta, _, sd, args = nanogpt_checkpoint(tmp_path, True, False)
    marker = tmp_path / "ran"
    for legacy in (False, True):  # torch's zip format and its older one
        torch.save(nanogpt_dict(sd, args, planted=Planted(marker)), ckpt,
                   _use_new_zipfile_serialization=not legacy)
        with pytest.raises(CheckpointError, match="refused") as e:
            import_nanogpt(ckpt, meta, tmp_path / "imported")
        assert ".open" in one_line_naming(e, ckpt)
        with pytest.raises(CheckpointError, match="refused"):
            nanogpt_model(Settings(home=tmp_path / "home"), str(ckpt))
    r = cli("import-nanogpt", ckpt, home=tmp_path / "home")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert str(ckpt) in r.stderr and "refused" in r.stderr and "Traceback" not in r.stderr
    assert not marker.exists() and not (tmp_path / "imported").exists()


def test_planted_code_in_meta_pkl_is_refused_and_never_runs(tmp_path):
    from model.checkpoint import CheckpointError
    from model.nanogpt import import_nanogpt

    ckpt, meta, _, _, args = nanogpt_checkpoint(tmp_path, True, False)
    good = pickle.loads(meta.read_bytes())
    marker = tmp_path / "ran"
    for protocol in (0, 2, pickle.HIGHEST_PROTOCOL):
        with open(meta, "wb") as f:
            pickle.dump({**good, "planted": Planted(marker)}, f, protocol=protocol)
        with pytest.raises(CheckpointError, match="refused") as e:
            import_nanogpt(ckpt, meta, tmp_path / "imported")
        assert ".open" in one_line_naming(e, meta)
    assert not marker.exists()
    for protocol in (0, 2, pickle.HIGHEST_PROTOCOL):  # plain data in any protocol still reads
        with open(meta, "wb") as f:
            pickle.dump(good, f, protocol=protocol)
        import_nanogpt(ckpt, meta, tmp_path / f"imported-{protocol}")


def test_planted_code_in_a_training_state_is_refused_and_never_runs(tmp_path, micro_preset, micro_corpus):
    from app.corpus import load_corpus
    from model.checkpoint import CheckpointError
    from model.tokenizer import CharTokenizer
    from model.train import STATE, train

    corpus = load_corpus(micro_corpus)
    tok = CharTokenizer.from_text(corpus.text)
    ids = tok.encode(corpus.text)
    run = tmp_path / "run"
    run.mkdir()
    marker = tmp_path / "ran"
    torch.save({"identity": {}, "planted": Planted(marker)}, run / STATE)
    with pytest.raises(CheckpointError, match="refused") as e:
        train(micro_preset, tok, ids[: corpus.n_train], ids[corpus.n_train:], corpus.info(), run,
              tmp_path / "model", steps=1, progress=False)
    assert "--run-dir" in one_line_naming(e, run / STATE)
    assert not marker.exists() and not (tmp_path / "model").exists()


# --- the vocabulary: found, and checked -----------------------------------------------------------
def test_a_nanogpt_layout_opens_with_the_checkpoint_alone(tmp_path, monkeypatch):
    from app.settings import Settings
    from app.workspace import open_workspace
    from model.nanogpt import VocabularyMismatch

    root = tmp_path / "nanoGPT"
    root.mkdir()
    ckpt, meta, text, _, _ = nanogpt_layout(root)
    home = tmp_path / "home"
    r = cli("index", "--model", "nanogpt:out/ckpt.pt", "--device", "cpu", "--ivf", "none", "--quiet",
            cwd=root, home=home)
    assert r.returncode == 0, r.stderr
    assert str(meta) in r.stderr and "store written to" in r.stdout  # the import says what it read
    monkeypatch.chdir(root)
    settings = Settings(home=home, device="cpu")
    ws = open_workspace(settings, model="nanogpt:out/ckpt.pt")
    assert ws.corpus.name == str(text) and ws.model_info["source"]["meta"] == str(meta)
    assert ws.model_info["source"]["dataset"] == "shakespeare_char"
    assert open_workspace(settings, model=f"nanogpt:{ckpt}").spec == ws.spec  # the absolute path too
    # import-nanogpt finds it the same way, and then --model NAME finds the import under FFNLENS_HOME
    r = cli("import-nanogpt", "out/ckpt.pt", "--name", "shakespeare-char", cwd=root, home=home)
    assert r.returncode == 0 and str(meta) in r.stdout and "--model shakespeare-char" in r.stdout, r.stderr
    ws2 = open_workspace(settings, model="shakespeare-char")
    assert ws2.model_info["dir"] == str(home / "models" / "shakespeare-char")
    assert ws2.corpus.name == str(text)
    # a shifted meta.pkl is refused against that input.txt before anything is imported
    imports = sorted((home / "models").iterdir())
    shift(meta)
    with pytest.raises(VocabularyMismatch, match="input.txt") as e:
        open_workspace(settings, model="nanogpt:out/ckpt.pt")
    one_line_naming(e, meta)
    assert sorted((home / "models").iterdir()) == imports
    with pytest.raises(VocabularyMismatch):  # and so is the import made with it
        r = cli("import-nanogpt", "out/ckpt.pt", "--name", "shifted", cwd=root, home=home)
        assert r.returncode == 0
        open_workspace(settings, model="shifted")


def test_a_shifted_meta_pkl_is_refused_and_a_fixed_one_imported_afresh(tmp_path):
    from app.settings import Settings
    from app.workspace import open_workspace
    from model.checkpoint import load_model
    from model.nanogpt import VocabularyMismatch

    ckpt, meta, corpus, _, _ = nanogpt_checkpoint(tmp_path, True, False)
    corpus = corpus.rename(tmp_path / "plays.txt")
    good, chars, shifted = shift(meta)  # another dataset's: the same size, one character else
    settings = Settings(home=tmp_path / "home", device="cpu")
    with pytest.raises(VocabularyMismatch) as e:
        open_workspace(settings, model=f"nanogpt:{ckpt}", corpus=str(corpus))
    msg = one_line_naming(e, meta)
    assert repr(chars[-1]) in msg and "'~'" in msg and str(settings.models / "nanogpt-") in msg
    assert not settings.models.exists()  # refused before anything was imported
    meta.write_bytes(good)  # the fix
    ws = open_workspace(settings, model=f"nanogpt:{ckpt}", corpus=str(corpus))
    assert ws.tok.chars == "".join(chars)
    # A model directory imported earlier with the wrong meta.pkl is refused at open too
    from model.nanogpt import import_nanogpt

    with open(tmp_path / "shifted.pkl", "wb") as f:
        pickle.dump({"itos": dict(enumerate(shifted))}, f)
    out = import_nanogpt(ckpt, tmp_path / "shifted.pkl", tmp_path / "stale")
    with pytest.raises(VocabularyMismatch, match="shifted.pkl"):
        open_workspace(settings, model=str(out), corpus=str(corpus))
    # the same tensors with another vocabulary are another model: another hash, so another store
    assert load_model(out)[2]["sha256"] != ws.model_info["sha256"]


def test_a_meta_pkl_of_another_dataset_is_refused(tmp_path):
    from model.nanogpt import VocabularyMismatch, import_nanogpt

    ckpt, meta, _, _, _ = nanogpt_layout(tmp_path)
    other = tmp_path / "data" / "enwik8_char"
    other.mkdir()
    other_meta = other / "meta.pkl"
    other_meta.write_bytes(meta.read_bytes())
    with pytest.raises(VocabularyMismatch, match="shakespeare_char") as e:
        import_nanogpt(ckpt, other_meta, tmp_path / "imported")
    assert "enwik8_char" in one_line_naming(e, other_meta)
    import_nanogpt(ckpt, meta, tmp_path / "imported")  # its own dataset's


def test_no_meta_pkl_says_where_it_looked(tmp_path):
    from model.checkpoint import CheckpointError
    from model.nanogpt import import_nanogpt

    ckpt, meta, _, _, _ = nanogpt_layout(tmp_path)
    meta.unlink()
    with pytest.raises(CheckpointError, match="data/shakespeare_char/meta.pkl") as e:
        import_nanogpt(ckpt, None, tmp_path / "imported")
    one_line_naming(e, ckpt)


# --- names ---------------------------------------------------------------------------------------
def test_nanogpt_imports_take_a_name_and_models_are_found_under_ffnlens_home(tmp_path, capsys):
    from app.settings import Settings
    from app.workspace import nanogpt_model, open_workspace
    from model.checkpoint import COMMITTED, CheckpointError, resolve_model_dir

    ckpt, meta, corpus, _, _ = nanogpt_checkpoint(tmp_path, False, True)
    settings = Settings(home=tmp_path / "home", device="cpu")
    out = nanogpt_model(settings, f"{ckpt}#mine")
    assert out == settings.models / "mine" and "imported" in capsys.readouterr().err
    assert nanogpt_model(settings, f"{ckpt}#mine") == out and not capsys.readouterr().err  # reused
    assert open_workspace(settings, model="mine").model_info["dir"] == str(out)
    with pytest.raises(CheckpointError, match="mine"):  # home models are listed when none fits
        resolve_model_dir("nope", homes=(settings.models,))
    with pytest.raises(CheckpointError, match="after '#'"):
        nanogpt_model(settings, f"{ckpt}#../escape")
    (settings.models / "trained").mkdir()
    (settings.models / "trained" / "config.json").write_text(json.dumps({"arch": {}}))
    with pytest.raises(CheckpointError, match="not a nanoGPT import"):
        nanogpt_model(settings, f"{ckpt}#trained")
    # a committed name still means the committed model
    (settings.models / "tiny").mkdir()
    (settings.models / "tiny" / "config.json").write_text("{}")
    assert resolve_model_dir("tiny", homes=(settings.models,)) == COMMITTED / "tiny"


# --- bad files, one line each ---------------------------------------------------------------------
def test_bpe_checkpoints_get_one_sentence(tmp_path):
    from model.checkpoint import CheckpointError
    from model.nanogpt import import_nanogpt

    ckpt, meta, _, sd, args = nanogpt_checkpoint(tmp_path, True, False)
    for size in (50257, 50304):
        torch.save(nanogpt_dict(sd, {**args, "vocab_size": size}), ckpt)
        with pytest.raises(CheckpointError, match="character-level models only") as e:
            import_nanogpt(ckpt, meta, tmp_path / "imported")
        assert "GPT-2" in one_line_naming(e, ckpt)
    # no meta.pkl, and a dataset nanoGPT encoded with BPE (train.bin, no meta.pkl)
    root = tmp_path / "bpe"
    root.mkdir()
    ckpt, meta, _, _, _ = nanogpt_layout(root, dataset="shakespeare")
    meta.unlink()
    (meta.parent / "train.bin").write_bytes(b"\0" * 8)
    with pytest.raises(CheckpointError, match="character-level models only") as e:
        import_nanogpt(ckpt, None, root / "imported")
    assert "BPE" in one_line_naming(e, ckpt)
    with open(meta, "wb") as f:  # a vocabulary of multi-character tokens
        pickle.dump({"itos": {0: "th", 1: "e"}, "stoi": {"th": 0, "e": 1}}, f)
    with pytest.raises(CheckpointError, match="character-level models only"):
        import_nanogpt(ckpt, meta, root / "imported")


def test_bad_files_get_one_line_naming_them(tmp_path):
    from model.checkpoint import CheckpointError, load_model, save_model
    from model.gpt import GPT, GPTConfig
    from model.nanogpt import import_nanogpt
    from model.tokenizer import CharTokenizer

    ckpt, meta, _, sd, args = nanogpt_checkpoint(tmp_path, True, False)
    # non-finite weights, at import ...
    nan = dict(sd, **{"transformer.h.1.mlp.c_fc.weight": sd["transformer.h.1.mlp.c_fc.weight"] * float("nan")})
    torch.save(nanogpt_dict(nan, args), ckpt)
    with pytest.raises(CheckpointError, match="NaN or infinite") as e:
        import_nanogpt(ckpt, meta, tmp_path / "a")
    one_line_naming(e, ckpt)
    # ... and at load
    model = GPT(GPTConfig(vocab_size=4, block_size=8, n_layer=2, n_head=1, n_embd=8))
    with torch.no_grad():
        model.blocks[0].ffn.fc.weight[0, 0] = float("inf")
    save_model(model, CharTokenizer("abcd"), {}, tmp_path / "inf", dtype=torch.float32)
    with pytest.raises(CheckpointError, match="NaN or infinite") as e:
        load_model(tmp_path / "inf")
    one_line_naming(e, tmp_path / "inf" / "model.safetensors")
    # model_args that disagree with the tensors, or lack a value
    for bad in ({**args, "n_embd": 2 * args["n_embd"]}, {**args, "n_layer": args["n_layer"] + 1},
                {**args, "n_head": 5}, {k: v for k, v in args.items() if k != "block_size"}):
        torch.save(nanogpt_dict(sd, bad), ckpt)
        with pytest.raises(CheckpointError, match="model_args") as e:
            import_nanogpt(ckpt, meta, tmp_path / "b")
        one_line_naming(e, ckpt)
    r = cli("import-nanogpt", ckpt, "--meta", meta, home=tmp_path / "home")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and str(ckpt) in r.stderr, r.stderr
    # files that are not what they should be
    torch.save(nanogpt_dict(sd, args), ckpt)
    junk = tmp_path / "junk.pkl"
    for data in (b"not a pickle", b"", b"\x80\x04\x95"):
        junk.write_bytes(data)
        with pytest.raises(CheckpointError, match="not a pickle") as e:
            import_nanogpt(ckpt, junk, tmp_path / "c")
        one_line_naming(e, junk)
    for data in (b"not a checkpoint", b"", b"PK\x03\x04junk"):
        junk.write_bytes(data)
        with pytest.raises(CheckpointError, match="not a nanoGPT checkpoint") as e:
            import_nanogpt(junk, meta, tmp_path / "d")
        one_line_naming(e, junk)
    torch.save({"weights": sd}, junk)
    with pytest.raises(CheckpointError, match="'model_args'"):
        import_nanogpt(junk, meta, tmp_path / "e")
    with open(junk, "wb") as f:
        pickle.dump({"itos": {0: "a", 1: "b"}, "stoi": {"a": 1, "b": 0}}, f)
    with pytest.raises(CheckpointError, match="disagree") as e:
        import_nanogpt(ckpt, junk, tmp_path / "f")
    one_line_naming(e, junk)
    assert not any((tmp_path / d).exists() for d in "abcdef")
