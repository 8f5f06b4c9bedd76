"""Building a sharded store (app/shards.py), on this machine or on a Ray cluster.

The build runs in three steps, each resumable, each shard's files written as the unsharded build
writes a store's (``build_store``'s ``<dir>.partial``, renamed into place by ``finalize``):

1. vectors: every shard's rows run through the model, into ``shard-NNN.partial`` (resumes where
   it stopped, row for row: an interrupted shard continues from its last flushed batch);
2. calibration: the whole store's default thresholds, computed on the shards' vectors put
   together and searched exactly (so they are the unsharded store's, bit for bit);
3. sealing: each shard's bound index fitted to its own vectors (priced at those thresholds) and
   the shard sealed; then the top manifest, written last, atomically.

A shard already sealed is kept; a rerun after an interruption redoes only what is missing. With
``cluster`` (app/ray_build.py), steps 1 and 3 run on a pool of Ray actors that each hold the model,
one shard at a time per actor; step 2 runs here.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from tqdm import tqdm

from .approx import Engine
from .calibrate import calibrate_thresholds
from .corpus import build_pool, build_positions
from .search import index_files
from .search.sharded import ShardedSearch
from .search.exact import ExactSearch
from .shards import SHARDS, assemble, seal_top, shard_name, shard_ranges
from .store import MANIFEST, PROGRESS, Store, StoreError, build_store, finalize, open_store
from .workspace import Workspace, bound_index, open_partial, partial_manifest, pricing_prompts


def pool_size(ws: Workspace) -> int:
    """How many rows the store of ``ws`` has (its pool, or its positions in context)."""
    spec = ws.spec
    pool = (build_positions(ws.ids, spec.n, spec.mode) if spec.context
            else build_pool(ws.ids, spec.n, ws.model.cfg.vocab_size, spec.mode))
    return len(pool)


def shard_info(ws: Workspace, i: int, ranges: list, size: int) -> dict:
    """A shard's manifest entry: its place, its rows, and the whole store's identity."""
    return {"index": i, "of": len(ranges), "start": ranges[i][0], "stop": ranges[i][1],
            "store": {**ws.spec.identity(), "pool_size": size}}


def sealed_shard(ws: Workspace, d: Path, info: dict) -> Store | None:
    """The sealed shard at ``d`` when it is this shard of this store; one that is not (another
    split, another model) is removed and None returned, so it is built again."""
    if not (d / MANIFEST).exists():
        return None
    try:
        st = open_store(d, ws.spec, ws.ids)
        if st.manifest.get("shard") == info:
            return st
    except StoreError:
        pass
    shutil.rmtree(d)
    return None


def partial_arrays(ws: Workspace, part: Path) -> Store:
    """A Store over a shard's finished, unsealed vectors."""
    prog = json.loads((part / PROGRESS).read_text())
    st = open_partial(part, ws)
    if prog["done"] != st.size:
        raise StoreError(f"{part} is incomplete ({prog['done']} of {st.size} rows)")
    return st


def calibrated(ws: Workspace, top: Path, stores: list[Store], prompts: int, progress: bool) -> dict:
    """The whole store's defaults, calibrated on the shards' vectors searched exactly."""
    whole = assemble(top, partial_manifest(ws), stores, ws.ids)
    search = ShardedSearch(whole, [ExactSearch(s, ws.device) for s in stores])
    engine = Engine(ws.model, ws.tok, whole, search, ws.device)
    return calibrate_thresholds(engine, n_prompts=prompts, progress=progress)


def seal_shard(part: Path, spec, model_cfg: dict, vocab: str, info: dict, defaults: dict, prompts,
               progress: bool) -> Path:
    """Fit the shard's bound index and seal it (step 3 for one shard; here, or on a Ray actor,
    which holds the spec, the model's configuration and the vocabulary, not the workspace)."""
    extra = {"defaults": defaults, "shard": info,
             "bound": bound_index(part, progress, defaults.get("thresholds"), prompts)}
    return finalize(part, spec, model_cfg, vocab, extra, index_files(model_cfg["n_layer"]))


def build_sharded(ws: Workspace, shards: int, batch_size: int = 2048, progress: bool = True,
                  calibration_prompts: int = 256, cluster=None) -> Path:
    """Build (or resume building) the store of ``ws`` in ``shards`` shards under ``ws.store_dir``;
    ``cluster``: a ``RayBuild`` (app/ray_build.py) to run the shards' steps on. Returns the path."""
    t0 = time.time()
    top = ws.store_dir
    if (top / MANIFEST).exists():
        (top / MANIFEST).unlink()  # rebuilt: the store is incomplete until the new one is sealed
    top.mkdir(parents=True, exist_ok=True)
    size = pool_size(ws)
    ranges = shard_ranges(size, shards)
    dirs = [top / shard_name(i) for i in range(shards)]
    infos = [shard_info(ws, i, ranges, size) for i in range(shards)]
    for extra in sorted(top.glob("shard-*")):  # left by an earlier split into more shards
        if extra.name.removesuffix(".partial") not in {d.name for d in dirs}:
            shutil.rmtree(extra)
    sealed = [sealed_shard(ws, d, info) for d, info in zip(dirs, infos)]
    todo = [i for i, st in enumerate(sealed) if st is None]
    bar = tqdm(total=size, unit="str", desc=f"store {ws.spec.model_name} in {shards} shards",
               disable=not progress, dynamic_ncols=True, smoothing=0.05)
    bar.update(sum(b - a for st, (a, b) in zip(sealed, ranges) if st is not None))
    if cluster is not None:
        parts = cluster.vectors(ws, [(i, dirs[i], ranges[i]) for i in todo], batch_size, bar)
    else:
        parts = {i: build_store(ws.model, ws.ids, ws.spec, dirs[i], ws.device, batch_size,
                                rows=ranges[i], bar=bar) for i in todo}
    bar.close()
    stores = [st if st is not None else partial_arrays(ws, parts[i]) for i, st in enumerate(sealed)]
    done = [st for st in sealed if st is not None]
    if done and not todo:
        defaults = done[0].manifest["defaults"]
    else:
        defaults = calibrated(ws, top, stores, calibration_prompts, progress)
    prompts = pricing_prompts(ws)
    if cluster is not None:
        cluster.seal(ws, [(i, parts[i], infos[i]) for i in todo], defaults, prompts)
    else:
        for i in todo:
            seal_shard(parts[i], ws.spec, ws.model.cfg.to_dict(), ws.tok.chars, infos[i], defaults,
                       prompts, progress)
    final = [open_store(d, ws.spec, ws.ids) for d in dirs]
    vectors = sum(st.manifest["build_seconds"] for st in final)
    seal_top(top, ws.spec, final, {"defaults": defaults, "build_seconds": round(vectors, 1),
                                   "seconds": round(time.time() - t0, 1),
                                   "built_on": "ray" if cluster is not None else "local"})
    return top


def describe(path: Path) -> str:
    """One line on a sharded store: its size, its shards, its bytes and build time."""
    m = json.loads((path / MANIFEST).read_text())
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    rows = [s["stop"] - s["start"] for s in m[SHARDS]]
    return (f"store written to {path}: {m['pool_size']:,} strings x {m['n_layer']} blocks x "
            f"{m['n_embd']} in {len(rows)} shards of {min(rows):,} to {max(rows):,} strings, "
            f"{size / 2**20:,.1f} MiB, vectors built in {m['build_seconds']:.0f} s, "
            f"{m['seconds']:.0f} s in all ({m['built_on']})")

