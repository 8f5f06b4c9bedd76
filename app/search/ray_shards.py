"""A sharded store searched on a Ray cluster: each shard held by an actor, every query fanned out.

``attach(store, address)`` connects to Ray (``auto``: the running cluster, or a local one started
here when there is none; or a cluster's address) and starts one ``ShardActor`` per shard. An actor
opens its shard as an ordinary store (vectors memory-mapped, the bound index's basis in memory, its
table memory-mapped), so the shard's files must be at the same path on the actor's node (a shared
filesystem, or a copy). The store then searches through ``RaySearch``: the driver sends the unit
query (or a batch of them, put once in Ray's object store) to every shard, each answers for its own
rows, and the driver merges them with ``ShardedSearch``'s code, so answers are the unsharded
store's, bit for bit.

Actors are created with ``max_restarts=-1``: Ray restarts a shard that dies (its process killed,
its node lost), and the restarted actor reopens its shard. Calls are never retried
(``max_task_retries=0``): a query that meets a dead or restarting shard raises
:class:`ShardUnavailable` (the web app answers 503 with its message) instead of an answer that
would lack that shard's rows. Once Ray has restarted the actor, queries answer again.

Ray is imported only here, and this module only when ``--ray`` is given.
"""
from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import numpy as np
import ray
import torch
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

from model.errors import FfnlensError

from ..store import StoreSpec, open_store
from .base import Neighbours, SearchStats
from .sharded import ShardedSearch, ShardUnavailable, split_exclude

CALL_TIMEOUT = 120.0  # seconds a shard may take to answer before the query gives up (a 503)


def connect(address: str = "auto", num_cpus: int | None = None) -> None:
    """Join the Ray cluster at ``address``; with "auto" and no cluster running, start a local one
    (of ``num_cpus`` CPUs, default all)."""
    if ray.is_initialized():
        return
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    except ConnectionError as e:
        if address != "auto":
            raise FfnlensError(f"no Ray cluster answers at {address!r} ({e}); start one "
                               "(`ray start --head`) or pass --ray auto") from e
        ray.init(num_cpus=num_cpus, logging_level="ERROR", log_to_driver=False,
                 include_dashboard=False)


class ShardHolder:
    """One shard of a store, opened where the actor runs, answering its backends' calls.
    ``incarnation`` changes with every (re)start, so a caller can tell a restarted shard."""

    def __init__(self, path: str, spec: dict, threads: int = 1):
        # The shard's identity and sizes are checked as any store's; its hashes are not read again
        # (the driver checked them when it opened the store), so a restart takes seconds.
        torch.set_num_threads(max(1, threads))
        self.store = open_store(Path(path), StoreSpec(**spec), verify_hashes=False)
        self.backends: dict = {}
        self.incarnation = uuid.uuid4().hex

    def ready(self) -> tuple[int, str, int]:
        """(rows held, incarnation, process id): answered once the shard is open."""
        return self.store.size, self.incarnation, os.getpid()

    def search(self, backend: str):
        from . import make_search  # the package's factory: this module is imported by no one here

        if backend not in self.backends:
            self.backends[backend] = make_search(self.store, backend)
        return self.backends[backend]

    def blocks(self, backend: str, method: str, query: np.ndarray, values: list, exclude) -> list:
        """One query's single answers in every block (query (L, C), ``values[b]`` block b's
        threshold or k): one exchange with the driver instead of one per block."""
        return [self.call(backend, method, b, query[b], v, exclude) for b, v in enumerate(values)]

    def call(self, backend: str, method: str, b: int, query: np.ndarray, arg, exclude,
             sims: bool = True) -> tuple:
        """One backend call on this shard's rows: a single query's (rows, similarities, stats) with
        every similarity computed, or a batch's arrays and stats."""
        search = self.search(backend)
        q = torch.from_numpy(query)
        if method in ("threshold", "topk"):
            nb = getattr(search, method)(b, q, arg, exclude)
            st = nb.stats
            return nb.rows, nb.sims, (st.plan, st.candidates, st.bytes_read)
        st = SearchStats()
        ex = None if exclude is None else torch.from_numpy(exclude)
        kw = {"sims": sims} if method == "batch_threshold" else {}
        out = getattr(search, method)(b, q, arg, ex, stats=st, **kw)
        return out, (st.plan, st.candidates, st.bytes_read)


# The actor class: ShardHolder stays importable by name, so Ray's workers import it rather than
# unpickle a copy of its code.
ShardActor = ray.remote(max_restarts=-1, max_task_retries=0)(ShardHolder)


