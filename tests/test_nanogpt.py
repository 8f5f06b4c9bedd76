"""nanoGPT checkpoints: imported exactly, checked against an independent forward pass."""
import math
import pickle

import pytest
import torch
import torch.nn.functional as F

from .conftest import micro_text


def nanogpt_checkpoint(tmp_path, bias: bool, compiled: bool, seed: int = 0):
    """A checkpoint in nanoGPT's format with random weights, and its meta.pkl."""
    g = torch.Generator().manual_seed(seed)
    text = micro_text(3000, seed=seed)
    chars = sorted(set(text))
    V, C, L, H, T = len(chars), 24, 3, 3, 32

    def w(*shape):
        return torch.randn(*shape, generator=g) * 0.2

    sd = {"transformer.wte.weight": w(V, C), "transformer.wpe.weight": w(T, C),
          "transformer.ln_f.weight": 1 + w(C)}
    if bias:
        sd["transformer.ln_f.bias"] = w(C)
    for i in range(L):
        p = f"transformer.h.{i}."
        for name, shape in (("ln_1", (C,)), ("ln_2", (C,))):
            sd[p + name + ".weight"] = 1 + w(*shape)
            if bias:
                sd[p + name + ".bias"] = w(*shape)
        for name, (o, n) in (("attn.c_attn", (3 * C, C)), ("attn.c_proj", (C, C)),
                             ("mlp.c_fc", (4 * C, C)), ("mlp.c_proj", (C, 4 * C))):
            sd[p + name + ".weight"] = w(o, n)
            if bias:
                sd[p + name + ".bias"] = w(o)
        if not bias:  # older nanoGPT without flash attention registers its causal mask as "bias"
            sd[p + "attn.bias"] = torch.tril(torch.ones(T, T)).view(1, 1, T, T)
    sd["lm_head.weight"] = sd["transformer.wte.weight"]  # tied
    if compiled:
        sd = {"_orig_mod." + k: v for k, v in sd.items()}
    args = dict(n_layer=L, n_head=H, n_embd=C, block_size=T, bias=bias, vocab_size=V, dropout=0.0)
    ckpt = tmp_path / "ckpt.pt"
    torch.save(nanogpt_dict(sd, args), ckpt)
    meta = tmp_path / "meta.pkl"
    with open(meta, "wb") as f:
        pickle.dump({"vocab_size": V, "itos": dict(enumerate(chars)), "stoi": {c: i for i, c in enumerate(chars)}}, f)
    corpus = tmp_path / "input.txt"
    corpus.write_text(text)
    return ckpt, meta, corpus, {k.removeprefix("_orig_mod."): v for k, v in sd.items()}, args


def nanogpt_dict(sd: dict, args: dict, dataset: str = "shakespeare_char", **extra) -> dict:
    """What nanoGPT's train.py saves: the state dict, model_args, an AdamW state, the iteration,
    the best validation loss (a tensor) and its config (plain values, among them the dataset)."""
    params = [torch.nn.Parameter(v.clone()) for k, v in sd.items() if not k.endswith("attn.bias")]
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    config = {"out_dir": "out-shakespeare-char", "eval_interval": 250, "dataset": dataset,
              "batch_size": 64, "block_size": args.get("block_size"), "n_layer": args.get("n_layer"),
              "learning_rate": 1e-3, "bias": args.get("bias"), "compile": True, "dtype": "bfloat16",
              "init_from": "scratch", "wandb_log": False, "decay_lr": True}
    return {"model": sd, "optimizer": opt.state_dict(), "model_args": args, "iter_num": 5000,
            "best_val_loss": torch.tensor(1.47), "config": config, **extra}


