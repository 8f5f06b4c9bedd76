"""nanoGPT checkpoints (``ckpt.pt`` and ``meta.pkl``) as ffnlens model directories.

nanoGPT's ``train.py`` saves a dict with ``model`` (the state dict; torch.compile prefixes its keys
with ``_orig_mod.``), ``model_args`` (n_layer, n_head, n_embd, block_size, bias, vocab_size,
dropout) and training state; its character datasets write ``meta.pkl`` with ``stoi`` and ``itos``.
Its GPT is ours with these settings: a GELU FFN (``mlp.c_fc``, ``mlp.c_proj``) four times as wide,
one fused query/key/value map (``attn.c_attn``), biases everywhere or nowhere (the ``bias`` flag
covers the LayerNorms too), LayerNorm eps 1e-5, and a head without bias tied to the token embedding.

Files are read as data, never as code: ``ckpt.pt`` with ``torch.load(weights_only=True)`` (nanoGPT's
checkpoints hold tensors, dicts, lists, tuples, strings and numbers only, so no allow-list is
needed) and ``meta.pkl`` with an unpickler that refuses every class and function a pickle names. The vocabulary is
found the way nanoGPT's ``sample.py`` finds it: beside the checkpoint, else
``data/<dataset>/meta.pkl`` for the dataset its ``config`` records, looked for in the checkpoint's
folder and every folder above it (nanoGPT's layout: ``out/ckpt.pt`` beside ``data/``).
"""
from __future__ import annotations

import hashlib
import io
import math
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import CheckpointError, load_torch_file, save_model
from .files import sha256_file
from .gpt import GPT, GPTConfig
from .tokenizer import CharTokenizer

# nanoGPT name -> ours; {i} is the block index.
RENAMES = {
    "transformer.wte.weight": "tok_emb.weight",
    "transformer.wpe.weight": "pos_emb.weight",
    "transformer.ln_f.weight": "ln_f.weight",
    "transformer.ln_f.bias": "ln_f.bias",
    "lm_head.weight": "head.weight",
}
BLOCK_RENAMES = {
    "ln_1": "ln1", "ln_2": "ln2", "attn.c_attn": "attn.qkv", "attn.c_proj": "attn.proj",
    "mlp.c_fc": "ffn.fc", "mlp.c_proj": "ffn.proj",
}
BLOCK_KEY = re.compile(r"transformer\.h\.(\d+)\.(.+)\.(weight|bias)$")


GPT2_VOCAB_SIZES = (50257, 50304)  # GPT-2's BPE vocabulary, and nanoGPT's padding of it
ARGS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")
WHY_CHARS = ("ffnlens reads character-level models only, because its method counts which character "
             "follows each string in a text")


class VocabularyMismatch(CheckpointError):
    """A meta.pkl that does not fit the corpus or the checkpoint's dataset."""


