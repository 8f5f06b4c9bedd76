"""The reproduction, side by side: every figure METHOD.md publishes about the reference study
("Published figures of the reference" and "More published figures") next to ours on a 6-block
model, the same prompts and settings, each with a plain verdict (:mod:`app.study.repro_rows`).

The reference settings come first (thresholds=reference, METHOD.md's weights, the report's pool
prompts); then ours in rows of their own (the store's calibrated thresholds, thresholds re-tuned
on a tuning split, weights fitted on one), each scored on prompts it was not tuned on. The
expensive part, the evaluation of every prompt, is the report's own (its arrays are reused); the
rest is forward passes and searches on small samples (:mod:`app.study.repro_measures`).

Typical use (``ffnlens eval --report`` does this for a 6-block model in reference mode)::

    section, figures = reproduction_section(engine, rows, settings, arrays, seeds, fit,
                                            ReproductionOptions(model_info=ws.model_info))

``python -m app.study.reproduction REPORT_DIR`` prints a written report's table as Markdown.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..approx import Engine, QuerySettings
from ..defaults import REFERENCE_DEPTH, REFERENCE_THRESHOLDS, REFERENCE_WEIGHTS
from ..metrics import hellinger
from .evaluation import evaluate
from .headline import summarise
from .prompts import prompt_ids
from .repro_charts import reproduction_figures
from .repro_groups import (block_rows, headline_rows, model_rows, neighbour_rows, noise_rows,
                           prompt_rows, weight_rows)
from .repro_probes import example_rows, forward_rows, long_rows
from .repro_rows import markdown, missing

# Every row's figure name, in the table's order (tests check that none goes missing).
FIGURES = (
    "parameters", "train loss", "validation loss",
    "H mean", "H std", "H min", "H max", "prompts with H < 0.2", "prompts with H > 0.99",
    "neighbour sets of the prompts with H > 0.99",
    "top-1", "top-2 in order", "top-2 as a set", "top-3 in order", "top-3 as a set",
    "top-5 in order", "top-5 as a set",
    "neighbour sets on 'And only l'", "block 4 set size on the first 500 prompts (mean)",
    "block 4 set size on the first 500 prompts (max)",
    "noise floor: model against seed 1442", "noise floor: model against seed 88",
    "noise floor: model against seed 99999", "noise floor maxima",
    "approximation against each seed model",
    "own continuation alone: top-1",
    "easy prompts (top > 0.99): count", "easy prompts: top-1",
    "top two > 0.85: count", "top two > 0.85: top-1",
    "seen prompts: count", "seen prompts: mean H", "unseen prompts: count", "unseen prompts: mean H",
    "each block alone: best threshold", "each block alone: best mean H",
    "re-tuned thresholds: blend mean H", "ours: calibrated thresholds, mean H",
    "fitted weights", "fitted weights: top-1",
    "'And only l', block 0 alone above 0.95", "'And only l', block 0 alone above 0.90",
    "'And only l', block 0 alone above 0.97",
    "'And only l', block 0 alone: model top 4", "'And only l', block 0 alone: approximation top 4",
    "'And only l', all blocks: H", "'hing tremb', block 0 alone: H",
    "'hing tremb', block 0 alone: approximation top 3", "'hing tremb', all blocks: H",
    "'my most gr': model top 4",
    "intervention: attention dropped, mean H", "intervention: FFN dropped, mean H",
    "FFN output norm", "attention output norm", "residual stream norm (embedding → last block)",
    "cosine(attention, FFN)", "cosine(FFN, block output)",
    "256-character prompts, last block alone at 0.91: top-1",
    "256-character prompts: neighbour set mean", "256-character prompts: neighbour set max",
)


@dataclass
class ReproductionOptions:
    """How much the reproduction reads beyond the report's evaluation. ``model_info``: the model's
    config (its losses) with ``dir`` (its card.json, for the CPU recheck); ``forward_prompts``:
    prompts for the interventions and the trace (None: all); ``sweep_prompts``: the first prompts,
    the tuning split of each block's threshold sweep; ``test_prompts``: the prompts after them, the
    test split of the re-tuned and calibrated thresholds; ``long_prompts`` / ``long_length`` /
    ``long_threshold``: validation windows read in context, the last block alone."""
    model_info: dict = field(default_factory=dict)
    forward_prompts: int | None = 2000
    sweep_prompts: int = 500
    test_prompts: int = 2000
    long_prompts: int = 500
    long_length: int = 256
    long_threshold: float = 0.91
    seed: int = 1337
    batch_size: int = 256


def is_reference(s: QuerySettings) -> bool:
    """Are resolved settings METHOD.md's (thresholds, weights, raw blend, self included)?"""
    return (s.mode == "threshold" and s.blend == "raw" and not s.exclude_self
            and np.allclose(s.thresholds, REFERENCE_THRESHOLDS)
            and np.allclose(s.weights, REFERENCE_WEIGHTS))