class RayShards:
    """A sharded store's actors on a Ray cluster; ``search(backend)`` answers through them."""

    def __init__(self, store, address: str = "auto", cpus_per_shard: float = 0.0):
        connect(address)
        # The actors reserve no CPU by default: they are services that wait for queries, and a
        # reservation would keep a cluster from holding more shards than it has cores (a 2-CPU
        # local cluster could not hold a 4-shard store); SPREAD still puts them on every node.
        # Each searches with the threads its share of the cluster's cores gives it.
        threads = max(1, int(ray.cluster_resources().get("CPU", 1.0) // len(store.shards)))
        spec = {k: store.manifest[k] for k in ("model_name", "corpus_name", "n", "mode", "dtype",
                                                "activation", "context")}
        spec.update(model_sha256=store.manifest["model_sha256"],
                    corpus_sha256=store.manifest["corpus_sha256"])
        self.store = store
        self.actors = [ShardActor.options(num_cpus=cpus_per_shard, scheduling_strategy="SPREAD")
                       .remote(str(s.path), spec, threads) for s in store.shards]
        ready = ray.get([a.ready.remote() for a in self.actors])
        for s, (size, _, _) in zip(store.shards, ready):
            if size != s.size:
                raise ShardUnavailable(f"the actor of {s.path} holds {size} rows, not {s.size}")

    def search(self, backend: str = "auto") -> "RaySearch":
        return RaySearch(self.store, self, backend)

    def wait_ready(self, timeout: float = 120.0) -> list:
        """Every actor's ``ready()`` once it answers (after a restart: once reopened)."""
        deadline = time.time() + timeout
        while True:
            try:
                return ray.get([a.ready.remote() for a in self.actors], timeout=timeout)
            except (RayActorError, ActorUnavailableError):
                if time.time() > deadline:
                    raise
                time.sleep(0.2)

    def shutdown(self) -> None:
        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.actors = []


class RaySearch(ShardedSearch):
    """``ShardedSearch`` whose shards answer from their actors. The backend each shard uses is
    ``backend`` ("auto": its bound index)."""

    def __init__(self, store, shards: RayShards, backend: str = "auto"):
        self.store, self.shards, self.backend = store, shards, backend
        self.bounds = np.asarray(store.bounds, dtype=np.int64)
        self.name = "bound" if backend == "auto" and "bound" in store.manifest else \
            ("exact" if backend == "auto" else backend)
        self.parts = shards.actors

    def each(self, method: str, b: int, query, arg, excludes: list, stats: list | None = None,
             **kw) -> list:
        q = query.detach().to("cpu", torch.float32).numpy()
        q = ray.put(q) if q.ndim == 2 else q  # a batch: sent once to the object store
        exs = [None if ex is None else (ex.numpy() if isinstance(ex, torch.Tensor) else ex)
               for ex in excludes]
        outs = gather([a.call.remote(self.backend, method, b, q, arg, ex, **kw)
                       for a, ex in zip(self.shards.actors, exs)])
        if method in ("threshold", "topk"):
            return [answer(*out) for out in outs]
        for i, (_, st) in enumerate(outs):
            if stats is not None:
                stats[i].fill(*st)
        return [out for out, _ in outs]


    def every_block(self, method: str, q: torch.Tensor, values, exclude: int | None) -> list[Neighbours]:
        """One query in every block, one exchange per shard (see ``base.every_block``)."""
        Q = q.detach().to("cpu", torch.float32).numpy()
        outs = gather([a.blocks.remote(self.backend, method, Q, list(values), ex) for a, ex in
                       zip(self.shards.actors, split_exclude(self.bounds, exclude))])
        return [self.merged(method, [answer(*shard[b]) for shard in outs], v)
                for b, v in enumerate(values)]


def gather(refs: list) -> list:
    """Every shard's reply, or ShardUnavailable when one did not answer (never a partial answer)."""
    try:
        return ray.get(refs, timeout=CALL_TIMEOUT)
    except (RayActorError, ActorUnavailableError, GetTimeoutError) as e:
        raise ShardUnavailable() from e


def answer(rows: np.ndarray, sims: np.ndarray, stats: tuple) -> Neighbours:
    """A shard's single answer as it came back: rows by decreasing similarity, all computed."""
    return Neighbours(rows, sims, ordered=True, stats=SearchStats(*stats))


def attach(store, address: str = "auto") -> RayShards:
    """Put ``store`` (a ShardedStore) on the Ray cluster at ``address``: its searches from now on
    run on the shards' actors (``make_search`` asks ``store.remote``)."""
    store.remote = RayShards(store, address)
    return store.remote
