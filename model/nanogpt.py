"""nanoGPT checkpoints (``ckpt.pt`` and ``meta.pkl``) as ffnlens model directories.

nanoGPT's ``train.py`` saves a dict with ``model`` (the state dict; torch.compile prefixes its keys
with ``_orig_mod.``), ``model_args`` (n_layer, n_head, n_embd, block_size, bias, vocab_size,
dropout) and training state; its character datasets write ``meta.pkl`` with ``stoi`` and ``itos``.
Its GPT is ours with these settings: a GELU FFN (``mlp.c_fc``, ``mlp.c_proj``) four times as wide,
one fused query/key/value map (``attn.c_attn``), biases everywhere or nowhere (the ``bias`` flag
covers the LayerNorms too), LayerNorm eps 1e-5, and a head without bias tied to the token embedding.
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from .checkpoint import CheckpointError, save_model
from .files import sha256_file
from .gpt import GPT, GPTConfig
from .tokenizer import CharTokenizer

# nanoGPT name -> ours; {i} is the block index.
RENAMES = {
    "transformer.wte.weight": "tok_emb.weight",
    "transformer.wpe.weight": "pos_emb.weight",
    "transformer.ln_f.weight": "ln_f.weight",
    "transformer.ln_f.bias": "ln_f.bias",
    "lm_head.weight": "head.weight",
}
BLOCK_RENAMES = {
    "ln_1": "ln1", "ln_2": "ln2", "attn.c_attn": "attn.qkv", "attn.c_proj": "attn.proj",
    "mlp.c_fc": "ffn.fc", "mlp.c_proj": "ffn.proj",
}
BLOCK_KEY = re.compile(r"transformer\.h\.(\d+)\.(.+)\.(weight|bias)$")


def convert_state(state: dict) -> dict:
    """nanoGPT's state dict -> ours (the ``_orig_mod.`` prefix dropped, causal-mask buffers skipped)."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("_orig_mod.")
        if key.endswith(".attn.bias") and value.dim() == 4:  # the causal mask of non-flash attention
            continue
        if key in RENAMES:
            out[RENAMES[key]] = value
            continue
        m = BLOCK_KEY.match(key)
        if not m or m.group(2) not in BLOCK_RENAMES:
            raise CheckpointError(f"unexpected tensor {key!r} in the nanoGPT checkpoint")
        out[f"blocks.{m.group(1)}.{BLOCK_RENAMES[m.group(2)]}.{m.group(3)}"] = value
    return out


def read_vocab(meta_path: Path, vocab_size: int) -> str:
    """The vocabulary string (character of id 0, 1, ...) from a nanoGPT ``meta.pkl``."""
    try:
        with open(meta_path, "rb") as f:
            meta = pickle.load(f)
        itos = meta["itos"]
        chars = "".join(itos[i] for i in range(len(itos)))
    except (OSError, pickle.UnpicklingError, KeyError, TypeError, EOFError) as e:
        raise CheckpointError(f"{meta_path} is not a nanoGPT meta.pkl with an 'itos' table ({e})") from e
    if any(len(c) != 1 for c in itos.values()):
        raise CheckpointError(f"{meta_path}: ffnlens reads character-level models; this vocabulary "
                              "has multi-character tokens")
    if len(chars) != vocab_size:
        raise CheckpointError(f"{meta_path} has {len(chars)} characters but the checkpoint's "
                              f"vocab_size is {vocab_size}: they belong to different datasets")
    return chars


def import_nanogpt(ckpt_path, meta_path, out_dir, name: str | None = None) -> Path:
    """Write the nanoGPT checkpoint as a model directory (float32 weights); returns it."""
    ckpt_path, meta_path = Path(ckpt_path), Path(meta_path)
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        args, state = ckpt["model_args"], ckpt["model"]
    except (OSError, RuntimeError, pickle.UnpicklingError, KeyError, TypeError, EOFError) as e:
        raise CheckpointError(f"{ckpt_path} is not a nanoGPT checkpoint (a dict with 'model' and "
                              f"'model_args'): {e}") from e
    bias = bool(args.get("bias", True))
    cfg = GPTConfig(vocab_size=int(args["vocab_size"]), block_size=int(args["block_size"]),
                    n_layer=int(args["n_layer"]), n_head=int(args["n_head"]),
                    n_embd=int(args["n_embd"]), ffn_mult=4, dropout=float(args.get("dropout", 0.0)),
                    activation="gelu", bias=bias, qkv_bias=bias, head_bias=False, tied_head=True)
    tok = CharTokenizer(read_vocab(meta_path, cfg.vocab_size))
    ours = convert_state(state)
    head = ours.pop("head.weight", None)
    if head is not None and not torch.equal(head, ours["tok_emb.weight"]):
        raise CheckpointError(f"{ckpt_path}: the head is not tied to the token embedding, as nanoGPT's is")
    model = GPT(cfg)
    missing, unexpected = model.load_state_dict(ours, strict=False)
    missing = [k for k in missing if k != "head.weight"]
    if missing or unexpected:
        raise CheckpointError(f"{ckpt_path}: missing tensors {missing}, unexpected tensors {unexpected}")
    info = {
        "name": name or Path(out_dir).name,
        "source": {"format": "nanogpt", "checkpoint": str(ckpt_path.resolve()),
                   "checkpoint_sha256": sha256_file(ckpt_path), "iter_num": ckpt.get("iter_num"),
                   "best_val_loss": float(ckpt["best_val_loss"]) if "best_val_loss" in ckpt else None},
        "losses": {"val": float(ckpt["best_val_loss"])} if "best_val_loss" in ckpt else {},
        "corpus": {},  # nanoGPT does not record its text: `--corpus` names it
    }
    return save_model(model, tok, info, Path(out_dir), dtype=torch.float32)
