"""The fast path of reading a stream (`common_chunks`) against the full JSON decoding: the same
answer for any stream, however it is split. Pure."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from quantrollout.router.answers import Answer, StreamedAnswer
from quantrollout.router.common_chunks import CommonChunks


class FullDecoding(StreamedAnswer):
    """Every event decoded as JSON: the reference."""

    FAST = False


VLLM = (
    b'data: {"id":"chatcmpl-7","object":"chat.completion.chunk","created":1718000000,'
    b'"model":"m","choices":[{"index":0,"delta":{"content":"%s"},"logprobs":null,'
    b'"finish_reason":null}]}\n\n'
)


def test_vllm_s_token_events_are_read_without_decoding_them() -> None:
    chunks = CommonChunks()
    first = b"".join(VLLM % t for t in (b" Hello", "\\u00e9t\u00e9".encode(), b' \\"q\\"'))
    assert chunks.read(first) == (3, 3, ' Hello\u00e9t\u00e9 "q"')
    # The rest of the stream by its template: one event, several, the end.
    assert chunks.read(VLLM % b" world") == (1, 1, " world")
    assert chunks.read(VLLM % b"a" + VLLM % b"" + b"data: [DONE]\n\n") == (2, 1, "a")
    assert chunks.read(VLLM % b"\xc3" + VLLM % b"\xa9") is None  # each token must be UTF-8
    completion = (
        b'data: {"id":"c","object":"text_completion","choices":[{"index":0,"text":"x"}]}\n\n'
    )
    assert CommonChunks().read(completion) == (1, 1, "x")


def test_what_is_not_a_common_event_goes_the_full_way() -> None:
    chunks = CommonChunks()
    assert chunks.read(VLLM % b"a") == (1, 1, "a")
    for piece in (
        b'data: {"error":{"message":"boom","code":500}}\n\n',
        VLLM % b"a" + b'data: {"error":{"message":"boom","code":500}}\n\n',
        (VLLM % b"a")[:-1],  # the event's end is in the next read
        (VLLM % b"a")[5:],
        (VLLM % b"a").replace(b"\n\n", b"\r\n\r\n"),
        VLLM % b'a"',  # an unescaped quote in the token
        VLLM % b"a\nb",  # a raw control character
        VLLM % b"\xff",  # not UTF-8
        VLLM % b"\\x",  # not a JSON escape
        b'data: {"choices":[{"index":0,"delta":{"content":"a"}}],"usage":{"completion_tokens":3}}\n\n',
        b'data: {"choices":[{"index":0,"delta":{"reasoning_content":"a"}}]}\n\n',
        b'data: {"choices":[{"index":0,"delta":{"content":"a"}},{"index":1,"delta":{}}]}\n\n',
        b'data: {"choices":[{"index":1,"delta":{"content":"a"}}]}\n\n',
        b'data: {"ch\\u006fices":[],"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n',
        b'data: {"choices": [{"index": 0, "delta": {"content": "a"}}]}\n\n',
    ):
        assert chunks.read(piece) is None, piece


# --- any stream, any split: the fast path reads what full decoding reads ---------------------

KEYS = ["id", "object", "created", "model", "usage", "error", "type", "choices", "index",
        "delta", "text", "content", "role", "reasoning", "reasoning_content", "tool_calls",
        "logprobs", "finish_reason", "ch\\u006fices", "x"]  # fmt: skip
TEXT = st.text(
    st.characters(codec="utf-8") | st.sampled_from(['"', "\\", "\n", "\x00", "\u2028", "é"]),
    max_size=8,
)
SCALARS = st.none() | st.booleans() | st.integers(-5, 10**12) | st.sampled_from([1.5, -2e-7]) | TEXT
VALUES = SCALARS | st.lists(SCALARS, max_size=2)


def extra(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(
        st.sampled_from(keys), VALUES | st.dictionaries(TEXT, SCALARS, max_size=2), max_size=2
    )


@st.composite
def common(draw: st.DrawFn) -> dict[str, Any]:
    """An event as vLLM writes a token (sometimes with a key more or less)."""
    choice: dict[str, Any] = {"index": 0}
    if draw(st.integers(0, 4)):
        choice["delta"] = {"content": draw(TEXT)} if draw(st.integers(0, 5)) else {}
        if draw(st.integers(0, 5)) == 0:
            choice["delta"] = {"role": "assistant", **choice["delta"], "tool_calls": []}
    else:
        choice["text"] = draw(TEXT)
    choice.update(logprobs=None, finish_reason=draw(st.sampled_from([None, "stop"])))
    event = {"id": "c-1", "object": "chat.completion.chunk", "created": 1, "model": draw(TEXT)}
    return {**event, "choices": [choice], **draw(extra(["usage", "x"]))}


@st.composite
def events(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from(["common"] * 6 + ["chat"] * 3 + ["completion", "error", "other"]))
    if kind == "common":
        return draw(common())
    if kind == "error":
        return {"error": {"message": draw(TEXT), "code": draw(st.integers(100, 700) | TEXT)}}
    if kind == "other":
        return draw(VALUES | extra(KEYS))
    choices = []
    for _ in range(draw(st.sampled_from([1, 1, 1, 1, 0, 2]))):
        choice: dict[str, Any] = {"index": draw(st.sampled_from([0, 0, 0, 1]))}
        if kind == "completion":
            choice["text"] = draw(TEXT)
        else:
            delta = draw(extra(["role", "reasoning", "reasoning_content", "tool_calls", "x"]))
            if draw(st.integers(0, 5)):
                delta["content"] = draw(TEXT | st.none())
            choice["delta"] = delta
        choice.update(draw(extra(["logprobs", "finish_reason", "text", "index"])))
        choices.append(choice)
    event = draw(extra(["id", "object", "created", "model", "usage", "ch\\u006fices"]))
    event["choices"] = choices
    return event


def encode(event: Any, ascii_only: bool) -> bytes:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=ascii_only).encode(
        "utf-8", "surrogatepass"
    )


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    """A stream of (mostly) compact events, some spoiled by one byte, with where it is cut:
    sometimes between events (pieces of whole events), sometimes anywhere."""
    ascii_only = draw(st.booleans())
    template = draw(events())
    out, bounds = b"", []
    for _ in range(draw(st.integers(0, 8))):
        if draw(st.integers(0, 3)) and isinstance(template, dict) and template.get("choices"):
            event = json.loads(json.dumps(template))  # the template's shape, another token
            choice = event["choices"][0]
            key = "text" if "text" in choice else "delta"
            if key == "delta" and isinstance(choice["delta"], dict):
                choice["delta"]["content"] = draw(TEXT)
            elif key == "text":
                choice["text"] = draw(TEXT)
        else:
            event = draw(events())
        data = encode(event, ascii_only)
        if draw(st.integers(0, 9)) == 0:  # one byte changed, dropped or added
            at = draw(st.integers(0, len(data)))
            byte = draw(st.sampled_from([b"", b'"', b"\\", b",", b"}", b"\n", b"\xff", b" "]))
            data = data[:at] + byte + data[at + draw(st.integers(0, 1)) :]
        out += b"data: " + data + b"\n\n"
        bounds.append(len(out))
    if draw(st.booleans()):
        out += b"data: [DONE]\n\n"
        bounds.append(len(out))
    anywhere = st.integers(0, len(out))
    cuts = draw(st.lists(st.sampled_from(bounds) | anywhere if bounds else anywhere, max_size=8))
    return out, sorted(set(cuts))


def read(reader: StreamedAnswer, stream: bytes, cuts: list[int]) -> Answer | None:
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        reader.feed(stream[start:end])
    return reader.answer()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
@example((VLLM % b"a" + VLLM % b"b" + b"data: [DONE]\n\n", [len(VLLM % b"a")]))
def test_the_fast_path_reads_what_full_decoding_reads(stream: tuple[bytes, list[int]]) -> None:
    raw, cuts = stream
    assert read(StreamedAnswer(), raw, cuts) == read(FullDecoding(), raw, [])
