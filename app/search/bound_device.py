"""The bound's plan for the device it runs on (``open_bound``), and the bound on an accelerator
(:mod:`app.search.bound`): the tables held on the device prune single queries, with the same
answers as the CPU's plan; batches are the full scan's there."""
from __future__ import annotations

import numpy as np
import torch

from ..store import Store
from .base import Neighbours, SearchStats, record
from .bound import BOUND_MARGIN, BoundSearch, load_index, topk_from_bounds
from .bound_table import BoundIndex
from .exact import ExactSearch


class DeviceBoundSearch:
    """The bound on an accelerator: the tables are held on the device and prune single queries
    (the same answers as the CPU's plan); batches are the full scan's on the device."""

    name = "bound"

    def __init__(self, store: Store, index: BoundIndex, device: str):
        self.store, self.device, self.index = store, device, index
        self.scan = ExactSearch(store, device)
        self._held: dict = {}

    def _order(self, b: int) -> torch.Tensor | None:
        """The pool row of each column of block b's table, on the device (None: the same)."""
        cells = self.index.cells[b]
        if cells is None:
            return None
        if ("order", b) not in self._held:
            self._held["order", b] = torch.from_numpy(cells.order).to(self.device)
        return self._held["order", b]

    def bounds(self, b: int, q: torch.Tensor) -> torch.Tensor:
        """(P,) float32 upper bounds of q . x on the device by column of the table (``_order``
        maps them to pool rows), valid to within BOUND_MARGIN."""
        if b not in self._held:
            self._held[b] = torch.from_numpy(np.array(self.index.block(b))).to(self.device)
        qp, qres = self.index.query_parts(b, q)
        v = self.index.prefix_vec(qp, qres, b, len(self.index.stages[b]) - 1)
        return torch.from_numpy(v).to(self.device) @ self._held[b]

    def threshold(self, b: int, q: torch.Tensor, thr: float, exclude: int | None = None) -> Neighbours:
        cand = torch.nonzero(self.bounds(b, q) > thr - BOUND_MARGIN).flatten()
        order = self._order(b)
        cand = cand if order is None else torch.sort(order[cand]).values
        stats = record(None, "bound-device", len(cand),
                       self.index.block_bytes(b) + len(cand) * self.scan.row_bytes())
        return self.scan.threshold_among(b, q, thr, cand, exclude, stats)

    def topk(self, b: int, q: torch.Tensor, k: int, exclude: int | None = None) -> Neighbours:
        return topk_from_bounds(self.scan, b, q, self.bounds(b, q), k, exclude, "bound-device",
                                self.index.block_bytes(b), order=self._order(b),
                                exclude_col=None if exclude is None else self.index.column_of(b, exclude))

    def batch_threshold(self, b: int, Q: torch.Tensor, thr: float,
                        exclude: torch.Tensor | None = None, sims: bool = True,
                        stats: SearchStats | None = None) -> tuple:
        return self.scan.batch_threshold(b, Q, thr, exclude, stats=stats)

    def batch_topk(self, b: int, Q: torch.Tensor, k: int, exclude: torch.Tensor | None = None,
                   stats: SearchStats | None = None) -> tuple[np.ndarray, ...]:
        return self.scan.batch_topk(b, Q, k, exclude, stats=stats)


def open_bound(store: Store, device: str = "cpu") -> BoundSearch | DeviceBoundSearch:
    """The bound backend over the store's index (``load_index``), its plan chosen for ``device``:
    on the CPU ``BoundSearch``, on an accelerator ``DeviceBoundSearch``."""
    index = load_index(store)
    if device == "cpu":
        return BoundSearch(store, index, device)
    return DeviceBoundSearch(store, index, device)
