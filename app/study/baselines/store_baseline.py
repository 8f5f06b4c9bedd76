"""The approximation on another store of the same model and pool, as a baseline."""
from __future__ import annotations

import numpy as np

from ..evaluation import evaluate


class StoreBaseline:
    """The approximation computed on another store of the same model and pool (the attention
    outputs or the residual stream instead of the FFN outputs, or an in-context store) as a
    baseline."""

    def __init__(self, engine, settings, label: str | None = None):
        self.engine, self.settings = engine, settings
        self.name = f"neighbours-{label or engine.activation}"

    def distributions(self, prompts_ids) -> np.ndarray:
        ev = evaluate(self.engine, np.asarray(prompts_ids), self.settings, progress=False, keep=True)
        return ev["arrays"]["approx"]
