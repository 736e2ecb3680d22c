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


class AnswerReader:
    """Reads one answer's body (an SSE stream or one JSON document) as it passes: `feed` each
    piece, then ask for the `answer`. A body longer than `limit` bytes is passed on but not
    read: past the limit nothing more is kept, and there is no answer."""

    __slots__ = ("_body", "_left")

    def __init__(self, content_type: str, limit: int) -> None:
        streamed = content_type.startswith("text/event-stream")
        self._body = StreamedAnswer() if streamed else WholeAnswer()
        self._left = limit

    def feed(self, piece: bytes) -> None:
        self._left -= len(piece)
        if self._left >= 0:
            self._body.feed(piece)

    def answer(self) -> Answer | None:
        """The answer in what was fed, or None if it is none or the body was over the limit."""
        return self._body.answer() if self._left >= 0 else None


def record(metrics: TierMetrics, answer: Answer) -> None:
    """Counts one inspected answer of a tier."""
    metrics.responses.inc()
    if answer.output_tokens:
        metrics.output_tokens.inc(answer.output_tokens)
    if has_repetition_loop(answer.text):
        metrics.repetitions.inc()
    if is_refusal(answer.text):
        metrics.refusals.inc()
