"""Which request class a completion request belongs to, from cheap features of its body. Pure.

Mixed-precision serving sends each class of request to the cheapest tier that answers that class
as well as the baseline (`quantrollout.rollout.policy`). The classes are a fixed, bounded set,
so every per-class series (label `class`) has at most `len(CLASSES)` values per tier:

- `tools`: the request offers tools (`tools`, `functions`, `tool_choice`) or carries a tool turn
  (a `tool`/`function` message, an assistant message with `tool_calls`). Quantization breaks
  argument JSON and function names first; a wrong call is worse than a weaker sentence.
- `structured`: the answer must follow a schema or a grammar (`response_format` of type
  `json_schema`/`json_object`, or vLLM's `guided_json`/`guided_regex`/`guided_grammar`/
  `guided_choice`, `structured_outputs`). One wrong token and the output does not parse.
- `code`: code fences or source-code keywords in the prompt, or a prompt whose characters look
  like code or data (a high share of symbols, at a character entropy no degenerate string has). Code is exact: a 4-bit model's
  near-miss is a bug.
- `math`: LaTeX or arithmetic markers (`\\frac`, `$$`, `\\sum`, `=` between digits, "prove",
  "solve", "integral", ...). Long exact reasoning chains amplify small errors.
- `chat-long`: none of the above and more than `LONG_CHARS` characters in all messages: long
  contexts are where low-precision attention and KV caches drift.
- `chat-short`: everything else, the easy bulk a 4-bit model answers as well as FP16.

The order above is the precedence: a request offering tools that also has a code fence is
`tools`, because the stricter requirement decides. Within `code` and `math`, markers come first
(fences, keywords, then math markers) and the symbol share last, since LaTeX is symbol-heavy too. A request may name its own class in the
header `x-quantrollout-class`; a value outside `CLASSES` is ignored (never trusted to widen the
label set), and the features decide.

Cost: the router has already parsed the body (`requests.parse_completion`); classifying reads
only the message list, sums string lengths (O(1) each) and scans at most `SCAN_CHARS`
characters of the last user turn (markers) and `ENTROPY_CHARS` of it (entropy). A prompt of a
million characters costs what one of `SCAN_CHARS` does. `hack/bench/mixed_precision.py` measures
it (`decide-us`).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

RequestClass = Literal["chat-short", "chat-long", "code", "structured", "math", "tools"]
CLASSES: Final[tuple[RequestClass, ...]] = get_args(RequestClass)
DEFAULT_CLASS: Final[RequestClass] = "chat-short"
CLASS_HEADER: Final = "x-quantrollout-class"

LONG_CHARS: Final = 4000  # about 1,000 tokens of English in all messages: a long context
SCAN_CHARS: Final = 1024  # markers are looked for in this many characters of the last user turn
ENTROPY_CHARS: Final = 256  # the character entropy is taken over this many
# Code or data without keywords (JSON, a shell line, a regex): a high share of symbols. Prose
# has a few (quotes, a parenthesis): under 5%; code and data 15-50%. Over a sample this short
# the entropy is lower than textbook values (English ~4.1 bits, code ~4.4 over 100 characters),
# so it does not separate code from prose; it separates both from degenerate input ("((((((",
# "====="), which is neither and stays chat.
CODE_ENTROPY_BITS: Final = 3.0
CODE_SYMBOL_SHARE: Final = 0.15
CODE_KEYWORD_HITS: Final = 2  # one `return` in prose is not code; two keywords are
MATH_MARKER_HITS: Final = 2

# Substrings, not one alternation regex: `in` is a C string search, and a regex of two dozen
# alternatives tries every one at every position (ten times slower, measured).
CODE_MARKERS: Final = (
    "def ", "return ", "import ", "function ", "const ", "#include", "=>", "::", "==", "!=",
    ");", "{\n", "};", "self.", "console.", "SELECT ", "public ", "void ", "fn ", "var ",
    "</", "print(",
)  # fmt: skip
MATH_MARKERS: Final = (
    "\\frac",
    "\\sum",
    "\\int",
    "\\sqrt",
    "\\cdot",
    "$$",
    "\\(",
    "\\[",
    "prove",
    "solve",
    "equation",
    "integral",
    "derivative",
    "theorem",
    "calculate",
    "compute",
    "probability",
    "polynomial",
    "matrix",
)  # fmt: skip  (looked for in the case-folded window)
_ARITHMETIC = re.compile(r"\d ?[-+*/^=] ?\d")  # "3 + 4", "2^10", "6=6": one marker however many
_SYMBOLS = frozenset("{}[]()<>;=+-*/\\|&^%$#@!~`:\"'_")
_STRUCTURED_FORMATS = frozenset({"json_schema", "json_object"})
_GUIDED = ("guided_json", "guided_regex", "guided_grammar", "guided_choice", "structured_outputs")
_TOOL_ROLES = frozenset({"tool", "function"})


@dataclass(frozen=True, slots=True)
class Features:
    """What the class is decided from (also what a test or a log line can show)."""

    chars: int  # characters in all message contents (or the prompt)
    entropy_bits: float  # Shannon entropy of the last user turn's first ENTROPY_CHARS characters
    symbol_share: float  # share of code-like symbols among those characters
    code_fence: bool
    code_keywords: (
        int  # distinct CODE_MARKERS in the scanned window (counted up to CODE_KEYWORD_HITS)
    )
    math_markers: int  # distinct MATH_MARKERS (arithmetic: one) in the scanned window (counted up to MATH_MARKER_HITS)
    structured: bool
    tools: bool


def header_class(value: str | None) -> RequestClass | None:
    """The class a request names in `x-quantrollout-class`, if it is one of CLASSES."""
    if value is None:
        return None
    wanted = value.strip().lower()
    for name in CLASSES:
        if wanted == name:
            return name
    return None


def _text(content: object) -> str:
    """A message's text: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _texts(request: Mapping[str, Any]) -> tuple[int, str, bool]:
    """(characters in all turns, the last user turn (or the prompt), whether a tool turn is in)."""
    messages = request.get("messages")
    if isinstance(messages, list):
        total, last, tool_turn = 0, "", False
        for message in messages:
            if not isinstance(message, dict):
                continue
            text = _text(message.get("content"))
            total += len(text)
            role = message.get("role")
            if role == "user" or not last:
                last = text
            if (
                (isinstance(role, str) and role in _TOOL_ROLES)
                or message.get("tool_calls")
                or message.get("function_call")
            ):
                tool_turn = True
        return total, last, tool_turn
    prompt = request.get("prompt")
    if isinstance(prompt, str):
        return len(prompt), prompt, False
    if isinstance(prompt, list):
        parts = [p for p in prompt if isinstance(p, str)]
        return sum(map(len, parts)), parts[-1] if parts else "", False
    return 0, "", False


