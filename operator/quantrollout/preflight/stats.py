"""What one tier's benchmark measured, summed up. Pure.

A `Sample` is one request as the load generator saw it; `summarize` turns the measured (not the
warm-up) samples into the figures the gate reads: time to first token p50/p99, inter-token latency
p50/p99 (every gap between two streamed pieces, pooled over all requests), output tokens per
second over the measured phase's wall time, and the error count."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    ok: bool
    started: float  # monotonic seconds
    ended: float
    ttft: float | None = None  # seconds from sending to the first piece of text
    gaps: tuple[float, ...] = ()  # seconds between consecutive pieces of text
    output_tokens: int = 0
    error: str | None = None
    text: str = ""


@dataclass(frozen=True)
class Summary:
    requests: int
    errors: int
    ttft_p50: float | None
    ttft_p99: float | None
    itl_p50: float | None
    itl_p99: float | None
    output_tokens: int
    seconds: float
    first_error: str | None = None

    @property
    def output_tokens_per_second(self) -> float | None:
        if self.seconds <= 0 or self.output_tokens == 0:
            return None
        return self.output_tokens / self.seconds

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    def to_dict(self) -> dict[str, float | int | str | None]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "ttftP50": self.ttft_p50,
            "ttftP99": self.ttft_p99,
            "itlP50": self.itl_p50,
            "itlP99": self.itl_p99,
            "outputTokensPerSecond": self.output_tokens_per_second,
            "seconds": self.seconds,
            **({"firstError": self.first_error} if self.first_error else {}),
        }


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (0..1) by linear interpolation between closest ranks (numpy's default);
    None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(samples: Sequence[Sample]) -> Summary:
    ok = [s for s in samples if s.ok]
    ttfts = [s.ttft for s in ok if s.ttft is not None]
    gaps = [g for s in ok for g in s.gaps]
    seconds = (max(s.ended for s in samples) - min(s.started for s in samples)) if samples else 0.0
    errors = [s for s in samples if not s.ok]
    return Summary(
        requests=len(samples),
        errors=len(errors),
        ttft_p50=percentile(ttfts, 0.5),
        ttft_p99=percentile(ttfts, 0.99),
        itl_p50=percentile(gaps, 0.5),
        itl_p99=percentile(gaps, 0.99),
        output_tokens=sum(s.output_tokens for s in ok),
        seconds=seconds,
        first_error=errors[0].error if errors else None,
    )