def convert_state(state: dict, where: Path | str = "the nanoGPT checkpoint",
                  names: dict | None = None) -> dict:
    """nanoGPT's state dict -> ours (the ``_orig_mod.`` prefix dropped, causal-mask buffers skipped).
    ``names``, when given, is filled with our name -> nanoGPT's."""
    out = {}
    names = {} if names is None else names
    for key, value in state.items():
        if not isinstance(key, str) or not torch.is_tensor(value):
            raise CheckpointError(f"{where}: its 'model' entry {key!r} is not a tensor")
        key = key.removeprefix("_orig_mod.")
        if key.endswith(".attn.bias") and value.dim() == 4:  # the causal mask of non-flash attention
            continue
        if key in RENAMES:
            out[RENAMES[key]] = value
            names[RENAMES[key]] = key
            continue
        m = BLOCK_KEY.match(key)
        if not m or m.group(2) not in BLOCK_RENAMES:
            raise CheckpointError(f"{where}: unexpected tensor {key!r} for a nanoGPT checkpoint")
        ours = f"blocks.{m.group(1)}.{BLOCK_RENAMES[m.group(2)]}.{m.group(3)}"
        out[ours], names[ours] = value, key
    return out


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, tuples, sets, strings, bytes and numbers; refuses every named Python
    object (a class or function, which is how a pickle runs code)."""

    PLAIN = {("builtins", "set"), ("builtins", "frozenset")}  # pickle protocols < 4 name these

    def find_class(self, module, name):
        if (module, name) in self.PLAIN:
            return super().find_class(module, name)
        raise _Refused(f"{module}.{name}")


class _Refused(pickle.UnpicklingError):
    pass


def read_meta(meta_path) -> dict:
    """A nanoGPT ``meta.pkl`` read as plain data."""
    meta_path = Path(meta_path)
    try:
        data = meta_path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read {meta_path}: {e.strerror or e}") from e
    try:
        meta = _PlainUnpickler(io.BytesIO(data)).load()
    except _Refused as e:
        raise CheckpointError(f"{meta_path} refused: it names the Python object {e}, which could run "
                              "code when unpickled; a nanoGPT meta.pkl holds only dicts, strings and "
                              "numbers") from e
    except Exception as e:  # any failure to parse untrusted bytes: not a pickle
        raise CheckpointError(f"{meta_path} is not a pickle file (nanoGPT's meta.pkl is one, with "
                              f"vocab_size, itos and stoi): {type(e).__name__}") from e
    if not isinstance(meta, dict):
        raise CheckpointError(f"{meta_path} is not a nanoGPT meta.pkl: it holds a "
                              f"{type(meta).__name__}, not a dict with itos and stoi")
    return meta


def vocab_of(meta: dict, meta_path, vocab_size: int | None = None, ckpt_path=None) -> str:
    """The vocabulary string (character of id 0, 1, ...) of a nanoGPT meta dict, checked: ids
    0..V-1, single distinct characters, ``stoi`` its inverse, ``vocab_size`` its size and the
    checkpoint's."""
    itos = meta.get("itos")
    if isinstance(itos, (list, tuple)):  # some character datasets keep a list
        itos = dict(enumerate(itos))
    if not isinstance(itos, dict) or not itos:
        raise CheckpointError(f"{meta_path} is not a nanoGPT meta.pkl: it has no 'itos' table "
                              "(id -> character)")
    if any(isinstance(i, bool) or not isinstance(i, int) for i in itos) or \
            sorted(itos) != list(range(len(itos))):
        raise CheckpointError(f"{meta_path}: its itos table is not keyed by the ids 0..{len(itos) - 1}")
    tokens = [itos[i] for i in range(len(itos))]
    if any(not isinstance(t, str) for t in tokens):
        raise CheckpointError(f"{meta_path}: its itos table maps ids to something other than strings")
    long = next((t for t in tokens if len(t) != 1), None)
    if long is not None:
        raise CheckpointError(f"{meta_path}: its vocabulary has multi-character tokens (e.g. "
                              f"{long!r}); {WHY_CHARS}")
    chars = "".join(tokens)
    if len(set(chars)) != len(chars):
        raise CheckpointError(f"{meta_path}: its itos table repeats characters")
    stoi = meta.get("stoi")
    if stoi is not None and stoi != {c: i for i, c in enumerate(chars)}:
        raise CheckpointError(f"{meta_path}: its stoi and itos tables disagree")
    size = meta.get("vocab_size")
    if size is not None and size != len(chars):
        raise CheckpointError(f"{meta_path}: its vocab_size is {size!r} but its itos table has "
                              f"{len(chars)} characters")
    if vocab_size is not None and len(chars) != vocab_size:
        of = f"{ckpt_path}'s" if ckpt_path else "the checkpoint's"
        raise VocabularyMismatch(f"{meta_path} has {len(chars)} characters but {of} vocab_size is "
                                 f"{vocab_size}: they belong to different datasets")
    return chars


def read_vocab(meta_path: Path, vocab_size: int) -> str:
    """The vocabulary string (character of id 0, 1, ...) from a nanoGPT ``meta.pkl``."""
    return vocab_of(read_meta(meta_path), meta_path, vocab_size)


def check_text(vocab: str, text: str, meta_path, corpus_name: str, where=None) -> None:
    """nanoGPT's character datasets take their vocabulary as the sorted set of the text's
    characters: a meta.pkl whose characters are not exactly the corpus's belongs to another text
    (a same-size one would shift every prediction)."""
    have, want = set(vocab), set(text)
    if have == want:
        return
    parts = []
    if want - have:
        parts.append(f"the corpus has {_shown(want - have)} which it lacks")
    if have - want:
        parts.append(f"it has {_shown(have - want)} which the corpus lacks")
    raise VocabularyMismatch(
        f"{meta_path} does not fit the corpus {corpus_name!r} ({' and '.join(parts)}): nanoGPT's "
        "vocabulary is the set of its text's characters, so this meta.pkl or this text is not the "
        "model's; give the meta.pkl and the text of the dataset it was trained on, or "
        "--allow-other-corpus to explore another text" + (f" (model {where})" if where else ""))


def _shown(chars) -> str:
    chars = sorted(chars)
    return ", ".join(repr(c) for c in chars[:12]) + (f" and {len(chars) - 12} more" if len(chars) > 12 else "")


