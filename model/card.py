"""Model cards: a short human-readable CARD.md and a card.json with greedy samples for checks.

    python -m model.card MODEL_DIR [--log TRAINING_LOG] [--note TEXT]
                        [--recheck CORPUS --recheck-batches N]

``--recheck`` recomputes the losses on this machine's CPU from the corpus the model was trained on:
the first N of the very batches ``ffnlens train`` drew for its final estimate (same seeds, same
windows), so a model trained elsewhere (a GPU, TF32 products) is checked where it is used.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import torch

from .checkpoint import load_model
from .errors import FfnlensError
from .files import atomic_write_json

SAMPLE_PROMPTS = ("\n", "The king", "What is ")
SAMPLE_CHARS = 40


def greedy_samples(model, tok) -> dict[str, str]:
    out = {}
    for p in SAMPLE_PROMPTS:
        idx = torch.from_numpy(tok.encode(p).astype("int64"))[None]
        out[p] = tok.decode(model.generate(idx, SAMPLE_CHARS)[0, len(p) :].tolist())
    return out


TRAIN_FRACTION = 0.9  # the corpus split ffnlens trains with (app.corpus.TRAIN_FRACTION)


def recheck_losses(model, tok, info: dict, corpus: Path, batches: int) -> dict:
    """Train and validation loss on the first ``batches`` of the batches the final estimate of
    ``ffnlens train`` drew (its seeds 1 and 2, its windows), on the CPU in float32."""
    import numpy as np

    from .train import estimate_loss

    text = Path(corpus).read_text(encoding="utf-8")
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != info["corpus"]["sha256"]:
        raise FfnlensError(f"{corpus} is not the text the model was trained on "
                           f"(sha256 {info['corpus']['sha256'][:16]}...)")
    ids = torch.from_numpy(tok.encode(text).astype(np.int64))
    n = int(TRAIN_FRACTION * len(text))
    r = info["recipe"]
    out = {"batches": batches, "batch_size": r["batch_size"], "window": r["window"]}
    for name, data, seed in (("train", ids[:n], 1), ("val", ids[n:], 2)):
        out[name] = round(estimate_loss(model, data, r["batch_size"], r["window"], batches, seed, "cpu"), 4)
    return out


def write_card(model_dir: Path, log: Path | None = None, note: str = "", corpus: Path | None = None,
               recheck_batches: int = 8) -> Path:
    model_dir = Path(model_dir)
    model, tok, info = load_model(model_dir)
    samples = greedy_samples(model, tok)
    card = {"weights_sha256": info["weights_sha256"], "greedy_samples": samples,
            "sample_chars": SAMPLE_CHARS}
    recheck = ""
    if corpus is not None:
        card["cpu_recheck"] = rc = recheck_losses(model, tok, info, corpus, recheck_batches)
        recheck = (f"\n- Rechecked on this CPU ({torch.__version__}, float32): on the first {rc['batches']} of "
                   f"those batches ({rc['batch_size']} windows of {rc['window']}), train {rc['train']:.4f}, "
                   f"validation {rc['val']:.4f} (`python -m model.card {model_dir.name} --recheck CORPUS`).")
    atomic_write_json(model_dir / "card.json", card)
    if log is not None and Path(log).exists():
        shutil.copyfile(log, model_dir / "train.log")
    a, r, L = info["arch"], info["recipe"], info["losses"]
    phases = "; ".join(
        f"steps to {p['until']}: lr {p['lr']:g} ({p['schedule']}"
        + (f" to {p['min_lr']:g}" if p["schedule"] == "cosine" else "")
        + (f", {p['warmup']} warm-up" if p["warmup"] else "")
        + (", fresh AdamW" if p["fresh_optimizer"] else "") + ")"
        for p in r["phases"])
    curve = "\n".join(f"| {row['step']} | {row['train']:.4f} | {row['val']:.4f} | {row['elapsed_s']:.0f} |"
                      for row in info.get("log", []))
    extra_val = ", ".join(f"{k.split('_')[1]}-character windows {v:.4f}"
                          for k, v in L.items() if k.startswith("val_"))
    text = f"""# Model card: {model_dir.name}

Preset `{info['preset']}`, trained by `ffnlens train` from this repository.

- Architecture: {a['n_layer']} blocks x {a['n_head']} heads x width {a['n_embd']}, context {a['block_size']},
  dropout {a['dropout']}, FFN {a['activation']} of width {a['ffn_mult'] * a['n_embd']}, untied head;
  {info['params']:,} parameters; vocabulary of {a['vocab_size']} characters.
- Corpus: `{info['corpus']['name']}`, {info['corpus']['chars']:,} characters,
  sha256 `{info['corpus']['sha256']}`; first 90 % train, last 10 % validation.
- Recipe: seed {r['seed']}, {r['batch_size']} windows of {r['window']} characters per step, AdamW
  (betas {tuple(r['betas'])}, weight decay {r['weight_decay']}); {phases}.
- Trained {info['steps']:,} steps in {info['wall_time_s'] / 60:.1f} minutes on {info['machine']}
  (device {info['device']}). {note}
- Final loss on {r['eval_iters']} random batches per split: train {L['train']:.4f}, validation
  {L['val']:.4f}; validation on {extra_val}.{recheck}
- Code: commit `{info['code_commit']}`. Weights: float16 safetensors, sha256
  `{info['weights_sha256']}`.

## Loss curve

| step | train | validation | seconds |
|---:|---:|---:|---:|
{curve}

## Greedy continuations ({SAMPLE_CHARS} characters; checked by the tests)

""" + "\n".join(f"- {json.dumps(p)} -> {json.dumps(s)}" for p, s in samples.items()) + "\n"
    (model_dir / "CARD.md").write_text(text)
    return model_dir / "CARD.md"


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model_dir")
    ap.add_argument("--log", default=None)
    ap.add_argument("--note", default="")
    ap.add_argument("--recheck", default=None, metavar="CORPUS",
                    help="recompute the losses on the CPU from this corpus")
    ap.add_argument("--recheck-batches", type=int, default=8)
    a = ap.parse_args()
    d = Path(a.model_dir)
    if not (d / "config.json").exists():
        from .checkpoint import resolve_model_dir

        d = resolve_model_dir(a.model_dir)
    print(write_card(d, a.log, a.note, a.recheck, a.recheck_batches))
