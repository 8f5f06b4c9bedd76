"""Checkpoints: float16 safetensors weights beside a JSON config.

A model directory holds ``model.safetensors`` and ``config.json`` (architecture, vocabulary, recipe,
corpus hash, losses, ...). Every file is written aside and renamed into place, so a crash never
leaves a half-written checkpoint where a good one was.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import warnings
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


def load_torch_file(path, what: str):
    """``torch.load`` of a file that may come from anyone: tensors and plain data only
    (``weights_only=True``), never code. Every failure is one line naming the file and ``what`` it
    should have been."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no {what} at {path}")
    try:
        with warnings.catch_warnings():  # e.g. torch's note on an old file's pickle protocol
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        names = _unsafe_globals(path, str(e))
        if names:
            raise CheckpointError(
                f"{path} refused: it names Python objects ({', '.join(names)}) that loading would "
                f"call, which can run any code; ffnlens reads only tensors and plain data from a "
                f"{what}") from e
        raise CheckpointError(f"{path} is not a {what} (not a file torch.save wrote)") from e
    except (RuntimeError, OSError, EOFError, ValueError, TypeError, AttributeError, KeyError,
            IndexError, MemoryError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is not a {what} (not a file torch.save wrote: {reason})") from e


def _unsafe_globals(path: Path, message: str) -> list[str]:
    """The Python objects (module.name) a checkpoint names that weights-only loading refuses."""
    try:
        names = list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # a legacy (non-zip) file or a damaged one: the error message names the first
        names = []
    names += [m for m in re.findall(r"GLOBAL ([\w.]+)", message) if m not in names]
    return names[:5] + (["..."] if len(names) > 5 else [])


def _non_finite(state: dict) -> str | None:
    """The first tensor of ``state`` holding NaN or an infinity, or None."""
    for key, value in state.items():
        if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
            return key
    return None


def atomic_torch_save(obj, path: Path) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_model(model: GPT, tok: CharTokenizer, info: dict, out_dir: Path,
               dtype: torch.dtype = torch.float16, metadata: dict | None = None) -> Path:
    """Write weights (``dtype``) and config to ``out_dir``; returns the directory. ``metadata``
    (strings) goes into the weights file's header, and so into its hash."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    if model.cfg.tied_head:
        state.pop("head.weight", None)
    tmp = out_dir / (WEIGHTS + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt", **(metadata or {})})
    os.replace(tmp, out_dir / WEIGHTS)
    config = {"arch": model.cfg.to_dict(), "vocab": tok.chars, **info,
              "weights_sha256": sha256_file(out_dir / WEIGHTS)}
    atomic_write_json(out_dir / CONFIG, config)
    return out_dir


def resolve_model_dir(name_or_path: str | os.PathLike, homes=()) -> Path:
    """A directory path, or a model by name: a committed one (``tiny``, ``blog-cpu``, ...) first,
    then one under each of ``homes`` (e.g. $FFNLENS_HOME/models, where ``train`` and
    ``import-nanogpt`` write)."""
    p = Path(name_or_path)
    if (p / CONFIG).exists():
        return p
    name = str(name_or_path)
    for root in (COMMITTED, *map(Path, homes)):
        if name and (root / name / CONFIG).exists():
            return root / name
    listed = "; ".join(f"under {root}: {', '.join(_names(root)) or '(none)'}" for root in homes)
    raise CheckpointError(
        f"no model at {name!r}: give a directory holding {CONFIG} and {WEIGHTS}, or the name of one "
        f"of the committed models: {', '.join(_names(COMMITTED)) or '(none)'}"
        + (f", or of a model {listed}" if listed else "")
    )


def _names(root: Path) -> list[str]:
    return sorted(d.name for d in root.iterdir() if (d / CONFIG).exists()) if root.is_dir() else []


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
    bad = _non_finite(state)
    if bad is not None:
        raise CheckpointError(f"{wpath}: tensor {bad!r} holds NaN or infinite values; ffnlens refuses "
                              "a model whose weights are not all finite")
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    missing = [k for k in missing if not (cfg.tied_head and k == "head.weight")]
    if missing or unexpected:
        raise CheckpointError(f"{wpath}: missing tensors {missing}, unexpected tensors {unexpected}")
    model.to(device=device, dtype=dtype).eval()
    config["dir"] = str(d)
    config["sha256"] = config.get("weights_sha256") or sha256_file(wpath)
    return model, tok, config
