"""The store in shards: the pool split into N row ranges, each a complete store of its own.

A sharded store is a directory:
    manifest.json       the whole store's manifest (identity, pool size, defaults, the fingerprint
                        of the whole pool's vectors) and ``shards``: each shard's folder and rows
    shard-000/ ...      shard i: an ordinary store (app/store.py) of the pool's rows start to
                        stop - 1, numbered from 0 (its vectors, follow-on counts and bound index);
                        its manifest's ``shard`` names its rows and the whole store's identity

Each shard opens with ``open_store`` like any store, so a shard can be searched wherever its files
are (a Ray actor on another machine, app/search/ray_shards.py) without knowing of the others. On
one machine ``open_sharded`` puts them back together as a ``ShardedStore``: the pool and the
follow-on counts concatenated (small beside the vectors: for tiny over the complete works' first
400,000 characters, 330,486 strings, 8.6 MB of counts and pool arrays against 516 MB of vectors
and norms), the vectors left in the shards' memory maps and read across them by ``RowsAcross``.
Each shard's ``pool_at`` maps every position of the text (4 bytes a character, 1.6 MB there):
the one array that does not shrink with the shard. Search (app/search/sharded.py) asks each shard and offsets its rows
by the shard's start, so every row the engine sees is a row of the whole pool.

The top manifest is written last, atomically, once every shard is sealed: a directory without it
is a build in progress (``ffnlens index --shards N`` resumes it).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.files import atomic_write_json

from .corpus import NextCounts, Pool
from .store import FORMAT, MANIFEST, Store, StoreError, StoreSpec, open_store, unit_fingerprint

SHARDS = "shards"  # the top manifest's key listing the shards


def shard_ranges(pool_size: int, shards: int) -> list[tuple[int, int]]:
    """``shards`` consecutive row ranges (start, stop) covering the pool, sizes differing by at most
    one row."""
    if not 1 <= shards <= pool_size:
        raise StoreError(f"a pool of {pool_size:,} strings splits into 1 to {pool_size:,} shards, "
                         f"not {shards}")
    return [(pool_size * i // shards, pool_size * (i + 1) // shards) for i in range(shards)]


def shard_name(i: int) -> str:
    return f"shard-{i:03d}"


def sharded_dirname(spec: StoreSpec, shards: int) -> str:
    """Where a store of ``shards`` shards lives beside the unsharded one."""
    return f"{spec.dirname()}-shards{shards}"


def is_sharded(path: Path) -> bool:
    """Whether the store at ``path`` is a sharded one (a complete one: its top manifest written)."""
    try:
        return SHARDS in json.loads((Path(path) / MANIFEST).read_text())
    except (OSError, ValueError):
        return False


class RowsAcross:
    """An (L, P, ...) array read across the shards' memory maps, as if it were one: its shape and
    dtype, and indexing by block (an integer or a slice) and pool rows (an integer or an array),
    which is what reading stored vectors needs (a string's story, the fingerprint)."""

    def __init__(self, parts: list, bounds: np.ndarray):
        self.parts, self.bounds = parts, np.asarray(bounds, dtype=np.int64)
        self.shape = (parts[0].shape[0], int(self.bounds[-1])) + tuple(parts[0].shape[2:])
        self.dtype = parts[0].dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key):
        if isinstance(key, tuple) and len(key) == 3 and key[2] is None:  # norm[b, rows, None]
            return self[key[:2]][..., None]
        if not isinstance(key, tuple) or len(key) != 2:
            raise TypeError("index a sharded array by (block, rows)")
        b, rows = key
        r = np.asarray(rows, dtype=np.int64)
        flat = np.atleast_1d(r)
        if flat.size and (flat.min() < 0 or flat.max() >= self.shape[1]):
            raise IndexError(f"rows outside 0..{self.shape[1] - 1}")
        axis = 0 if isinstance(b, (int, np.integer)) else 1  # where the rows land in the result
        which = np.searchsorted(self.bounds, flat, side="right") - 1
        lead = (len(range(*b.indices(self.shape[0]))),) if axis else ()
        out = np.empty(lead + (len(flat),) + self.shape[2:], dtype=self.dtype)
        for s in np.unique(which):
            at = np.flatnonzero(which == s)
            got = self.parts[s][b, flat[at] - self.bounds[s]]
            np.moveaxis(out, axis, 0)[at] = np.moveaxis(got, axis, 0)
        return np.take(out, 0, axis=axis) if r.ndim == 0 else out


@dataclass
class ShardedStore(Store):
    """A store over its shards (each an ordinary ``Store``, ``shards``, of rows ``bounds[i]`` to
    ``bounds[i + 1]`` - 1): the pool and counts of the whole, the vectors read across the shards.
    ``remote``: where its shards are searched when not here (a Ray cluster's actors), else None."""

    shards: list = field(default_factory=list, repr=False)
    bounds: np.ndarray = field(default=None, repr=False)
    remote: object = field(default=None, repr=False)


