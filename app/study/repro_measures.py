"""What the side-by-side reproduction measures beyond the report's own evaluation: forward passes
with a sublayer dropped, output norms and cosines from one trace, each block alone over a threshold
grid, worked examples, long prompts read in context, and the plain per-prompt facts (seen in the
training split, own continuation, easy and hard prompts). Each function works on plain arrays or
on the engine and returns plain numbers; :mod:`app.study.reproduction` turns them into rows."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from model.gpt import Intervention, Trace

from ..approx import Engine, QuerySettings, blend_or_unigram
from ..corpus import TRAIN_FRACTION
from ..metrics import agreement_arrays, hellinger, ranking
from ..search import ExactSearch, unit
from .evaluation import block_counts
from .prompts import prompt_ids


def normalised(counts: np.ndarray, unigram: np.ndarray) -> np.ndarray:
    """(N, V) counts -> distributions, the unigram where a row is empty (as a block alone is)."""
    return blend_or_unigram(np.asarray(counts, dtype=np.float64)[:, None], [1.0], "raw", unigram)[0]


def top1(P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """(N,) bool: do the model's and Q's most likely characters agree (ties by id)?"""
    return agreement_arrays(P, Q, ks=(1,))[1]["order"]


# --- per-prompt facts --------------------------------------------------------------------------
def seen_mask(store, rows: np.ndarray) -> tuple[np.ndarray, int]:
    """(N,) bool: the pool string occurs inside the training split (the first 90 % of the corpus).
    A pool row's start is its first occurrence, so it occurs in the training split exactly when
    that first occurrence ends there. -> (mask, training characters)."""
    n_train = int(TRAIN_FRACTION * len(store.corpus_ids))
    return store.pool.starts[np.asarray(rows, dtype=np.int64)] + store.pool.n <= n_train, n_train


def own_continuation(engine: Engine, rows: np.ndarray, P: np.ndarray) -> dict:
    """A prompt's own corpus continuation alone: its pool string's follow-on counts (every
    occurrence's next character), normalised, against the model. -> {top1, mean_h, empty}."""
    store = engine.store
    rows = np.asarray(rows, dtype=np.int64)
    counts = store.counts.sum_rows_grouped(rows, np.arange(len(rows)), len(rows))
    Q = normalised(counts, engine.unigram)
    return {"top1": float(top1(P, Q).mean()), "mean_h": float(hellinger(P, Q).mean()),
            "empty": int((counts.sum(-1) == 0).sum())}


def easy_hard(P: np.ndarray, agree1: np.ndarray) -> dict:
    """Prompts whose top character holds more than 0.99 ("easy") and whose top two hold more than
    0.85 ("top_two"): how many, and the approximation's top-1 agreement on them."""
    srt = np.sort(P, axis=1)
    out = {}
    for name, mask in (("easy", srt[:, -1] > 0.99), ("top_two", srt[:, -2:].sum(1) > 0.85)):
        out[name] = {"count": int(mask.sum()),
                     "top1": float(agree1[mask].mean()) if mask.any() else None}
    return out


# --- forward passes -----------------------------------------------------------------------------
def interventions(engine: Engine, ids: np.ndarray, P: np.ndarray, batch: int = 1024) -> dict:
    """Mean Hellinger distance between the unmodified model's distribution ``P`` (N, V) and the
    model's with one block's attention (``drop_attn``) or FFN (``drop_ffn``) output left out,
    every block in turn; one batched forward per case. -> {kind: [mean H per block]}."""
    L = engine.store.n_layer
    out = {"drop_attn": [], "drop_ffn": []}
    for kind in out:
        for b in range(L):
            iv = Intervention(**{kind: frozenset({b})})
            Q = np.concatenate([engine.forward(ids[a:a + batch], iv)[0]
                                for a in range(0, len(ids), batch)])
            out[kind].append(float(hellinger(P, Q).mean()))
    return out


@torch.inference_mode()
def norms_and_cosines(engine: Engine, ids: np.ndarray, batch: int = 1024) -> dict:
    """From one trace at the last position, means over the prompts of: each block's FFN and
    attention output norms, the residual stream's norm at the input (embeddings) and after each
    block, the cosine between a block's attention and FFN outputs, and between its FFN output and
    the block's output (attention + FFN)."""
    model, L = engine.model, engine.store.n_layer
    sums = {k: np.zeros(L) for k in ("ffn", "attn", "resid", "cos_attn_ffn", "cos_ffn_block")}
    emb, n = 0.0, 0
    for a in range(0, len(ids), batch):
        idx = torch.from_numpy(np.asarray(ids[a:a + batch], dtype=np.int64)).to(engine.device)
        tr = Trace(last_position=True)
        model(idx, trace=tr, last_only=True, skip_head=True)
        T = idx.shape[1]
        x0 = model.tok_emb(idx[:, -1]) + model.pos_emb(torch.tensor(T - 1, device=idx.device))
        emb += float(x0.float().norm(dim=-1).sum())
        for b in range(L):
            f, at, r = (t[:, -1].float() for t in (tr.ffn[b], tr.attn[b], tr.resid[b]))
            sums["ffn"][b] += float(f.norm(dim=-1).sum())
            sums["attn"][b] += float(at.norm(dim=-1).sum())
            sums["resid"][b] += float(r.norm(dim=-1).sum())
            cos = torch.nn.functional.cosine_similarity
            sums["cos_attn_ffn"][b] += float(cos(at, f, dim=-1).sum())
            sums["cos_ffn_block"][b] += float(cos(f, at + f, dim=-1).sum())
        n += len(idx)
    out = {k: (v / max(n, 1)).tolist() for k, v in sums.items()}
    out["embedding"] = emb / max(n, 1)
    return out


# --- each block alone over a threshold grid ---------------------------------------------------------
def threshold_grid(t: float, below: float = 0.04, above: float = 0.03, step: float = 0.002) -> list:
    """Thresholds from ``t - below`` to ``t + above`` (at most 0.998) in steps of ``step``."""
    vals = np.arange(round((t - below) / step), round((min(t + above, 0.998)) / step) + 1) * step
    return [round(float(v), 4) for v in vals if -1.0 <= v < 1.0]


def block_alone_sweep(engine: Engine, rows: np.ndarray, P: np.ndarray, centres, batch: int = 128) -> list:
    """Each block's neighbours alone (their follow-on counts, normalised) against the model on the
    prompts ``rows`` (P: their model distributions), over a grid of thresholds around ``centres``
    (one per block). One full scan (:class:`app.search.ExactSearch`: its cost does not grow as the
    threshold falls, unlike a pruned search) per block and batch of ``batch`` prompts at the grid's
    lowest threshold; the sets of the higher thresholds are its members above them. -> per block
    {grid, mean_h, top1, mean_size, best, best_h}."""
    store = engine.store
    ids, _ = prompt_ids(store, rows)
    N, L, V = len(ids), store.n_layer, store.counts.vocab_size
    scan = ExactSearch(store, engine.device)
    grids = [threshold_grid(c) for c in centres]
    counts = [np.zeros((len(g), N, V)) for g in grids]
    sizes = [np.zeros((len(g), N), np.int64) for g in grids]
    for a in range(0, N, batch):  # batches: a low threshold can admit much of the pool
        _, ffn = engine.forward(ids[a:a + batch])
        B = ffn.shape[1]
        for b in range(L):
            qi, nb, sims = scan.batch_threshold(b, unit(ffn[b]), grids[b][0], None, sims=True)
            for j, t in enumerate(grids[b]):
                keep = sims > t
                counts[b][j, a:a + B] = store.counts.sum_rows_grouped(nb[keep], qi[keep], B)
                sizes[b][j, a:a + B] = np.bincount(qi[keep], minlength=B)
    out = []
    for b in range(L):
        hs, t1 = [], []
        for j in range(len(grids[b])):
            Q = normalised(counts[b][j], engine.unigram)
            hs.append(float(hellinger(P, Q).mean()))
            t1.append(float(top1(P, Q).mean()))
        j = int(np.argmin(hs))
        out.append({"grid": grids[b], "mean_h": hs, "top1": t1,
                    "mean_size": sizes[b].mean(1).tolist(), "best": grids[b][j], "best_h": hs[j]})
    return out


# --- single prompts -----------------------------------------------------------------------------------
def top_chars(p: np.ndarray, chars: str, k: int = 4) -> list:
    """[(character, probability)] of the k most likely characters (ties by id)."""
    return [(chars[i], float(p[i])) for i in ranking(p)[:k]]


def worked_example(engine: Engine, prompt: str, s: QuerySettings, k: int = 4) -> dict:
    """One prompt under ``s`` (resolved): the model's top k, each block alone (its neighbours'
    follow-on counts, normalised: set size, H, top k) and the blend (H, top k); the full
    distributions too, for the bar charts."""
    r = engine.query(prompt, s)
    chars = engine.tok.chars
    blocks = []
    for br in r.blocks:
        q = normalised(br.counts[None], engine.unigram)[0]
        blocks.append({"size": br.n, "hellinger": float(hellinger(r.model_probs, q)),
                       "top": top_chars(q, chars, k), "dist": q.tolist()})
    return {"prompt": prompt, "model_top": top_chars(r.model_probs, chars, k),
            "model": r.model_probs.tolist(), "blocks": blocks, "blend": r.approx.tolist(),
            "blend_top": top_chars(r.approx, chars, k), "hellinger": r.hellinger}


def block_alone_at(engine: Engine, prompt: str, s: QuerySettings, block: int, threshold: float) -> dict:
    """``prompt`` with ``block`` alone at ``threshold``: its set size, H and top 4."""
    ths = list(s.thresholds)
    ths[block] = threshold
    r = engine.query(prompt, replace(s, thresholds=ths))
    br = r.blocks[block]
    q = normalised(br.counts[None], engine.unigram)[0]
    return {"threshold": threshold, "size": br.n, "hellinger": float(hellinger(r.model_probs, q)),
            "top": top_chars(q, engine.tok.chars)}


# --- long prompts ------------------------------------------------------------------------------------
def long_prompts(engine: Engine, s: QuerySettings, n: int, length: int, threshold: float,
                 seed: int = 1337, batch: int = 32) -> dict:
    """``n`` windows of ``length`` characters of validation text (the last 10 %; starts drawn by
    ``torch.manual_seed(seed); randperm``), the last block alone at ``threshold`` against the
    model at the window's last position: top-1 agreement, mean H, neighbour-set mean and max."""
    store = engine.store
    ids = store.corpus_ids
    n_train = int(TRAIN_FRACTION * len(ids))
    span = len(ids) - length - n_train + 1
    if span <= 0:
        return {"prompts": 0, "length": length}
    torch.manual_seed(seed)
    starts = n_train + torch.randperm(span)[: min(n, span)].numpy()
    windows = ids[starts[:, None] + np.arange(length)].astype(np.int64)
    last = store.n_layer - 1
    st = replace(s, thresholds=[threshold if b == last else t for b, t in enumerate(s.thresholds)])
    _, self_rows = prompt_ids(store, windows)
    probs, counts, sizes = [], [], []
    for a in range(0, len(windows), batch):
        p, ffn = engine.forward(windows[a:a + batch])
        c, k, _ = block_counts(engine, last, unit(ffn[last]), st, None, self_rows[a:a + batch])
        probs.append(p)
        counts.append(c)
        sizes.append(k)
    P, C, K = np.concatenate(probs), np.concatenate(counts), np.concatenate(sizes)
    Q = normalised(C, engine.unigram)
    return {"prompts": int(len(windows)), "length": int(length), "first_start": int(starts.min()),
            "top1": float(top1(P, Q).mean()), "mean_h": float(hellinger(P, Q).mean()),
            "mean_size": float(K.mean()), "max_size": int(K.max())}
