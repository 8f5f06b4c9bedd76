"""The views beyond the main page, timed where the server spends it, with PASS/FAIL.

    python bench/views.py [--model tiny] [--model blog=../shared/data/tinyshakespeare.txt]
                          [--prompts 20] [--json OUT]

For each model (its store must exist), the prompt strip (app/strip.py: every position of a prompt
answered at once) on --prompts windows of the validation split at random positions (seed 0): the
`tiny` model's 64-character windows (its context), the reference shape's 256-character ones. It
prints p50 / p95 of the whole call and of its parts (forward pass, searches, blend), each in
milliseconds, against issue 19's targets: a 64-character strip on `tiny` <= 150 ms, a 256-character
one on `blog` <= 1 s (2 cores). Other models are printed without a target. Then the sublayer table
(app/interventions.py: every block's attention and FFN left out in turn) on the same prompts and on
their last n characters, for information.
"""
from __future__ import annotations

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import app  # noqa: E402,F401  (its thread policies must be set before numpy and torch load, as the server's are)

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.settings import Settings  # noqa: E402
from app.interventions import sublayer_effects  # noqa: E402
from app.strip import strip  # noqa: E402
from app.workspace import open_engine, open_workspace  # noqa: E402

TARGETS = {"tiny": 150.0, "blog": 1000.0}


def bench_strip(model: str, corpus: str | None, n: int) -> dict:
    ws = open_workspace(Settings(), model=model, corpus=corpus, device="cpu")
    engine = open_engine(ws, backend="auto", progress=False)
    length = engine.model.cfg.block_size
    rng = np.random.default_rng(0)
    starts = rng.integers(ws.corpus.n_train, len(ws.ids) - length, n)
    prompts = [ws.tok.decode(ws.ids[s : s + length]) for s in starts]
    strip(engine, prompts[0])  # warm: the first call pages the store in
    whole, parts = [], {"forward": [], "search": [], "blend": []}
    for p in prompts:
        t0 = time.perf_counter()
        out = strip(engine, p)
        whole.append(1e3 * (time.perf_counter() - t0))
        for k in parts:
            parts[k].append(out["timing"][k])
    q = lambda xs, x: float(np.percentile(xs, x))  # noqa: E731
    res = {"model": model, "length": length, "prompts": n, "backend": engine.search.name,
           "p50": q(whole, 50), "p95": q(whole, 95),
           "parts": {k: {"p50": q(v, 50), "p95": q(v, 95)} for k, v in parts.items()}}
    target = TARGETS.get(model)
    verdict = "" if target is None else ("PASS" if res["p95"] <= target else "FAIL")
    res["target_ms"], res["verdict"] = target, verdict or None
    print(f"{model}: strip of {length} characters, {n} prompts, search {engine.search.name}: "
          f"p50 {res['p50']:.0f} ms, p95 {res['p95']:.0f} ms"
          + (f" (target p95 <= {target:.0f} ms): {verdict}" if target else ""))
    print("  parts p50 / p95: " + ", ".join(f"{k} {v['p50']:.0f} / {v['p95']:.0f} ms"
                                            for k, v in res["parts"].items()))
    short = [p[-engine.store.pool.n :] for p in prompts]  # the main page's usual prompt length
    times = []
    for p in short + prompts:
        t0 = time.perf_counter()
        sublayer_effects(engine, p)
        times.append(1e3 * (time.perf_counter() - t0))
    res["interventions"] = {"p50_short": q(times[:n], 50), "p50_long": q(times[n:], 50),
                            "p95": q(times, 95)}
    print(f"  each sublayer left out (2 x {engine.model.cfg.n_layer} + 1 forward passes): p50 "
          f"{res['interventions']['p50_short']:.0f} ms ({engine.store.pool.n} characters), "
          f"{res['interventions']['p50_long']:.0f} ms ({length}); p95 {res['interventions']['p95']:.0f} ms "
          "(no target)")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=None, metavar="MODEL[=CORPUS]")
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    out = []
    for spec in a.model or ["tiny"]:
        model, _, corpus = spec.partition("=")
        out.append(bench_strip(model, corpus or None, a.prompts))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
    print("ALL PASS" if all(r["verdict"] != "FAIL" for r in out) else "SOME FAIL")


if __name__ == "__main__":
    main()
