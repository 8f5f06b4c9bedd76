"""A pool string's story: where it occurs in the corpus and what followed it each time, how close
it sits to a prompt in every block (not only the block that found it), the pool strings each block
puts it among (the class, with that class's follow-on histogram), and beside it all the exact
n-gram statistics of the prompt's longest suffix in the corpus, so a reader sees whether a block
found something the n-gram cannot.
"""
from __future__ import annotations

import numpy as np
import torch

from .approx import Engine, QuerySettings
from .present import decode_rows, top_tokens, visible
from .search import unit

CLASS_SIZE = 8  # nearest pool strings listed per block


def occurrences(engine: Engine, row: int) -> np.ndarray:
    """Every position of the corpus where pool string ``row`` starts (the pool's own index)."""
    return np.flatnonzero(engine.store.pool.at == row)


def suffix_counts(text: str, prompt: str, chars: str) -> tuple[str, int, np.ndarray]:
    """The prompt's longest suffix that occurs in ``text`` (binary search on its length: a suffix
    that occurs has every shorter one occurring too), how often it occurs there (overlaps
    counted), and the counts (V,) of the characters that followed it."""
    lo, hi = 0, len(prompt)  # the suffix of length lo occurs (the empty one always)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if text.find(prompt[len(prompt) - mid :]) >= 0:
            lo = mid
        else:
            hi = mid - 1
    suffix = prompt[len(prompt) - lo :]
    counts = np.zeros(len(chars), dtype=np.int64)
    index = {c: i for i, c in enumerate(chars)}
    seen, at = 0, text.find(suffix) if lo else -1
    while at >= 0:
        seen += 1
        if at + lo < len(text):
            counts[index[text[at + lo]]] += 1
        at = text.find(suffix, at + 1)
    return suffix, seen, counts


def suffix_ngram(text: str, prompt: str, chars: str) -> dict:
    """:func:`suffix_counts` as data: the suffix, its length, its occurrences and what followed."""
    suffix, seen, counts = suffix_counts(text, prompt, chars)
    total = int(counts.sum())
    return {"suffix": suffix, "label": visible(suffix), "length": len(suffix), "occurrences": seen,
            "follow": top_tokens(counts / total if total else counts.astype(float), chars)}


@torch.inference_mode()
def story(engine: Engine, text: str, row: int, prompt: str = "",
          settings: QuerySettings | None = None, contexts: int = 12, width: int = 60) -> dict:
    """Pool string ``row``'s story (see the module), against ``prompt`` when one is given, with the
    thresholds of ``settings`` (the store's calibrated ones by default); the first ``contexts``
    occurrences are shown with ``width`` characters on each side."""
    store, chars = engine.store, engine.tok.chars
    s = (settings or QuerySettings()).resolved(store)
    n = store.pool.n
    string = decode_rows(chars, store.pool.strings(store.corpus_ids, np.array([row])))[0]
    at = occurrences(engine, row)
    follow = store.counts.sum_rows(np.array([row]))
    total = int(follow.sum())
    shown = []
    for pos in at[:contexts].tolist():
        a, b = max(0, pos - width), min(len(text), pos + n + width)
        shown.append({"pos": pos, "before": text[a:pos], "match": text[pos : pos + n],
                      "after": text[pos + n : b], "next": text[pos + n] if pos + n < len(text) else None})
    q = None
    if prompt:
        _, acts = engine.forward(engine.encode(prompt))
        q = unit(acts)  # (L, C)
    blocks = []
    for b in range(store.n_layer):
        x = torch.from_numpy(np.asarray(store.unit[b, row], dtype=np.float32))
        nb = engine.search.topk(b, unit(x), CLASS_SIZE, exclude=row)
        rows, sims = nb.top(CLASS_SIZE)
        cls = store.counts.sum_rows(rows)
        ctot = int(cls.sum())
        entry = {"block": b, "threshold": float(s.thresholds[b]),
                 "class": [{"row": int(r), "text": t, "label": visible(t), "similarity": float(v)}
                           for r, t, v in zip(rows.tolist(), decode_rows(
                               chars, store.pool.strings(store.corpus_ids, rows)), sims.tolist())],
                 "class_follow": top_tokens(cls / ctot if ctot else cls.astype(float), chars, 6)}
        if q is not None:
            cos = float(torch.dot(q[b].float(), unit(x)))
            entry.update({"cosine": cos, "neighbour": cos > s.thresholds[b]})
        blocks.append(entry)
    out = {"row": row, "string": string, "label": visible(string), "occurrences": len(at),
           "contexts": shown, "follow": top_tokens(follow / total if total else follow.astype(float), chars),
           "follow_total": total, "blocks": blocks, "prompt": prompt}
    if prompt:
        out["ngram"] = suffix_ngram(text, prompt, chars)
    return out


@torch.inference_mode()
def finders(engine: Engine, prompts: list[str], row: int, settings: dict, limit: int = 2000,
            show: int = 12, batch: int = 256) -> dict:
    """Which of a report's prompts (its first ``limit``) found pool string ``row`` as a neighbour,
    block by block, under the report's ``settings`` (threshold mode: cosine above the block's
    threshold; top-k mode: counted by cosine rank against the k-th is not known here, so only
    threshold mode is answered). Each block: how many found it, and the first ``show`` of them
    with their cosines."""
    store = engine.store
    if settings.get("mode", "threshold") != "threshold":
        return {"answered": False, "why": "the report ran in top-k mode: who found a string there "
                "depends on every other string's rank, not on a threshold"}
    thr = settings["thresholds"]
    prompts = [p for p in prompts[:limit] if len(p) == len(prompts[0])]
    X = unit(torch.from_numpy(np.asarray(store.unit[:, row], dtype=np.float32)))  # (L, C)
    found = [[] for _ in range(store.n_layer)]
    for a in range(0, len(prompts), batch):
        ids = np.stack([engine.tok.encode(p) for p in prompts[a : a + batch]])
        _, acts = engine.forward(ids)  # (L, B, C)
        cos = (unit(acts) * X[:, None, :]).sum(-1).numpy()  # (L, B)
        for b in range(store.n_layer):
            for i in np.flatnonzero(cos[b] > thr[b]):
                found[b].append((a + int(i), float(cos[b, i])))
    return {"answered": True, "prompts": len(prompts), "thresholds": thr,
            "blocks": [{"block": b, "found": len(f),
                        "first": [{"prompt": prompts[i], "label": visible(prompts[i]), "cosine": c}
                                  for i, c in f[:show]]} for b, f in enumerate(found)]}
