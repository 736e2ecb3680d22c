"""What an upstream answered, read from the bytes the router passed on. Pure.

Both OpenAI shapes are understood: chat completions (`choices[0].message.content`, or
`choices[0].delta.content` in a stream) and completions (`choices[0].text`). Only the first
choice (`index` 0) is read.

**Output tokens**: `usage.completion_tokens` when the answer carries it (vLLM always does for a
non-streamed answer, and for a stream when the client asked for `stream_options.include_usage`).
Otherwise an estimate: for a stream, the number of events that carried text (vLLM sends one
per generated token), for a plain answer the number of whitespace-separated words.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Answer:
    """The text of the first choice and the number of tokens generated (all choices)."""

    text: str
    output_tokens: int


def _choice_text(choice: Any, streamed: bool) -> str:
    if not isinstance(choice, dict):
        return ""
    if "text" in choice:  # /v1/completions
        text = choice["text"]
    else:
        part = choice.get("delta" if streamed else "message")
        text = part.get("content") if isinstance(part, dict) else None
    return text if isinstance(text, str) else ""


def _first_choice(body: Any) -> Any:
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list):
        return None
    for choice in choices:
        if isinstance(choice, dict) and choice.get("index", 0) == 0:
            return choice
    return None


def _usage_tokens(body: Any) -> int | None:
    usage = body.get("usage") if isinstance(body, dict) else None
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else None


def from_json(body: bytes) -> Answer | None:
    """The answer in a non-streamed response body, or None if it is not a completion."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    if not isinstance(parsed, dict) or "choices" not in parsed:
        return None
    text = _choice_text(_first_choice(parsed), streamed=False)
    tokens = _usage_tokens(parsed)
    return Answer(text, tokens if tokens is not None else len(text.split()))


class SseParser:
    """Server-sent events read piece by piece, as the network splits them: `feed` what arrived,
    `close` at the end of the stream. Each event's data (its `data:` lines, joined with "\\n")
    goes to `on_event`; events without data are skipped. Lines end with LF or CRLF."""

    __slots__ = ("_carry", "_data", "_on_event")

    def __init__(self, on_event: Callable[[bytes], None]) -> None:
        self._on_event = on_event
        self._carry = b""  # the start of a line whose end has not arrived
        self._data: list[bytes] = []  # the data lines of the event being read

    def feed(self, piece: bytes) -> None:
        if (  # the usual piece: one whole one-line event, "data: {...}\n\n"
            not self._carry
            and not self._data
            and piece.startswith(b"data: ")
            and piece.find(b"\n") == len(piece) - 2
            and piece.endswith(b"\n\n")
            and b"\r" not in piece
        ):
            self._on_event(piece[6:-2])
            return
        lines = (self._carry + piece if self._carry else piece).split(b"\n")
        self._carry = lines.pop()
        for line in lines:
            self._line(line[:-1] if line.endswith(b"\r") else line)

    def close(self) -> None:
        """Ends the stream: a last line or event without its blank line still counts."""
        if self._carry:
            carry, self._carry = self._carry, b""
            self._line(carry[:-1] if carry.endswith(b"\r") else carry)
        self._line(b"")

    def _line(self, line: bytes) -> None:
        if not line:  # a blank line ends the event
            if self._data:
                data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
                self._data = []
                self._on_event(data)
        elif line.startswith(b"data:"):
            self._data.append(line[6:] if line.startswith(b"data: ") else line[5:])


def sse_events(stream: bytes) -> list[bytes]:
    """The data of each event in a whole server-sent event stream, in order."""
    events: list[bytes] = []
    parser = SseParser(events.append)
    parser.feed(stream)
    parser.close()
    return events


class StreamedAnswer:
    """The answer in a streamed response, read as it passes: `feed` each piece, then `answer`.
    Events are decoded `BATCH` at a time (one json.loads over many is several times cheaper
    than one each), so no step costs more than a small, fixed piece of the work, however long
    the answer: the event loop that passes streams on is never held up for long."""

    BATCH = 16
    __slots__ = ("_parser", "_parts", "_pending", "_seen", "_text_events", "_tokens")

    def __init__(self) -> None:
        self._parser = SseParser(self._data)
        self._pending: list[bytes] = []  # event data not decoded yet
        self._parts: list[str] = []
        self._text_events = 0
        self._tokens: int | None = None
        self._seen = False

    def feed(self, piece: bytes) -> None:
        self._parser.feed(piece)

    def answer(self) -> Answer | None:
        """The answer so far (call at the end), or None if no event was a completion chunk."""
        self._parser.close()
        self._decode()
        if not self._seen:
            return None
        tokens = self._tokens if self._tokens is not None else self._text_events
        return Answer("".join(self._parts), tokens)

    def _data(self, data: bytes) -> None:
        if data != b"[DONE]":
            self._pending.append(data)
            if len(self._pending) >= self.BATCH:
                self._decode()

    def _decode(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            events: list[Any] = json.loads(b"[" + b",".join(pending) + b"]")
            if len(events) != len(pending):  # some event held a comma-joined pair: not one value
                raise ValueError
        except ValueError:  # one by one, skipping what does not parse
            events = []
            for data in pending:
                try:
                    events.append(json.loads(data))
                except ValueError:  # a broken event; the rest of the stream still counts
                    continue
        for event in events:
            self._event(event)

    def _event(self, event: Any) -> None:
        if not isinstance(event, dict) or not isinstance(event.get("choices"), list):
            return
        self._seen = True
        usage = _usage_tokens(event)
        if usage is not None:
            self._tokens = usage
        for choice in event["choices"]:
            text = _choice_text(choice, streamed=True)
            if not text:
                continue
            self._text_events += 1  # any choice carrying text is one generated token of it
            if choice.get("index", 0) == 0:
                self._parts.append(text)


def from_sse(stream: bytes) -> Answer | None:
    """The answer in a whole streamed response, or None if no event was a completion chunk."""
    reader = StreamedAnswer()
    reader.feed(stream)
    return reader.answer()