def reference_forward(sd: dict, args: dict, idx: torch.Tensor):
    """nanoGPT's forward written out from its description: pre-LN blocks, fused c_attn split into
    q, k, v, causal softmax attention, GELU MLP, final LayerNorm, head tied to wte. Returns the
    logits (B, T, V) and each block's MLP output (B, T, C)."""
    C, H = args["n_embd"], args["n_head"]

    def ln(x, name):
        return F.layer_norm(x, (C,), sd[name + ".weight"], sd.get(name + ".bias"), 1e-5)

    def lin(x, name):
        y = x @ sd[name + ".weight"].T
        return y + sd[name + ".bias"] if name + ".bias" in sd else y

    B, T = idx.shape
    x = sd["transformer.wte.weight"][idx] + sd["transformer.wpe.weight"][:T]
    mlps = []
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for i in range(args["n_layer"]):
        p = f"transformer.h.{i}."
        q, k, v = lin(ln(x, p + "ln_1"), p + "attn.c_attn").split(C, dim=2)
        q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(C // H)
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + lin(y, p + "attn.c_proj")
        h = lin(ln(x, p + "ln_2"), p + "mlp.c_fc")
        m = lin(0.5 * h * (1 + torch.erf(h / math.sqrt(2))), p + "mlp.c_proj")  # exact GELU
        mlps.append(m)
        x = x + m
    return ln(x, "transformer.ln_f") @ sd["transformer.wte.weight"].T, mlps


@pytest.mark.parametrize("bias,compiled", [(True, False), (False, True)])
def test_imported_checkpoint_reproduces_nanogpts_logits_and_ffn_outputs(tmp_path, bias, compiled):
    from model.checkpoint import load_model
    from model.gpt import Trace
    from model.nanogpt import import_nanogpt

    ckpt, meta, _, sd, args = nanogpt_checkpoint(tmp_path, bias, compiled)
    out = import_nanogpt(ckpt, meta, tmp_path / "imported")
    model, tok, info = load_model(out)
    assert info["source"]["format"] == "nanogpt" and info["source"]["iter_num"] == 5000
    assert model.cfg.activation == "gelu" and model.cfg.tied_head and model.cfg.bias == bias
    idx = torch.randint(0, args["vocab_size"], (3, args["block_size"]), generator=torch.Generator().manual_seed(1))
    trace = Trace()
    with torch.no_grad():
        logits, _ = model(idx, trace=trace)
        want, mlps = reference_forward(sd, args, idx)
    assert torch.allclose(logits, want, atol=1e-4, rtol=1e-4)
    for got, ref in zip(trace.ffn, mlps):
        assert torch.allclose(got, ref, atol=1e-5, rtol=1e-4)


def test_a_nanogpt_model_is_explored_with_its_own_corpus(tmp_path):
    from app.approx import QuerySettings
    from app.corpus import CorpusError
    from app.settings import Settings
    from app.workspace import build_index, open_engine, open_workspace
    from model.errors import FfnlensError

    ckpt, _, corpus, _, _ = nanogpt_checkpoint(tmp_path, True, True)
    corpus = corpus.rename(tmp_path / "plays.txt")  # no input.txt beside meta.pkl: --corpus needed
    settings = Settings(home=tmp_path / "home", device="cpu")
    with pytest.raises(CorpusError, match="--corpus") as e:
        open_workspace(settings, model=f"nanogpt:{ckpt}")
    assert str(settings.models / "nanogpt-") in str(e.value)  # the import's folder is named
    ws = open_workspace(settings, model=f"nanogpt:{ckpt}", corpus=str(corpus))
    assert ws.store_dir.name.startswith("nanogpt-")
    build_index(ws, progress=False, calibration_prompts=16)
    res = open_engine(ws, progress=False).query("the king", QuerySettings(mode="topk", k=5))
    assert all(b.n == 5 for b in res.blocks) and abs(res.model_probs.sum() - 1) < 1e-9
    other = tmp_path / "other.txt"
    other.write_text("Zebra quiz " * 20)
    with pytest.raises(FfnlensError, match="'Z'") as e:
        open_workspace(settings, model=f"nanogpt:{ckpt}", corpus=str(other))
    assert "meta.pkl" in str(e.value)


def test_bad_nanogpt_files_get_clear_errors(tmp_path):
    from model.checkpoint import CheckpointError
    from model.nanogpt import import_nanogpt

    ckpt, meta, _, _, _ = nanogpt_checkpoint(tmp_path, True, False)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a nanoGPT checkpoint"):
        import_nanogpt(junk, meta, tmp_path / "a")
    bad_meta = tmp_path / "bad.pkl"
    with open(bad_meta, "wb") as f:
        pickle.dump({"itos": {0: "a", 1: "b"}}, f)
    with pytest.raises(CheckpointError, match="different datasets"):
        import_nanogpt(ckpt, bad_meta, tmp_path / "b")


def test_import_on_the_command_line(tmp_path):
    import subprocess
    import sys

    from .conftest import REPO

    ckpt, meta, _, _, _ = nanogpt_checkpoint(tmp_path, False, False)
    env = {"FFNLENS_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "app.cli", "import-nanogpt", str(ckpt), "--meta", str(meta),
                        "--name", "shakespeare-char"], cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "home" / "models" / "shakespeare-char" / "config.json").exists()
    r = subprocess.run([sys.executable, "-m", "app.cli", "import-nanogpt", str(tmp_path / "nope.pt"),
                        "--meta", str(meta)], cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "no nanoGPT checkpoint" in r.stderr
