"""``ffnlens eval --report`` as one call: the prompts chosen (reference, or held-out read in
context), the baselines assembled (the usual set, other seeds, sibling stores), the report built
and written where reports go (:func:`reports_dir`, which the explorer serves)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from model.errors import FfnlensError

from ..approx import Engine, QuerySettings
from ..defaults import REFERENCE_DEPTH
from ..settings import Settings
from ..workspace import Workspace, about
from .baselines.seeds import seed_models
from .baselines.siblings import sibling_baselines
from .baselines.standard import standard_baselines
from .prompts import heldout_prompts, reference_prompts
from .report import ReportOptions, build_report
from .reproduction import ReproductionOptions
from .storage import write_report


class StudyError(FfnlensError):
    """A report that cannot be made as asked (a prompt length or pool that does not fit)."""


@dataclass
class EvalReportOptions:
    """What ``eval --report`` asks for: ``prompts`` prompts drawn with ``seed`` from the ``pool``
    ("reference": the pool's own strings; "heldout": validation strings absent from the pool, of
    ``prompt_length`` characters, default the pool strings'), the search ``backend`` ("auto" or a
    name, written into the permalinks), and ``out``, the report's folder (None or "": the store's
    reports folder, one subfolder per mode); ``reproduction``: in reference mode on a 6-block
    model, add METHOD.md's published figures side by side with ours."""
    prompts: int = 2000
    seed: int = 1337
    pool: str = "reference"
    prompt_length: int | None = None
    backend: str = "auto"
    out: str | Path | None = None
    progress: bool = True
    reproduction: bool = True


@dataclass
class EvalReport:
    """A written report: its mode label, how many prompts it read, its HTML page, its headline."""
    label: str
    prompts: int
    page: Path
    headline: dict


def reports_dir(settings: Settings, store_dir: Path) -> Path:
    """Where ``eval --report`` writes a store's reports, one folder per mode (the explorer serves them)."""
    return settings.home / "reports" / store_dir.name


def _prompt_length(options: EvalReportOptions, engine: Engine) -> int:
    """The prompts' length, checked: the pool strings' unless held-out prompts ask for more, at
    most the model's context."""
    n = engine.store.pool.n
    length = options.prompt_length or n
    if length != n and options.pool != "heldout":
        raise StudyError("--prompt-length needs --pool heldout: reference prompts are the pool's "
                         f"own {n}-character strings")
    if not n <= length <= engine.model.cfg.block_size:
        raise StudyError(f"--prompt-length must lie between the pool strings' length ({n}) "
                         f"and the model's context ({engine.model.cfg.block_size}), not {length}")
    return length


def eval_report(settings: Settings, ws: Workspace, engine: Engine, qs: QuerySettings,
                options: EvalReportOptions) -> EvalReport:
    """The approximation and every baseline on one prompt set, as a report written to disk.

    Held-out prompts are read with self-exclusion on, against baselines over the training text
    only, and labelled "held-out" (or "held-out-L" for prompts of L characters); reference prompts
    are the pool's own strings, against baselines over the whole text."""
    store = engine.store
    length = _prompt_length(options, engine)
    if options.pool == "heldout":
        prompts = heldout_prompts(store, ws.corpus.n_train, options.prompts, options.seed, length)
        if len(prompts) == 0:
            raise StudyError("no validation string is absent from the pool: the corpus is too small "
                             "for a held-out evaluation")
        qs = replace(qs, exclude_self=True)
        text = ws.ids[: ws.corpus.n_train]
        label = "held-out" if length == store.pool.n else f"held-out-{length}"
    else:
        prompts = reference_prompts(store, options.prompts, options.seed)
        text, label = ws.ids, "reference"
    baselines = standard_baselines(engine.model, text, len(engine.tok), engine.device)
    baselines.update(seed_models(ws, engine.device))
    baselines.update(sibling_baselines(settings, ws, qs))
    repro = None
    if options.reproduction and options.pool != "heldout" and store.n_layer == REFERENCE_DEPTH:
        repro = ReproductionOptions(model_info=ws.model_info, seed=options.seed)
    report, figures = build_report(engine, prompts, qs, baselines, options=ReportOptions(
        mode_label=label, about=about(ws, engine), progress=options.progress,
        backend=None if options.backend == "auto" else options.backend,
        extra={"seed": options.seed, "prompt_length": length}, reproduction=repro))
    out = Path(options.out) if options.out else reports_dir(settings, ws.store_dir) / label
    page = write_report(out, report, figures)
    return EvalReport(label, len(prompts), page, report["headline"])
