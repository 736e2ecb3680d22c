"""What an upstream answered, read from the bytes the router passed on. Pure.

Three shapes are understood, as vLLM writes them:

- chat completions: `choices[0].message` (`choices[0].delta` in a stream) with `content`,
  `reasoning` (vLLM's reasoning parsers; `reasoning_content` in releases before 0.11) and
  `tool_calls` (a stream sends each call's `function.name` once and its `arguments` in pieces,
  keyed by the call's `index`);
- completions: `choices[0].text`;
- the Responses API: a `response` object (`output` items of type `message`, `reasoning` and
  `function_call`); a stream's events are `response.output_text.delta`,
  `response.reasoning_text.delta`, and a closing `response.completed` that carries the whole
  response, which then wins over the deltas.

Only the first choice (`index` 0) is read.

**Errors inside a 200 answer.** vLLM has sent the status line before it starts generating, so a
stream that fails mid-generation ends with an event `data: {"error": {"message", "type",
"code"}}` (then `data: [DONE]`), still under HTTP 200. The Responses API may also end with an
event of type `error` or `response.failed`. Such an answer carries `error`: the event's `code`
when it is an HTTP status, else 500. A failed answer is not a complete answer: it is counted as
the tier's error, not inspected.

**Output tokens**: `usage.completion_tokens` (`usage.output_tokens` for the Responses API) when
the answer carries it (vLLM always does for a non-streamed answer, and for a stream when the
client asked for `stream_options.include_usage`). Otherwise an estimate: for a stream, the number
of events that carried generated text (vLLM sends one per generated token), for a plain answer
the number of whitespace-separated words.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .common_chunks import CommonChunks


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the model asked for: its name and its arguments as canonical JSON."""

    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Answer:
    """The first choice's content, reasoning and tool calls, the tokens generated (all choices),
    and the status of an error event that ended the answer (None: it did not fail)."""

    text: str
    output_tokens: int
    reasoning: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    error: int | None = None


def canonical_arguments(arguments: Any) -> str:
    """A tool call's arguments as canonical JSON (keys sorted, no spaces), so that the same call
    written twice reads the same; text that is not JSON is kept as it is, stripped."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return str(arguments).strip()
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def error_code(event: Any) -> int | None:
    """The status of an error event or error body (None if `event` is not one): the error's
    `code` when it is an HTTP status, else 500."""
    if not isinstance(event, dict):
        return None
    error = event.get("error")
    kind = event.get("type")
    if isinstance(error, dict):
        details = error
    elif kind == "error":  # the Responses API's error event: code and message at the top
        details = event
    elif kind == "response.failed":
        response = event.get("response")
        failed = response.get("error") if isinstance(response, dict) else None
        details = failed if isinstance(failed, dict) else {}
    else:
        return None
    code = _int(details.get("code"))
    return code if code is not None and 400 <= code <= 599 else 500


def _message_part(part: Any) -> tuple[str, str]:
    """(content, reasoning) of a chat message or delta."""
    if not isinstance(part, dict):
        return "", ""
    reasoning = part.get("reasoning")
    if reasoning is None:
        reasoning = part.get("reasoning_content")
    return _str(part.get("content")), _str(reasoning)


def _tool_calls(message: Any) -> tuple[ToolCall, ...]:
    if not isinstance(message, dict):
        return ()
    calls = message.get("tool_calls")
    found = []
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            found.append(
                ToolCall(_str(function.get("name")), canonical_arguments(function.get("arguments")))
            )
    legacy = message.get("function_call")  # the deprecated single call
    if isinstance(legacy, dict):
        found.append(
            ToolCall(_str(legacy.get("name")), canonical_arguments(legacy.get("arguments")))
        )
    return tuple(found)


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
    if not isinstance(usage, dict):
        return None
    tokens = _int(usage.get("completion_tokens"))
    return tokens if tokens is not None else _int(usage.get("output_tokens"))


def _texts(parts: Any, kinds: tuple[str, ...]) -> str:
    if not isinstance(parts, list):
        return ""
    return "".join(
        _str(p.get("text")) for p in parts if isinstance(p, dict) and p.get("type") in kinds
    )


def from_response(response: dict[str, Any]) -> Answer:
    """The answer in a Responses API `response` object."""
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[ToolCall] = []
    output = response.get("output")
    for item in output if isinstance(output, list) else ():
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "message":
            text.append(_texts(item.get("content"), ("output_text", "refusal")))
        elif kind == "reasoning":
            thought = _texts(item.get("content"), ("reasoning_text",))
            reasoning.append(thought or _texts(item.get("summary"), ("summary_text",)))
        elif kind == "function_call":
            calls.append(
                ToolCall(_str(item.get("name")), canonical_arguments(item.get("arguments")))
            )
    joined = "".join(text)
    tokens = _usage_tokens(response)
    error = 500 if response.get("status") == "failed" else None
    return Answer(
        joined,
        tokens if tokens is not None else len(joined.split()),
        "".join(reasoning),
        tuple(calls),
        error,
    )


def from_json(body: bytes) -> Answer | None:
    """The answer in a non-streamed response body, or None if it is not a completion."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    if not isinstance(parsed, dict):
        return None
    error = error_code(parsed)
    if error is not None:
        return Answer("", 0, error=error)
    if parsed.get("object") == "response":
        return from_response(parsed)
    if "choices" not in parsed:
        return None
    choice = _first_choice(parsed)
    calls: tuple[ToolCall, ...] = ()
    if isinstance(choice, dict) and "text" in choice:  # /v1/completions
        text, reasoning = _str(choice["text"]), ""
    else:
        message = choice.get("message") if isinstance(choice, dict) else None
        (text, reasoning), calls = _message_part(message), _tool_calls(message)
    tokens = _usage_tokens(parsed)
    return Answer(text, tokens if tokens is not None else len(text.split()), reasoning, calls)


