"""Where torch work runs on the CPU: two process-wide pools of worker threads.

torch's thread count is per thread. The request's own thread keeps the count it was given (the
cores), for what gains from them: batched products. ``scan_pool`` splits one float16 pass into a
slice per thread, since torch's float16 matrix-vector product runs on one core. ``one_core``
runs work that two threads only slow down (small products, gathers) on workers set to one thread
each: measured on blog (C = 384) on 2 cores, one prompt's forward pass 9.0 ms on one core
against 11.4 on two, and 60,000 gathered similarities 11.3 ms against 20.9.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch

_SCAN: dict = {}
_ONE: dict = {}


def scan_pool(n: int) -> ThreadPoolExecutor:
    """A pool of ``n`` worker threads for the split float16 pass."""
    if n not in _SCAN:
        _SCAN[n] = ThreadPoolExecutor(n, thread_name_prefix="ffnlens-scan")
    return _SCAN[n]


def one_core(n: int) -> ThreadPoolExecutor:
    """A pool of ``n`` worker threads whose torch operations each run on one core (set once in
    each worker), so that ``n`` requests at once still each get a core."""
    if n not in _ONE:
        _ONE[n] = ThreadPoolExecutor(n, thread_name_prefix="ffnlens-one-core",
                                     initializer=torch.set_num_threads, initargs=(1,))
    return _ONE[n]


def on_each_core(n: int, work, total: int, align: int) -> list:
    """``work(start, end)`` for ``n`` consecutive slices of range(total), each on a ``one_core``
    worker, the slices' edges multiples of ``align`` (pieces or chunks are not split); returns the
    results in order, empty slices skipped."""
    edges = [total * i // n // align * align for i in range(n)] + [total]
    futures = [one_core(n).submit(work, s, e) for s, e in zip(edges, edges[1:]) if e > s]
    return [f.result() for f in futures]
