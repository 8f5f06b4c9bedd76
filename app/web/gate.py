"""A bounded gate in front of the engine: at most ``running`` requests do engine work at once, at
most ``waiting`` more queue for a turn (first come, first served); anyone beyond that is told at
once that the server is busy (the routes answer 503 with Retry-After) instead of piling up threads,
memory and latency.

The FastAPI routes are sync functions run in a thread pool, so the gate is a plain thread-safe
context manager::

    with gate:          # raises Busy when `running` are busy and `waiting` already queue
        ...engine work...

The pool itself has a bound (anyio's default: 40 threads), so ``running + waiting`` should stay
below it; otherwise requests would queue for a thread before they reach the gate.
"""
from __future__ import annotations

import os
import threading
from collections import deque

BUSY_MESSAGE = "the server is busy; try again"


class Busy(Exception):
    """The gate is full: the request should be retried after ``retry_after`` seconds."""

    def __init__(self, retry_after: int = 1, message: str = BUSY_MESSAGE):
        super().__init__(message)
        self.retry_after = retry_after
        self.message = message


class Gate:
    """At most ``running`` holders at once, at most ``waiting`` queued; a queued caller gives up
    with :class:`Busy` after ``timeout`` seconds (None: waits for its turn however long)."""

    def __init__(self, running: int = 2, waiting: int = 32, timeout: float | None = 30.0,
                 retry_after: int = 1):
        if running < 1 or waiting < 0:
            raise ValueError(f"a gate needs running >= 1 and waiting >= 0, not {running}, {waiting}")
        self.running, self.waiting = int(running), int(waiting)
        self.timeout, self.retry_after = timeout, int(retry_after)
        self._lock = threading.Lock()
        self._busy = 0  # holders now
        self._queue: deque[threading.Event] = deque()  # waiters, oldest first
        self.rejected = 0  # callers turned away so far (for tests and logs)

    @classmethod
    def from_env(cls) -> "Gate":
        """FFNLENS_MAX_RUNNING (default 2: one per core of the reference machine) and
        FFNLENS_MAX_WAITING (default 32)."""
        return cls(running=int(os.environ.get("FFNLENS_MAX_RUNNING", "2")),
                   waiting=int(os.environ.get("FFNLENS_MAX_WAITING", "32")))

    @property
    def active(self) -> int:
        return self._busy

    @property
    def queued(self) -> int:
        return len(self._queue)

    def acquire(self) -> None:
        with self._lock:
            if self._busy < self.running and not self._queue:
                self._busy += 1
                return
            if len(self._queue) >= self.waiting:
                self.rejected += 1
                raise Busy(self.retry_after)
            turn = threading.Event()
            self._queue.append(turn)
        if turn.wait(self.timeout):
            return  # release() handed its slot over: _busy already counts us
        with self._lock:
            if turn.is_set():  # handed over between the timeout and taking the lock
                return
            self._queue.remove(turn)
            self.rejected += 1
        raise Busy(self.retry_after)

    def release(self) -> None:
        with self._lock:
            if self._queue:
                self._queue.popleft().set()  # the slot passes to the oldest waiter
            else:
                self._busy -= 1

    def __enter__(self) -> "Gate":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
