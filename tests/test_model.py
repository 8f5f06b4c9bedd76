import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.checkpoint import CheckpointError, load_model, save_model
from model.gpt import GPT, GPTConfig, Trace
from model.presets import get_preset
from model.tokenizer import CharTokenizer, UnknownCharacters


def test_blog_architecture_has_the_reference_parameter_count():
    cfg = get_preset("blog").arch
    cfg.vocab_size = 65
    assert GPT(cfg).num_params() == 10_788_929  # METHOD.md's published count
    assert get_preset("blog-cpu").arch == get_preset("blog").arch


def test_blog_recipe_is_methods():
    r = get_preset("blog").recipe
    assert (r.batch_size, r.window, r.steps, r.seed) == (64, 256, 4500, 1337)
    assert [(p.until, p.lr, p.fresh_optimizer) for p in r.phases] == [(3500, 3e-4, True), (4500, 3e-5, True)]
    assert r.lr_at(0) == 3e-4 and r.lr_at(3499) == 3e-4 and r.lr_at(3500) == 3e-5


def reference_forward(model: GPT, idx: torch.Tensor):
    """An independent forward pass written from the weights: logits and each block's FFN output."""
    sd = {k: v.double() for k, v in model.state_dict().items()}
    cfg = model.cfg
    B, T = idx.shape
    C, H = cfg.n_embd, cfg.n_head
    x = sd["tok_emb.weight"][idx] + sd["pos_emb.weight"][:T]
    ffns = []

    def ln(x, p):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + 1e-5) * sd[p + ".weight"] + sd[p + ".bias"]

    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for i in range(cfg.n_layer):
        p = f"blocks.{i}."
        h = ln(x, p + "ln1")
        qkv = h @ sd[p + "attn.qkv.weight"].T
        q, k, v = qkv.split(C, -1)
        heads = []
        for j in range(H):
            s = slice(j * C // H, (j + 1) * C // H)
            att = (q[..., s] @ k[..., s].transpose(1, 2)) / math.sqrt(C // H)
            att = att.masked_fill(~mask, float("-inf")).softmax(-1)
            heads.append(att @ v[..., s])
        a = torch.cat(heads, -1) @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
        x = x + a
        h = ln(x, p + "ln2")
        f = torch.relu(h @ sd[p + "ffn.fc.weight"].T + sd[p + "ffn.fc.bias"])
        f = f @ sd[p + "ffn.proj.weight"].T + sd[p + "ffn.proj.bias"]
        ffns.append(f)
        x = x + f
    logits = ln(x, "ln_f") @ sd["head.weight"].T + sd["head.bias"]
    return logits, ffns


def test_forward_and_trace_match_an_independent_implementation():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=16, n_layer=3, n_head=2, n_embd=16, dropout=0.0)).eval()
    for p in model.parameters():  # make biases and LayerNorm parameters non-trivial
        p.data += 0.05 * torch.randn_like(p)
    idx = torch.randint(0, 11, (3, 12))
    trace = Trace()
    logits, _ = model(idx, trace=trace)
    ref_logits, ref_ffn = reference_forward(model, idx)
    assert torch.allclose(logits.double(), ref_logits, atol=1e-5)
    for f, r in zip(trace.ffn, ref_ffn):
        assert torch.allclose(f.double(), r, atol=1e-5)
    assert len(trace.attn) == len(trace.resid) == 3
    # last_only gives the same last-position logits and FFN outputs
    t2 = Trace(last_position=True)
    last, _ = model(idx, trace=t2, last_only=True)
    assert last.shape == (3, 1, 11)
    assert torch.allclose(last[:, 0], logits[:, -1], atol=1e-5)
    for f, r in zip(t2.ffn, ref_ffn):
        assert torch.allclose(f[:, 0].double(), r[:, -1], atol=1e-5)