# c * log2(c) for every count a sample can hold: the entropy is then one sum of table lookups.
_C_LOG_C: Final = tuple(c * math.log2(c) if c else 0.0 for c in range(ENTROPY_CHARS + 1))


def _entropy(sample: str) -> tuple[float, float]:
    """(Shannon entropy in bits per character, share of code-like symbols) of `sample`
    (at most ENTROPY_CHARS long): log2(n) - sum(c log2 c) / n over the character counts c."""
    n = len(sample)
    if n == 0:
        return 0.0, 0.0
    counts = Counter(sample)
    entropy = math.log2(n) - sum([_C_LOG_C[c] for c in counts.values()]) / n
    symbols = sum([c for ch, c in counts.items() if ch in _SYMBOLS])
    return max(entropy, 0.0), symbols / n


def _hits(markers: tuple[str, ...], text: str, enough: int) -> int:
    """How many of `markers` occur in `text`, counted up to `enough` (no need to find more)."""
    found = 0
    for marker in markers:
        if marker in text:
            found += 1
            if found >= enough:
                break
    return found


def _math_markers(window: str) -> int:
    """Math markers in `window`, counted up to MATH_MARKER_HITS; arithmetic counts as one."""
    found = 1 if _ARITHMETIC.search(window) else 0
    return found + _hits(MATH_MARKERS, window.casefold(), MATH_MARKER_HITS - found)


def _structured(request: Mapping[str, Any]) -> bool:
    response_format = request.get("response_format")
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if isinstance(kind, str) and kind in _STRUCTURED_FORMATS:
            return True
    return any(request.get(key) is not None for key in _GUIDED)


def _offers_tools(request: Mapping[str, Any]) -> bool:
    tools = request.get("tools") or request.get("functions")
    choice = request.get("tool_choice")
    return bool(tools) or (choice is not None and choice != "none")


def features(request: Mapping[str, Any]) -> Features:
    """The cheap features of a parsed completion request (any JSON object: nothing is assumed)."""
    chars, last, tool_turn = _texts(request)
    window = last[:SCAN_CHARS]
    entropy, symbols = _entropy(window[:ENTROPY_CHARS])
    return Features(
        chars=chars,
        entropy_bits=entropy,
        symbol_share=symbols,
        code_fence="```" in window,
        code_keywords=_hits(CODE_MARKERS, window, CODE_KEYWORD_HITS),
        math_markers=_math_markers(window),
        structured=_structured(request),
        tools=tool_turn or _offers_tools(request),
    )


def class_of(f: Features) -> RequestClass:
    """The class of a request with features `f` (the precedence of the module doc)."""
    if f.tools:
        return "tools"
    if f.structured:
        return "structured"
    if f.code_fence or f.code_keywords >= CODE_KEYWORD_HITS:
        return "code"
    if f.math_markers >= MATH_MARKER_HITS:
        return "math"
    # After the markers: LaTeX is full of symbols too, and its markers say what it is.
    if f.entropy_bits >= CODE_ENTROPY_BITS and f.symbol_share >= CODE_SYMBOL_SHARE:
        return "code"
    if f.chars > LONG_CHARS:
        return "chat-long"
    return "chat-short"


def classify(request: Mapping[str, Any], header: str | None = None) -> RequestClass:
    """The class of a parsed completion request; `header` is its `x-quantrollout-class` value.

    Never raises, whatever JSON object `request` is; always one of CLASSES. The same answer as
    `class_of(features(request))`, but each feature is computed only when the ones before it
    in the precedence did not decide (most requests are decided, or are chat, early).
    """
    named = header_class(header)
    if named is not None:
        return named
    chars, last, tool_turn = _texts(request)
    if tool_turn or _offers_tools(request):
        return "tools"
    if _structured(request):
        return "structured"
    window = last[:SCAN_CHARS]
    if "```" in window or _hits(CODE_MARKERS, window, CODE_KEYWORD_HITS) >= CODE_KEYWORD_HITS:
        return "code"
    if _math_markers(window) >= MATH_MARKER_HITS:
        return "math"
    entropy, symbols = _entropy(window[:ENTROPY_CHARS])
    if entropy >= CODE_ENTROPY_BITS and symbols >= CODE_SYMBOL_SHARE:
        return "code"
    return "chat-long" if chars > LONG_CHARS else "chat-short"
