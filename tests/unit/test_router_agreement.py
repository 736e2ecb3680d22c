"""The shadow agreement score. Pure."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantrollout.router.agreement import agreement, is_greedy, word_f1

texts = st.text(max_size=80)


@pytest.mark.parametrize(
    ("request_body", "greedy"),
    [
        ({"temperature": 0}, True),
        ({"temperature": 0.0}, True),
        ({"temperature": 0.7}, False),
        ({}, False),  # vLLM samples at 1.0 when none is given
        ({"temperature": None}, False),
        ({"temperature": False}, False),  # a bool is not a temperature
        ({"temperature": "0"}, False),
    ],
)
def test_greedy(request_body: dict[str, object], greedy: bool) -> None:
    assert is_greedy(request_body) is greedy


def test_greedy_is_exact_match() -> None:
    assert agreement("Paris is the capital.", "Paris is the capital.", greedy=True) == 1.0
    assert agreement("Paris is the capital.", "Paris is the capital!", greedy=True) == 0.0
    assert agreement("", "", greedy=True) == 1.0


def test_sampled_is_word_f1() -> None:
    assert agreement("the cat sat", "the cat sat", greedy=False) == 1.0
    assert agreement("the cat sat", "sat the cat", greedy=False) == 1.0  # order does not count
    assert agreement("the cat sat", "a dog ran", greedy=False) == 0.0
    # overlap {the, cat} = 2; sizes 3 + 4: F1 = 4/7
    assert agreement("the cat sat", "the cat ran away", greedy=False) == pytest.approx(4 / 7)
    # multisets: "the the" against "the" overlaps once: 2*1/3
    assert word_f1("the the", "the") == pytest.approx(2 / 3)
    assert word_f1("Hello, World!", "hello world") == 1.0  # case and punctuation ignored
    assert word_f1("", "") == 1.0
    assert word_f1("something", "") == 0.0


@given(texts, texts, st.booleans())
def test_scores_are_ratios(a: str, b: str, greedy: bool) -> None:
    assert 0.0 <= agreement(a, b, greedy) <= 1.0


@given(texts, texts, st.booleans())
def test_scores_are_symmetric(a: str, b: str, greedy: bool) -> None:
    assert agreement(a, b, greedy) == pytest.approx(agreement(b, a, greedy))


@given(texts, st.booleans())
def test_an_answer_agrees_with_itself(a: str, greedy: bool) -> None:
    assert agreement(a, a, greedy) == 1.0


@given(
    st.lists(st.sampled_from(["a", "b", "c"]), min_size=1),
    st.lists(st.sampled_from(["x", "y"]), min_size=1),
)
def test_disjoint_words_score_zero(a: list[str], b: list[str]) -> None:
    assert word_f1(" ".join(a), " ".join(b)) == 0.0
