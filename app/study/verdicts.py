"""The report's written sentences: one verdict per baseline (which is closer to the model) led by a
summary, and the notes on how the prompts were read (self-exclusion, unigram fallback)."""
from __future__ import annotations

import math

import numpy as np

from ..approx import QuerySettings
from .methods import APPROX


def verdicts(headline: dict, pairs: dict, identical: set) -> list[dict]:
    """Plain sentences, one per baseline, saying which is closer to the model, whichever way it
    goes (kind "baseline_wins", "approx_wins" or "identity"), led by a one-line summary."""
    a = headline[APPROX]
    ha, t1a = a["hellinger"]["mean"], a["topk"]["1"]["order"]
    out, winners = [], []
    for name, p in pairs.items():
        b = headline[name]
        hb, t1b = b["hellinger"]["mean"], b["topk"]["1"]["order"]
        if name in identical:
            out.append({"kind": "identity", "method": name, "text":
                        f"{name} is the model's own softmax (mean Hellinger {hb:.4f}): a check of "
                        f"the pipeline, not a rival; it matches the model by construction."})
            continue
        noise = math.isfinite(p["ci95"]) and abs(p["mean_diff"]) <= p["ci95"]
        diff = f"difference {abs(p['mean_diff']):.4f} ± {p['ci95']:.4f} at 95 %"
        if hb < ha:
            winners.append(name)
            text = (f"The {name} baseline beats the approximation: mean Hellinger {hb:.4f} against "
                    f"{ha:.4f} ({diff}); it is closer to the model on {p['other_closer']:.1%} of "
                    f"prompts")
        else:
            text = (f"The approximation beats {name}: mean Hellinger {ha:.4f} against {hb:.4f} "
                    f"({diff}); it is closer to the model on {p['approx_closer']:.1%} of prompts")
        if t1b > t1a:
            text += f"; {name} agrees with the model's top character more often ({t1b:.3f} against {t1a:.3f})"
        elif t1b < t1a:
            text += f"; top-1 agreement {t1a:.3f} against {t1b:.3f}"
        else:
            text += f"; the same top-1 agreement ({t1a:.3f})"
        text += "." + (" The difference in mean Hellinger is within the noise of this sample." if noise else "")
        out.append({"kind": "baseline_wins" if hb < ha else "approx_wins", "method": name, "text": text})
    rivals = [m for m in pairs if m not in identical]
    if rivals:
        if winners:
            head = (f"{len(winners)} of {len(rivals)} baselines are closer to the model than the "
                    f"approximation on mean Hellinger: {', '.join(winners)}.")
        else:
            head = (f"The approximation is closer to the model than every baseline "
                    f"({len(rivals)}) on mean Hellinger.")
        out.insert(0, {"kind": "summary_bad" if winners else "summary_good", "method": None, "text": head})
    return out


def report_notes(settings: QuerySettings, self_rows: np.ndarray, fallback_share: float) -> tuple[list, float]:
    """The notes under the headline for resolved ``settings``, the prompts' own pool rows
    (``self_rows``, -1: not in the pool) and the share of prompts that fell back to the unigram
    -> (notes, the share of prompts that are pool strings)."""
    N = len(self_rows)
    s = settings
    notes = []
    in_pool = float((self_rows >= 0).mean()) if N else 0.0
    if not s.exclude_self and in_pool > 0:
        notes.append(f"{in_pool:.0%} of the prompts are pool strings and self-exclusion is off: each of "
                     "those finds itself among its neighbours (cosine 1) and its own corpus "
                     "continuations count in the approximation (METHOD.md, weakness 1).")
    if s.exclude_self:
        notes.append("Self-exclusion is on: a prompt's own pool string (all its occurrences) is left "
                     "out of every block's neighbours. The baselines are not changed by it.")
    if fallback_share > 0:
        notes.append(f"{fallback_share:.1%} of prompts had no neighbour in any block; their "
                     "approximation is the unigram distribution.")
    return notes, in_pool