class SseParser:
    """Server-sent events read piece by piece, as the network splits them: `feed` what arrived,
    `close` at the end of the stream. Each event's data (its `data:` lines, joined with "\\n")
    is appended to `events`, for the caller to take; events without data are skipped. Lines end
    with LF or CRLF. (A list, not a callback: a callback bound to the parser's owner would make
    the two a reference cycle, garbage that only the cycle collector frees, in one pause for
    thousands of streams.)"""

    __slots__ = ("_carry", "_data", "events")

    def __init__(self) -> None:
        self.events: list[bytes] = []  # the data of the events read and not taken yet
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
            self.events.append(piece[6:-2])
            return
        lines = (self._carry + piece if self._carry else piece).split(b"\n")
        self._carry = lines.pop()
        for line in lines:
            self._line(line[:-1] if line.endswith(b"\r") else line)

    @property
    def between_events(self) -> bool:
        """Nothing of an unfinished line or event is held: the next piece starts a new one."""
        return not self._carry and not self._data

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
                self.events.append(data)
        elif line.startswith(b"data:"):
            self._data.append(line[6:] if line.startswith(b"data: ") else line[5:])


def sse_events(stream: bytes) -> list[bytes]:
    """The data of each event in a whole server-sent event stream, in order."""
    parser = SseParser()
    parser.feed(stream)
    parser.close()
    return parser.events


