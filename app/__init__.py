"""ffnlens: see how a small language model's feed-forward blocks predict its next character."""

import os

__version__ = "0.1.0"

# torch's OpenMP workers spin after each parallel region; on a 2-core machine that spinning takes
# the cores from the next numpy BLAS call (the bound's projection product ran 4.7 ms after a model
# forward pass instead of 1.8 ms). Passive waiting must be set before torch loads; a user's own
# setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
