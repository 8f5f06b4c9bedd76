"""Training loop: random windows, AdamW phases, periodic evaluation, resumable checkpoints.

The loop takes already-encoded train and validation ids; finding and splitting the corpus is the
caller's business. State (model, optimizer, RNGs, step, log) is saved atomically every
``checkpoint_interval`` steps under ``run_dir`` and picked up again on the next call.
"""
from __future__ import annotations

import json
import platform
import subprocess
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .checkpoint import CheckpointError, atomic_torch_save, load_torch_file, save_model
from .errors import FfnlensError
from .gpt import GPT, GPTConfig
from .presets import Preset
from .tokenizer import CharTokenizer

STATE = "state.pt"


@dataclass
class Speed:
    """How a CUDA run computes. The default is what the committed ``blog`` models were trained
    with (TF32 matrix products allowed), so the recipe as run is the recipe as written; bfloat16
    autocast and torch.compile are opt-in. A CPU run computes in float32 as always: these settings
    need CUDA."""

    tf32: bool = True  # TF32 matrix products and convolutions (CUDA)
    bf16: bool = False  # bfloat16 autocast of the training forward pass (CUDA)
    compile: bool = False  # torch.compile the model for the training steps (CUDA)

    def apply(self, device: str) -> dict:
        """Set the backends' flags for ``device``; -> what the model's config records."""
        if not device.startswith("cuda"):
            if self.bf16 or self.compile:
                raise FfnlensError("--bf16 and --compile are for CUDA runs; on the CPU ffnlens "
                                   "trains in float32 (use --device cuda on a GPU machine)")
            return {}
        torch.backends.cuda.matmul.allow_tf32 = self.tf32
        torch.backends.cudnn.allow_tf32 = self.tf32
        return asdict(self)

    def autocast(self, device: str):
        """The context the training forward pass runs in."""
        if device.startswith("cuda") and self.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    losses: dict
    wall_time_s: float
    resumed_from: int


def get_batch(data: torch.Tensor, batch_size: int, window: int, gen: torch.Generator):
    ix = torch.randint(len(data) - window, (batch_size,), generator=gen)
    x = torch.stack([data[i : i + window] for i in ix.tolist()])
    y = torch.stack([data[i + 1 : i + 1 + window] for i in ix.tolist()])
    return x.long(), y.long()