def joined(shards: list[Store], n: int, mode: str, vocab_size: int) -> tuple[Pool, NextCounts]:
    """The whole pool and count table of consecutive shards: starts and count rows concatenated,
    each position's row found in the shard that holds it."""
    bounds = np.cumsum([0] + [s.size for s in shards])
    starts = np.concatenate([s.pool.starts for s in shards])
    at = np.full(len(shards[0].pool.at), -1, dtype=np.int64)
    for s, lo in zip(shards, bounds):
        mine = s.pool.at >= 0
        at[mine] = s.pool.at[mine].astype(np.int64) + lo
    if (at < 0).any():
        raise StoreError("the shards do not cover every position of the pool's text; rebuild with "
                         "`ffnlens index --shards N --force`")
    nnz = np.cumsum([0] + [len(s.counts.chars) for s in shards])
    indptr = np.concatenate([s.counts.indptr[:-1] + o for s, o in zip(shards, nnz)] + [[nnz[-1]]])
    counts = NextCounts(indptr.astype(np.int64), np.concatenate([s.counts.chars for s in shards]),
                        np.concatenate([s.counts.counts for s in shards]), vocab_size)
    return Pool(n=n, mode=mode, starts=starts, at=at.astype(np.int32)), counts


def assemble(path: Path, manifest: dict, shards: list[Store], corpus_ids) -> ShardedStore:
    """A ShardedStore over opened shards, under ``manifest`` (the top one, or one being made)."""
    bounds = np.cumsum([0] + [s.size for s in shards])
    pool, counts = joined(shards, manifest["n"], manifest["mode"], len(manifest["vocab"]))
    return ShardedStore(path=Path(path), manifest=manifest,
                        unit=RowsAcross([s.unit for s in shards], bounds),
                        norm=RowsAcross([s.norm for s in shards], bounds), pool=pool, counts=counts,
                        corpus_ids=corpus_ids, shards=shards, bounds=bounds)


def open_sharded(path: Path, spec: StoreSpec | None = None, corpus_ids=None,
                 verify_hashes: bool = True) -> ShardedStore:
    """Open a sharded store: every shard checked as ``open_store`` checks a store, and against the
    top manifest (its rows, the whole store's identity), then put together."""
    path = Path(path)
    rebuild = "run `ffnlens index --shards N` to finish or rebuild it"
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        if path.is_dir():
            raise StoreError(f"the sharded store at {path} is only partly built (no {MANIFEST}); "
                             f"{rebuild} (it resumes where it stopped)") from None
        raise StoreError(f"no sharded store at {path}; {rebuild}") from None
    except (OSError, ValueError) as e:
        raise StoreError(f"{path / MANIFEST} cannot be read ({e}); {rebuild}") from e
    if manifest.get("format") != FORMAT or not manifest.get("complete") or SHARDS not in manifest:
        raise StoreError(f"{path} is not a complete sharded store; {rebuild}")
    if spec is not None:  # the whole store's identity, as open_store checks an unsharded one
        want = spec.identity()
        diff = [k for k in want if manifest.get(k) != want[k]]
        if diff:
            raise StoreError(f"the store at {path} was built for another model or corpus "
                             f"({', '.join(diff)} differ); {rebuild}")
    shards = []
    for i, entry in enumerate(manifest[SHARDS]):
        st = open_store(path / entry["name"], spec, corpus_ids, verify_hashes)
        mine = st.manifest.get("shard", {})
        if (mine.get("index"), mine.get("of"), mine.get("start"), mine.get("stop")) != \
                (i, len(manifest[SHARDS]), entry["start"], entry["stop"]) or \
                mine.get("store") != {k: manifest.get(k) for k in mine.get("store", {})} or \
                st.manifest.get("unit_fingerprint") != entry.get("unit_fingerprint"):
            raise StoreError(f"{path / entry['name']} is not shard {i} of this store (its rows or "
                             f"vectors differ from the top manifest's); {rebuild}")
        shards.append(st)
    store = assemble(path, manifest, shards, corpus_ids)
    if store.size != manifest["pool_size"]:
        raise StoreError(f"the shards of {path} hold {store.size:,} strings, the manifest says "
                         f"{manifest['pool_size']:,}; {rebuild}")
    return store


def open_any(path: Path, spec: StoreSpec | None = None, corpus_ids=None,
             verify_hashes: bool = True) -> Store:
    """The store at ``path``, sharded or not."""
    if is_sharded(path):
        return open_sharded(path, spec, corpus_ids, verify_hashes)
    return open_store(path, spec, corpus_ids, verify_hashes)


def seal_top(path: Path, spec: StoreSpec, shards: list[Store], extra: dict) -> dict:
    """Write the top manifest of sealed ``shards`` (atomically: the store is complete from then
    on); ``extra`` adds the build's entries (defaults, seconds). Returns the manifest."""
    first = shards[0].manifest
    manifest = {"format": FORMAT, "complete": True, **spec.identity(),
                "model_name": spec.model_name, "activation": spec.activation,
                "context": spec.context, "corpus_name": spec.corpus_name,
                "pool_size": int(sum(s.size for s in shards)), "n_layer": first["n_layer"],
                "n_embd": first["n_embd"], "vocab": first["vocab"], "files": {},
                SHARDS: [{"name": s.path.name, "start": int(s.manifest["shard"]["start"]),
                          "stop": int(s.manifest["shard"]["stop"]),
                          "unit_fingerprint": s.manifest["unit_fingerprint"]} for s in shards],
                **extra}
    if all("bound" in s.manifest for s in shards):  # each shard answers with its own bound index
        manifest["bound"] = {"per_shard": True}
    whole = assemble(path, manifest, shards, None)
    manifest["unit_fingerprint"] = unit_fingerprint(whole.unit)  # the unsharded store's, row for row
    atomic_write_json(Path(path) / MANIFEST, manifest, sync=True)
    return manifest
