"""Opening what a command or the web app works on: a model, its corpus, its store, an engine.

Resolves names to paths, checks that the corpus is the one the model was trained on (or that its
characters fit the model when another corpus is allowed), and finds or builds the store.
"""
from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from model.checkpoint import load_model, resolve_model_dir
from model.tokenizer import UnknownCharacters
from model.train import resolve_device

from .approx import Engine
from .corpus import DEFAULT_CORPUS, TRAIN_FRACTION, Corpus, CorpusError, load_corpus
from .calibrate import calibrate_thresholds
from .search import index_files, make_search
from .search.bound_build import add_bound, seal_bound
from .search.ivf import build_ivf, seal_ivf
from .settings import Settings
from .shards import ShardedStore, is_sharded, open_any, open_sharded, sharded_dirname
from .store import StoreError, StoreSpec, build_store, finalize, open_store, retire_index


@dataclass
class Workspace:
    model: object
    tok: object
    model_info: dict
    corpus: Corpus
    ids: np.ndarray
    spec: StoreSpec
    store_dir: Path
    device: str
    shards: int = 0  # 0: the store is one directory; N: split into N shards (app/shards.py)


def open_workspace(settings: Settings, model: str | None = None, corpus: str | None = None,
                   n: int = 10, mode: str = "reference", store: str | None = None,
                   device: str | None = None, allow_other_corpus: bool = False,
                   activation: str = "ffn", context: int = 0, shards: int = 0) -> Workspace:
    device = resolve_device(device or settings.device)
    model = model or settings.model
    text = None
    if model.startswith("nanogpt:"):
        text = load_corpus(corpus) if corpus is not None else None
        model_dir = nanogpt_model(settings, model[len("nanogpt:"):], text, check=not allow_other_corpus)
    else:
        model_dir = resolve_model_dir(model, homes=(settings.models,))
    net, tok, info = load_model(model_dir, device=device)
    trained_on = info.get("corpus", {})
    source = info.get("source", {})
    nanogpt = source.get("format") == "nanogpt" and not trained_on
    shown = str(model_dir) if nanogpt else model_dir.name  # an import is named by its folder
    if corpus is None and nanogpt:
        corpus = _nanogpt_corpus(source)
    if corpus is None:
        if not trained_on:
            raise CorpusError(f"model {shown} does not record the text it was trained on "
                              "(an imported nanoGPT checkpoint): pass that text with --corpus PATH")
        if trained_on.get("name", DEFAULT_CORPUS) != DEFAULT_CORPUS:
            raise CorpusError(
                f"model {shown} was trained on {trained_on.get('name')!r} "
                f"(sha256 {trained_on.get('sha256', '?')[:16]}..., {trained_on.get('chars')} "
                f"characters): pass that file with --corpus PATH")
    if text is None:
        text = load_corpus(corpus)
    if trained_on.get("sha256") and text.sha256 != trained_on["sha256"] and not allow_other_corpus:
        raise CorpusError(
            f"the corpus {text.name!r} (sha256 {text.sha256[:16]}..., {len(text.text)} characters) "
            f"is not the one model {shown} was trained on ({trained_on.get('name')!r}, "
            f"sha256 {trained_on['sha256'][:16]}..., {trained_on.get('chars')} characters); pass "
            f"the right file, or --allow-other-corpus to explore this text with this model")
    if nanogpt and not allow_other_corpus:
        from model.nanogpt import check_text

        check_text(tok.chars, text.text, source.get("meta") or f"the meta.pkl of {model_dir}",
                   text.name, model_dir)
    try:
        ids = tok.encode(text.text)
    except UnknownCharacters as e:
        raise CorpusError(f"the corpus {text.name!r} has {e}") from e
    if context and not n <= context <= net.cfg.block_size:
        raise CorpusError(f"an in-context store reads windows of n ({n}) to the model's context "
                          f"({net.cfg.block_size}) characters; --context {context} is outside that")
    spec = StoreSpec(model_name=model_dir.name, model_sha256=info["sha256"], corpus_name=text.name,
                     corpus_sha256=text.sha256, n=n, mode=mode, activation=activation, context=context)
    store_dir = Path(store) if store else settings.stores / (
        sharded_dirname(spec, shards) if shards else spec.dirname())
    return Workspace(net, tok, info, text, ids, spec, store_dir, device, shards)