def _dataset(ckpt: dict) -> str | None:
    """The dataset nanoGPT's ``config`` records (a folder name under data/), or None."""
    config = ckpt.get("config")
    name = config.get("dataset") if isinstance(config, dict) else None
    if isinstance(name, str) and name and "/" not in name and "\\" not in name and name not in (".", ".."):
        return name
    return None


def _meta_dataset(meta_path: Path) -> str | None:
    """The dataset a meta.pkl belongs to when it lies in nanoGPT's layout (data/<dataset>/)."""
    parent = Path(meta_path).resolve().parent
    return parent.name if parent.parent.name == "data" else None


def bpe_refusal(where, what: str) -> CheckpointError:
    return CheckpointError(f"{where}: {what}, a GPT-2 (BPE) vocabulary; {WHY_CHARS}")


def find_meta(ckpt_path: Path, dataset: str | None) -> Path:
    """The meta.pkl of a checkpoint: beside it, else data/<dataset>/meta.pkl in its folder or any
    folder above."""
    beside = ckpt_path.parent / "meta.pkl"
    if beside.is_file():
        return beside
    if dataset:
        folder = ckpt_path.resolve().parent
        for root in (folder, *folder.parents):
            d = root / "data" / dataset
            if (d / "meta.pkl").is_file():
                return d / "meta.pkl"
            if (d / "train.bin").is_file():  # nanoGPT's GPT-2 datasets write no meta.pkl
                raise bpe_refusal(ckpt_path, f"its dataset {d} has train.bin but no meta.pkl, so nanoGPT "
                                  "encoded it with GPT-2's BPE")
        where = f"nor data/{dataset}/meta.pkl (its dataset) in {folder} or any folder above"
    else:
        where = "and the checkpoint records no dataset (config['dataset']) to look for under data/"
    raise CheckpointError(f"no meta.pkl for {ckpt_path}: none beside it {where}; give its dataset's "
                          "meta.pkl (import-nanogpt --meta PATH, or put it beside the checkpoint)")


@dataclass
class NanoGPTSource:
    """A nanoGPT checkpoint read and checked, with the vocabulary it was found to have."""
    path: Path
    ckpt: dict
    args: dict
    dataset: str | None
    meta: Path
    vocab: str
    sha256: str

    @property
    def vocab_sha256(self) -> str:
        return hashlib.sha256(self.vocab.encode("utf-8")).hexdigest()

    @property
    def key(self) -> str:
        """Names the on-the-fly import: the checkpoint and the vocabulary."""
        return f"nanogpt-{self.sha256[:12]}-{self.vocab_sha256[:8]}"


def _model_args(ckpt_path: Path, args: dict) -> dict:
    out = {}
    for key in ARGS:
        if key not in args:
            raise CheckpointError(f"{ckpt_path}: its model_args lack {key!r} (nanoGPT records "
                                  f"{', '.join(ARGS)}, bias and dropout)")
        value = args[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CheckpointError(f"{ckpt_path}: its model_args give {key} = {value!r}, not a "
                                  "positive whole number")
        out[key] = value
    if out["n_embd"] % out["n_head"]:
        raise CheckpointError(f"{ckpt_path}: its model_args give n_embd = {out['n_embd']}, not a "
                              f"multiple of n_head = {out['n_head']}")
    out["bias"] = bool(args.get("bias", True))
    dropout = args.get("dropout", 0.0)
    out["dropout"] = float(dropout) if isinstance(dropout, (int, float)) else 0.0
    return out


def open_nanogpt(ckpt_path, meta_path=None) -> NanoGPTSource:
    """Read a nanoGPT checkpoint as data and find and check its vocabulary (``meta_path``, else
    beside it, else its dataset's under data/)."""
    ckpt_path = Path(ckpt_path)
    if not ckpt_path.is_file():
        raise CheckpointError(f"no nanoGPT checkpoint at {str(ckpt_path)!r}: give the path of its ckpt.pt")
    ckpt = load_torch_file(ckpt_path, "nanoGPT checkpoint")
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict) \
            or not isinstance(ckpt.get("model_args"), dict):
        raise CheckpointError(f"{ckpt_path} is not a nanoGPT checkpoint (a dict with 'model' and "
                              "'model_args')")
    args = _model_args(ckpt_path, ckpt["model_args"])
    if args["vocab_size"] in GPT2_VOCAB_SIZES:
        raise bpe_refusal(ckpt_path, f"its vocab_size is {args['vocab_size']}")
    dataset = _dataset(ckpt)
    meta = Path(meta_path) if meta_path is not None else find_meta(ckpt_path, dataset)
    if not meta.is_file():
        raise CheckpointError(f"no meta.pkl at {meta}")
    found_for = _meta_dataset(meta)
    if dataset and found_for and found_for != dataset:
        raise VocabularyMismatch(f"{meta} is the vocabulary of dataset {found_for!r}, but {ckpt_path} "
                                 f"was trained on dataset {dataset!r} (its config's dataset): give "
                                 f"data/{dataset}/meta.pkl")
    vocab = vocab_of(read_meta(meta), meta, args["vocab_size"], ckpt_path)
    return NanoGPTSource(ckpt_path, ckpt, args, dataset, meta, vocab, sha256_file(ckpt_path))


