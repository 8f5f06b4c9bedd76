"""METHOD.md's noise floor as baselines: the committed models of the same recipe with other seeds."""
from __future__ import annotations

from model.checkpoint import COMMITTED, load_model

from .logit_lens import LogitLens


def seed_models(ws, device: str) -> dict:
    """METHOD.md's noise floor: the committed models NAME-seedN (the same recipe, other seeds, the
    same corpus and vocabulary) as baselines named seed-N, each answering with its own softmax."""
    out = {}
    for cfg in sorted(COMMITTED.glob(f"{ws.spec.model_name}-seed*/config.json")):
        model, tok, info = load_model(cfg.parent, device=device)
        if tok.chars == ws.tok.chars and info["corpus"]["sha256"] == ws.model_info["corpus"]["sha256"]:
            out[f"seed-{cfg.parent.name.rsplit('-seed', 1)[1]}"] = LogitLens(model, -1, device)
    return out
