"""A micro world built in seconds: a small corpus, a six-block model trained briefly, its store."""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parent.parent
TINYSHAKESPEARE = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"


def micro_text(chars: int = 6000, seed: int = 0) -> str:
    """Deterministic pseudo-verse: repeated words, so strings recur with varied continuations."""
    rng = random.Random(seed)
    words = ("the king and queen shall go to bed where good men sleep but lords do wake "
             "speak now or hold thy peace my lord I will not").split()
    lines, n = [], 0
    while n < chars:
        line = " ".join(rng.choice(words) for _ in range(rng.randint(3, 9)))
        line = line[0].upper() + line[1:] + rng.choice([".", ",", "?", "!", ";"])
        lines.append(line)
        n += len(line) + 1
    return "\n".join(lines)[:chars] + "\n"


@pytest.fixture(scope="session")
def micro_corpus(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("corpus") / "micro.txt"
    p.write_text(micro_text())
    return p


@pytest.fixture(scope="session")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ffnlens-home")


@pytest.fixture(scope="session")
def micro_preset():
    from model.presets import Phase, Preset, Recipe
    from model.gpt import GPTConfig

    return Preset(
        name="micro",
        arch=GPTConfig(block_size=32, n_layer=6, n_head=2, n_embd=32, dropout=0.0),
        recipe=Recipe(batch_size=16, window=32,
                      phases=[Phase(until=60, lr=3e-3, fresh_optimizer=True)],
                      eval_interval=30, eval_iters=2, checkpoint_interval=20),
    )


@pytest.fixture(scope="session")
def micro_model_dir(home, micro_corpus, micro_preset) -> Path:
    from app.corpus import load_corpus
    from model.tokenizer import CharTokenizer
    from model.train import train

    corpus = load_corpus(micro_corpus)
    tok = CharTokenizer.from_text(corpus.text)
    ids = tok.encode(corpus.text)
    out = home / "models" / "micro"
    train(micro_preset, tok, ids[: corpus.n_train], ids[corpus.n_train :], corpus.info(),
          home / "runs" / "micro", out, progress=False)
    return out


@pytest.fixture(scope="session")
def settings(home):
    from app.settings import Settings

    return Settings(home=home, device="cpu", model="micro")


@pytest.fixture(scope="session")
def workspace(settings, micro_model_dir, micro_corpus):
    from app.workspace import open_workspace

    return open_workspace(settings, model=str(micro_model_dir), corpus=str(micro_corpus))


@pytest.fixture(scope="session")
def engine(workspace):
    from app.workspace import build_index, open_engine

    build_index(workspace, progress=False, ivf_kind="sq8")  # every index, as `ffnlens index` builds
    return open_engine(workspace, progress=False)


@pytest.fixture(scope="session")
def client(workspace, engine):
    from fastapi.testclient import TestClient

    from app.web import create_app
    from app.workspace import about

    return TestClient(create_app(engine, about(workspace, engine)))


@pytest.fixture(scope="session")
def sharded_workspaces(workspace, engine, tmp_path_factory):
    """The micro store built again in 1, 2 and 4 shards (app/shard_build.py), by shard count."""
    from dataclasses import replace

    from app.shard_build import build_sharded

    root = tmp_path_factory.mktemp("sharded")
    out = {}
    for n in (1, 2, 4):
        ws = replace(workspace, store_dir=root / f"shards{n}", shards=n)
        build_sharded(ws, n, progress=False)
        out[n] = ws
    return out
