"""Every committed model loads, matches its recorded hash, and still writes its recorded text."""
import json

import numpy as np
import pytest

from model.card import SAMPLE_CHARS, greedy_samples
from model.checkpoint import COMMITTED, load_model
from model.files import sha256_file

MODELS = sorted(p.parent.name for p in COMMITTED.glob("*/config.json"))


def test_the_default_model_is_committed():
    assert "tiny" in MODELS


@pytest.mark.parametrize("name", MODELS)
def test_committed_model(name):
    d = COMMITTED / name
    model, tok, info = load_model(name)  # verifies the weights' sha256 against config.json
    card = json.loads((d / "card.json").read_text())
    assert card["weights_sha256"] == info["weights_sha256"] == sha256_file(d / "model.safetensors")
    assert info["arch"]["n_layer"] == 6 and info["arch"]["vocab_size"] == len(tok)
    assert info["corpus"]["sha256"] and info["losses"]["val"] > 0 and info["steps"] > 0
    assert "CARD.md" in {p.name for p in d.iterdir()}
    assert card["sample_chars"] == SAMPLE_CHARS
    assert greedy_samples(model, tok) == card["greedy_samples"]


def test_default_model_was_trained_on_the_default_corpus():
    from app.corpus import default_corpus

    _, _, info = load_model("tiny")
    assert info["corpus"]["sha256"] == default_corpus().sha256


def test_the_noise_floor_models_answer_as_baselines_for_tiny(settings):
    from app.study.baselines.seeds import seed_models
    from app.workspace import open_workspace

    ws = open_workspace(settings, model="tiny")
    seeds = seed_models(ws, "cpu")
    assert sorted(seeds) == ["seed-1442", "seed-88", "seed-99999"]
    prompt = ws.ids[None, 1000:1010]
    p88, p1442 = seeds["seed-88"].distributions(prompt), seeds["seed-1442"].distributions(prompt)
    assert abs(p88.sum() - 1) < 1e-9 and not np.allclose(p88, p1442)
