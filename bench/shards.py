"""The store in shards on Ray against one process, measured in one run.

    python bench/shards.py [--model tiny] [--corpus complete-works] [--chars N] [--shards 8]
                           [--ray auto] [--queries 200] [--home DIR]

Builds the store of ``--model`` over ``--corpus`` (the complete works by default; ``--chars N``: its
first N characters, for a shorter run) twice under ``--home``: in one process (``ffnlens index``'s
build, without the ivf index) and in ``--shards`` shards by Ray actors (``ffnlens index --ray``),
and prints the ratio of their throughputs on this machine. Then it times ``--queries`` typed-like
prompts (validation-split text of 10 to 40 characters), threshold mode at the calibrated
thresholds and top-200, on the unsharded store and on the shards searched by Ray actors: p50 / p95
of the engine's search time, after checking every answer is the unsharded one. Last, the per-shard
cost model the README quotes: bytes, build seconds and query milliseconds per million strings.
"""
from __future__ import annotations

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import app  # noqa: E402,F401  (its thread policies must be set before numpy and torch load, as the server's are)

import argparse  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402

import numpy as np  # noqa: E402

from app.approx import QuerySettings  # noqa: E402
from app.corpus import TRAIN_FRACTION, load_corpus  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.workspace import build_index, open_engine, open_workspace  # noqa: E402


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def prompts(text: str, count: int, seed: int = 0) -> list[str]:
    """Typed-like prompts: validation-split text of 10 to 40 characters."""
    rng = np.random.default_rng(seed)
    lo = int(TRAIN_FRACTION * len(text))
    out = []
    for _ in range(count):
        n = int(rng.integers(10, 41))
        s = int(rng.integers(lo, len(text) - n))
        out.append(text[s : s + n])
    return out


def timed(engine, qs: list[str], s: QuerySettings) -> tuple[np.ndarray, list]:
    """Each prompt's search milliseconds (the engine's own timing) and its answer."""
    engine.query(qs[0], s)  # warm-up: memory maps and the actors' first call
    ms, answers = [], []
    for q in qs:
        r = engine.query(q, s)
        ms.append(r.timing["search"])
        answers.append(r)
    return np.array(ms), answers


def same(a, b) -> bool:
    return a.hellinger == b.hellinger and all(
        np.array_equal(x.neighbours.rows, y.neighbours.rows) and np.array_equal(x.neighbours.sims, y.neighbours.sims)
        for x, y in zip(a.blocks, b.blocks))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--corpus", default="complete-works")
    ap.add_argument("--chars", type=int, default=0, help="only the corpus's first N characters (0: all)")
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--ray", default="auto")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--home", default="var/bench-shards")
    ap.add_argument("--queries-only", action="store_true",
                    help="reuse the stores an earlier run built under --home; time the queries only")
    a = ap.parse_args()
    from app.ray_build import RayBuild
    from app.shard_build import build_sharded

    home = Path(a.home)
    corpus = a.corpus
    if a.chars:
        text = load_corpus(a.corpus).text[: a.chars]
        corpus = str(home / f"{Path(a.corpus).name}-{a.chars}.txt")
        home.mkdir(parents=True, exist_ok=True)
        Path(corpus).write_text(text)
    settings = Settings(home=home, device="cpu")
    ws = open_workspace(settings, model=a.model, corpus=corpus, allow_other_corpus=True)
    ws8 = replace(ws, store_dir=home / "stores" / f"{ws.spec.dirname()}-shards{a.shards}", shards=a.shards)
    one = sharded = float("nan")
    if not a.queries_only:
        shutil.rmtree(ws.store_dir, ignore_errors=True)
        t = time.perf_counter()
        build_index(ws, ivf_kind=None)
        one = time.perf_counter() - t
        shutil.rmtree(ws8.store_dir, ignore_errors=True)
        cluster = RayBuild(a.ray)
        t = time.perf_counter()
        build_sharded(ws8, a.shards, cluster=cluster)
        sharded = time.perf_counter() - t
        cluster.shutdown()
    single = open_engine(ws)
    on_ray = open_engine(ws8, ray=a.ray)
    P = single.store.size
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 0))
    print(f"\n{a.model} over {Path(corpus).name}: {len(ws.corpus.text):,} characters, {P:,} strings, "
          f"{a.shards} shards, Ray on {cpus} CPUs")
    print(f"build, one process: {one:.1f} s ({P / one:,.0f} strings/s; vectors {single.store.manifest['build_seconds']:.1f} s)")
    m8 = on_ray.store.manifest
    print(f"build, {a.shards} shards on Ray: {sharded:.1f} s ({P / sharded:,.0f} strings/s; vectors "
          f"{m8['build_seconds']:.1f} actor-s); throughput ratio Ray / one process: {one / sharded:.2f}")
    qs = prompts(ws.corpus.text, a.queries)
    rows = []
    for label, s in (("threshold", QuerySettings()), ("top-200", QuerySettings(mode="topk", k=200))):
        ms1, r1 = timed(single, qs, s)
        ms8, r8 = timed(on_ray, qs, s)
        differ = sum(not same(x, y) for x, y in zip(r1, r8))
        rows.append((label, ms1, ms8))
        print(f"query search, {label}: unsharded p50 {np.percentile(ms1, 50):.1f} / p95 "
              f"{np.percentile(ms1, 95):.1f} ms; {a.shards} shards on Ray p50 {np.percentile(ms8, 50):.1f} / "
              f"p95 {np.percentile(ms8, 95):.1f} ms; answers that differ: {differ} of {len(qs)}")
    per_m = 1e6 / P
    shard_bytes = [folder_bytes(s.path) for s in on_ray.store.shards]
    print(f"per million strings ({single.store.n_layer} blocks x {single.store.unit.shape[2]}): "
          f"{folder_bytes(single.store.path) * per_m / 2**20:,.0f} MiB unsharded, "
          f"{sum(shard_bytes) * per_m / 2**20:,.0f} MiB in shards (each shard's pool_at maps the whole "
          f"text: {on_ray.store.shards[0].pool.at.nbytes / 2**20:.1f} MiB apiece); vectors built in "
          f"{m8['build_seconds'] * per_m:.0f} actor-s; one process {one * per_m:.0f} s in all")
    for label, ms1, ms8 in rows:
        print(f"query search per million strings, {label}: unsharded p50 {np.percentile(ms1, 50) * per_m:.1f} ms; "
              f"sharded on Ray p50 {np.percentile(ms8, 50) * per_m:.1f} ms")
    on_ray.store.remote.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
