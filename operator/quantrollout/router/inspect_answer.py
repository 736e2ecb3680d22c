"""Turning what a tier answered into its quality signals: read the answer out of the bytes
passed on (a stream as it passes, piece by piece), run the checks, count."""

from __future__ import annotations

from .answers import Answer, StreamedAnswer, from_json
from .metrics import TierMetrics
from .quality import has_repetition_loop, is_refusal


class WholeAnswer:
    """A non-streamed answer: one JSON document, kept and read at the end."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def feed(self, piece: bytes) -> None:
        self._parts.append(piece)

    def answer(self) -> Answer | None:
        return from_json(b"".join(self._parts))


AnswerReader = StreamedAnswer | WholeAnswer


def answer_reader(content_type: str) -> AnswerReader:
    """A reader for a body of this type: feed it the body's pieces, then ask for the answer."""
    if content_type.startswith("text/event-stream"):
        return StreamedAnswer()
    return WholeAnswer()


def read_answer(body: bytes, content_type: str) -> Answer | None:
    """The answer in a whole body (an SSE stream or one JSON document), or None if it is none."""
    reader = answer_reader(content_type)
    reader.feed(body)
    return reader.answer()


def record(metrics: TierMetrics, answer: Answer) -> None:
    """Counts one inspected answer of a tier."""
    metrics.responses.inc()
    if answer.output_tokens:
        metrics.output_tokens.inc(answer.output_tokens)
    if has_repetition_loop(answer.text):
        metrics.repetitions.inc()
    if is_refusal(answer.text):
        metrics.refusals.inc()
