"""Results as plain data (for JSON, templates and the terminal), and as terminal text.

One function turns a :class:`QueryResult` into a dict; every view (``--json``, the text below, and
later the web pages) renders that same dict.
"""
from __future__ import annotations

from dataclasses import asdict

import numpy as np

from .approx import QueryResult, ranking
from .store import Store

VISIBLE = {" ": "␣", "\n": "⏎", "\t": "⇥", "\r": "␍"}


def visible(s: str) -> str:
    """Whitespace drawn as visible symbols (space ␣, newline ⏎, tab ⇥)."""
    return "".join(VISIBLE.get(c, c) for c in s)


def top_tokens(p: np.ndarray, chars: str, k: int = 10) -> list[dict]:
    return [{"char": chars[i], "p": float(p[i])} for i in ranking(p)[:k] if p[i] > 0]


def query_dict(res: QueryResult, store: Store, chars: str) -> dict:
    ids = store.corpus_ids
    n = store.pool.n
    blocks = []
    for br in res.blocks:
        shown = br.neighbours.rows[: res.settings.show]
        strings = store.pool.strings(ids, shown) if len(shown) else np.zeros((0, n), np.int64)
        tot = br.counts.sum()
        blocks.append({
            "block": br.block,
            "neighbours": len(br.neighbours),
            "weight": br.weight,
            "share_raw": br.share_raw,
            "share_normalised": br.share_norm,
            "count_total": int(tot),
            "counts": {chars[i]: int(c) for i, c in enumerate(br.counts) if c},
            "distribution": top_tokens(br.counts / tot if tot else br.counts.astype(float), chars),
            "top": [{"row": int(r), "text": "".join(chars[t] for t in s), "similarity": float(sim),
                     "is_self": int(r) == br.self_row}
                    for r, s, sim in zip(shown, strings, br.neighbours.sims[: res.settings.show])],
        })
    return {
        "prompt": res.prompt,
        "backend": res.backend,
        "settings": asdict(res.settings),
        "hellinger": res.hellinger,
        "agreement": {str(k): v for k, v in res.agreement.items()},
        "fallback": res.fallback,
        "model": {c: float(p) for c, p in zip(chars, res.model_probs)},
        "approximation": {c: float(p) for c, p in zip(chars, res.approx)},
        "model_top": top_tokens(res.model_probs, chars),
        "approximation_top": top_tokens(res.approx, chars),
        "blocks": blocks,
        "store": {"path": str(store.path), "pool_size": store.size,
                  "defaults_rule": store.defaults.get("rule", "reference")},
    }


def bar(p: float, width: int = 24) -> str:
    full = int(round(p * width))
    return "█" * full + "·" * (width - full)


def query_text(d: dict) -> str:
    s = d["settings"]
    lines = [f"prompt {visible(d['prompt'])!r}   backend {d['backend']}   mode {s['mode']}"
             + (f" (k={s['k']})" if s["mode"] == "topk" else "")
             + ("   self excluded" if s["exclude_self"] else "")]
    for b in d["blocks"]:
        thr = f"> {s['thresholds'][b['block']]:.4f}" if s["mode"] == "threshold" else f"top {s['k']}"
        lines.append(f"\nblock {b['block']}  neighbours {b['neighbours']:>7,} ({thr})  weight "
                     f"{b['weight']:g}  share {100 * b['share_raw']:5.1f}% raw, "
                     f"{100 * b['share_normalised']:5.1f}% normalised")
        hist = "  ".join(f"{visible(t['char'])} {100 * t['p']:.0f}%" for t in b["distribution"][:6])
        lines.append(f"  follow-on: {hist or '(no neighbours)'}")
        for t in b["top"]:
            mark = "  (self)" if t["is_self"] else ""
            lines.append(f"  {t['similarity']:.4f}  {visible(t['text'])}{mark}")
    lines.append("\n  char   model                                approximation")
    m, a = d["model"], d["approximation"]
    order = [t["char"] for t in d["model_top"][:10]]
    order += [t["char"] for t in d["approximation_top"][:10] if t["char"] not in order]
    for c in order[:14]:
        lines.append(f"  {visible(c):>4}   {bar(m[c])} {m[c]:5.3f}   {bar(a[c])} {a[c]:5.3f}")
    ag = d["agreement"]
    agree = "  ".join(f"top-{k} {'yes' if v['order'] else 'no'}/{'yes' if v['set'] else 'no'}"
                      for k, v in ag.items())
    lines.append(f"\nHellinger distance {d['hellinger']:.4f}   agreement (in order/as set): {agree}")
    if d["fallback"]:
        lines.append(f"no block found a neighbour: the approximation fell back to the {d['fallback']}")
    return "\n".join(lines)


def eval_text(r: dict) -> str:
    h = r["hellinger"]
    lines = [f"{r['prompts']:,} prompts, backend {r['backend']}, mode {r['settings']['mode']}"
             f"{', self excluded' if r['settings']['exclude_self'] else ''}: "
             f"{r['seconds']:.1f} s ({r['prompts_per_s']:.1f} prompts/s)",
             f"Hellinger  mean {h['mean']:.4f}  std {h['std']:.4f}  min {h['min']:.4f}  "
             f"max {h['max']:.4f}  below 0.2: {h['below_0.2']:,}  above 0.99: {h['above_0.99']:,}",
             "top-k agreement   " + "   ".join(f"k={k}: {v['order']:.3f} in order / {v['set']:.3f} "
                                              f"as set" for k, v in r["topk"].items()),
             "neighbours per block: mean " + ", ".join(f"{x:,.0f}" for x in r["neighbours"]["mean"])
             + "; median " + ", ".join(f"{x:,.0f}" for x in r["neighbours"]["median"]),
             f"prompts with no neighbour in any block (unigram fallback): "
             f"{100 * r['fallback_share']:.2f}%"]
    return "\n".join(lines)
