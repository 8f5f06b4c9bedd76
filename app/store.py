"""The activation store: every pool string's last-position FFN output, per block.

A store is a directory:
    manifest.json       what it was built from (model and corpus hashes, pool settings, dtype),
                        its default thresholds, and the size and hash of every file
    ffn_unit.npy        (n_layer, P, n_embd) float16: unit-normalised FFN outputs
    ffn_norm.npy        (n_layer, P) float32: their norms (unit * norm = the FFN output)
    pool_starts.npy     (P,) int64: first occurrence of each pool string in the corpus
    pool_at.npy         (positions,) int32: pool row of the string starting at each position
    counts_*.npy        the next-character count table as CSR

and, beside them, any search index's files (app/search: the bound's, the ivf's): the backends own
their names, build and checks; the store records them generically (``IndexFiles``, ``seal_index``,
``finalize``'s ``indexes``) and knows nothing else of them.

It is built in ``<dir>.partial`` (resumable: rows are written in order and the number done is
recorded after each flush) and renamed into place only when complete, so a store that loads is
always whole. Loading memory-maps the large arrays and refuses a store built for another model,
corpus or pool.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from model.errors import FfnlensError
from model.files import atomic_write_json, sha256_file
from model.gpt import GPT, Trace

from .corpus import NextCounts, Pool, build_pool, build_positions, next_counts, string_keys

FORMAT = 1
MANIFEST = "manifest.json"
PROGRESS = "progress.json"
BIG = ("ffn_unit.npy", "ffn_norm.npy")
SMALL = ("pool_starts.npy", "pool_at.npy", "counts_indptr.npy", "counts_chars.npy", "counts_n.npy")


@dataclass(frozen=True)
class IndexFiles:
    """A search index's files beside the vectors: ``key``, its manifest entry; ``names``, its files
    in the manifest's order; ``hashed``, those small enough to hash (the search backends say)."""

    key: str
    names: tuple[str, ...]
    hashed: tuple[str, ...] = ()


class StoreError(FfnlensError):
    """A store is missing, incomplete, corrupt, or was built for something else."""


@dataclass
class StoreSpec:
    """What a store is built from; two stores with equal specs are interchangeable."""

    model_name: str
    model_sha256: str
    corpus_name: str
    corpus_sha256: str
    n: int = 10
    mode: str = "reference"
    dtype: str = "float16"
    activation: str = "ffn"  # the Trace field stored: "ffn" (the method), "attn" or "resid"
    # 0: every unique n-character string run alone (the method); T > 0: an in-context store, every
    # position's output computed inside windows of up to T characters of the text before it.
    context: int = 0

    def identity(self) -> dict:
        ident = {"model_sha256": self.model_sha256, "corpus_sha256": self.corpus_sha256,
                 "n": self.n, "mode": self.mode, "dtype": self.dtype}
        if self.activation != "ffn":  # FFN stores keep the identity they had before the options
            ident["activation"] = self.activation
        if self.context:
            ident["context"] = self.context
        return ident

    def dirname(self) -> str:
        return (f"{self.model_name}-{self.model_sha256[:8]}-{self.corpus_sha256[:8]}"
                f"-n{self.n}-{self.mode}" + ("" if self.activation == "ffn" else f"-{self.activation}")
                + (f"-ctx{self.context}" if self.context else ""))


def _write_json(path: Path, obj) -> None:
    atomic_write_json(path, obj, sync=False)


@torch.inference_mode()
def ffn_last(model: GPT, idx: torch.Tensor, activation: str = "ffn") -> torch.Tensor:
    """(B, T) ids -> (n_layer, B, C) float32: each block's FFN output (or its attention output, or
    the residual stream after it) at the last position."""
    return model.read_last(idx, activation, head=False)[1]