def test_context_length_is_enforced():
    model = GPT(GPTConfig(vocab_size=5, block_size=8, n_layer=1, n_head=1, n_embd=8))
    with pytest.raises(AssertionError, match="block size is only 8"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_tokenizer_round_trip_and_unknown_characters():
    tok = CharTokenizer.from_text("hello world\n")
    assert tok.chars == "\n dehlorw"
    assert tok.decode(tok.encode("low\nrod")) == "low\nrod"
    with pytest.raises(UnknownCharacters) as e:
        tok.encode("hello Zoë!")
    assert e.value.chars == ["Z", "ë", "!"]
    wide = CharTokenizer("".join(chr(0x4E00 + i) for i in range(300)))
    assert wide.decode(wide.encode(chr(0x4E00 + 299) + chr(0x4E00))) == chr(0x4E00 + 299) + chr(0x4E00)


def test_checkpoint_round_trip_and_corruption(tmp_path):
    torch.manual_seed(1)
    model = GPT(GPTConfig(vocab_size=4, block_size=8, n_layer=2, n_head=1, n_embd=8)).eval()
    tok = CharTokenizer("abcd")
    save_model(model, tok, {"corpus": {"name": "x", "sha256": "0" * 64}}, tmp_path / "m")
    loaded, tok2, info = load_model(tmp_path / "m")
    assert tok2.chars == "abcd" and info["arch"]["n_layer"] == 2
    idx = torch.tensor([[0, 1, 2, 3]])
    a, _ = model(idx)
    b, _ = loaded(idx)
    assert torch.allclose(a, b, atol=2e-2)  # float16 weights
    assert not list((tmp_path / "m").glob("*.tmp"))
    data = (tmp_path / "m" / "model.safetensors").read_bytes()
    (tmp_path / "m" / "model.safetensors").write_bytes(data[:-10] + b"0123456789")
    with pytest.raises(CheckpointError, match="does not match the hash"):
        load_model(tmp_path / "m")
    with pytest.raises(CheckpointError, match="no model at"):
        load_model(tmp_path / "nowhere")


def test_training_resumes_to_the_same_result(tmp_path, micro_preset, micro_corpus):
    from app.corpus import load_corpus
    from model.train import train

    corpus = load_corpus(micro_corpus)
    tok = CharTokenizer.from_text(corpus.text)
    ids = tok.encode(corpus.text)
    tr, va = ids[: corpus.n_train], ids[corpus.n_train :]
    full = train(micro_preset, tok, tr, va, corpus.info(), tmp_path / "r1", tmp_path / "m1",
                 steps=40, progress=False)
    part = train(micro_preset, tok, tr, va, corpus.info(), tmp_path / "r2", tmp_path / "m2",
                 steps=20, progress=False)
    assert part.steps == 20
    resumed = train(micro_preset, tok, tr, va, corpus.info(), tmp_path / "r2", tmp_path / "m2",
                    steps=40, progress=False)
    assert resumed.resumed_from == 20 and resumed.steps == 40
    assert resumed.losses == full.losses
    m1, _, i1 = load_model(tmp_path / "m1")
    m2, _, i2 = load_model(tmp_path / "m2")
    assert i1["weights_sha256"] == i2["weights_sha256"]
    assert i1["corpus"]["sha256"] == corpus.sha256 and "val_32" in i1["losses"]


def test_cuda_speed_settings_are_refused_on_the_cpu_and_leave_cpu_training_alone(tmp_path):
    import pytest
    import torch

    from model.errors import FfnlensError
    from model.train import Speed

    before = torch.backends.cuda.matmul.allow_tf32
    assert Speed().apply("cpu") == {}  # nothing recorded, nothing set: the CPU trains in float32
    assert torch.backends.cuda.matmul.allow_tf32 == before
    for s in (Speed(bf16=True), Speed(compile=True)):
        with pytest.raises(FfnlensError, match="CUDA"):
            s.apply("cpu")
    assert isinstance(Speed(bf16=True).autocast("cpu"), type(Speed().autocast("cpu")))
