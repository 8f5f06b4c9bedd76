"""Checkpoints: float16 safetensors weights beside a JSON config.

A model directory holds ``model.safetensors`` and ``config.json`` (architecture, vocabulary, recipe,
corpus hash, losses, ...). Every file is written aside and renamed into place, so a crash never
leaves a half-written checkpoint where a good one was.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .errors import FfnlensError
from .files import atomic_write_json, sha256_file
from .gpt import GPT, GPTConfig
from .tokenizer import CharTokenizer

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
COMMITTED = Path(__file__).resolve().parent / "weights"  # models that ship with the repository


class CheckpointError(FfnlensError):
    """A model directory is missing, incomplete or inconsistent."""


def atomic_torch_save(obj, path: Path) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_model(model: GPT, tok: CharTokenizer, info: dict, out_dir: Path,
               dtype: torch.dtype = torch.float16) -> Path:
    """Write weights (``dtype``) and config to ``out_dir``; returns the directory."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    if model.cfg.tied_head:
        state.pop("head.weight", None)
    tmp = out_dir / (WEIGHTS + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, out_dir / WEIGHTS)
    config = {"arch": model.cfg.to_dict(), "vocab": tok.chars, **info,
              "weights_sha256": sha256_file(out_dir / WEIGHTS)}
    atomic_write_json(out_dir / CONFIG, config)
    return out_dir


def resolve_model_dir(name_or_path: str | os.PathLike) -> Path:
    """A committed model by name (``tiny``, ``blog-cpu``, ...) or a directory path."""
    p = Path(name_or_path)
    if (p / CONFIG).exists():
        return p
    if (COMMITTED / str(name_or_path) / CONFIG).exists():
        return COMMITTED / str(name_or_path)
    names = sorted(d.name for d in COMMITTED.iterdir() if (d / CONFIG).exists()) if COMMITTED.exists() else []
    raise CheckpointError(
        f"no model at {str(name_or_path)!r}: give a directory holding {CONFIG} and {WEIGHTS}, "
        f"or one of the committed models: {', '.join(names) or '(none)'}"
    )


def load_model(name_or_path, device: str = "cpu", dtype: torch.dtype = torch.float32,
               verify: bool = True) -> tuple[GPT, CharTokenizer, dict]:
    """Load a model directory in eval mode; checks the weights' hash against the config."""
    d = resolve_model_dir(name_or_path)
    try:
        config = json.loads((d / CONFIG).read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{d / CONFIG} is not valid JSON: {e}") from e
    wpath = d / WEIGHTS
    if not wpath.exists():
        raise CheckpointError(f"{wpath} is missing")
    if verify and config.get("weights_sha256") and sha256_file(wpath) != config["weights_sha256"]:
        raise CheckpointError(f"{wpath} does not match the hash in {d / CONFIG}: the weights are "
                              "corrupt or belong to another model")
    cfg = GPTConfig.from_dict(config["arch"])
    tok = CharTokenizer(config["vocab"])
    if len(tok) != cfg.vocab_size:
        raise CheckpointError(f"{d / CONFIG}: vocabulary has {len(tok)} characters, the "
                              f"architecture expects {cfg.vocab_size}")
    model = GPT(cfg)
    state = load_file(str(wpath))
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    missing = [k for k in missing if not (cfg.tied_head and k == "head.weight")]
    if missing or unexpected:
        raise CheckpointError(f"{wpath}: missing tensors {missing}, unexpected tensors {unexpected}")
    model.to(device=device, dtype=dtype).eval()
    config["dir"] = str(d)
    config["sha256"] = config.get("weights_sha256") or sha256_file(wpath)
    return model, tok, config