def _number(value) -> float | None:
    """A finite float from a number or a one-element tensor, else None."""
    try:
        v = float(value)
    except (TypeError, ValueError, RuntimeError):
        return None
    return v if math.isfinite(v) else None


def write_model(src: NanoGPTSource, out_dir, name: str | None = None) -> Path:
    """Write an opened nanoGPT checkpoint as a model directory (float32 weights); returns it."""
    ckpt_path, args, ckpt = src.path, src.args, src.ckpt
    bias = args["bias"]
    cfg = GPTConfig(vocab_size=args["vocab_size"], block_size=args["block_size"],
                    n_layer=args["n_layer"], n_head=args["n_head"], n_embd=args["n_embd"], ffn_mult=4,
                    dropout=args["dropout"], activation="gelu", bias=bias, qkv_bias=bias,
                    head_bias=False, tied_head=True)
    names = {}  # ours -> nanoGPT's, for messages
    ours = convert_state(ckpt["model"], ckpt_path, names)
    bad = next((k for k, v in ours.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise CheckpointError(f"{ckpt_path}: tensor {names[bad]!r} holds NaN or infinite "
                              "values (did the training diverge?); ffnlens refuses a model whose "
                              "weights are not all finite")
    head = ours.pop("head.weight", None)
    if head is not None and "tok_emb.weight" in ours and not torch.equal(head, ours["tok_emb.weight"]):
        raise CheckpointError(f"{ckpt_path}: the head is not tied to the token embedding, as nanoGPT's is")
    with torch.device("meta"):  # the shapes model_args make, allocating nothing (they may be absurd)
        want = GPT(cfg).state_dict()
    said = ", ".join(f"{k}={args[k]}" for k in ARGS) + f", bias={bias}"
    for key, value in ours.items():
        if key in want and want[key].shape != value.shape:
            raise CheckpointError(f"{ckpt_path}: its model_args ({said}) do not fit its tensors: "
                                  f"{names[key]} is {tuple(value.shape)} where they make "
                                  f"{tuple(want[key].shape)}")
    missing = [k for k in want if k not in ours and k != "head.weight"]  # ffnlens's names
    unexpected = [names[k] for k in ours if k not in want]
    if missing or unexpected:
        raise CheckpointError(f"{ckpt_path}: its model_args ({said}) do not fit its tensors: "
                              f"missing {_few(missing)}, unexpected {_few(unexpected)}")
    model = GPT(cfg)
    model.load_state_dict(ours, strict=False)
    best = _number(ckpt.get("best_val_loss"))
    iters = ckpt.get("iter_num")
    info = {
        "name": name or Path(out_dir).name,
        "source": {"format": "nanogpt", "checkpoint": str(ckpt_path.resolve()),
                   "checkpoint_sha256": src.sha256, "meta": str(src.meta.resolve()),
                   "vocab_sha256": src.vocab_sha256, "dataset": src.dataset,
                   "iter_num": iters if isinstance(iters, int) and not isinstance(iters, bool) else None,
                   "best_val_loss": best},
        "losses": {"val": best} if best is not None else {},
        "corpus": {},  # nanoGPT does not record its text: `--corpus` names it (or input.txt beside meta.pkl)
    }
    # The vocabulary's hash in the weights file's header: the same tensors with another vocabulary
    # are another model (another hash, so another store).
    return save_model(model, CharTokenizer(src.vocab), info, Path(out_dir), dtype=torch.float32,
                      metadata={"vocab_sha256": src.vocab_sha256})


def _few(keys: list[str]) -> str:
    return "[" + ", ".join(keys[:6]) + (f", ... {len(keys) - 6} more" if len(keys) > 6 else "") + "]"


def import_nanogpt(ckpt_path, meta_path, out_dir, name: str | None = None) -> Path:
    """Write the nanoGPT checkpoint as a model directory (float32 weights); returns it.
    ``meta_path`` None: found beside the checkpoint or under data/<dataset>/."""
    return write_model(open_nanogpt(ckpt_path, meta_path), out_dir, name)