def build_store(model: GPT, ids: np.ndarray, spec: StoreSpec, out_dir: Path, device: str = "cpu",
                batch_size: int = 2048, progress: bool = True, flush_every: int = 64,
                rows: tuple[int, int] | None = None, bar=None) -> Path:
    """Build (or resume building) the store's arrays in ``out_dir.partial``; returns that path.

    Call :func:`finalize` to give it its manifest and move it into place. ``rows`` (start, stop):
    a shard, the store of the pool's rows start to stop - 1 only (app/shards.py): its vectors, its
    strings' starts and follow-on counts, and ``pool_at`` mapping each corpus position to its row
    in the shard (-1 where the string there lies in another shard). ``bar``: a progress bar (tqdm)
    to advance instead of the store's own (a sharded build shows one for all its shards).
    """
    out_dir = Path(out_dir)
    part = out_dir.with_name(out_dir.name + ".partial")
    ident = spec.identity() if rows is None else {**spec.identity(), "rows": [int(r) for r in rows]}
    prog_path = part / PROGRESS
    if part.exists():
        try:
            prog = json.loads(prog_path.read_text())
            if prog.get("identity") != ident:
                raise ValueError("built for something else")
        except (OSError, ValueError):
            shutil.rmtree(part)  # unreadable or foreign: start again
    part.mkdir(parents=True, exist_ok=True)
    if not prog_path.exists():
        pool = (build_positions(ids, spec.n, spec.mode) if spec.context
                else build_pool(ids, spec.n, model.cfg.vocab_size, spec.mode))
        nc = next_counts(ids, pool, model.cfg.vocab_size)
        if rows is not None:
            pool, nc = shard_rows(pool, nc, *rows)
        np.save(part / "pool_starts.npy", pool.starts)
        np.save(part / "pool_at.npy", pool.at)
        np.save(part / "counts_indptr.npy", nc.indptr)
        np.save(part / "counts_chars.npy", nc.chars.astype(np.uint8 if nc.vocab_size <= 256 else np.int32))
        np.save(part / "counts_n.npy", nc.counts)
        L, C, P = model.cfg.n_layer, model.cfg.n_embd, len(pool)
        np.lib.format.open_memmap(part / "ffn_unit.npy", "w+", np.float16, (L, P, C)).flush()
        np.lib.format.open_memmap(part / "ffn_norm.npy", "w+", np.float32, (L, P)).flush()
        _write_json(prog_path, {"identity": ident, "done": 0, "seconds": 0.0})
    prog = json.loads(prog_path.read_text())
    starts = np.load(part / "pool_starts.npy")
    unit = np.load(part / "ffn_unit.npy", mmap_mode="r+")
    norm = np.load(part / "ffn_norm.npy", mmap_mode="r+")
    P, n = len(starts), spec.n
    done, seconds = prog["done"], prog["seconds"]
    model.eval()
    own = bar is None
    if own:
        bar = tqdm(total=P, initial=done, unit="str", desc=f"store {spec.model_name}",
                   disable=not progress, dynamic_ncols=True, smoothing=0.05)
    else:
        bar.update(done)  # rows an interrupted build had done
    t0 = time.time() - seconds
    first = 0 if rows is None else int(rows[0])  # an in-context shard's rows are positions from it
    pieces = (_in_context(model, ids, spec, first + P, first + done, device, batch_size, first)
              if spec.context else _alone(model, ids, starts, spec, done, device, batch_size))
    for batches, (end, f) in enumerate(pieces, 1):  # f: (L, end - done, C) float32
        nrm = f.norm(dim=-1)
        u = f / nrm.clamp_min(1e-30)[..., None]
        unit[:, done:end] = u.half().cpu().numpy()
        norm[:, done:end] = nrm.cpu().numpy()
        bar.update(end - done)
        done = end
        if batches % flush_every == 0 or done == P:
            unit.flush()
            norm.flush()
            _write_json(prog_path, {"identity": ident, "done": done, "seconds": time.time() - t0})
    if own:
        bar.close()
    return part


def shard_rows(pool: Pool, nc: NextCounts, start: int, stop: int) -> tuple[Pool, NextCounts]:
    """The pool and count table of rows start to stop - 1, numbered from 0: the strings' starts and
    count rows as they are, ``at`` mapping every corpus position to its row here, or -1."""
    at = pool.at.astype(np.int64)
    inside = (at >= start) & (at < stop)
    local_at = np.where(inside, at - start, -1).astype(np.int32)
    lo, hi = int(nc.indptr[start]), int(nc.indptr[stop])
    counts = NextCounts(nc.indptr[start : stop + 1] - lo, nc.chars[lo:hi], nc.counts[lo:hi],
                        nc.vocab_size)
    return Pool(pool.n, pool.mode, pool.starts[start:stop].copy(), local_at), counts


