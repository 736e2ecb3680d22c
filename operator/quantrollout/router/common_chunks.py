"""The common stream chunk read without building it as JSON objects: the fast path of
`answers.StreamedAnswer`.

Almost every event of a vLLM stream is one generated token of the first choice, written
compactly (pydantic's JSON), e.g.

    data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",
           "choices":[{"index":0,"delta":{"content":" word"},"logprobs":null,"finish_reason":null}]}

Decoding each such event with `json.loads` and walking the dictionaries was the largest part of
the router's CPU when streams are many (a profile at saturation: ~30% of it). Here a piece of
the stream made only of such events is read without building any object but the token texts:
the first such event with a grammar (one regular expression), the rest of the stream, whose
events differ from it in their token only, by splitting pieces around the tokens.

The grammar is a strict subset of JSON whose meaning to `StreamedAnswer` is fixed, so reading
an event here and decoding it fully always give the same answer (a property test holds both
against each other on arbitrary streams and splits):
- the top level is an object with exactly one `choices` key, a list of exactly one object, and
  other keys whose values are scalars (string, number, true, false, null: `usage` may be null,
  never an object here);
- that choice starts with `"index":0`, then either `"text":"..."` (/v1/completions) or
  `"delta":{...}`, then keys other than `index`, `delta` and `text` with scalar values;
- the delta holds `content` as a string (at most its last occurrence counts, as in JSON),
  `reasoning`/`reasoning_content` only as null, `tool_calls` only as null or `[]`, and other keys
  with scalar values;
- keys hold no escapes (so `"ch\\u006fices"` cannot pass for another key), strings no raw
  control characters, and no whitespace between tokens.
Anything else (an error event, usage, reasoning, tool calls, several choices, a line split
across reads, CRLF, other SSE fields, invalid UTF-8) makes the whole piece go the full way.
"""

from __future__ import annotations

import json
import re

_INNER = rb'[^"\\\x00-\x1f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*)*'
_STR = b'"' + _INNER + b'"'
_NUM = rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
_SCALAR = rb"(?:" + _STR + rb"|" + _NUM + rb"|null|true|false)"
_KEY = rb'[^"\\\x00-\x1f]*"'  # the rest of a key after its opening quote; no escapes


def _other(*names: bytes) -> bytes:
    """A key-value pair with a scalar value whose key is none of `names`."""
    return rb'"(?!(?:' + b"|".join(names) + rb')")' + _KEY + b":" + _SCALAR


_DELTA_ITEM = (
    rb'(?:"content":"(' + _INNER + rb')"|"(?:reasoning|reasoning_content)":null'
    rb'|"tool_calls":(?:null|\[\])|'
    + _other(b"content", b"reasoning", b"reasoning_content", b"tool_calls")
    + b")"
)
# Each item once in the pattern (so `content` is one group): followed by a comma and another
# item, or by the closing brace.
_DELTA = rb"\{(?:" + _DELTA_ITEM + rb'(?:,(?=")|(?=\})))*\}'
_CHOICE = (
    rb'\{"index":0,(?:"delta":' + _DELTA + rb'|"text":"(' + _INNER + rb')")'
    rb"(?:," + _other(b"index", b"delta", b"text") + rb")*\}"
)
_TOP = _other(b"choices")
EVENTS = re.compile(
    rb"^data: \{(?:" + _TOP + rb",)*" rb'"choices":\[' + _CHOICE + rb"\](?:," + _TOP + rb")*\}\n\n",
    re.MULTILINE,
)
_DONE = b"data: [DONE]\n\n"


_PLAIN = re.compile(rb'[^"\\\x00-\x1f]*')  # a JSON string's inside that needs no decoding


# What a piece of common events says: how many events, how many of them carried text, and
# their texts joined.
Tokens = tuple[int, int, str]


def _strings(raw: list[bytes]) -> Tokens | None:
    """`Tokens` of the JSON strings `raw` (each given without its quotes), or None if one is
    not a JSON string."""
    try:
        if _PLAIN.fullmatch(b"".join(raw)):  # the usual tokens: their bytes are their text
            # Decoded with a quote (ASCII) between them, each must be UTF-8 on its own.
            text = b'"'.join(raw).decode("utf-8", "surrogatepass")
            return len(raw), len(raw) - raw.count(b""), text.replace('"', "")
        values = json.loads(b'["' + b'","'.join(raw) + b'"]')
    except ValueError:  # not UTF-8 (UnicodeDecodeError), or not JSON strings
        return None
    # An unescaped quote in one would have made more values than strings given.
    if len(values) != len(raw):
        return None
    return len(values), len(values) - values.count(""), "".join(values)


class CommonChunks:
    """Reads the pieces of one stream (see the module doc). The events of one stream differ in
    their token only: once an event was read by the grammar, the bytes around its token are
    the stream's template, and a piece made of events that have them is read by splitting it
    there: the tokens between are the only part left to check (as JSON strings)."""

    __slots__ = ("_head", "_separator", "_tail")

    def __init__(self) -> None:
        self._head = self._tail = self._separator = b""  # no template yet

    def read(self, piece: bytes) -> Tokens | None:
        """The `Tokens` of the first choice in the events of `piece`, when `piece` is nothing
        but whole common events (and perhaps the closing `data: [DONE]`); None when it is
        anything else (see the module doc)."""
        if piece.endswith(_DONE) and (len(piece) == len(_DONE) or piece[-len(_DONE) - 1] == 10):
            piece = piece[: -len(_DONE)]
            if not piece:
                return 0, 0, ""
        head, tail = self._head, self._tail
        if (
            head
            and len(piece) >= len(head) + len(tail)
            and piece.startswith(head)
            and piece.endswith(tail)
        ):
            tokens = piece[len(head) : len(piece) - len(tail)].split(self._separator)
            # Every newline in a separator or the tail (tokens hold none, as JSON strings):
            # then the piece is these events and nothing else.
            if len(tokens) * 2 == piece.count(b"\n"):
                found = _strings(tokens)
                if found is not None:
                    return found
        return self._grammar(piece)

    def _grammar(self, piece: bytes) -> Tokens | None:
        if not piece.endswith(b"\n\n"):
            return None
        try:
            # json.loads decodes bytes this way: an event with invalid UTF-8 anywhere is broken.
            piece.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return None
        matches = list(EVENTS.finditer(piece))
        # Each match is one whole line and its blank line (no newline can be inside one): when
        # the matches hold every newline of a piece that ends with one, they are all of it.
        if not matches or len(matches) * 2 != piece.count(b"\n"):
            return None
        found = _strings([m[1] or m[2] or b"" for m in matches])
        if found is None:
            return None
        last = matches[-1]
        group = 1 if last.start(1) >= 0 else 2 if last.start(2) >= 0 else 0
        if group:  # the template: any other JSON string in place of its token reads the same
            start, end = last.span(group)
            self._head = piece[last.start() : start]
            self._tail = piece[end : last.end()]
            self._separator = self._tail + self._head
        return found
