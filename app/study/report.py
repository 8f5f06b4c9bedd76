"""The evaluation report assembled: METHOD.md's reference study reproduced, then the weaknesses it
lists measured (baselines, entropy strata, neighbour-set sizes, weights fitted on a tuning split and
scored on a disjoint test split, a threshold sweep, the prompts worth looking at).

Typical use (one report per mode, "reference" or "held-out")::

    from app.study.baselines.standard import standard_baselines
    from app.study.prompts import reference_prompts
    from app.study.report import ReportOptions, build_report
    from app.study.storage import write_report

    rows = reference_prompts(engine.store, 2000, 1337)
    baselines = standard_baselines(engine.model, corpus_ids, V)
    report, figures = build_report(engine, rows, settings, baselines,
                                   options=ReportOptions(mode_label="reference"))
    write_report(out_dir, report, figures)  # report.json, figures/*.svg, report.html

Each section is computed by its own module (``headline``, ``verdicts``, ``strata``, ``neighbours``,
``weights``, ``sweep``, ``interesting``) on plain arrays gathered by one batched
:func:`app.study.evaluation.evaluate` run; the charts (``charts``), the page (``render``) and the
files (``storage``) are apart from the computing.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..approx import Engine, QuerySettings
from ..metrics import entropy
from .charts import make_figures
from .evaluation import evaluate
from .headline import PUBLISHED, Headline, headline_section
from .interesting import interesting
from .jsonable import to_jsonable
from .methods import APPROX, method_colors, method_distributions
from .neighbours import neighbour_stats
from .prompts import prompt_ids
from .reproduction import ReproductionOptions, reproduction_section
from .strata import strata
from .sweep import sweep_section
from .verdicts import report_notes, verdicts
from .weights import fit_section, split_prompts


@dataclass
class ReportOptions:
    """How a report is made, beside the engine, the prompts, the settings and the baselines.

    ``mode_label``: the report's mode ("reference", "held-out", ...); ``base_url``: where the
    permalinks of the interesting prompts point (``backend`` is added to them when given);
    ``about``: workspace.about(...) for the page header; ``tune_share`` / ``split_seed``: the
    tuning / test split; ``fit_steps``: the weight fit's optimiser steps; ``sweep_prompts`` /
    ``sweep_block`` / ``sweep_values``: the threshold sweep (default block: the dominant one;
    default values around its threshold); ``n_interesting``: prompts per group; ``published``:
    show METHOD.md's published figures (default: when the mode starts with "reference");
    ``extra``: any more JSON to keep; ``single_blocks``: add each block's own neighbours alone as a
    method ("block-b-alone"); ``reproduction``: add METHOD.md's published figures side by side
    with ours (:mod:`app.study.reproduction`; pool-row prompts only)."""
    mode_label: str = "reference"
    base_url: str = "/"
    about: dict | None = None
    tune_share: float = 0.5
    split_seed: int = 0
    sweep_prompts: int = 256
    sweep_block: int | None = None
    sweep_values: list | None = None
    n_interesting: int = 5
    fit_steps: int = 300
    batch_size: int = 256
    progress: bool = False
    backend: str | None = None
    published: bool | None = None
    extra: dict | None = None
    single_blocks: bool = True
    reproduction: ReproductionOptions | None = None


def report_meta(engine: Engine, ev: dict, options: ReportOptions, in_pool: float) -> dict:
    """The report's "meta" section: the mode, the run (prompts, backend, settings, seconds), the
    store and the model it read."""
    store = engine.store
    return {
        "mode": options.mode_label, "prompts": int(ev["prompts"]), "backend": ev["backend"],
        "settings": ev["settings"], "seconds": ev["seconds"],
        "prompts_in_pool_share": in_pool,
        "pool_size": int(store.size), "pool_mode": store.pool.mode, "n": int(store.pool.n),
        "model_name": store.manifest.get("model_name"), "corpus_name": store.manifest.get("corpus_name"),
        "n_layer": int(store.n_layer), "vocab_size": int(store.counts.vocab_size),
        "defaults_rule": store.defaults.get("rule"),
        "about": options.about or {},
    }


def _per_prompt(texts: list, head: Headline, P: np.ndarray, sizes: np.ndarray) -> dict:
    """The report's "per_prompt" section: each prompt's text, every method's distance (6 places),
    the model's entropy and the neighbour-set sizes."""
    return {"prompts": texts,
            "hellinger": {m: np.round(head.H[m], 6).tolist() for m in head.methods},
            "entropy": np.round(entropy(P), 6).tolist(),
            "sizes": sizes.tolist()}


