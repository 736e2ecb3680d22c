"""Reading the answer out of what a tier sent: JSON bodies and SSE streams. Pure."""

from __future__ import annotations

import json
from typing import Any

from quantrollout.router.answers import Answer, from_json, from_sse, sse_events


def sse(*events: Any, done: bool = True) -> bytes:
    out = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    return out + (b"data: [DONE]\n\n" if done else b"")


def chat_chunk(content: str | None, index: int = 0, role: bool = False) -> dict[str, Any]:
    delta: dict[str, Any] = {"role": "assistant"} if role else {}
    if content is not None:
        delta["content"] = content
    return {"object": "chat.completion.chunk", "choices": [{"index": index, "delta": delta}]}


def test_chat_json() -> None:
    body = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there"}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 7},
    }
    assert from_json(json.dumps(body).encode()) == Answer("Hello there", 7)


def test_completion_json_without_usage_counts_words() -> None:
    body = {"choices": [{"index": 0, "text": "one two three"}]}
    assert from_json(json.dumps(body).encode()) == Answer("one two three", 3)


def test_only_the_first_choice_is_read() -> None:
    body = {
        "choices": [{"index": 1, "text": "second"}, {"index": 0, "text": "first"}],
        "usage": {"completion_tokens": 2},
    }
    assert from_json(json.dumps(body).encode()) == Answer("first", 2)


def test_not_a_completion() -> None:
    assert from_json(b"not json") is None
    assert from_json(b'{"error": {"message": "boom"}}') is None
    assert from_json(b"[1, 2]") is None
    assert from_json(b'{"choices": [{"index": 0, "message": {"content": null}}]}') == Answer("", 0)


def test_chat_stream() -> None:
    stream = sse(
        chat_chunk("", role=True), chat_chunk("Hello"), chat_chunk(" world"), chat_chunk(None)
    )
    assert from_sse(stream) == Answer("Hello world", 2)


def test_stream_usage_wins_over_the_estimate() -> None:
    usage = {"object": "chat.completion.chunk", "choices": [], "usage": {"completion_tokens": 9}}
    assert from_sse(sse(chat_chunk("a"), chat_chunk(" b"), usage)) == Answer("a b", 9)


def test_completion_stream_with_two_choices() -> None:
    events = [
        {"choices": [{"index": 0, "text": "A"}]},
        {"choices": [{"index": 1, "text": "X"}]},
        {"choices": [{"index": 0, "text": "B"}]},
    ]
    assert from_sse(sse(*events)) == Answer("AB", 3)


def test_stream_framing() -> None:
    # CRLF line ends, comments, multi-line data, events split where the network split them.
    raw = b': keep-alive\r\n\r\ndata: {"choices":\r\ndata: [{"index":0,"text":"hi"}]}\r\n\r\n'
    assert sse_events(raw) == [b'{"choices":\n[{"index":0,"text":"hi"}]}']
    assert from_sse(raw) == Answer("hi", 1)


def test_an_unfinished_or_broken_stream_is_read_as_far_as_it_goes() -> None:
    stream = sse(chat_chunk("one"), done=False) + b"data: {broken\n\n"
    assert from_sse(stream) == Answer("one", 1)
    assert from_sse(b"") is None
    assert from_sse(b"data: [DONE]\n\n") is None
    assert from_sse(b'data: {"error": {"message": "x"}}\n\n') is None
