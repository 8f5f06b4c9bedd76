"""This model's other stores of the same pool (in-context, attention or residual) as baselines."""
from __future__ import annotations

from dataclasses import replace

from ...settings import Settings
from ...workspace import sibling_engines
from .store_baseline import StoreBaseline


def sibling_baselines(settings: Settings, ws, qs) -> dict:
    """The approximation on this model's other stores of the same pool (`ffnlens index --context T`
    or `--activation attn|resid`), under the same settings but each store's calibrated thresholds."""
    return {f"neighbours-{label}": StoreBaseline(eng, replace(qs, thresholds=None), label)
            for label, eng in sibling_engines(ws, settings.stores).items()}
