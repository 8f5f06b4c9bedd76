"""The reproduction's rows read from single prompts and extra forward passes: the threshold
sensitivity and the worked examples, the interventions, the output norms and cosines, and long
prompts read in context (the rows of the other figures are in :mod:`app.study.repro_groups`)."""
from __future__ import annotations

import numpy as np

from ..approx import Engine, QueryError, QuerySettings
from .repro_measures import (block_alone_at, interventions, long_prompts, norms_and_cosines,
                             worked_example)
from .repro_rows import RUN, SIZES, judge, missing, row, share_tol, top_verdict

SENSITIVITY = ((0.95, 94, 0.0711), (0.90, 612, 0.2856), (0.97, 33, 0.1498))
AND_MODEL = [("i", 0.437), ("o", 0.204), ("a", 0.195), ("e", 0.160)]
AND_BLOCK0 = [("i", 0.389), ("o", 0.250), ("a", 0.222), ("e", 0.139)]
HING_BLOCK0 = [("e", 0.543), ("l", 0.343), ("r", 0.114)]
MY_MODEL = [("a", 0.819), ("e", 0.081), ("i", 0.059), ("o", 0.036)]


def tops(pairs) -> str:
    return " ".join(f"{c!r} {p:.3f}" for c, p in pairs)


def sensitivity_rows(engine: Engine, ref: QuerySettings) -> list:
    """`And only l`, block 0 alone, above 0.95, 0.90 and 0.97: its set size and H."""
    g = "threshold sensitivity and worked examples"
    out = []
    for t, n_pub, h_pub in SENSITIVITY:
        fig = f"'And only l', block 0 alone above {t:.2f}"
        try:
            r = block_alone_at(engine, "And only l", ref, 0, t)
        except QueryError as e:
            out.append(missing(fig, h_pub, str(e), group=g))
            continue
        s1, v1 = judge(h_pub, r["hellinger"], 0.05, "abs", RUN)
        s2, v2 = judge(n_pub, r["size"], 1.5, "factor", SIZES)
        ok = s1 == s2 == "matches"
        out.append(row(fig, h_pub, r["hellinger"], f"ffnlens query 'And only l' with block 0's "
                       f"threshold {t} and weights 1, 0, 0, 0, 0, 0", group=g,
                       published_text=f"{n_pub:,} strings, H {h_pub}",
                       ours_text=f"{r['size']:,} strings, H {r['hellinger']:.4f}",
                       status="matches" if ok else "differs",
                       verdict=(f"matches (H ±0.05, size within ×1.5)" if ok else
                                f"H: {v1}; size: {v2}"), tol=0.05))
    return out


def example_rows(engine: Engine, ref: QuerySettings) -> tuple[list, list]:
    """The worked examples (`And only l` and `hing tremb`, block 0 alone and all blocks; the model
    on `my most gr`) and the threshold sensitivity. -> (examples for the charts, rows)."""
    g = "threshold sensitivity and worked examples"
    out = sensitivity_rows(engine, ref)
    examples = []
    how = "ffnlens query PROMPT --thresholds reference (block 0 alone: its neighbours' counts, normalised)"
    figs = {"And only l": ("'And only l', block 0 alone: model top 4",
                           "'And only l', block 0 alone: approximation top 4", "'And only l', all blocks: H"),
            "hing tremb": ("'hing tremb', block 0 alone: H",
                           "'hing tremb', block 0 alone: approximation top 3", "'hing tremb', all blocks: H")}
    for prompt, (f1, f2, f3) in figs.items():
        try:
            ex = worked_example(engine, prompt, ref)
        except QueryError as e:
            out += [missing(f, None, str(e), group=g) for f in (f1, f2, f3)]
            continue
        examples.append(ex)
        b0 = ex["blocks"][0]
        if prompt == "And only l":
            st, vd = top_verdict(AND_MODEL, ex["model_top"])
            out.append(row(f1, None, 0.0, how, group=g, published_text=tops(AND_MODEL),
                           ours_text=tops(ex["model_top"]), status=st, verdict=vd))
            st, vd = top_verdict(AND_BLOCK0, b0["top"])
            out.append(row(f2, None, 0.0, how, group=g, published_text=tops(AND_BLOCK0),
                           ours_text=tops(b0["top"]), status=st, verdict=vd))
            out.append(row(f3, 0.0731, ex["hellinger"], how, group=g, tol=0.05, reason=RUN))
        else:
            out.append(row(f1, 0.6305, b0["hellinger"], how, group=g, tol=0.05, reason=RUN,
                           published_text="0.6305 (model 'l' 0.999)",
                           ours_text=f"{b0['hellinger']:.4f} (model {tops(ex['model_top'][:1])})"))
            st, vd = top_verdict(HING_BLOCK0, b0["top"][:3])
            out.append(row(f2, None, 0.0, how, group=g, published_text=tops(HING_BLOCK0),
                           ours_text=tops(b0["top"][:3]), status=st, verdict=vd))
            out.append(row(f3, 0.0233, ex["hellinger"], how, group=g, tol=0.05, reason=RUN))
    try:
        my = worked_example(engine, "my most gr", ref)
        st, vd = top_verdict(MY_MODEL, my["model_top"])
        out.append(row("'my most gr': model top 4", None, 0.0, "the model's softmax on 'my most gr'",
                       group=g, published_text=tops(MY_MODEL), ours_text=tops(my["model_top"]),
                       status=st, verdict=vd))
    except QueryError as e:
        out.append(missing("'my most gr': model top 4", None, str(e), group=g))
    return examples, out


