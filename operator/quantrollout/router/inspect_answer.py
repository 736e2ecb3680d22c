"""Turning what a tier answered into its quality signals: read the answer out of the bytes
passed on, run the checks, count. Runs after the client has its last byte."""

from __future__ import annotations

from .answers import Answer, from_json, from_sse
from .metrics import TierMetrics
from .quality import has_repetition_loop, is_refusal


def read_answer(body: bytes, content_type: str) -> Answer | None:
    """The answer in a body (an SSE stream or one JSON document), or None if it is none."""
    if content_type.startswith("text/event-stream"):
        return from_sse(body)
    return from_json(body)


def record(metrics: TierMetrics, answer: Answer) -> None:
    """Counts one inspected answer of a tier."""
    metrics.responses.inc()
    if answer.output_tokens:
        metrics.output_tokens.inc(answer.output_tokens)
    if has_repetition_loop(answer.text):
        metrics.repetitions.inc()
    if is_refusal(answer.text):
        metrics.refusals.inc()
