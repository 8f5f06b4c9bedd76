"""Command line: ffnlens train | index | query | eval."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .settings import Settings


class UsageError(Exception):
    """Bad input from the user: printed as one message, exit code 2."""


def _die(msg: str) -> None:
    print(f"ffnlens: error: {msg}", file=sys.stderr)
    sys.exit(2)


# --- train -------------------------------------------------------------------------------------
def cmd_train(args, settings: Settings) -> int:
    from model.presets import get_preset
    from model.tokenizer import CharTokenizer
    from model.train import resolve_device, train

    from .corpus import load_corpus

    preset = get_preset(args.preset)
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
    res = train(preset, tok, ids[:n_train], ids[n_train:], corpus.info(), run_dir, out,
                device=device, steps=args.steps, seed=args.seed, progress=not args.quiet)
    note = f" (resumed at step {res.resumed_from})" if res.resumed_from else ""
    print(f"trained {preset.name} for {res.steps} steps{note} in {res.wall_time_s:.0f} s: "
          f"losses {json.dumps(res.losses)}; model written to {res.out_dir}")
    return 0


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
    t.add_argument("--threads", type=int, default=None, help="torch threads")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    from model.checkpoint import CheckpointError
    from model.tokenizer import UnknownCharacters

    from .corpus import CorpusError

    try:
        return args.func(args, settings)
    except (UsageError, CorpusError, CheckpointError, UnknownCharacters, KeyError, ValueError) as e:
        _die(str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e))
    except KeyboardInterrupt:
        print("\nffnlens: interrupted (an interrupted train or index resumes where it stopped)",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