def _nanogpt_corpus(source: dict) -> str | None:
    """The text of an imported nanoGPT model when nanoGPT's layout has it: ``input.txt`` beside its
    meta.pkl (``data/<dataset>/``, where nanoGPT's prepare.py keeps the text it encoded)."""
    meta = source.get("meta")
    if meta and (Path(meta).parent / "input.txt").is_file():
        return str(Path(meta).parent / "input.txt")
    return None


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def nanogpt_model(settings: Settings, spec: str, corpus: Corpus | None = None,
                  check: bool = True) -> Path:
    """The model directory of a nanoGPT checkpoint, ``PATH`` or ``PATH#NAME``: imported into
    $FFNLENS_HOME/models on first use, as NAME or as ``nanogpt-<checkpoint hash>-<vocabulary
    hash>`` (so a changed checkpoint or meta.pkl is imported afresh). Its vocabulary is the meta.pkl
    beside it, else its dataset's ``data/<dataset>/meta.pkl`` in its folder or any above. With
    ``check``, the vocabulary must be the characters of ``corpus`` (or of the input.txt beside
    meta.pkl), before anything is imported."""
    from model.checkpoint import CONFIG, CheckpointError
    from model.nanogpt import check_text, open_nanogpt, write_model

    path, name = spec, None
    if "#" in spec and not Path(spec).is_file():
        path, _, name = spec.rpartition("#")
        if not NAME.fullmatch(name):
            raise CheckpointError(f"nanogpt:{spec}: the model name after '#' must be letters, digits, "
                                  "'.', '_' or '-' (it becomes a folder under $FFNLENS_HOME/models)")
    src = open_nanogpt(path)
    out = settings.models / (name or src.key)
    try:
        if corpus is None and check and (src.meta.parent / "input.txt").is_file():
            corpus = load_corpus(str(src.meta.parent / "input.txt"))  # what open_workspace will take
        if corpus is not None and check:
            check_text(src.vocab, corpus.text, src.meta, corpus.name)
        if (out / CONFIG).exists():
            try:
                have = json.loads((out / CONFIG).read_text()).get("source", {})
            except (OSError, ValueError, AttributeError):
                have = {"format": "nanogpt"}  # a damaged import: made again
            if have.get("format") != "nanogpt":
                raise CheckpointError(f"{out} holds a model that is not a nanoGPT import; give the "
                                      "import another name (nanogpt:PATH#NAME)")
            if have.get("checkpoint_sha256") == src.sha256 and have.get("vocab_sha256") == src.vocab_sha256:
                return out
            (out / CONFIG).unlink()  # another checkpoint or vocabulary under this name: made again
        write_model(src, out, out.name)
    except CheckpointError as e:
        raise type(e)(f"{e} (on-the-fly import of {src.path} into {out})") from e
    print(f"ffnlens: imported {src.path} (vocabulary: {src.meta}) into {out}", file=sys.stderr)
    return out


def build_index(ws: Workspace, batch_size: int = 2048, progress: bool = True,
                calibration_prompts: int = 256, ivf_kind: str | None = None) -> Path:
    """Build the store (resuming a partial build), calibrate its thresholds, add the bound index
    and, when ``ivf_kind`` is "sq8" or "flat", the ivf index; move it into place."""
    part = build_store(ws.model, ws.ids, ws.spec, ws.store_dir, ws.device, batch_size, progress)
    st = open_partial(part, ws)
    engine = Engine(ws.model, ws.tok, st, make_search(st, "exact", ws.device), ws.device)
    defaults = calibrate_thresholds(engine, n_prompts=calibration_prompts, progress=progress)
    extra = {"defaults": defaults,
             "bound": bound_index(part, progress, defaults.get("thresholds"), pricing_prompts(ws))}
    if ivf_kind:
        extra["ivf"] = ivf_index(part, ivf_kind, progress)
    return finalize(part, ws.spec, ws.model.cfg.to_dict(), ws.tok.chars, extra,
                    index_files(ws.model.cfg.n_layer))