def forward_rows(engine: Engine, ids: np.ndarray, P: np.ndarray, n: int | None) -> list:
    """The interventions (one block's attention or FFN output dropped: mean H against the model)
    and, from one trace, the output norms and cosines at the last position."""
    m = len(ids) if n is None else min(n, len(ids))
    ids, P = ids[:m], P[:m]
    g = "interventions"
    how = (f"model.gpt.Intervention(drop_attn / drop_ffn = {{b}}), one batched forward over the "
           f"first {m:,} prompts, H against the unmodified model; with attention dropped the FFN "
           "reads the stream without it (recomputed)")
    iv = interventions(engine, ids, P)
    out = [row("intervention: attention dropped, mean H", [0.11, 0.07, 0.09, 0.06, 0.04, 0.03],
               iv["drop_attn"], how, group=g, tol=0.03, fmt="{:.3f}",
               reason=RUN + "; or the write-up kept the FFN output of the unmodified pass"),
           row("intervention: FFN dropped, mean H", [0.70, 0.19, 0.15, 0.13, 0.14, 0.17],
               iv["drop_ffn"], how, group=g, tol=0.03, fmt="{:.3f}", reason=RUN)]
    g = "output norms and cosines"
    nc = norms_and_cosines(engine, ids)
    how = f"one Trace (last position) over the first {m:,} prompts, means over prompts"
    out += [row("FFN output norm", [5.79, 3.54, 4.15, 4.53, 5.19, 7.54], nc["ffn"], how, group=g,
                tol=0.2, kind="rel", fmt="{:.2f}", reason=RUN),
            row("attention output norm", [1.78, 2.44, 3.23, 3.43, 2.86, 2.38], nc["attn"], how,
                group=g, tol=0.2, kind="rel", fmt="{:.2f}", reason=RUN),
            row("residual stream norm (embedding → last block)", [0.95, 22.76],
                [nc["embedding"], nc["resid"][-1]], how + "; the embedding (token + position) "
                "against the stream after the last block", group=g, tol=0.2, kind="rel",
                fmt="{:.2f}", reason=RUN, label=["embedding", "last block"]),
            row("cosine(attention, FFN)", [0.31, 0.10, 0.09, 0.04, 0.04, 0.09], nc["cos_attn_ffn"],
                how, group=g, tol=0.05, fmt="{:.2f}", reason=RUN),
            row("cosine(FFN, block output)", [0.96, 0.72, 0.58, 0.47, 0.44, 0.58],
                nc["cos_ffn_block"], how + "; block output = attention + FFN", group=g, tol=0.05,
                fmt="{:.2f}", reason=RUN)]
    return out


def long_rows(engine: Engine, ref: QuerySettings, o) -> list:
    """Long prompts (validation windows of up to 256 characters, as the model's context allows),
    the last block alone at 0.91: top-1, neighbour-set mean and max."""
    g = "long prompts"
    names = ("256-character prompts, last block alone at 0.91: top-1",
             "256-character prompts: neighbour set mean", "256-character prompts: neighbour set max")
    pubs = (0.802, 1562, 38780)
    length = min(o.long_length, engine.model.cfg.block_size)
    r = long_prompts(engine, ref, o.long_prompts, length, o.long_threshold, o.seed, batch=32)
    if not r["prompts"]:
        return [missing(f, p, "the validation text is shorter than one prompt", group=g)
                for f, p in zip(names, pubs)]
    short = "" if length == o.long_length else (
        f"; {length}-character prompts: the model's context is {length}, not {o.long_length}")
    how = (f"{r['prompts']} windows of {length} characters of validation text (starts drawn by "
           f"torch.manual_seed({o.seed}); randperm), block {engine.store.n_layer - 1} alone above "
           f"{o.long_threshold}, against the store's 10-character strings read in isolation{short}")
    reason = RUN + (short and f"; {length}-character prompts")
    return [row(names[0], 0.802, r["top1"], how, group=g, tol=share_tol(0.802, r["prompts"]),
                fmt="{:.3f}", reason=reason),
            row(names[1], 1562, r["mean_size"], how, group=g, tol=1.5, kind="factor",
                fmt="{:,.1f}", reason=SIZES),
            row(names[2], 38780, r["max_size"], how, group=g, tol=2.0, kind="factor", reason=SIZES)]
