"""Sharing one batched Prometheus answer among the models that evaluate in the same round (the
I/O side of `batch`).

Models call `answer(query, since)` from worker threads. One query text is asked at most once at
a time: while it is in flight, every other model needing it waits for that same answer (a single
flight), and an answer is reused by any model whose round began at or before the query was
*sent* (`since` is the start of the asking model's round on the shared clock of
`rollout.schedule`). So every model of a round judges the same answer, taken during that round,
however late its own tick runs: one query per rule per round for all models. Models with other
intervals or windows ask other query texts (the window is in the text).

A failed query is shared the same way: it is Inconclusive for every model that needed it in that
round (never a value), and the next round asks again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .batch import Index, index
from .prometheus import MetricProvider

_FORGET_AFTER_S = 600.0  # answers nobody asked for in this long are dropped


@dataclass(frozen=True)
class Answer:
    sent_at: float  # wall-clock seconds since the epoch, as the rounds are
    index: Index | None = None  # None: the query failed
    error: str | None = None


@dataclass
class Coalescer:
    provider: MetricProvider
    clock: Callable[[], float] = time.time
    answers: dict[str, Answer] = field(default_factory=dict)
    _locks: dict[str, threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, query: str, since: float) -> Answer:
        """The answer sent at or after `since`, asking Prometheus only if there is none."""
        with self._guard:
            lock = self._locks.setdefault(query, threading.Lock())
        with lock:  # single flight: whoever waited here finds the answer just fetched
            cached = self.answers.get(query)
            now = self.clock()
            if cached is not None and cached.sent_at >= since:
                return cached
            try:
                fresh = Answer(now, index=index(self.provider.series(query)))
            except Exception as err:  # every way a query can fail means "no data", never a value
                fresh = Answer(now, error=self.provider.describe(err))
            self.answers[query] = fresh
        self._forget_old(now)
        return fresh

    def _forget_old(self, now: float) -> None:
        with self._guard:
            for query, old in list(self.answers.items()):
                if now - old.sent_at > _FORGET_AFTER_S:
                    self.answers.pop(query, None)
                    self._locks.pop(query, None)
