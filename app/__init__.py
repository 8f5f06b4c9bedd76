"""ffnlens: see how a small language model's feed-forward blocks predict its next character."""

import os

__version__ = "0.1.0"

# torch's OpenMP workers spin after each parallel region; on a 2-core machine that spinning takes
# the cores from the next numpy BLAS call (the bound's projection product ran 4.7 ms after a model
# forward pass instead of 1.8 ms). Passive waiting must be set before torch loads; a user's own
# setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# numpy's OpenBLAS workers busy-wait after each call as well, and a query alternates numpy's
# products with torch's operations: each switch waited for the other pool's threads to yield the
# cores. Measured on tiny (2 cores, torch's threads passive), 300 queries through Engine.query
# (forward, six blocks, blend): threshold p50 / p95 50 / 132 ms -> 22 / 36 ms; top-200 29 / 63 ms
# -> 33 / 67 ms (a little slower: waking the sleeping workers). It must be set before numpy loads
# (the CLI and the server import this package first); a user's own setting wins.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
