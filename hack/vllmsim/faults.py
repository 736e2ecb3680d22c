"""Which requests a fault hits, decided so that observed rates match configured ones.

Request number n (counted per simulator from 0) gets two numbers in [0, 1) from the R2
low-discrepancy sequence (Roberts, 2018): one decides whether it fails with HTTP 500, the other
which answer it gets (normal, refusal, repetition loop or divergent). The sequence fills the unit
square evenly, so over any N consecutive requests each fault hits within a couple of requests of
rate * N, with no random spread, and the two decisions are independent of each other (the
refusal fraction among the requests that did not fail is the refusal rate too). What a faulty
answer says is still a function of the prompt (text.py).
"""

from __future__ import annotations

import enum
import itertools
import threading
from dataclasses import dataclass

from vllmsim.config import SimConfig

_PLASTIC = 1.324717957244746025960908854  # the plastic number, root of x**3 = x + 1
_STEP = (1 / _PLASTIC, 1 / _PLASTIC**2)


class Answer(enum.Enum):
    NORMAL = "normal"
    REFUSAL = "refusal"
    REPETITION = "repetition"
    DIVERGENT = "divergent"


@dataclass(frozen=True)
class Decision:
    sequence: int
    error: bool
    answer: Answer
    stream_error: bool = False  # the generation fails after it started (after the 200, if streamed)


def draws(n: int) -> tuple[float, float]:
    """The n-th point of the R2 sequence."""
    return ((0.5 + _STEP[0] * n) % 1.0, (0.5 + _STEP[1] * n) % 1.0)


def decide(n: int, config: SimConfig) -> Decision:
    """What goes wrong with request number n under `config` (a pure function)."""
    u, v = draws(n)
    answer = Answer.NORMAL
    edge = 0.0
    for rate, kind in (
        (config.refusal_rate, Answer.REFUSAL),
        (config.repetition_rate, Answer.REPETITION),
        (config.divergence_rate, Answer.DIVERGENT),
    ):
        edge += rate
        if v < edge:
            answer = kind
            break
    error = u < config.error_rate
    stream_error = not error and u < config.error_rate + config.stream_error_rate
    return Decision(sequence=n, error=error, answer=answer, stream_error=stream_error)


class FaultPlan:
    """Numbers the requests of one simulator and decides each one's faults."""

    def __init__(self) -> None:
        self._counter = itertools.count()
        self._lock = threading.Lock()

    def next(self, config: SimConfig) -> Decision:
        with self._lock:
            n = next(self._counter)
        return decide(n, config)
