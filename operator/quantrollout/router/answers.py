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


def sse_events(stream: bytes) -> list[bytes]:
    """The `data:` payloads of a server-sent event stream, in order (multi-line data joined)."""
    if b"\r" in stream:
        stream = stream.replace(b"\r\n", b"\n")
    events: list[bytes] = []
    for block in stream.split(b"\n\n"):
        if block.startswith(b"data: ") and b"\n" not in block:  # the usual one-line event
            events.append(block[6:])
            continue
        lines = [line[5:].lstrip(b" ") for line in block.split(b"\n") if line.startswith(b"data:")]
        if lines:
            events.append(b"\n".join(lines))
    return events


def _parse_events(payloads: list[bytes]) -> list[Any]:
    # One json.loads over all events is several times cheaper than one per event; a stream with
    # a broken event falls back to reading them one by one and skipping what does not parse.
    try:
        parsed: list[Any] = json.loads(b"[" + b",".join(payloads) + b"]")
        if len(parsed) == len(payloads):
            return parsed
    except ValueError:
        pass
    events = []
    for data in payloads:
        try:
            events.append(json.loads(data))
        except ValueError:
            continue
    return events


def from_sse(stream: bytes) -> Answer | None:
    """The answer in a streamed response, or None if no event was a completion chunk."""
    parts: list[str] = []
    text_events = 0
    tokens: int | None = None
    seen = False
    payloads = [data for data in sse_events(stream) if data != b"[DONE]"]
    for event in _parse_events(payloads):
        if not isinstance(event, dict) or not isinstance(event.get("choices"), list):
            continue
        seen = True
        usage = _usage_tokens(event)
        if usage is not None:
            tokens = usage
        for choice in event["choices"]:
            text = _choice_text(choice, streamed=True)
            if not text:
                continue
            text_events += 1  # any choice carrying text is one generated token of it
            if choice.get("index", 0) == 0:
                parts.append(text)
    if not seen:
        return None
    return Answer("".join(parts), tokens if tokens is not None else text_events)