class StreamedAnswer:
    """The answer in a streamed response, read as it passes: `feed` each piece, then `answer`.
    Events are decoded `BATCH` at a time (one json.loads over many is several times cheaper
    than one each), so no step costs more than a small, fixed piece of the work, however long
    the answer: the event loop that passes streams on is never held up for long.
    A piece made only of common token events (`common_chunks`) is read without decoding them
    (`FAST`: off only to compare the two ways in tests)."""

    BATCH = 16
    FAST = True
    __slots__ = (
        "_calls",
        "_error",
        "_fast",
        "_final",
        "_parser",
        "_parts",
        "_pending",
        "_reasoning",
        "_seen",
        "_text_events",
        "_tokens",
    )

    def __init__(self) -> None:
        self._parser = SseParser()
        self._fast = CommonChunks()
        self._pending: list[bytes] = []  # event data not decoded yet
        self._parts: list[str] = []
        self._reasoning: list[str] = []
        self._calls: dict[int, list[str]] = {}  # tool call index -> [name, arguments so far]
        self._text_events = 0
        self._tokens: int | None = None
        self._error: int | None = None
        self._final: Answer | None = None  # a Responses stream's closing response
        self._seen = False

    def feed(self, piece: bytes) -> None:
        if self.FAST and self._parser.between_events:
            tokens = self._fast.read(piece)
            if tokens is not None:
                self._common(*tokens)
                return
        self._parser.feed(piece)
        self._take_events()

    def _common(self, events: int, with_text: int, text: str) -> None:
        """`events` of the first choice, `with_text` of them carrying text (`common_chunks`)."""
        if not events:
            return
        if self._pending:  # events before these, not decoded yet, come first
            self._decode()
        self._seen = True
        self._text_events += with_text
        if text:
            self._parts.append(text)

    def answer(self) -> Answer | None:
        """The answer so far (call at the end), or None if no event was a completion chunk."""
        self._parser.close()
        self._take_events()
        self._decode()
        if self._error is not None:
            return Answer("".join(self._parts), self._text_events, error=self._error)
        if self._final is not None:
            return self._final
        if not self._seen:
            return None
        tokens = self._tokens if self._tokens is not None else self._text_events
        calls = tuple(
            ToolCall(name, canonical_arguments(arguments))
            for _, (name, arguments) in sorted(self._calls.items())
        )
        return Answer("".join(self._parts), tokens, "".join(self._reasoning), calls)

    def _take_events(self) -> None:
        """Moves the events the parser read to those waiting to be decoded."""
        events = self._parser.events
        if not events:
            return
        self._pending.extend(data for data in events if data != b"[DONE]")
        events.clear()
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
        if not isinstance(event, dict):
            return
        choices = event.get("choices")
        if not isinstance(choices, list):
            self._other_event(event)
            return
        self._seen = True
        usage = _usage_tokens(event)
        if usage is not None:
            self._tokens = usage
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            if "text" in choice:  # /v1/completions
                text, reasoning, calls = _str(choice["text"]), "", None
            else:
                delta = choice.get("delta")
                text, reasoning = _message_part(delta)
                calls = delta.get("tool_calls") if isinstance(delta, dict) else None
            if not (text or reasoning or calls):
                continue
            self._text_events += 1  # any choice carrying output is one generated token of it
            if choice.get("index", 0) == 0:
                if text:
                    self._parts.append(text)
                if reasoning:
                    self._reasoning.append(reasoning)
                if isinstance(calls, list):
                    self._tool_deltas(calls)

    def _tool_deltas(self, deltas: list[Any]) -> None:
        for delta in deltas:
            if not isinstance(delta, dict):
                continue
            index = _int(delta.get("index"))
            call = self._calls.setdefault(index if index is not None else 0, ["", ""])
            function = delta.get("function")
            if isinstance(function, dict):
                call[0] += _str(function.get("name"))
                call[1] += _str(function.get("arguments"))

    def _other_event(self, event: dict[str, Any]) -> None:
        """An event without `choices`: an error, or one of the Responses API's."""
        error = error_code(event)
        if error is not None:
            self._error = error
            return
        kind = event.get("type")
        if not isinstance(kind, str) or not kind.startswith("response."):
            return
        self._seen = True
        if kind == "response.output_text.delta":
            self._parts.append(_str(event.get("delta")))
            self._text_events += 1
        elif kind == "response.reasoning_text.delta":
            self._reasoning.append(_str(event.get("delta")))
            self._text_events += 1
        elif kind in ("response.completed", "response.incomplete"):
            response = event.get("response")
            if isinstance(response, dict):
                self._final = from_response(response)


def from_sse(stream: bytes) -> Answer | None:
    """The answer in a whole streamed response, or None if no event was a completion chunk."""
    reader = StreamedAnswer()
    reader.feed(stream)
    return reader.answer()