def build_report(engine: Engine, prompts, settings: QuerySettings | None = None,
                 baselines: dict | None = None, mode_label: str | None = None,
                 base_url: str | None = None, *, options: ReportOptions | None = None,
                 **option_fields) -> tuple[dict, dict]:
    """Evaluate ``prompts`` (pool rows (N,) or token ids (N, T)) under ``settings`` and compare
    the approximation with every baseline (name -> an object with ``distributions(ids)``, or a
    ready (N, V) array), made as ``options`` say (``mode_label``, ``base_url`` and any other
    :class:`ReportOptions` field given by name replace the options' own).

    Returns (report, figures): ``report`` is JSON-ready (plain Python types) and ``figures`` maps a
    name to a matplotlib figure (app/study/plots.py); :func:`app.study.storage.write_report` writes both. Sections: meta,
    headline (every method), paired comparisons and verdicts, notes, strata by entropy, neighbour
    statistics, weights fitted on a tuning split and scored on the disjoint test split (both
    blends), a threshold sweep of the dominant block on the tuning split (threshold mode only),
    interesting prompts with permalinks, METHOD.md's published figures, per-prompt numbers."""
    given = {"mode_label": mode_label, "base_url": base_url}
    o = replace(options or ReportOptions(), **{k: v for k, v in given.items() if v is not None},
                **option_fields)
    store = engine.store
    s = (settings or QuerySettings()).resolved(store)
    ev = evaluate(engine, prompts, s, batch_size=o.batch_size, progress=o.progress, keep=True,
                  keep_counts=True)
    arr = ev["arrays"]
    ids, self_rows = prompt_ids(store, prompts)
    texts = [engine.tok.decode(r) for r in ids]
    P = arr["model_probs"]
    dists = method_distributions(arr, ids, baselines, engine.unigram, o.single_blocks)
    head = headline_section(P, dists)
    notes, in_pool = report_notes(s, self_rows, ev["fallback_share"])
    tune, test = split_prompts(len(ids), o.split_seed, o.tune_share)
    others = {m: h for m, h in head.H.items() if m != APPROX}
    fit = fit_section(P, arr["approx"], arr["counts"], s, tune, test, others, head.rivals,
                      engine.unigram, o.split_seed, o.fit_steps)
    sweep = sweep_section(engine, prompts, s, arr["counts"], tune, o.sweep_block, o.sweep_values,
                          o.sweep_prompts, o.batch_size)
    inter = interesting(texts, head.H[APPROX], P, dists, s, o.base_url, o.n_interesting,
                        engine.tok.chars, QuerySettings().resolved(store), o.backend,
                        rival="ngram" if "ngram" in head.rivals else head.best_rival)
    repro, repro_figs = None, {}
    if o.reproduction is not None and np.asarray(prompts).ndim == 1:
        seeds = {m: d for m, d in dists.items() if m.startswith("seed-")}
        repro, repro_figs = reproduction_section(engine, prompts, s, arr, seeds, fit.to_json(),
                                                 o.reproduction)
    show_pub = o.mode_label.lower().startswith("reference") if o.published is None else o.published
    report = {
        "title": f"ffnlens evaluation report: {o.mode_label}",
        "meta": report_meta(engine, ev, o, in_pool), "methods": head.methods,
        "colors": method_colors(head.methods), "headline": head.summaries, "paired": head.pairs,
        "identical_to_model": sorted(head.identical), "best_rival": head.best_rival,
        "verdicts": verdicts(head.summaries, head.pairs, head.identical), "notes": notes,
        "strata": strata(P, head.H, {m: head.agree[m][1]["order"] for m in head.methods}),
        "neighbours": neighbour_stats(arr["sizes"], arr["self_only"]), "fit": fit.to_json(),
        "sweep": None if sweep is None else sweep.to_json(), "interesting": inter,
        "published": PUBLISHED if show_pub else None,
        "per_prompt": _per_prompt(texts, head, P, arr["sizes"]),
        "extra": o.extra or {},
        "reproduction": repro,
    }
    return to_jsonable(report), {**make_figures(report, head.H), **repro_figs}

