"""METHOD.md's noise floor as baselines: the committed models of the same recipe with other seeds."""
from __future__ import annotations

from model.checkpoint import COMMITTED, load_model

from .logit_lens import LogitLens


def committed_seeds(model_name: str, chars: str, corpus_sha256: str, device: str = "cpu") -> dict:
    """The committed models ``model_name``-seedN (the same recipe, other seeds) of the same
    vocabulary and corpus, by seed ("1442", ...)."""
    out = {}
    for cfg in sorted(COMMITTED.glob(f"{model_name}-seed*/config.json")):
        model, tok, info = load_model(cfg.parent, device=device)
        if tok.chars == chars and info.get("corpus", {}).get("sha256") == corpus_sha256:
            out[cfg.parent.name.rsplit("-seed", 1)[1]] = model
    return out


def seed_models(ws, device: str) -> dict:
    """METHOD.md's noise floor: the committed models NAME-seedN (the same recipe, other seeds, the
    same corpus and vocabulary) as baselines named seed-N, each answering with its own softmax."""
    found = committed_seeds(ws.spec.model_name, ws.tok.chars, ws.model_info["corpus"]["sha256"], device)
    return {f"seed-{seed}": LogitLens(model, -1, device) for seed, model in found.items()}
