"""Repetition loops and refusals: what the router counts in an answer. Pure."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantrollout.router.quality import (
    REFUSAL_PATTERNS,
    REFUSAL_WINDOW,
    has_repetition_loop,
    is_refusal,
)

words = st.text(alphabet="abcdefgh", min_size=1, max_size=4)


def loop(gram: str, times: int, around: str = "") -> str:
    return f"{around} {' '.join([gram] * times)} {around}".strip()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", False),
        ("a short and perfectly normal answer", False),
        (loop("the cat sat down", 4), False),  # four times: not more than four
        (loop("the cat sat down", 5), True),
        (loop("the cat sat down", 12, around="Here is my answer:"), True),
        (loop("The Cat sat DOWN", 3) + " " + loop("the cat sat down", 2), True),  # case-folded
        ("word " * 8, True),  # one word eight times holds the 4-gram five times
        ("word " * 7, False),
        ("a b c d e " * 4, False),  # a 5-word cycle four times: each 4-gram 4 times
        ("a b c d e " * 5, True),
    ],
)
def test_repetition_loops(text: str, expected: bool) -> None:
    assert has_repetition_loop(text) is expected


@given(st.lists(words, max_size=60))
def test_repetition_matches_a_plain_count(ws: list[str]) -> None:
    grams = Counter(tuple(w.casefold() for w in ws[i : i + 4]) for i in range(len(ws) - 3))
    assert has_repetition_loop(" ".join(ws)) == any(c > 4 for c in grams.values())


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't help with that.",  # what vllmsim refuses with
        "I am sorry but I cannot assist with this request.",
        "I\u2019m sorry, but I can\u2019t provide that information.",  # curly apostrophes
        "Sorry, but I won't do that.",
        "I cannot help with creating malware.",
        "I can't fulfill this request.",
        "I won't be able to... actually: I will not provide instructions for that.",
        "I'm unable to help with that request.",
        "I am not able to assist with that.",
        "As an AI language model, I do not have opinions.",
        "As an AI, I don't browse the web.",
        "I must decline to answer this.",
        "I apologize, but this is something I can't do.",
        "  I'M SORRY, BUT I CAN'T HELP WITH THAT.",
    ],
)
def test_refusals(text: str) -> None:
    assert is_refusal(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Sure! Here is a poem about the sea.",
        "I can help with that. First, install the package.",
        "The capital of France is Paris.",
        "You cannot divide by zero, so the function raises an error.",
        "I'm not sure, but I think the answer is 42.",
        # A refusal phrase deep inside a long helpful answer is not a refusal.
        "Here are the steps. " + "Then repeat the step. " * 20 + "I cannot help with that.",
    ],
)
def test_not_refusals(text: str) -> None:
    assert not is_refusal(text)


PHRASES = ["I'm", "I am", "sorry,", "but", "i", "can't", "cannot", "can not", "won't", "will not",
           "help", "unable to", "not able to", "as an AI", "must", "decline", "not comfortable",
           "apologize,", "Sorry", "\u2019", " ", "\n", "x"]  # fmt: skip


@given(st.lists(st.sampled_from(PHRASES) | st.text(max_size=4), max_size=30).map(" ".join))
def test_the_word_prefilter_never_changes_the_verdict(text: str) -> None:
    opening = text[:REFUSAL_WINDOW].casefold().replace("\u2019", "'").lstrip()
    assert is_refusal(text) == any(p.search(opening) for p in REFUSAL_PATTERNS)
