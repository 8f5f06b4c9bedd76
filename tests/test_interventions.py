"""Interventions in the model: a forward pass without chosen blocks' attention or FFN outputs equals
a forward pass written out by hand from the weights."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.gpt import Intervention


def hand_forward(model, idx, drop_attn=(), drop_ffn=()):
    """The model's maths written out again, leaving the named sublayers out: (B, T, V) logits."""
    cfg = model.cfg
    B, T = idx.shape
    x = model.tok_emb.weight[idx] + model.pos_emb.weight[:T]
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    hs = cfg.n_embd // cfg.n_head
    for i, blk in enumerate(model.blocks):
        if i not in drop_attn:
            h = F.layer_norm(x, (cfg.n_embd,), blk.ln1.weight, blk.ln1.bias)
            qkv = h @ blk.attn.qkv.weight.T + (blk.attn.qkv.bias if blk.attn.qkv.bias is not None else 0)
            q, k, v = qkv.split(cfg.n_embd, dim=-1)
            q, k, v = (t.view(B, T, cfg.n_head, hs).transpose(1, 2) for t in (q, k, v))
            att = (q @ k.transpose(-2, -1)) / hs ** 0.5
            att = att.masked_fill(~mask, float("-inf")).softmax(-1)
            y = (att @ v).transpose(1, 2).reshape(B, T, cfg.n_embd)
            x = x + y @ blk.attn.proj.weight.T + (blk.attn.proj.bias if blk.attn.proj.bias is not None else 0)
        if i not in drop_ffn:
            h = F.layer_norm(x, (cfg.n_embd,), blk.ln2.weight, blk.ln2.bias)
            z = h @ blk.ffn.fc.weight.T + (blk.ffn.fc.bias if blk.ffn.fc.bias is not None else 0)
            z = F.relu(z) if cfg.activation == "relu" else F.gelu(z)
            x = x + z @ blk.ffn.proj.weight.T + (blk.ffn.proj.bias if blk.ffn.proj.bias is not None else 0)
    x = F.layer_norm(x, (cfg.n_embd,), model.ln_f.weight, model.ln_f.bias)
    return model.head(x)


@pytest.mark.parametrize("drop_attn,drop_ffn", [((), ()), ((0,), ()), ((), (0,)), ((3,), (5,)),
                                                ((1, 2), (1, 4))])
def test_intervened_forward_equals_a_hand_written_one(engine, drop_attn, drop_ffn):
    model = engine.model
    idx = torch.from_numpy(engine.tok.encode("the king and queen shall go").astype(np.int64))[None]
    iv = Intervention(drop_attn=frozenset(drop_attn), drop_ffn=frozenset(drop_ffn))
    with torch.no_grad():
        got, _ = model(idx, intervention=iv)
        want = hand_forward(model, idx, drop_attn, drop_ffn)
        last, acts = model.read_last(idx, "ffn", intervention=iv)
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(last, got[:, -1], atol=1e-5)
    for b in drop_ffn:
        assert not acts[b].any()  # a dropped FFN is recorded as zeros
    if not iv:
        assert torch.equal(got, model(idx)[0])
    else:
        assert not torch.allclose(got, model(idx)[0], atol=1e-4)


def test_only_ffn_and_checks(engine):
    L = engine.model.cfg.n_layer
    iv = Intervention.only_ffn([3, 4], L)
    assert iv.drop_ffn == frozenset(set(range(L)) - {3, 4}) and not iv.drop_attn
    with pytest.raises(ValueError, match="blocks 0-5"):
        Intervention(drop_attn=frozenset({L})).check(L)


def test_the_engine_and_the_evaluation_run_with_an_intervention(engine):
    from app.approx import QueryError
    from app.metrics import hellinger
    from app.study.evaluation import evaluate

    iv = Intervention(drop_ffn=frozenset({0}))
    plain, dropped = engine.query("the king a"), engine.query("the king a", intervention=iv)
    idx = torch.from_numpy(engine.tok.encode("the king a").astype(np.int64))[None]
    with torch.no_grad():
        want = torch.softmax(hand_forward(engine.model, idx, (), (0,))[0, -1].double(), -1).numpy()
    assert np.allclose(dropped.model_probs, want, atol=1e-6)
    assert hellinger(plain.model_probs, dropped.model_probs) > 1e-3
    assert dropped.blocks[0].n == 0  # a zero FFN output has no cosine neighbours
    rows = np.arange(40)
    a, b = evaluate(engine, rows, progress=False), evaluate(engine, rows, progress=False, intervention=iv)
    assert a["hellinger"]["mean"] != b["hellinger"]["mean"]
    with pytest.raises(QueryError, match="blocks 0-5"):
        engine.query("the king a", intervention=Intervention(drop_attn=frozenset({9})))
