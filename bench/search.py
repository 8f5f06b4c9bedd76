"""Search backends on a real store, measured in one run: full scan ("exact") against the pruned
exact scan ("bound"), per block and for the whole query, with the memory-bandwidth floor.

    python bench/search.py [--model tiny] [--corpus PATH] [--prompts 300] [--mode threshold|topk] [--k 200]

Prompts are 10-character strings at random positions of the validation split (seed 0). Prints
p50/p95 per block and per full query (forward + all blocks + blend), bytes read per query, the
bound's candidates / true neighbours per block, and whether every answer of the two backends is
identical (it must be).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.approx import QuerySettings  # noqa: E402
from app.search import ExactSearch, make_search, unit  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.workspace import open_engine, open_workspace  # noqa: E402


def pct(xs, q):
    return 1000 * float(np.percentile(xs, q))


def streaming_floor(arr: np.ndarray, reps: int = 5) -> float:
    """Seconds to read ``arr``'s bytes once (a vectorised integer sum over them; best of reps)."""
    flat = np.asarray(arr).reshape(-1).view(np.uint64)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        flat.sum()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--corpus", default=None)
    ap.add_argument("--prompts", type=int, default=300)
    ap.add_argument("--mode", default="threshold", choices=["threshold", "topk"])
    ap.add_argument("--k", type=int, default=200)
    a = ap.parse_args()
    ws = open_workspace(Settings(), model=a.model, corpus=a.corpus, device="cpu")
    engine = open_engine(ws, backend="bound", progress=False)
    full = engine.with_search(ExactSearch(engine.store))
    store = engine.store
    L, P, C = store.unit.shape
    qs = QuerySettings(mode=a.mode, k=a.k).resolved(store)
    rng = np.random.default_rng(0)
    lo = ws.corpus.n_train
    starts = rng.integers(lo, len(ws.ids) - 10, a.prompts)
    prompts = [ws.tok.decode(ws.ids[s : s + 10]) for s in starts]

    floor = streaming_floor(store.unit[L // 2])
    per_block = {"exact": [[] for _ in range(L)], "bound": [[] for _ in range(L)]}
    ratio = [[] for _ in range(L)]
    cand_bytes = []
    mismatches = 0
    for p in prompts:
        _, ffn = engine.forward(engine.encode(p))
        q = unit(ffn)
        cands = 0
        for b in range(L):
            out = {}
            for name, s in (("exact", full.search), ("bound", engine.search)):
                t = time.perf_counter()
                nb = s.threshold(b, q[b], qs.thresholds[b]) if a.mode == "threshold" else s.topk(b, q[b], qs.k)
                per_block[name][b].append(time.perf_counter() - t)
                out[name] = nb
            mismatches += int(out["exact"].rows.tolist() != out["bound"].rows.tolist()
                              or not np.array_equal(out["exact"].sims, out["bound"].sims))
            c = engine.search.last_candidates[b]
            cands += c
            ratio[b].append(c / max(1, len(out["exact"])))
        cand_bytes.append(cands * C * 2)
    whole = {}
    for name, eng in (("exact", full), ("bound", engine)):
        ts = []
        for p in prompts:
            t = time.perf_counter()
            eng.query(p, qs)
            ts.append(time.perf_counter() - t)
        whole[name] = ts

    k = engine.search.basis.shape[2]
    print(f"store {store.path.name}: {P:,} strings x {L} blocks x {C}; bound rank {k}; "
          f"{a.prompts} validation prompts; mode {a.mode}"
          + (f" (k={a.k})" if a.mode == "topk" else " (calibrated thresholds)") + f"; {torch.get_num_threads()} threads")
    print(f"bandwidth floor: one streaming read of one block's float16 vectors "
          f"({P * C * 2 / 2**20:,.0f} MiB) = {1000 * floor:.1f} ms")
    print("block   exact p50/p95 ms   bound p50/p95 ms   bound/floor p50   candidates/true (median, p95)")
    for b in range(L):
        e, bd = per_block["exact"][b], per_block["bound"][b]
        print(f"{b:>5}   {pct(e, 50):7.1f} /{pct(e, 95):7.1f}   {pct(bd, 50):7.1f} /{pct(bd, 95):7.1f}   "
              f"{pct(bd, 50) / (1000 * floor):14.2f}   {np.median(ratio[b]):8.2f}, {np.percentile(ratio[b], 95):.2f}")
    for name in ("exact", "bound"):
        print(f"full query ({name}): p50 {pct(whole[name], 50):.1f} ms, p95 {pct(whole[name], 95):.1f} ms; "
              f"all-blocks floor {1000 * L * floor:.1f} ms")
    exact_bytes = L * P * C * 2
    bound_bytes = L * P * (4 * k + 4) + np.mean(cand_bytes)
    print(f"bytes read per query: exact {exact_bytes / 2**20:,.0f} MiB, bound {bound_bytes / 2**20:,.1f} MiB "
          f"({bound_bytes / exact_bytes:.2f} of exact)")
    print(f"answers identical between the two backends: {'yes' if mismatches == 0 else f'NO ({mismatches} differ)'}")


if __name__ == "__main__":
    main()
