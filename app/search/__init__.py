"""Neighbour search over one block of the store: by threshold (cosine strictly above it) or top-k.

    base.py    the interface every backend offers (``SearchBackend``), the answer (``Neighbours``,
               with its ``SearchStats``), the helpers the backends share, the checks when an index
               opens
    exact.py   "exact": the full scan, whose float32 products every backend returns
    bound.py   "bound": exact answers from a pruned scan (a low-rank bound); its files, build, seal
               (bound_table, bound_cells, bound_batch, bound_build: its table, cells, batches and
               build; bound_device: its plan for the device, ``open_bound``)
    ivf.py     "ivf": approximate candidates from a faiss inverted-file index, float32 decides
    sharded.py a sharded store's search: one backend per shard, the answers merged exactly
    ray_shards.py  the same with each shard held by a Ray actor (imported only when asked for)

``make_search`` opens a backend by name; each backend module owns its index files (their names,
``index_files``; their build, seal and open-time checks), so the store knows only the vectors.
"""
from __future__ import annotations

from ..shards import ShardedStore
from ..store import IndexFiles, Store, StoreError
from . import bound, bound_device, ivf
from .sharded import ShardedSearch
from .base import Neighbours, SearchBackend, SearchStats, every_block, unit
from .exact import ExactSearch

__all__ = ["BACKENDS", "ExactSearch", "Neighbours", "SearchBackend", "SearchStats",
           "available_backends", "every_block", "index_files", "make_search", "unit"]

BACKENDS = ("auto", "bound", "exact", "ivf")
INDEXED = {"bound": bound, "ivf": ivf}  # the backends that keep index files beside the vectors


def make_search(store: Store, backend: str = "auto", device: str = "cpu") -> SearchBackend:
    """"bound" (exact answers from a pruned scan), "exact" (full scan), "ivf" (approximate: a faiss
    inverted-file index proposes, float32 decides), or "auto": bound when the store has its index,
    else exact. A sharded store (app/shards.py) gets one backend per shard, merged
    (``ShardedSearch``), or its Ray cluster's when it was opened on one (``store.remote``)."""
    if isinstance(store, ShardedStore):
        if backend == "ivf":
            raise StoreError(f"the sharded store at {store.path} has no ivf index (its shards "
                             "are searched exactly: bound or exact)")
        if store.remote is not None:
            return store.remote.search(backend)
        return ShardedSearch(store, [make_search(s, backend, device) for s in store.shards])
    if backend == "exact" or (backend == "auto" and "bound" not in store.manifest):
        return ExactSearch(store, device)
    if backend == "ivf":
        return ivf.open_ivf(store, device)
    if backend in ("bound", "auto"):
        return bound_device.open_bound(store, device)
    raise ValueError(f"unknown search backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def available_backends(store: Store) -> list[str]:
    """The backends this store can answer with: the full scan always, the others when built."""
    return ["exact"] + [name for name in INDEXED if name in store.manifest]


def index_files(n_layer: int) -> list[IndexFiles]:
    """Every index's files for a store of ``n_layer`` blocks, in the manifest's order: what the
    store's ``finalize`` records when they were built."""
    return [module.index_files(n_layer) for module in INDEXED.values()]
