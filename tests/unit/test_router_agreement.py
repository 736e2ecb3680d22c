"""The shadow agreement score: what is compared (content, reasoning, tool calls) and how
(exact for greedy requests, F1 otherwise). Pure."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantrollout.router.agreement import agreement, sampling, word_f1
from quantrollout.router.answers import Answer, ToolCall, canonical_arguments

texts = st.text(max_size=80)
calls = st.builds(
    ToolCall,
    st.sampled_from(["get_weather", "search", "book"]),
    st.dictionaries(st.sampled_from("abc"), st.integers(0, 3), max_size=2).map(canonical_arguments),
)
answers = st.builds(
    Answer,
    texts,
    st.just(0),
    st.one_of(st.just(""), texts),
    st.lists(calls, max_size=3).map(tuple),
)


def text(content: str) -> Answer:
    return Answer(content, 0)


@pytest.mark.parametrize(
    ("request_body", "expected"),
    [
        ({"temperature": 0}, "greedy"),
        ({"temperature": 0.0, "seed": 3}, "greedy"),
        ({"top_k": 1, "temperature": 0.8}, "greedy"),
        ({"temperature": 0.7}, "sampled"),
        ({}, "sampled"),  # vLLM samples with the model's generation config
        ({"temperature": None}, "sampled"),
        ({"temperature": False}, "sampled"),  # a bool is not a temperature
        ({"temperature": "0"}, "sampled"),
        ({"top_k": -1}, "sampled"),
        ({"seed": 42}, "seeded"),
        ({"seed": 42, "temperature": 1.0}, "seeded"),
        ({"seed": True}, "sampled"),
        ({"seed": "42"}, "sampled"),
    ],
)
def test_sampling(request_body: dict[str, object], expected: str) -> None:
    assert sampling(request_body) == expected


def test_greedy_is_exact_match() -> None:
    assert agreement(text("Paris is the capital."), text("Paris is the capital."), True) == 1.0
    assert agreement(text("Paris is the capital."), text("Paris is the capital!"), True) == 0.0
    assert agreement(text(""), text(""), greedy=True) == 1.0


def test_sampled_is_word_f1() -> None:
    assert agreement(text("the cat sat"), text("sat the cat"), greedy=False) == 1.0
    assert agreement(text("the cat sat"), text("a dog ran"), greedy=False) == 0.0
    # overlap {the, cat} = 2; sizes 3 + 4: F1 = 4/7
    assert agreement(text("the cat sat"), text("the cat ran away"), False) == pytest.approx(4 / 7)
    # multisets: "the the" against "the" overlaps once: 2*1/3
    assert word_f1("the the", "the") == pytest.approx(2 / 3)
    assert word_f1("Hello, World!", "hello world") == 1.0  # case and punctuation ignored
    assert word_f1("", "") == 1.0
    assert word_f1("something", "") == 0.0


def weather(city: str) -> ToolCall:
    return ToolCall("get_weather", canonical_arguments(json.dumps({"city": city})))


@pytest.mark.parametrize("greedy", [True, False])
def test_two_different_tool_calls_disagree(greedy: bool) -> None:
    # Both answers have no content: before tool calls were compared, they read as "" and "".
    paris, london = (
        Answer("", 9, tool_calls=(weather("Paris"),)),
        Answer("", 9, tool_calls=(weather("London"),)),
    )
    assert agreement(paris, london, greedy) == 0.0
    assert agreement(paris, Answer("", 9), greedy) == 0.0  # a call against none
    assert agreement(paris, Answer("", 3, tool_calls=(weather("Paris"),)), greedy) == 1.0


def test_the_same_call_written_differently_agrees() -> None:
    a = ToolCall("f", canonical_arguments('{"a": 1, "b": [1, 2]}'))
    b = ToolCall("f", canonical_arguments('{ "b":[1,2],\n "a":1 }'))
    assert a == b
    assert ToolCall("f", canonical_arguments("not json ")) == ToolCall("f", "not json")


def test_sampled_parts_are_averaged() -> None:
    base = Answer("the cat sat", 0, "think about cats", (weather("Paris"),))
    same_text_other_call = Answer("the cat sat", 0, "think about cats", (weather("Rome"),))
    assert agreement(base, same_text_other_call, greedy=False) == pytest.approx(2 / 3)
    other_reasoning = Answer("the cat sat", 0, "dogs", (weather("Paris"),))
    assert agreement(base, other_reasoning, greedy=False) == pytest.approx(2 / 3)
    assert agreement(base, other_reasoning, greedy=True) == 0.0


def test_reasoning_is_compared() -> None:
    a, b = Answer("42", 0, "add six and seven"), Answer("42", 0, "guess a number")
    assert agreement(a, b, greedy=True) == 0.0
    assert agreement(a, b, greedy=False) == pytest.approx((1.0 + 0.0) / 2)


@given(answers, answers, st.booleans())
def test_scores_are_ratios(a: Answer, b: Answer, greedy: bool) -> None:
    assert 0.0 <= agreement(a, b, greedy) <= 1.0


@given(answers, answers, st.booleans())
def test_scores_are_symmetric(a: Answer, b: Answer, greedy: bool) -> None:
    assert agreement(a, b, greedy) == pytest.approx(agreement(b, a, greedy))


@given(answers, st.booleans())
def test_an_answer_agrees_with_itself(a: Answer, greedy: bool) -> None:
    assert agreement(a, a, greedy) == 1.0


@given(answers, answers)
def test_greedy_is_never_more_lenient(a: Answer, b: Answer) -> None:
    assert agreement(a, b, greedy=True) <= agreement(a, b, greedy=False)


@given(answers, answers)
def test_greedy_scores_are_all_or_nothing(a: Answer, b: Answer) -> None:
    assert agreement(a, b, greedy=True) in (0.0, 1.0)


@given(
    st.lists(st.sampled_from(["a", "b", "c"]), min_size=1),
    st.lists(st.sampled_from(["x", "y"]), min_size=1),
)
def test_disjoint_words_score_zero(a: list[str], b: list[str]) -> None:
    assert word_f1(" ".join(a), " ".join(b)) == 0.0


@given(answers, answers)
def test_different_tool_calls_never_agree_fully(a: Answer, b: Answer) -> None:
    if sorted(map(repr, a.tool_calls)) != sorted(map(repr, b.tool_calls)):
        assert agreement(a, b, greedy=False) < 1.0