def not_computed(why: str) -> list:
    """Every row, saying why none could be computed."""
    return [missing(f, None, why, group="all") for f in FIGURES]


def reproduction_section(engine: Engine, rows, settings: QuerySettings | None, arrays: dict | None,
                         seeds: dict | None, fit: dict | None,
                         options: ReproductionOptions | None = None) -> tuple[dict, dict]:
    """The side-by-side section and its figures for the pool prompts ``rows`` (N,).

    ``arrays``: :func:`app.study.evaluation.evaluate`'s kept arrays with counts for ``rows`` under
    ``settings`` (re-evaluated here under the reference settings when those are not them, or when
    None); ``seeds``: name ("seed-N") -> (N, V) distributions of the same recipe's other seeds;
    ``fit``: the report's weight-fit section (weights fitted on a tuning split). -> (section, figures)."""
    t0 = time.time()
    o = options or ReproductionOptions()
    store = engine.store
    L = store.n_layer
    head = {"title": "The reproduction, side by side", "prompts": int(len(rows)),
            "model": store.manifest.get("model_name"), "n_layer": L}
    if L != REFERENCE_DEPTH:
        why = f"the model has {L} blocks; METHOD.md's figures are for its {REFERENCE_DEPTH}-block model"
        return {**head, "rows": not_computed(why), "note": why}, {}
    rows = np.asarray(rows, dtype=np.int64)
    ref = QuerySettings(thresholds="reference", weights=list(REFERENCE_WEIGHTS)).resolved(store)
    s = settings.resolved(store) if settings is not None else None
    if arrays is None or s is None or not is_reference(s):
        arrays = evaluate(engine, rows, ref, batch_size=o.batch_size, progress=False, keep=True,
                          keep_counts=True)["arrays"]
    P, A = arrays["model_probs"], arrays["approx"]
    H = hellinger(P, A)
    summary = summarise(H, arrays["agree"])
    ids, _ = prompt_ids(store, rows)
    out_rows = model_rows(engine, o.model_info)
    out_rows += headline_rows(summary, arrays, H)
    out_rows += neighbour_rows(engine, ref, arrays)
    noise, density = noise_rows(P, A, H, seeds or {}, head["model"])
    out_rows += noise
    out_rows += prompt_rows(engine, rows, P, H, arrays)
    blocks, sweep = block_rows(engine, rows, P, ref, H, o)
    out_rows += blocks
    out_rows += weight_rows(fit)
    examples, ex_rows = example_rows(engine, ref)
    out_rows += ex_rows
    out_rows += forward_rows(engine, ids, P, o.forward_prompts)
    out_rows += long_rows(engine, ref, o)
    section = {**head, "settings": {"thresholds": list(ref.thresholds), "weights": list(ref.weights),
                                    "blend": ref.blend},
               "rows": out_rows, "examples": examples, "chars": engine.tok.chars, "density": density, "sweep": sweep,
               "counts": {s: sum(r["status"] == s for r in out_rows)
                          for s in ("matches", "differs", "ours only", "not computed")},
               "seconds": round(time.time() - t0, 1)}
    return section, reproduction_figures(section)


def markdown_table(section: dict) -> str:
    """The side-by-side table of a report's reproduction section, as Markdown (for the README)."""
    rows = section.get("rows") or []
    lines = [markdown(rows, f"{section.get('title', 'Reproduction')}: {section.get('model')} on "
                            f"{section.get('prompts', 0):,} prompts")]
    if section.get("counts"):
        lines.append(", ".join(f"{k}: {v}" for k, v in section["counts"].items()) + "\n")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m app.study.reproduction REPORT_DIR``: print the written report's table."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m app.study.reproduction REPORT_DIR", file=sys.stderr)
        return 2
    path = Path(args[0])
    path = path / "report.json" if path.is_dir() else path
    report = json.loads(path.read_text())
    section = report.get("reproduction")
    if not section:
        print(f"{path} has no reproduction section (a reference-mode report of a 6-block model "
              "has one unless made with --no-reproduction)", file=sys.stderr)
        return 1
    print(markdown_table(section))
    return 0


if __name__ == "__main__":
    sys.exit(main())