def bound_index(path: Path, progress: bool = True, thresholds=None,
                prompts: np.ndarray | None = None) -> dict:
    """Write the bound index beside the vectors at ``path`` (its ranks priced at the calibrated
    ``thresholds`` too, when given, on the outputs ``prompts`` from ``pricing_prompts``);
    returns its manifest entry."""
    t0 = time.time()
    info = add_bound(path, thresholds=thresholds, progress=progress, prompts=prompts)
    return {**info, "seconds": round(time.time() - t0, 1)}


def pricing_lengths(count: int, longest: int) -> np.ndarray:
    """The lengths of ``pricing_prompts``' ``count`` prompts: 1, 2, ..., ``longest``, 1, 2, ..."""
    return 1 + np.arange(count) % max(1, longest)


@torch.inference_mode()
def pricing_prompts(ws: Workspace, count: int = 128, seed: int = 0) -> np.ndarray | None:
    """(L, count, C) float32: the stored output of ``count`` prompts from the validation split
    (the corpus's last tenth, seed ``seed``), of the lengths the explorer is asked: every length
    from one character to the in-context window, or to three times the pool strings' length,
    in turn (typing a prompt asks each of its prefixes). The bound's ranks are priced on them:
    pool strings find their neighbours closer than typed prompts do, and short prompts leave the
    largest neighbour sets (on tiny, priced on 10-character prompts only, block 4 kept rank 16
    and left 60,000-70,000 candidates for typed prompts' 20,000 neighbours). None when the split
    is too short to hold them."""
    lengths = pricing_lengths(count, ws.spec.context or min(3 * ws.spec.n, ws.model.cfg.block_size))
    lo, hi = int(TRAIN_FRACTION * len(ws.ids)), len(ws.ids) - int(lengths.max())
    if hi - lo < count:
        return None
    starts = np.random.default_rng(seed).integers(lo, hi, count)
    outs = np.empty((ws.model.cfg.n_layer, count, ws.model.cfg.n_embd), dtype=np.float32)
    for n in np.unique(lengths):  # one batch per length
        at = np.flatnonzero(lengths == n)
        for i in range(0, len(at), 64):
            part = at[i : i + 64]
            idx = torch.from_numpy(np.stack([ws.ids[s : s + n] for s in starts[part]]).astype(np.int64))
            outs[:, part] = ws.model.read_last(idx.to(ws.device), ws.spec.activation,
                                               head=False)[1].cpu().numpy()
    return outs


def ivf_index(path: Path, kind: str, progress: bool = True) -> dict:
    """Write the ivf index beside the vectors at ``path``; returns its manifest entry."""
    t0 = time.time()
    info = build_ivf(path, kind=kind, progress=progress)
    return {**info, "seconds": round(time.time() - t0, 1)}


def add_missing_indexes(ws: Workspace, ivf_kind: str | None, progress: bool = True) -> list[str]:
    """Add the bound index (and the ivf index of ``ivf_kind``) to a complete store that lacks them
    or whose copies do not fit it; returns what was added. The manifest is rewritten atomically
    after each, so an interruption leaves the store as it was."""
    added = []
    st = open_store(ws.store_dir, ws.spec)
    for name, wanted in (("bound", True), ("ivf", bool(ivf_kind))):
        if not wanted:
            continue
        try:
            make_search(st, name)
            continue
        except StoreError:
            pass
        retire_index(ws.store_dir, name)  # a present but unfit index leaves before it is rebuilt
        if name == "bound":
            thresholds = st.manifest.get("defaults", {}).get("thresholds")
            seal_bound(ws.store_dir, bound_index(ws.store_dir, progress, thresholds,
                                                 pricing_prompts(ws)))
        else:
            seal_ivf(ws.store_dir, ivf_index(ws.store_dir, ivf_kind, progress))
        added.append(name)
        st = open_store(ws.store_dir, ws.spec)
    return added


def partial_manifest(ws: Workspace) -> dict:
    """What an unsealed store's readers need of a manifest (the engine reads the activation)."""
    return {"vocab": ws.tok.chars, "n": ws.spec.n, "mode": ws.spec.mode,
            "activation": ws.spec.activation, "context": ws.spec.context}


def open_partial(part: Path, ws: Workspace):
    """A Store over a finished-but-unsealed build directory (for calibration before sealing)."""
    from .store import load_arrays

    return load_arrays(part, partial_manifest(ws), ws.ids)


