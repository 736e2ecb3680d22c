"""Request classes: cheap features of an OpenAI body to one of a bounded set of classes. Pure."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantrollout.router.classify import (
    CLASSES,
    LONG_CHARS,
    SCAN_CHARS,
    class_of,
    classify,
    features,
    header_class,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
# Bodies shaped like requests, with any JSON where the fields are: the router passes on whatever
# the client sent, so the classifier must cope with a `messages` that is a number.
request_keys = st.sampled_from(
    ["model", "messages", "prompt", "tools", "functions", "tool_choice", "response_format",
     "guided_json", "temperature", "role", "content", "tool_calls", "type", "text"]
)  # fmt: skip
messages = st.lists(
    st.dictionaries(
        st.sampled_from(["role", "content", "tool_calls", "function_call"]),
        json_values | st.sampled_from(["user", "system", "assistant", "tool"]),
        max_size=4,
    ),
    max_size=5,
)
bodies = st.dictionaries(request_keys, json_values, max_size=6) | st.fixed_dictionaries(
    {"model": st.just("m"), "messages": messages}
)
headers = st.none() | st.text(max_size=20) | st.sampled_from(CLASSES)


def chat(content: Any, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": content}], **extra}


@given(bodies, headers)
def test_any_json_object_gets_one_class_of_the_bounded_set(
    body: dict[str, Any], header: str | None
) -> None:
    assert classify(body, header) in CLASSES


@given(bodies)
def test_the_lazy_path_agrees_with_the_features(body: dict[str, Any]) -> None:
    assert classify(body) == class_of(features(body))


@given(bodies, headers)
def test_deterministic(body: dict[str, Any], header: str | None) -> None:
    assert classify(body, header) == classify(body, header)


@given(bodies, st.sampled_from(CLASSES))
def test_a_valid_header_decides(body: dict[str, Any], wanted: str) -> None:
    assert classify(body, wanted) == wanted
    assert classify(body, f"  {wanted.upper()} ") == wanted


@given(bodies, st.text(max_size=30).filter(lambda h: h.strip().lower() not in CLASSES))
def test_an_unknown_header_is_ignored_never_a_new_label(body: dict[str, Any], header: str) -> None:
    assert header_class(header) is None
    assert classify(body, header) == classify(body)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (chat("What is the capital of France?"), "chat-short"),
        (chat("Tell me about the sea. " * 300), "chat-long"),
        (chat("Fix this:\n```python\nprint(1)\n```"), "code"),
        (chat("def area(r):\n    return 3.14 * r * r\nwhy is it wrong"), "code"),
        (chat('{"a": [1, 2], "b": {"c": null}, "d": "<x/>"} ~ | & ^ % $ # @'), "code"),
        (chat("Solve the equation x^2 = 4 and prove the roots are real"), "math"),
        (chat("Compute \\frac{1}{2} + \\frac{1}{3}"), "math"),
        (chat("What is 12 * 7? Calculate it"), "math"),
        (
            chat("List three colours", response_format={"type": "json_schema", "json_schema": {}}),
            "structured",
        ),
        (chat("List three colours", response_format={"type": "json_object"}), "structured"),
        (chat("List three colours", response_format={"type": "text"}), "chat-short"),
        (chat("Pick one", guided_choice=["a", "b"]), "structured"),
        (
            chat("Weather in Paris?", tools=[{"type": "function", "function": {"name": "w"}}]),
            "tools",
        ),
        (chat("Weather in Paris?", tools=[], tool_choice="none"), "chat-short"),
        (chat("Weather?", tool_choice="auto"), "tools"),
        # A tool offer outranks a structured answer and a code fence: the stricter need decides.
        (
            chat("```x```", tools=[{"type": "function"}], response_format={"type": "json_object"}),
            "tools",
        ),
        (chat("```x```", response_format={"type": "json_object"}), "structured"),
        (
            {
                "model": "m",
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "tool_calls": [{"id": "1"}]},
                    {"role": "tool", "content": "22C"},
                ],
            },
            "tools",
        ),
        ({"model": "m", "prompt": "def f(x):\n    return x"}, "code"),
        ({"model": "m", "prompt": ["a", "b" * (LONG_CHARS + 1)]}, "chat-long"),
        (
            chat([{"type": "text", "text": "```js\nconsole.log(1)\n```"}, {"type": "image_url"}]),
            "code",
        ),
        ({"model": "m"}, "chat-short"),
    ],
)
def test_examples(body: dict[str, Any], expected: str) -> None:
    assert classify(body) == expected


def test_prose_with_one_keyword_is_not_code() -> None:
    assert classify(chat("Please return the book to the library before Friday.")) == "chat-short"


def test_the_last_user_turn_is_scanned_not_the_system_prompt() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "```you may see code```"},
            {"role": "user", "content": "Hello there"},
        ],
    }
    assert classify(body) == "chat-short"


def test_only_the_first_scan_chars_are_scanned_so_cost_is_bounded() -> None:
    # A marker past the window is not seen: the price of a bounded decision time.
    assert classify(chat("a" * SCAN_CHARS + "```code```")) == "chat-short"
    assert classify(chat("a" * (SCAN_CHARS - 10) + "```code```")) == "code"


def test_length_counts_every_turn() -> None:
    half = "word " * (LONG_CHARS // 10 + 1)
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": half}, {"role": "user", "content": half}],
    }
    assert classify(body) == "chat-long"
    assert features(body).chars == 2 * len(half)


@pytest.mark.parametrize(
    ("text", "low"),
    [("aaaa", True), ("", True), ("the quick brown fox jumps over the lazy dog", False)],
)
def test_entropy(text: str, low: bool) -> None:
    entropy = features(chat(text)).entropy_bits
    assert entropy >= 0.0
    assert (entropy < 1.0) is low
