"""A sharded store's build on a Ray cluster: a pool of actors that each hold the model.

``build_sharded`` (app/shard_build.py) hands its shards' two heavy steps to ``RayBuild``:

- ``vectors``: each actor runs ``build_store`` over one shard's rows at a time, writing the shard's
  ``.partial`` folder as the single-process build does (resumable row for row, flushed every few
  batches); the driver follows the shards' progress files into one progress bar for the whole
  build;
- ``seal``: each actor fits one shard's bound index and seals it (``finalize``: renamed into
  place only when complete).

Plain actors rather than Ray Data: a shard is a row range written to its own memory map, which an
actor does in place, where ``map_batches`` would stream the vectors back through the object store
only to write them out again. One actor per CPU it is given (``cpus_per_actor``, default 1), at most
one per shard; on a cluster with GPUs each actor takes one (``gpus_per_actor``, default: 1 when the
cluster has any) and builds there (not run here: this project's test machines have no GPU). The
shards' folders must be reachable at the same path from every node (a shared filesystem).

Ray is imported only here, and this module only when ``ffnlens index --ray`` is given.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import ray
import torch
from ray.util import ActorPool

from .search.ray_shards import connect
from .store import PROGRESS, build_store

FLUSH_EVERY = 4  # batches between an actor's progress flushes (what the driver's bar can see)


class ShardBuilder:
    """Holds the model, the corpus and the store's spec; builds and seals shards of the store."""

    def __init__(self, model, ids, spec, vocab: str, threads: int, device: str = "cpu"):
        torch.set_num_threads(max(1, threads))
        self.model, self.ids, self.spec, self.vocab = model.to(device), ids, spec, vocab
        self.device = device

    def vectors(self, i: int, out_dir: str, rows: tuple, batch_size: int) -> tuple[int, str]:
        """Build (or resume) shard ``i``'s vectors; returns (i, its partial folder)."""
        part = build_store(self.model, self.ids, self.spec, Path(out_dir), self.device, batch_size,
                           progress=False, flush_every=FLUSH_EVERY, rows=tuple(rows))
        return i, str(part)

    def seal(self, i: int, part: str, info: dict, defaults: dict, prompts) -> tuple[int, str]:
        """Fit shard ``i``'s bound index and seal it (``seal_shard``); returns (i, its folder)."""
        from .shard_build import seal_shard

        final = seal_shard(Path(part), self.spec, self.model.cfg.to_dict(), self.vocab, info,
                           defaults, prompts, False)
        return i, str(final)


# No restarts: a builder that dies fails the build, and running it again resumes every shard
# where its last flush left it.
BuilderActor = ray.remote(max_restarts=0, max_task_retries=0)(ShardBuilder)


class RayBuild:
    """The actors a build runs on, started on first use at ``address`` ("auto" or a cluster's)."""

    def __init__(self, address: str = "auto", cpus_per_actor: float = 1.0,
                 gpus_per_actor: float | None = None, num_cpus: int | None = None):
        self.address, self.cpus, self.gpus, self.num_cpus = address, cpus_per_actor, gpus_per_actor, num_cpus
        self.actors: list = []

    def pool(self, ws, shards: int) -> ActorPool:
        if not self.actors:
            connect(self.address, self.num_cpus)
            res = ray.cluster_resources()
            if self.gpus is None:  # a GPU per actor when the cluster has them (not timed here: no GPU)
                self.gpus = 1.0 if res.get("GPU", 0) >= 1 else 0.0
            slots = res.get("GPU", 0) / self.gpus if self.gpus else res.get("CPU", 1) / self.cpus
            count = max(1, min(shards, int(slots)))
            model, ids = ray.put(copy.deepcopy(ws.model).cpu()), ray.put(ws.ids)
            device = "cuda" if self.gpus else "cpu"
            self.actors = [BuilderActor.options(num_cpus=self.cpus, num_gpus=self.gpus).remote(
                model, ids, ws.spec, ws.tok.chars, max(1, int(self.cpus)), device)
                for _ in range(count)]
        return ActorPool(self.actors)

    def vectors(self, ws, items: list, batch_size: int, bar) -> dict:
        """Step 1 for ``items`` [(shard, its folder, its rows)]: {shard: its partial folder}."""
        if not items:
            return {}
        pool = self.pool(ws, len(items))
        for i, d, rows in items:
            pool.submit(lambda a, v: a.vectors.remote(*v), (i, str(d), list(rows), batch_size))
        parts = {}
        watch = {i: Path(str(d) + ".partial") / PROGRESS for i, d, _ in items}
        seen = sum(_done(p) for p in watch.values())  # rows an interrupted build had done
        bar.update(seen)
        while pool.has_next():
            try:
                i, part = pool.get_next_unordered(timeout=0.5)
                parts[i] = Path(part)
            except TimeoutError:
                pass
            now = sum(_done(p) for p in watch.values())
            bar.update(max(0, now - seen))
            seen = max(seen, now)
        return parts

    def seal(self, ws, items: list, defaults: dict, prompts) -> None:
        """Step 3 for ``items`` [(shard, its partial folder, its manifest entry)]."""
        if not items:
            return
        pool = self.pool(ws, len(items))
        ref = ray.put(prompts)
        list(pool.map_unordered(lambda a, v: a.seal.remote(*v, defaults, ref),
                                [(i, str(p), info) for i, p, info in items]))

    def shutdown(self) -> None:
        for a in self.actors:
            ray.kill(a)
        self.actors = []


def _done(progress: Path) -> int:
    """Rows a shard's build has flushed (0 before it starts; its file is gone once sealed)."""
    try:
        return int(json.loads(progress.read_text())["done"])
    except (OSError, ValueError, KeyError):
        return 0