def open_engine(ws: Workspace, backend: str = "auto", build: bool = False,
                progress: bool = True, ray: str | None = None) -> Engine:
    """The engine over the workspace's store (sharded or not). With ``build``, a missing unsharded
    store is built first (a sharded one is built by app/shard_build.py), and an unsharded store
    whose bound index is missing or of an older layout gets it (re)built alone, so that ``make
    start`` after an upgrade serves at once (tiny's bound index: about a minute). ``ray``: the Ray
    cluster ("auto" or an address) whose actors hold a sharded store's shards and search them."""
    if build and not ws.shards and not (ws.store_dir / "manifest.json").exists():
        build_index(ws, progress=progress)
    elif build and not ws.shards and not is_sharded(ws.store_dir):
        for name in add_missing_indexes(ws, None, progress):
            print(f"ffnlens: built the {name} index of {ws.store_dir} (it was missing or of an older layout)",
                  flush=True)
    st = (open_sharded if ws.shards else open_any)(ws.store_dir, ws.spec, corpus_ids=ws.ids)
    if ray:
        if not isinstance(st, ShardedStore):
            raise StoreError(f"the store at {ws.store_dir} is not sharded: Ray searches a sharded "
                             "store (`ffnlens index --shards N`)")
        from .search.ray_shards import attach

        attach(st, ray)
    return Engine(ws.model, ws.tok, st, make_search(st, backend, ws.device), ws.device)


def about(ws: Workspace, engine: Engine) -> dict:
    """What is being served, for page headers and /api/info."""
    return {"model": ws.spec.model_name, "params": int(ws.model.num_params()),
            "val_loss": float(ws.model_info.get("losses", {}).get("val", float("nan"))),
            "corpus": Path(ws.corpus.name).name, "corpus_sha256": ws.corpus.sha256,
            "pool_size": engine.store.size, "n": engine.store.pool.n, "pool_mode": ws.spec.mode,
            "n_layer": engine.store.n_layer, "backend": engine.search.name,
            "store": engine.store.path.name, "device": ws.device,  # a name: no server paths
            "vocab": ws.tok.chars, "block_size": ws.model.cfg.block_size}


def store_label(spec: StoreSpec) -> str:
    """A store's short name among its siblings: "pool" for the method's (FFN outputs of pool strings
    read alone), else what differs, e.g. "context256", "attn", "resid-context128"."""
    parts = ([] if spec.activation == "ffn" else [spec.activation]) + \
        ([f"context{spec.context}"] if spec.context else [])
    return "-".join(parts) or "pool"


def sibling_engines(ws: Workspace, stores_dir: Path) -> dict[str, Engine]:
    """Engines over the other complete stores of the workspace's model, corpus, n and pool mode (its
    in-context stores, its attention or residual stores), by ``store_label``. Stores that do not load
    are passed over; one whose bound index does not open is served by the full scan (and says so)."""
    out = {}
    key = (ws.spec.model_sha256, ws.spec.corpus_sha256, ws.spec.n, ws.spec.mode)
    for mpath in sorted(Path(stores_dir).glob("*/manifest.json")):
        d = mpath.parent
        if d.resolve() == ws.store_dir.resolve() or is_sharded(d):
            continue  # a sharded copy of a store answers as it does: not a store of its own
        try:
            man = json.loads(mpath.read_text())
        except (OSError, ValueError):
            continue
        if (man.get("model_sha256"), man.get("corpus_sha256"), man.get("n"), man.get("mode")) != key:
            continue
        spec = replace(ws.spec, activation=man.get("activation", "ffn"), context=man.get("context", 0))
        if store_label(spec) == store_label(ws.spec):  # the served store's twin (sharded or not)
            continue
        try:
            st = open_store(d, spec, corpus_ids=ws.ids)
        except StoreError:
            continue
        try:
            search = make_search(st, "auto", ws.device)
        except StoreError as e:  # e.g. a bound index of an older layout: served by the full scan
            print(f"ffnlens: {store_label(spec)} is served by the full scan: {e}", flush=True)
            search = make_search(st, "exact", ws.device)
        out[store_label(spec)] = Engine(ws.model, ws.tok, st, search, ws.device)
    return out
