"""Results as plain data (for JSON, templates and the terminal), and as terminal text.

One function turns a :class:`QueryResult` into a dict; every view (``--json``, the text below, and
later the web pages) renders that same dict.
"""
from __future__ import annotations

from dataclasses import asdict
from functools import lru_cache

import numpy as np

from .approx import QueryResult
from .metrics import ranking
from .store import Store

VISIBLE = {" ": "␣", "\n": "⏎", "\t": "⇥", "\r": "␍"}
_VISIBLE = str.maketrans(VISIBLE)


def visible(s: str) -> str:
    """Whitespace drawn as visible symbols (space ␣, newline ⏎, tab ⇥)."""
    return s.translate(_VISIBLE)


@lru_cache(maxsize=16)
def _char_table(chars: str) -> np.ndarray:
    """The vocabulary as an array of one-character strings (token ids -> characters at once)."""
    return np.array(list(chars), dtype=object)


def decode_rows(chars: str, ids: np.ndarray) -> list[str]:
    """Each row of token ids as its text."""
    table = _char_table(chars)
    return ["".join(r) for r in table[ids]] if len(ids) else []


def top_tokens(p: np.ndarray, chars: str, k: int = 10) -> list[dict]:
    return [{"char": chars[i], "label": visible(chars[i]), "p": float(p[i])}
            for i in ranking(p)[:k] if p[i] > 0]


def shared_suffix(a: str, b: str) -> int:
    """Length of the common ending of a and b (the part a neighbour shares with the prompt)."""
    n, m = 0, min(len(a), len(b))
    while n < m and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def comparison(model: np.ndarray, approx: np.ndarray, chars: str, k: int = 16) -> dict:
    """Chart data: the k characters most likely under either distribution, and the whole
    vocabulary in its own order; bar lengths are fractions of the largest value shown."""
    order = list(ranking(model)[:k])
    order += [i for i in ranking(approx)[:k] if i not in order and approx[i] > 0]
    order = sorted(order[:k], key=lambda i: (-max(model[i], approx[i]), i))
    top = max(float(model.max()), float(approx.max()), 1e-12)
    ms, As = model.tolist(), approx.tolist()  # Python floats, as float() of each element
    bars = lambda idx: [{"char": chars[i], "label": visible(chars[i]), "model": ms[i],
                         "approx": As[i], "model_frac": ms[i] / top,
                         "approx_frac": As[i] / top} for i in idx]
    return {"top": bars(order), "all": bars(range(len(chars)))}


def neighbour_rows(store: Store, chars: str, rows: np.ndarray, sims: np.ndarray, prompt: str,
                   self_row: int | None) -> list[dict]:
    n = store.pool.n
    strings = store.pool.strings(store.corpus_ids, rows) if len(rows) else np.zeros((0, n), np.int64)
    out = []
    for r, text, sim in zip(rows.tolist(), decode_rows(chars, strings), sims.tolist()):
        k = shared_suffix(text, prompt)
        out.append({"row": r, "text": text, "similarity": sim,
                    "is_self": r == self_row, "shared": k,
                    "head": visible(text[: len(text) - k]), "tail": visible(text[len(text) - k :])})
    return out


def _counts(counts: np.ndarray, chars: str) -> dict:
    """{character: count} for the characters counted at least once, in vocabulary order."""
    nz = np.flatnonzero(counts)
    return dict(zip((chars[i] for i in nz.tolist()), counts[nz].tolist()))


def query_dict(res: QueryResult, store: Store, chars: str) -> dict:
    blocks = []
    for br in res.blocks:
        shown, shown_sims = br.neighbours.top(res.settings.show)
        tot = br.counts.sum()
        blocks.append({
            "block": br.block,
            "neighbours": len(br.neighbours),
            "weight": br.weight,
            "share_raw": br.share_raw,
            "share_normalised": br.share_norm,
            "count_total": int(tot),
            "counts": _counts(br.counts, chars),
            "distribution": top_tokens(br.counts / tot if tot else br.counts.astype(float), chars),
            "top": neighbour_rows(store, chars, shown, shown_sims,
                                  res.prompt, br.self_row),
        })
    return {
        "prompt": res.prompt,
        "backend": res.backend,
        "settings": asdict(res.settings),
        "hellinger": res.hellinger,
        "agreement": {str(k): v for k, v in res.agreement.items()},
        "fallback": res.fallback,
        "model": dict(zip(chars, np.asarray(res.model_probs, dtype=float).tolist())),
        "approximation": dict(zip(chars, np.asarray(res.approx, dtype=float).tolist())),
        "model_top": top_tokens(res.model_probs, chars),
        "approximation_top": top_tokens(res.approx, chars),
        "chart": comparison(res.model_probs, res.approx, chars),
        "blocks": blocks,
        "store": {"path": store.path.name, "pool_size": store.size,  # a name: no server paths
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


def context(chars: str, ids: np.ndarray, pos: int, n: int, before: int = 120, after: int = 120,
            lines: int = 2) -> dict:
    """The string at ``pos`` with up to ``lines`` lines (and at most before/after characters)
    around it."""
    a, b = max(0, pos - before), min(len(ids), pos + n + after)
    left = "".join(chars[t] for t in ids[a:pos])
    right = "".join(chars[t] for t in ids[pos + n : b])
    if lines is not None:
        left = "\n".join(left.split("\n")[-lines:])
        right = "\n".join(right.split("\n")[: lines])
    return {"pos": int(pos), "before": left, "match": "".join(chars[t] for t in ids[pos : pos + n]),
            "after": right}


SORTS = ("similarity", "frequency")


def block_dict(res: QueryResult, store: Store, chars: str, block: int, page: int = 1,
               per_page: int = 50, sort: str = "similarity", contexts: int = 3) -> dict:
    """One block's neighbours, paged, each with its follow-on counts and corpus contexts."""
    br = res.blocks[block]
    rows, sims = br.neighbours.rows, br.neighbours.sims
    freq = store.follow_totals[rows]  # how often each neighbour occurs (with a follower)
    if sort == "frequency":
        o = np.lexsort((rows, -freq))
        rows, sims, freq = rows[o], sims[o], freq[o]
    pages = max(1, -(-len(rows) // per_page))
    page = min(max(1, page), pages)
    sl = slice((page - 1) * per_page, page * per_page)
    items = neighbour_rows(store, chars, rows[sl], sims[sl], res.prompt, br.self_row)
    for it, f in zip(items, freq[sl]):
        r = it["row"]
        occ = store.occurrences(r)
        it["frequency"] = int(f)
        it["occurrences"] = int(len(occ))
        it["follow"] = [{"char": chars[c], "label": visible(chars[c]), "count": int(v)}
                        for c, v in sorted(((c, v) for c, v in enumerate(store.counts.row(r)) if v),
                                           key=lambda cv: -cv[1])]
        it["contexts"] = [context(chars, store.corpus_ids, int(p), store.pool.n)
                          for p in occ[:contexts]]
    tot = br.counts.sum()
    return {
        "prompt": res.prompt,
        "backend": res.backend,
        "block": block,
        "neighbours": len(br.neighbours),
        "weight": br.weight,
        "share_raw": br.share_raw,
        "share_normalised": br.share_norm,
        "distribution": top_tokens(br.counts / tot if tot else br.counts.astype(float), chars, 20),
        "sort": sort,
        "page": page,
        "pages": pages,
        "per_page": per_page,
        "items": items,
    }
