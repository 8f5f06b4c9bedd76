"""Named architectures with their training recipes.

``blog`` is METHOD.md's recipe exactly; ``blog-cpu`` keeps that architecture with a recipe sized for
two CPU cores; ``tiny`` is the same six-block design scaled down to train in minutes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .errors import FfnlensError
from .gpt import GPTConfig


@dataclass
class Phase:
    until: int  # last step (exclusive) of this phase
    lr: float  # peak learning rate of the phase
    fresh_optimizer: bool = False  # start the phase with a new AdamW (as the reference did)
    schedule: str = "constant"  # "constant", or "cosine" decay from lr to min_lr over the phase
    min_lr: float = 0.0
    warmup: int = 0  # linear warm-up steps at the start of the phase


@dataclass
class Recipe:
    batch_size: int  # windows per step
    window: int  # characters per window (<= block_size)
    phases: list[Phase]
    eval_interval: int  # evaluate every this many steps
    eval_iters: int  # batches per evaluation and split
    seed: int = 1337
    weight_decay: float = 0.01  # AdamW's default
    betas: tuple[float, float] = (0.9, 0.999)
    checkpoint_interval: int = 100  # steps between resumable checkpoints

    @property
    def steps(self) -> int:
        return self.phases[-1].until

    def phase_at(self, step: int) -> tuple[int, Phase]:
        for i, ph in enumerate(self.phases):
            if step < ph.until:
                return i, ph
        return len(self.phases) - 1, self.phases[-1]

    def lr_at(self, step: int) -> float:
        import math

        i, ph = self.phase_at(step)
        start = self.phases[i - 1].until if i > 0 else 0
        t = step - start
        if ph.warmup and t < ph.warmup:
            return ph.lr * (t + 1) / ph.warmup
        if ph.schedule == "cosine":
            span = max(1, ph.until - start - ph.warmup)
            frac = min(1.0, (t - ph.warmup) / span)
            return ph.min_lr + 0.5 * (ph.lr - ph.min_lr) * (1 + math.cos(math.pi * frac))
        return ph.lr

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        d = dict(d)
        d["phases"] = [Phase(**p) for p in d["phases"]]
        d["betas"] = tuple(d.get("betas", (0.9, 0.999)))
        return cls(**d)


@dataclass
class Preset:
    name: str
    arch: GPTConfig  # vocab_size is set from the corpus at training time
    recipe: Recipe
    about: str = ""
    extra: dict = field(default_factory=dict)


def _blog() -> Preset:
    return Preset(
        name="blog",
        about="METHOD.md's reference recipe (about 12 hours on 2 CPU cores; train it on a GPU)",
        arch=GPTConfig(block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2),
        recipe=Recipe(
            batch_size=64,
            window=256,
            phases=[Phase(until=3500, lr=3e-4, fresh_optimizer=True),
                    Phase(until=4500, lr=3e-5, fresh_optimizer=True)],
            eval_interval=500,
            eval_iters=200,
        ),
    )


def _blog_cpu() -> Preset:
    # Same architecture; 8 windows of the full 256 characters per step (every position is trained),
    # a higher peak rate with warm-up and cosine decay to make up for far fewer tokens. 3,000 steps
    # take about 1.0 s each on 2 otherwise idle cores (50 minutes; the ceiling is 2 hours).
    return Preset(
        name="blog-cpu",
        about="the reference architecture with a recipe that trains on 2 CPU cores in under 2 hours",
        arch=GPTConfig(block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2),
        recipe=Recipe(
            batch_size=8,
            window=256,
            phases=[Phase(until=3000, lr=1e-3, fresh_optimizer=True, schedule="cosine",
                          min_lr=1e-4, warmup=100)],
            eval_interval=500,
            eval_iters=10,
            betas=(0.9, 0.99),
        ),
    )


def _tiny() -> Preset:
    return Preset(
        name="tiny",
        about="six blocks of width 128: trains on 2 CPU cores in minutes; the explorer's default",
        arch=GPTConfig(block_size=64, n_layer=6, n_head=4, n_embd=128, dropout=0.1),
        recipe=Recipe(
            batch_size=32,
            window=64,
            phases=[Phase(until=1600, lr=2e-3, fresh_optimizer=True, schedule="cosine",
                          min_lr=2e-4, warmup=100)],
            eval_interval=250,
            eval_iters=20,
            betas=(0.9, 0.99),
        ),
    )


PRESETS = {"tiny": _tiny, "blog-cpu": _blog_cpu, "blog": _blog}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise FfnlensError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]()
