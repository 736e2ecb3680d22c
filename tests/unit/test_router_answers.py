"""Reading the answer out of what a tier sent: JSON bodies and SSE streams. Pure."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantrollout.router.answers import (
    Answer,
    StreamedAnswer,
    ToolCall,
    canonical_arguments,
    from_json,
    from_sse,
    sse_events,
)
from quantrollout.router.inspect_answer import AnswerReader


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
    assert from_json(b'{"error": {"message": "boom"}}') == Answer("", 0, error=500)
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
    assert from_sse(b'data: {"error": {"message": "x"}}\n\n') == Answer("", 0, error=500)


# --- read as it passes: however the network splits a stream, the same answer ------------------

contents = st.lists(st.one_of(st.none(), st.text(max_size=12)), max_size=40)


@st.composite
def framed_streams(draw: st.DrawFn) -> tuple[bytes, list[str | None]]:
    """A chat stream with the framing tiers use: LF or CRLF, comments, a JSON event sometimes
    spread over several data lines, sometimes usage, sometimes no [DONE]."""
    parts = draw(contents)
    eol = draw(st.sampled_from([b"\n", b"\r\n"]))
    out = b""
    for content in parts:
        if draw(st.booleans()) and draw(st.booleans()):
            out += b": keep-alive" + eol + eol
        data = json.dumps(chat_chunk(content), indent=draw(st.sampled_from([None, 1]))).encode()
        lines = data.split(b"\n")
        out += b"".join(b"data: " + line + eol for line in lines) + eol
    if draw(st.booleans()):
        out += b"data: [DONE]" + eol + eol
    return out, parts


@given(framed_streams(), st.data())
def test_any_split_of_a_stream_reads_as_the_whole(
    framed: tuple[bytes, list[str | None]], data: st.DataObject
) -> None:
    stream, parts = framed
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    reader = StreamedAnswer()
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        reader.feed(stream[start:end])
    got = reader.answer()
    assert got == from_sse(stream)
    texts = [p for p in parts if p]
    expected = Answer("".join(texts), len(texts)) if parts else None
    assert got == expected


FRAGMENTS = [b"data: ", b"data:", b"\n", b"\r\n", b"\r", b": c", b"x", b"[DONE]", b",",
             b'{"choices":[{"text":"a"}]}', b'{"choices":[{"index":1,"text":"b"}]}', b"{"]  # fmt: skip


@given(
    st.lists(st.sampled_from(FRAGMENTS), max_size=40).map(b"".join),
    st.lists(st.integers(0, 300), max_size=8),
)
def test_any_split_of_any_bytes_reads_as_the_whole(stream: bytes, cuts: list[int]) -> None:
    reader = StreamedAnswer()
    bounds = sorted(min(c, len(stream)) for c in cuts)
    for start, end in zip([0, *bounds], [*bounds, len(stream)], strict=True):
        reader.feed(stream[start:end])
    assert reader.answer() == from_sse(stream)


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("text/event-stream", sse(chat_chunk("a"), chat_chunk(" b")), Answer("a b", 2)),
        ("application/json", json.dumps({"choices": [{"text": "a b"}]}).encode(), Answer("a b", 2)),
    ],
)
def test_a_body_over_the_limit_is_not_read(
    content_type: str, body: bytes, expected: Answer
) -> None:
    for limit, answer in ((len(body), expected), (len(body) - 1, None)):
        reader = AnswerReader(content_type, limit)
        for i in range(0, len(body), 7):
            reader.feed(body[i : i + 7])
        assert reader.answer() == answer, limit


# --- what vLLM answers beyond plain text: tool calls, reasoning, the Responses API, errors ----


def tool_delta(index: int, name: str | None = None, arguments: str = "") -> dict[str, Any]:
    function: dict[str, Any] = {"arguments": arguments}
    head: dict[str, Any] = {}
    if name is not None:
        function["name"] = name
        head = {"id": f"call-{index}", "type": "function"}
    return {
        "choices": [
            {"index": 0, "delta": {"tool_calls": [{"index": index, **head, "function": function}]}}
        ]
    }


def test_tool_calls_are_read_whole_and_streamed() -> None:
    call = {
        "id": "c",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "C"}'},
    }
    body = {
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [call]}}
        ],
        "usage": {"completion_tokens": 9},
    }
    expected = Answer("", 9, "", (ToolCall("get_weather", '{"city":"Paris","unit":"C"}'),))
    assert from_json(json.dumps(body).encode()) == expected
    stream = sse(
        chat_chunk("", role=True),
        tool_delta(0, "get_weather"),
        tool_delta(0, arguments='{"unit": "C", '),
        tool_delta(0, arguments='"city": "Paris"}'),
        tool_delta(1, "search", '{"q": 1}'),
        {"choices": [], "usage": {"completion_tokens": 9}},
    )
    assert from_sse(stream) == Answer(
        "",
        9,
        "",
        (ToolCall("get_weather", '{"city":"Paris","unit":"C"}'), ToolCall("search", '{"q":1}')),
    )


def test_reasoning_is_read_under_both_of_vllm_s_names() -> None:
    for field in ("reasoning", "reasoning_content"):  # vLLM >= 0.11, and before
        body = {"choices": [{"index": 0, "message": {"content": "42", field: "six times seven"}}]}
        assert from_json(json.dumps(body).encode()) == Answer("42", 1, "six times seven")
        stream = sse(
            *({"choices": [{"index": 0, "delta": {field: w}}]} for w in ("six", " times")),
            chat_chunk("42"),
        )
        assert from_sse(stream) == Answer("42", 3, "six times")


RESPONSE = {
    "id": "resp_1", "object": "response", "status": "completed",
    "output": [
        {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "hmm"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello"}, {"type": "output_text", "text": " there"}]},
        {"type": "function_call", "name": "f", "arguments": '{"b": 2, "a": 1}', "call_id": "c"},
    ],
    "usage": {"input_tokens": 3, "output_tokens": 7, "total_tokens": 10},
}  # fmt: skip


def test_the_responses_api_whole_and_streamed() -> None:
    expected = Answer("Hello there", 7, "hmm", (ToolCall("f", '{"a":1,"b":2}'),))
    assert from_json(json.dumps(RESPONSE).encode()) == expected

    def event(kind: str, **fields: Any) -> bytes:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields})}\n\n".encode()

    deltas = event("response.created", response={**RESPONSE, "output": []}) + b"".join(
        event("response.output_text.delta", delta=d) for d in ("Hello", " there")
    )
    assert from_sse(deltas) == Answer("Hello there", 2)  # no closing event: the deltas
    assert from_sse(deltas + event("response.completed", response=RESPONSE)) == expected


@pytest.mark.parametrize(
    ("event", "code"),
    [
        # vLLM's chat and completion streams (create_streaming_error_response)
        (
            {
                "error": {
                    "message": "boom",
                    "type": "InternalServerError",
                    "param": None,
                    "code": 500,
                }
            },
            500,
        ),
        ({"error": {"message": "no", "type": "BadRequestError", "param": None, "code": 400}}, 400),
        ({"error": {"message": "?", "code": "oops"}}, 500),
        ({"error": {"message": "?", "code": 200}}, 500),  # not an error status: a server's fault
        # the Responses API's error and failed events
        ({"type": "error", "code": "server_error", "message": "boom", "sequence_number": 3}, 500),
        (
            {
                "type": "response.failed",
                "response": {**RESPONSE, "status": "failed", "error": {"code": "server_error"}},
            },
            500,
        ),
    ],
)
def test_an_error_event_ends_the_answer(event: dict[str, Any], code: int) -> None:
    stream = sse(chat_chunk("Hel"), chat_chunk("lo"), event)
    answer = from_sse(stream)
    assert answer is not None
    assert answer.error == code
    assert from_sse(sse(chat_chunk("Hello"))).error is None


@given(
    st.lists(st.sampled_from(["a", "b", " ", '"', "{", "}", ":", ","]), max_size=30),
    st.lists(st.integers(1, 8), max_size=8),
)
def test_tool_arguments_read_the_same_however_they_are_split(
    chars: list[str], sizes: list[int]
) -> None:
    arguments = "".join(chars)
    pieces, at = [], 0
    for size in sizes:
        pieces.append(arguments[at : at + size])
        at += size
    pieces.append(arguments[at:])
    stream = sse(tool_delta(0, "f"), *(tool_delta(0, arguments=p) for p in pieces))
    answer = from_sse(stream)
    assert answer is not None
    assert answer.tool_calls == (ToolCall("f", canonical_arguments(arguments)),)
