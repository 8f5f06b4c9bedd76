"""METHOD.md's reference settings, and the one rule that carries them to a model of any depth.

The reference values were hand-tuned for the write-up's 6-block model. For a model of L blocks, a
value is read at the same relative depth: block b of L sits at position 5 b / (L - 1) of the
reference's blocks 0..5, and the value there is interpolated linearly between its two neighbours
(a 1-block model takes block 0's). On a 6-block model this gives METHOD.md's values exactly. The
same rule places the default blend weights and the neighbour-set sizes that calibration aims its
thresholds at, so a deeper or shallower model gets defaults that agree with each other; the
reference thresholds themselves are only offered by name to 6-block models, the depth they were
made for.
"""
from __future__ import annotations

import numpy as np

REFERENCE_DEPTH = 6
# METHOD.md's hand-tuned values for the reference model (blocks 0..5).
REFERENCE_THRESHOLDS = (0.95, 0.94, 0.85, 0.76, 0.81, 0.89)
REFERENCE_WEIGHTS = (0.01, 0.01, 0.1, 1.5, 6.0, 0.01)
# The reference thresholds' median neighbour-set sizes on its pool of 858,923 strings.
REFERENCE_SIZES = (94, 47, 70, 108, 175, 2237)
REFERENCE_POOL = 858_923
DEPTH_RULE = ("METHOD.md's six values read at each block's relative depth (block b of L at "
              "5 b / (L - 1), linearly interpolated); exactly METHOD.md's on a 6-block model")


def by_depth(values, n_layer: int) -> list[float]:
    """The six reference ``values`` carried to ``n_layer`` blocks by relative depth."""
    if n_layer == REFERENCE_DEPTH:
        return [float(v) for v in values]
    pos = np.linspace(0, REFERENCE_DEPTH - 1, n_layer) if n_layer > 1 else np.zeros(1)
    return [float(v) for v in np.interp(pos, np.arange(REFERENCE_DEPTH), values)]


def default_weights(n_layer: int) -> list[float]:
    """The blend weights used when neither the URL nor the store gives any."""
    return by_depth(REFERENCE_WEIGHTS, n_layer)


def fallback_thresholds(n_layer: int) -> list[float]:
    """The thresholds used when the store records no calibrated ones (stores built before
    calibration existed)."""
    return by_depth(REFERENCE_THRESHOLDS, n_layer)


def target_sizes(n_layer: int, pool_size: int) -> list[int]:
    """The neighbour-set sizes calibration aims at: the reference's, by depth, scaled to the pool."""
    scale = pool_size / REFERENCE_POOL
    return [max(1, int(round(t * scale))) for t in by_depth(REFERENCE_SIZES, n_layer)]


def reference_thresholds_for(n_layer: int) -> list[float] | None:
    """METHOD.md's thresholds by name ("reference"): only for the depth they were made for."""
    return list(REFERENCE_THRESHOLDS) if n_layer == REFERENCE_DEPTH else None
