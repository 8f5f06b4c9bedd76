"""The explorer service behind the routes, with no web framework in it: one engine per store and
backend, the answer cache and its locks, the gate every engine call passes, and the store's
defaults as the form shows them."""
from __future__ import annotations

import threading
import time
from collections import OrderedDict

import numpy as np


from ..approx import Engine, QueryError, QueryResult, QuerySettings
from ..defaults import DEPTH_RULE
from ..links import ViewParams
from ..search import available_backends, make_search
from .gate import Gate

DEFAULT_STORE = "pool"


class Explorer:
    """What the app serves: the default store's engine (its search the default backend), the same
    engine under every other backend the store has (``backend=`` in a URL), the engines of other
    stores of the same model and pool (``store=``), a description, a small answer cache, and the
    gate every engine call passes.

    The cache holds at most ``cache_size`` answers and ``cache_rows`` neighbours in all (a threshold
    of -1 on a large store makes one answer hold every row of every block). A cached answer is
    shared by requests, and its neighbour lists order themselves and compute similarities lazily,
    so each answer has a lock that reading it (``run``'s ``present``) holds."""

    def __init__(self, engine: Engine, about: dict, cache_size: int = 64,
                 stores: dict[str, Engine] | None = None, gate: Gate | None = None,
                 cache_rows: int = 4_000_000):
        self.engine = engine
        self.base = ""  # the path the explorer is mounted at ("/m/NAME" beside another model)
        self.engines = {label: self._backends(e)
                        for label, e in {DEFAULT_STORE: engine, **(stores or {})}.items()}
        self.about = {**about, "backends": list(self.engines[DEFAULT_STORE]),
                      "stores": {label: {"size": next(iter(es.values())).store.size,
                                         "context": next(iter(es.values())).store.context,
                                         "activation": next(iter(es.values())).activation,
                                         "backends": list(es)}
                                 for label, es in self.engines.items()}}
        self.gate = gate or Gate.from_env()
        m = engine.store.manifest
        # What a permalink was made on: the model's name, its weights' and the store's vectors'
        # hash prefixes (links.ORDER leaves it last; provenance() compares it).
        self.stamp = ".".join([str(about.get("model") or "model"), str(m.get("model_sha256", ""))[:8],
                               str(m.get("unit_fingerprint", ""))[:8]])
        self._cache: OrderedDict = OrderedDict()  # key -> (result, its lock, its neighbour rows)
        self._cache_rows = 0
        self._lock = threading.Lock()
        self.cache_size, self.cache_rows = cache_size, cache_rows
        self._defaults: dict[str, dict] = {}  # store label -> defaults() (computed once)
        self._text: str | None = None  # the corpus as text (corpus_text)
        self._seeds: dict | None = None  # the committed other-seed models (comparisons)
        self._tuner = None  # the tuning instrument's tables (tuner)

    @staticmethod
    def _backends(engine: Engine) -> dict[str, Engine]:
        out = {engine.search.name: engine}
        for name in available_backends(engine.store):
            if name not in out:
                out[name] = engine.with_search(make_search(engine.store, name, engine.device))
        return out

    def engine_for(self, vp: ViewParams) -> Engine:
        label = vp.store or DEFAULT_STORE
        if label not in self.engines:
            raise QueryError(f"this server has no store {label!r}; it has: {', '.join(self.engines)} "
                             "(`ffnlens index --context T` builds an in-context one)")
        backends = self.engines[label]
        engine = backends.get(vp.backend or next(iter(backends)))
        if engine is None:
            raise QueryError(f"this store has no {vp.backend} index; it has: {', '.join(backends)} "
                             "(`ffnlens index` builds the others)")
        return engine

    def _answer(self, vp: ViewParams) -> tuple[QueryResult, Engine, threading.Lock, bool]:
        """(answer, engine, the answer's lock, whether it came from the cache)."""
        engine = self.engine_for(vp)
        key = (vp.prompt, repr(vp.settings), vp.store or DEFAULT_STORE, engine.search.name,
               vp.intervention)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                res, lock, _ = self._cache[key]
                return res, engine, lock, True
        res = engine.query(vp.prompt, vp.settings, vp.intervention)
        rows = sum(len(b.neighbours) for b in res.blocks)
        lock = threading.Lock()
        with self._lock:
            if key in self._cache:  # another request answered it meanwhile: share theirs
                res, lock, _ = self._cache[key]
            elif rows <= self.cache_rows:
                self._cache[key] = (res, lock, rows)
                self._cache_rows += rows
                while len(self._cache) > self.cache_size or self._cache_rows > self.cache_rows:
                    self._cache_rows -= self._cache.popitem(last=False)[1][2]
        return res, engine, lock, False

    def run(self, vp: ViewParams, present):
        """``present(result, engine)`` for the answer to ``vp``: the engine's (or the cache's),
        inside the gate (raises :class:`Busy` when it is full), under the answer's lock."""
        with self.gate:
            t0 = time.perf_counter()
            res, engine, lock, cached = self._answer(vp)
            with lock:
                t1 = time.perf_counter()
                out = present(res, engine)
                out["timing"] = {**({"cache": 1e3 * (t1 - t0)} if cached else res.timing),
                                 "present": 1e3 * (time.perf_counter() - t1)}
                return out

    def provenance(self, on: str) -> dict:
        """Whether a link's ``on`` (what it was made on) is what this server runs, and if not, what
        differs and how to serve the original."""
        out = {"serving": self.stamp, "link": on or None, "matches": not on or on == self.stamp}
        if out["matches"]:
            return out
        name, w, v = (on.split(".") + ["", "", ""])[:3]
        mine = self.stamp.split(".")
        what = [f"the model ({name or '?'}, weights {w or '?'}) is not the one served "
                f"({mine[0]}, weights {mine[1]})"] if [name, w] != mine[:2] else []
        if v != mine[2]:
            what.append(f"the store's vectors ({v or '?'}) are not this server's ({mine[2]})")
        out["message"] = ("This link was made on another explorer: " + "; ".join(what or ["it differs"])
                          + ". The numbers shown are this server's. To see the original, serve "
                          f"that model with its corpus: ffnlens serve --model {name or 'MODEL'} "
                          "--corpus ITS_CORPUS (the store is rebuilt from the same weights and text).")
        return out

    def corpus_text(self) -> str:
        """The default store's corpus as text (decoded once, on first use, and kept)."""
        with self._lock:
            if self._text is None:
                table = np.array(list(self.engine.tok.chars), dtype=object)
                self._text = "".join(table[self.engine.store.corpus_ids].tolist())
            return self._text

    def story(self, vp: ViewParams, row: int) -> dict:
        """Pool string ``row``'s story against ``vp``'s prompt (app/story.py), inside the gate."""
        from ..story import story

        engine = self.engine_for(vp)
        text = self.corpus_text()
        with self.gate:
            return story(engine, text, row, vp.prompt, vp.settings)

    def comparisons(self, vp: ViewParams, prompt: str) -> list[dict]:
        """Every reading of ``prompt``'s next character (app/compare.py), inside the gate; the
        committed other-seed models are loaded on first use and kept."""
        from ..compare import comparisons
        from ..study.baselines.seeds import committed_seeds

        engine = self.engine_for(vp)
        text = self.corpus_text()
        with self._lock:
            if self._seeds is None:
                found = committed_seeds(self.about.get("model", ""), engine.tok.chars,
                                        self.about.get("corpus_sha256", ""), engine.device)
                self._seeds = {f"seed {seed}": model for seed, model in found.items()}
        with self.gate:
            return comparisons(engine, text, prompt, vp.settings, self._seeds)

    def strip(self, vp: ViewParams) -> dict:
        """Every position of ``vp``'s prompt (app/strip.py), inside the gate; its timing gains
        nothing from the answer cache (a strip is one batched call)."""
        from ..strip import strip

        with self.gate:
            return strip(self.engine_for(vp), vp.prompt, vp.settings, vp.intervention)

    def tuner(self):
        """The tuning instrument over the default store (app/study/tuning.py): its sample's table is
        built in the background on first use, then every slider move is a lookup."""
        from ..study.tuning import Tuner

        with self._lock:
            if self._tuner is None:
                self._tuner = Tuner(self.engine)
            return self._tuner

    def defaults(self, store: str | None = None) -> dict:
        """The store's default thresholds and weights as the form shows them, and their rule
        (worked out once per store: they do not change while the server runs; a copy each call)."""
        label = store if store in self.engines else DEFAULT_STORE
        if label not in self._defaults:
            self._defaults[label] = self._work_out_defaults(label)
        return dict(self._defaults[label])

    def _work_out_defaults(self, label: str) -> dict:
        st = next(iter(self.engines[label].values())).store
        s = QuerySettings().resolved(st)
        return {"thresholds": ",".join(f"{t:.4f}" for t in s.thresholds),
                "weights": ",".join(f"{w:g}" for w in s.weights),
                "rule": st.defaults.get("rule", "METHOD.md's reference thresholds, by depth"),
                "rule_text": st.defaults.get("rule_text", "" if st.defaults.get("thresholds") else DEPTH_RULE),
                "weights_rule": "the store's" if st.defaults.get("weights") else DEPTH_RULE}