@torch.no_grad()
def estimate_loss(model: GPT, data: torch.Tensor, batch_size: int, window: int, iters: int,
                  seed: int, device: str) -> float:
    """Mean loss over ``iters`` random batches drawn with their own seed (same windows each time)."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(iters):
        x, y = get_batch(data, batch_size, window, gen)
        _, loss = model(x.to(device), y.to(device))
        losses.append(loss.item())
    model.train(was_training)
    return float(np.mean(losses))


def code_commit() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{platform.system()} {cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise FfnlensError("--device cuda asked for, but torch sees no CUDA device")
    return device


def train(preset: Preset, tok: CharTokenizer, train_ids: np.ndarray, val_ids: np.ndarray,
          corpus_info: dict, run_dir: Path, out_dir: Path, device: str = "cpu",
          steps: int | None = None, seed: int | None = None, progress: bool = True,
          speed: Speed | None = None) -> TrainResult:
    """Train ``preset`` (resuming from ``run_dir`` when it holds a matching state) and export the
    final weights to ``out_dir``. ``steps`` stops early (the recipe's schedule is unchanged)."""
    recipe = preset.recipe
    if seed is not None:
        recipe.seed = seed
    total = recipe.steps if steps is None else min(steps, recipe.steps)
    cfg = GPTConfig(**{**preset.arch.to_dict(), "vocab_size": len(tok)})
    window = min(recipe.window, cfg.block_size)
    for name, ids in (("training", train_ids), ("validation", val_ids)):
        if len(ids) <= window + 1:
            raise ValueError(f"the {name} split has {len(ids)} characters; it needs more than "
                             f"{window + 1} for windows of {window}")
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    identity = {"preset": preset.name, "arch": cfg.to_dict(), "recipe": recipe.to_dict(),
                "corpus_sha256": corpus_info.get("sha256"), "vocab": tok.chars}

    torch.manual_seed(recipe.seed)
    model = GPT(cfg).to(device)
    speed = speed or Speed()
    speed_used = speed.apply(device)
    step_model = torch.compile(model) if speed.compile else model  # shares model's parameters
    gen = torch.Generator().manual_seed(recipe.seed + 1)
    train_t = torch.from_numpy(train_ids.astype(np.int64))
    val_t = torch.from_numpy(val_ids.astype(np.int64))
    opt, opt_phase, step, log, elapsed = None, -1, 0, [], 0.0
    commit = code_commit()  # the code that started the run (a resumed run keeps its first)

    state_path = run_dir / STATE
    resumed_from = 0
    if state_path.exists():
        afresh = f"remove {run_dir} or pick another --run-dir to start afresh"
        try:  # tensors and plain data only: a planted object is refused, never run
            st = load_torch_file(state_path, "training state")
        except CheckpointError as e:
            raise CheckpointError(f"{e}; {afresh}") from e
        if not isinstance(st, dict) or "identity" not in st:
            raise CheckpointError(f"{state_path} is not an ffnlens training state; {afresh}")
        if st["identity"] == identity:
            model.load_state_dict(st["model"])
            opt_phase = st["opt_phase"]
            opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr_at(st["step"]),
                                    betas=recipe.betas, weight_decay=recipe.weight_decay)
            opt.load_state_dict(st["opt"])
            gen.set_state(st["gen"])
            torch.set_rng_state(st["rng"])
            step, log, elapsed = st["step"], st["log"], st["elapsed"]
            commit = st.get("commit", commit)
            resumed_from = step
        else:
            raise CheckpointError(f"{state_path} belongs to another preset, recipe or corpus; {afresh}")

    def save_state():
        atomic_torch_save({"identity": identity, "model": model.state_dict(), "opt": opt.state_dict(),
                           "opt_phase": opt_phase, "gen": gen.get_state(), "rng": torch.get_rng_state(),
                           "step": step, "log": log, "elapsed": elapsed, "commit": commit}, state_path)

    def evaluate():
        tr = estimate_loss(model, train_t, recipe.batch_size, window, recipe.eval_iters, 1, device)
        va = estimate_loss(model, val_t, recipe.batch_size, window, recipe.eval_iters, 2, device)
        log.append({"step": step, "train": round(tr, 4), "val": round(va, 4),
                    "elapsed_s": round(elapsed, 1)})
        return tr, va

    model.train()
    bar = tqdm(total=total, initial=step, desc=f"train {preset.name}", disable=not progress,
               dynamic_ncols=True)
    t0 = time.time() - elapsed
    loss_ema = None
    while step < total:
        phase_idx, phase = recipe.phase_at(step)
        if opt is None or (phase_idx != opt_phase and phase.fresh_optimizer):
            opt = torch.optim.AdamW(model.parameters(), lr=phase.lr, betas=recipe.betas,
                                    weight_decay=recipe.weight_decay)
        opt_phase = phase_idx
        for g in opt.param_groups:
            g["lr"] = recipe.lr_at(step)
        if step % recipe.eval_interval == 0 and step > 0:
            tr, va = evaluate()
            bar.write(f"step {step}: train {tr:.4f}  val {va:.4f}")
        x, y = get_batch(train_t, recipe.batch_size, window, gen)
        with speed.autocast(device):
            _, loss = step_model(x.to(device), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        elapsed = time.time() - t0
        loss_ema = loss.item() if loss_ema is None else 0.95 * loss_ema + 0.05 * loss.item()
        bar.set_postfix(loss=f"{loss_ema:.3f}", lr=f"{recipe.lr_at(step - 1):.1e}")
        bar.update(1)
        if step % recipe.checkpoint_interval == 0 or step == total:
            save_state()
    bar.close()

    tr, va = evaluate()
    losses = {"train": round(tr, 4), "val": round(va, 4), "window": window}
    # Validation loss on full-context windows and on 64-character windows (every position used).
    for w in sorted({cfg.block_size, min(64, cfg.block_size)}):
        if len(val_ids) > w + 1:
            losses[f"val_{w}"] = round(estimate_loss(model, val_t, recipe.batch_size, w,
                                                     recipe.eval_iters, 3, device), 4)
    with open(run_dir / "log.jsonl", "w") as f:
        for row in log:
            f.write(json.dumps(row) + "\n")
    info = {
        "preset": preset.name,
        "recipe": recipe.to_dict(),
        "corpus": corpus_info,
        "steps": step,
        "losses": losses,
        "log": log,
        "wall_time_s": round(elapsed, 1),
        "machine": machine(),
        "device": device,
        **({"cuda": speed_used} if speed_used else {}),
        "code_commit": commit,
        "params": model.num_params(),
    }
    model.eval()
    save_model(model, tok, info, out_dir)
    return TrainResult(out_dir=out_dir, steps=step, losses=losses, wall_time_s=elapsed,
                       resumed_from=resumed_from)