def _alone(model: GPT, ids: np.ndarray, starts: np.ndarray, spec: StoreSpec, done: int,
           device: str, batch_size: int):
    """(end row, outputs) for the pool strings from row ``done`` on, each run as its own prompt."""
    offs = np.arange(spec.n)
    P = len(starts)
    while done < P:
        end = min(P, done + batch_size)
        idx = torch.from_numpy(ids[starts[done:end, None] + offs].astype(np.int64)).to(device)
        yield end, ffn_last(model, idx, spec.activation)
        done = end


@torch.inference_mode()
def _in_context(model: GPT, ids: np.ndarray, spec: StoreSpec, P: int, done: int, device: str,
                batch_size: int, first: int = 0):
    """(end row, outputs) for the positions from row ``done`` on, each read in context.

    Row r is the string ids[r : r + n], its output taken at its last character q = r + n - 1.
    Windows of T = spec.context characters start every S = T // 2 positions; window j keeps the
    outputs of its second half (the first window keeps all of its own), so every position is read
    with at least T // 2 characters before it, or all of the text when it lies nearer the start.
    ``P`` and ``done`` count from row 0; the rows yielded count from row ``first`` (a shard's)."""
    T, n = spec.context, spec.n
    S = max(1, T // 2)
    last = P + n - 1  # one past the last position with a row
    per_batch = max(1, batch_size // T) if T > 1 else batch_size
    while done < P:
        q0 = done + n - 1  # the next position to produce
        # Window j starts at a = j * S and keeps [a + T - S, a + T) (j >= 1) or [0, T) (j = 0).
        j = 0 if q0 < T else (q0 - T) // S + 1
        batch = []
        for jj in range(j, j + per_batch):
            a = jj * S
            keep_from = 0 if jj == 0 else a + T - S
            if keep_from >= last:
                break
            batch.append((a, max(keep_from, q0), min(a + T, last)))
        groups: dict[int, list] = {}  # windows near the text's end are shorter: run equal lengths together
        for w in batch:
            groups.setdefault(min(w[0] + T, len(ids)) - w[0], []).append(w)
        pieces = {}
        for length, ws in groups.items():
            idx = torch.from_numpy(np.stack([ids[a : a + length] for a, _, _ in ws]).astype(np.int64))
            trace = Trace()
            model(idx.to(device), trace=trace, skip_head=True)
            acts = torch.stack([t.float() for t in getattr(trace, spec.activation)])  # (L, B, len, C)
            for i, (a, lo, hi) in enumerate(ws):
                pieces[a] = acts[:, i, lo - a : hi - a]
        f = torch.cat([pieces[a] for a, _, _ in batch], dim=1)
        end = done + f.shape[1]
        yield end - first, f  # rows from ``first`` (a shard's) on
        done = end


def unit_fingerprint(unit: np.ndarray, samples: int = 1024) -> str:
    """sha256 of evenly spaced rows of every block: ties derived indexes to these vectors."""
    L, P, _ = unit.shape
    rows = np.unique(np.linspace(0, P - 1, min(samples, P)).astype(np.int64))
    h = hashlib.sha256()
    for b in range(L):
        h.update(np.ascontiguousarray(unit[b, rows]).tobytes())
    return h.hexdigest()


def file_entries(path: Path, names, hashed=()) -> dict:
    """Sizes of the named files, and hashes of the small ones (the store's and ``hashed``)."""
    out = {}
    for name in names:
        p = path / name
        out[name] = {"bytes": p.stat().st_size}
        if name in SMALL + tuple(hashed):
            out[name]["sha256"] = sha256_file(p)
    return out


def seal_index(path: Path, files: IndexFiles, info: dict) -> None:
    """Record a derived index's files (sizes, and hashes of small ones) and its entry ``files.key``
    (``info`` plus the fingerprint of the vectors it was built from) in the manifest, atomically."""
    mpath = path / MANIFEST
    manifest = json.loads(mpath.read_text())
    unit = np.load(path / "ffn_unit.npy", mmap_mode="r")
    fp = unit_fingerprint(unit)
    manifest.setdefault("unit_fingerprint", fp)
    manifest["files"].update(file_entries(path, files.names, files.hashed))
    manifest[files.key] = {**info, "unit_fingerprint": fp}
    _write_json(mpath, manifest)


def retire_index(path: Path, key: str) -> None:
    """Take a derived index out of the store at ``path`` before it is rebuilt: its manifest entry
    and the entries of its files (named ``{key}_*``) go first, atomically, then the files; so an
    interruption leaves a store that opens without the index (and ``ffnlens index`` adds it),
    never one whose manifest describes files that were half replaced."""
    mpath = path / MANIFEST
    manifest = json.loads(mpath.read_text())
    names = [n for n in manifest["files"] if n.startswith(key + "_")]
    if key not in manifest and not names:
        return
    manifest.pop(key, None)
    for n in names:
        del manifest["files"][n]
    _write_json(mpath, manifest)
    for n in names:
        (path / n).unlink(missing_ok=True)


def finalize(part: Path, spec: StoreSpec, model_cfg: dict, vocab: str, extra: dict,
             indexes=()) -> Path:
    """Hash the files, write the manifest, and move ``part`` into place atomically. ``indexes``
    (``IndexFiles``, from the search backends) are the search indexes that may lie in ``part``:
    one whose entry is in ``extra`` and whose files are all there is recorded (its files, its entry
    with the vectors' fingerprint); one whose files are not all there is left out."""
    prog = json.loads((part / PROGRESS).read_text())
    P = len(np.load(part / "pool_starts.npy", mmap_mode="r"))
    if prog["done"] != P:
        raise StoreError(f"{part} is incomplete ({prog['done']} of {P} strings)")
    built = [ix for ix in indexes if ix.key in extra and all((part / n).exists() for n in ix.names)]
    names = SMALL + BIG + tuple(n for ix in built for n in ix.names)
    files = file_entries(part, names, tuple(n for ix in built for n in ix.hashed))
    unit = np.load(part / "ffn_unit.npy", mmap_mode="r")
    manifest = {
        "format": FORMAT,
        "complete": True,
        **spec.identity(),
        "model_name": spec.model_name,
        "activation": spec.activation,
        "context": spec.context,
        "corpus_name": spec.corpus_name,
        "pool_size": P,
        "n_layer": model_cfg["n_layer"],
        "n_embd": model_cfg["n_embd"],
        "vocab": vocab,
        "build_seconds": round(prog["seconds"], 1),
        "unit_fingerprint": unit_fingerprint(unit),
        "files": files,
        **extra,
    }
    for ix in indexes:
        if ix in built:
            manifest[ix.key] = {**extra[ix.key], "unit_fingerprint": manifest["unit_fingerprint"]}
        else:
            manifest.pop(ix.key, None)
    _write_json(part / MANIFEST, manifest)
    (part / PROGRESS).unlink()
    final = part.with_name(part.name[: -len(".partial")])
    if final.exists():
        old = final.with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(part, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(part, final)
    return final


@dataclass
class Store:
    path: Path
    manifest: dict
    unit: np.ndarray  # (L, P, C) float16, memory-mapped
    norm: np.ndarray  # (L, P) float32, memory-mapped
    pool: Pool
    counts: NextCounts
    corpus_ids: np.ndarray | None = field(default=None, repr=False)  # the corpus as token ids
    _lookup: tuple | None = field(default=None, repr=False)

    @property
    def n_layer(self) -> int:
        return self.unit.shape[0]

    @property
    def size(self) -> int:
        return self.unit.shape[1]

    @property
    def follow_totals(self) -> np.ndarray:
        """(P,) occurrences of each pool string that have a following character (cached)."""
        if getattr(self, "_totals", None) is None:
            self._totals = self.counts.totals()
        return self._totals

    def occurrences(self, row: int) -> np.ndarray:
        """Corpus positions where pool string ``row`` starts (inverted index built on first use)."""
        if getattr(self, "_occ", None) is None:
            order = np.argsort(self.pool.at, kind="stable")
            self._occ = (order, np.searchsorted(self.pool.at[order], np.arange(self.size + 1)))
        order, bounds = self._occ
        return order[bounds[row] : bounds[row + 1]]

    @property
    def defaults(self) -> dict:
        return self.manifest.get("defaults", {})

    def ffn(self, block: int, rows) -> np.ndarray:
        """The stored FFN outputs (float32) of ``rows`` in ``block``."""
        rows = np.asarray(rows)
        return self.unit[block, rows].astype(np.float32) * self.norm[block, rows, None]

    @property
    def context(self) -> int:
        """0 for a pool of strings each read alone; the window length of an in-context store."""
        return int(self.manifest.get("context", 0))

    def find(self, ids: np.ndarray) -> int | None:
        """Pool row of the n-character string ``ids``, or None when it is not in the pool (or the
        store is in-context: there a string has a row per occurrence, none of them the prompt's)."""
        if len(ids) != self.pool.n or self.context:
            return None
        V = len(self.manifest["vocab"])
        if self._lookup is None:
            keys = string_keys(self.pool.strings(self.corpus_ids), V)
            order = np.argsort(keys, kind="stable")
            self._lookup = (keys[order], order)
        keys, order = self._lookup
        k = string_keys(np.asarray(ids)[None], V)[0]
        i = int(np.searchsorted(keys, k))
        return int(order[i]) if i < len(keys) and keys[i] == k else None


def open_store(path: Path, spec: StoreSpec | None = None, corpus_ids: np.ndarray | None = None,
               verify_hashes: bool = True) -> Store:
    """Memory-map a complete store; with ``spec``, refuse one built for anything else."""
    path = Path(path)
    rebuild = "run `ffnlens index` for this model and corpus to rebuild it"
    mpath = path / MANIFEST
    if not mpath.exists():
        if path.with_name(path.name + ".partial").exists() or path.name.endswith(".partial"):
            raise StoreError(f"the store at {path} is only partly built; run `ffnlens index` to "
                             "finish it (it resumes where it stopped)")
        raise StoreError(f"no store at {path} (no {MANIFEST}); {rebuild}")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise StoreError(f"{mpath} is not valid JSON ({e}); {rebuild}") from e
    if manifest.get("format") != FORMAT or not manifest.get("complete"):
        raise StoreError(f"{path} has an unknown format or was never completed; {rebuild}")
    if spec is not None:
        want = {**spec.identity(), "activation": spec.activation, "context": spec.context}
        have = {**{k: manifest.get(k) for k in want}, "activation": manifest.get("activation", "ffn"),
                "context": manifest.get("context", 0)}
        diff = [k for k in want if want[k] != have[k]]
        if diff:
            what = ", ".join(f"{k} is {str(have[k])[:12]} but {str(want[k])[:12]} is wanted"
                             for k in diff)
            raise StoreError(f"the store at {path} was built for another model or corpus ({what}); "
                             f"{rebuild}")
    for name, meta in manifest["files"].items():
        p = path / name
        if not p.exists():
            raise StoreError(f"{p} is missing; {rebuild}")
        if p.stat().st_size != meta["bytes"]:
            raise StoreError(f"{p} has {p.stat().st_size} bytes, the manifest says {meta['bytes']}: "
                             f"the store is truncated or corrupt; {rebuild}")
        if verify_hashes and "sha256" in meta and sha256_file(p) != meta["sha256"]:
            raise StoreError(f"{p} does not match its hash in the manifest; {rebuild}")
    try:
        store = load_arrays(path, manifest, corpus_ids)
    except (ValueError, OSError) as e:
        raise StoreError(f"{path} cannot be read ({e}); {rebuild}") from e
    L, P, C = manifest["n_layer"], manifest["pool_size"], manifest["n_embd"]
    if store.unit.shape != (L, P, C) or store.norm.shape != (L, P) or len(store.pool.starts) != P:
        raise StoreError(f"{path}: array shapes do not match the manifest; {rebuild}")
    if verify_hashes and "unit_fingerprint" in manifest and \
            unit_fingerprint(store.unit) != manifest["unit_fingerprint"]:
        raise StoreError(f"{path / 'ffn_unit.npy'} does not match its fingerprint in the manifest: "
                         f"the vectors were changed or corrupted; {rebuild}")
    return store


def load_arrays(path: Path, manifest: dict, corpus_ids: np.ndarray | None) -> Store:
    """A Store over the arrays in ``path`` (large ones memory-mapped), without any checks;
    ``manifest`` needs at least vocab, n and mode."""
    counts = NextCounts(np.load(path / "counts_indptr.npy"),
                        np.load(path / "counts_chars.npy").astype(np.int32),
                        np.load(path / "counts_n.npy"), len(manifest["vocab"]))
    pool = Pool(n=manifest["n"], mode=manifest["mode"], starts=np.load(path / "pool_starts.npy"),
                at=np.load(path / "pool_at.npy"))
    return Store(path=path, manifest=manifest, unit=np.load(path / "ffn_unit.npy", mmap_mode="r"),
                 norm=np.load(path / "ffn_norm.npy", mmap_mode="r"), pool=pool, counts=counts,
                 corpus_ids=corpus_ids)
