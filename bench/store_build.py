"""Store build throughput against the machine's matrix-multiply floor, measured in one run.

    python bench/store_build.py [--model tiny] [--corpus PATH] [--strings 50000]

Prints strings/s and GFLOP/s of the store's forward passes (a sample of the real pool, the real
batch size), the sgemm GFLOP/s of torch on this machine at the FFN's shapes, their ratio, and the
extrapolated time of the whole pool.
"""
from __future__ import annotations

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import app  # noqa: E402,F401  (its thread policies must be set before numpy and torch load, as the server's are)

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.corpus import build_pool  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.store import ffn_last  # noqa: E402
from app.workspace import open_workspace  # noqa: E402


def forward_flops(cfg, n: int) -> float:
    """FLOPs of one n-character string through every block (matmuls only; attention included)."""
    C, T = cfg.n_embd, n
    per_block = 2 * T * (3 * C * C + C * C + 2 * cfg.ffn_mult * C * C) + 2 * 2 * T * T * C
    return cfg.n_layer * per_block


def sgemm_gflops(m: int, k: int, n: int, reps: int = 20) -> float:
    a, b = torch.randn(m, k), torch.randn(k, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * m * k * n * reps / (time.perf_counter() - t) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--corpus", default=None)
    ap.add_argument("--strings", type=int, default=50_000)
    ap.add_argument("--batch-size", type=int, default=2048)
    a = ap.parse_args()
    ws = open_workspace(Settings(), model=a.model, corpus=a.corpus, device="cpu")
    pool = build_pool(ws.ids, 10, len(ws.tok))
    rows = np.arange(min(a.strings, len(pool)))
    strings = pool.strings(ws.ids, rows)
    ffn_last(ws.model, torch.from_numpy(strings[:64].astype(np.int64)))  # warm-up
    t = time.perf_counter()
    for s in range(0, len(rows), a.batch_size):
        ffn_last(ws.model, torch.from_numpy(strings[s : s + a.batch_size].astype(np.int64)))
    dt = time.perf_counter() - t
    cfg = ws.model.cfg
    rate = len(rows) / dt
    gflops = rate * forward_flops(cfg, 10) / 1e9
    floor = sgemm_gflops(a.batch_size * 10, cfg.n_embd, cfg.ffn_mult * cfg.n_embd)
    print(f"model {a.model}: {cfg.n_layer} x {cfg.n_embd}, {torch.get_num_threads()} threads")
    print(f"store forward: {rate:,.0f} strings/s = {gflops:.1f} GFLOP/s over {len(rows):,} strings")
    print(f"sgemm at the FFN's shape ({a.batch_size * 10} x {cfg.n_embd} x {cfg.ffn_mult * cfg.n_embd}): "
          f"{floor:.1f} GFLOP/s")
    print(f"ratio store / sgemm: {gflops / floor:.2f}")
    print(f"whole pool ({len(pool):,} strings): about {len(pool) / rate / 60:.1f} minutes")


if __name__ == "__main__":
    main()
