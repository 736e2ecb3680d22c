"""Per-(class, tier) observations of a mixed model: the PromQL built, and answers parsed into
`policy.ShadowStats` and the class mix (analysis/class_stats.py)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantrollout import signals as s
from quantrollout.analysis.batch import Series
from quantrollout.analysis.class_stats import (
    AGREEMENT_COUNT,
    AGREEMENT_SUM,
    CLASS_RULES,
    ERRORS,
    REFUSALS,
    REPETITIONS,
    REQUESTS,
    RESPONSES,
    SELF_COUNT,
    SELF_SUM,
    SHADOW,
    TOKENS,
    class_queries,
    class_rules,
    mix,
    parse,
)
from quantrollout.api.spec import Analysis, Rule
from quantrollout.router.classify import CLASSES

BASE, FP8, INT4 = "fp16", "fp8", "int4-awq"
RULES = class_rules(Analysis())


def one(cls: str, tier: str, value: float, **extra: str) -> Series:
    return Series({s.CLASS: cls, s.TIER: tier, **extra}, value)


def healthy(cls: str, tier: str, n: float = 200, agree: float = 0.98) -> dict[str, list[Series]]:
    """Answers for one class on one quantized tier and the baseline, every rule passing."""
    return {
        AGREEMENT_SUM: [one(cls, tier, agree * n)],
        AGREEMENT_COUNT: [one(cls, tier, n)],
        SELF_SUM: [one(cls, BASE, 10)],
        SELF_COUNT: [one(cls, BASE, 10)],
        RESPONSES: [one(cls, tier, n), one(cls, BASE, n)],
        REPETITIONS: [one(cls, tier, 0), one(cls, BASE, 0)],
        REFUSALS: [one(cls, tier, 1), one(cls, BASE, 1)],
        TOKENS: [one(cls, tier, 100 * n), one(cls, BASE, 100 * n)],
        REQUESTS: [one(cls, BASE, n)],
        ERRORS: [],
        SHADOW: [one(cls, tier, n, outcome="compared"), one(cls, tier, 3, outcome="dropped")],
    }


def test_one_query_per_signal_grouped_by_class_and_tier() -> None:
    queries = class_queries("llm", "llama", "5m")
    assert len(queries) == 11
    for name, query in queries.items():
        assert "sum by (class, tier" in query, name
        assert 'namespace="llm",model="llama",class!=""' in query
        assert "[5m]" in query
    assert queries[AGREEMENT_COUNT] == (
        'sum by (class, tier) (increase(quantrollout_router_shadow_agreement_ratio_count{namespace="llm",model="llama",class!=""}[5m]))'
    )
    assert queries[SHADOW].startswith("sum by (class, tier, outcome) (increase(")


def test_class_rules_take_the_spec_thresholds() -> None:
    assert sorted({r.rule for r in RULES}) == sorted(CLASS_RULES)  # the default rules have all four
    mine = Analysis(
        rules=[
            Rule.model_validate({"name": "repetition-rate", "max": "5%"}),
            Rule.model_validate({"name": "latency-p99", "max": "250ms"}),
            Rule.model_validate({"name": "output-length-ratio", "min": 0.5, "max": 2}),
        ]
    )
    got = [(r.rule, r.compare, r.threshold) for r in class_rules(mine)]
    assert got == [
        ("repetition-rate", "max", 0.05),
        ("output-length-ratio", "max", 2.0),
        ("output-length-ratio", "min", 0.5),
    ]


def test_a_healthy_class_passes_with_calibrated_agreement() -> None:
    answers = healthy("code", FP8)
    answers[SELF_SUM] = [one("code", BASE, 9)]  # the baseline agrees with itself at 0.9
    obs = parse(answers, [FP8], BASE, RULES, 50, ["code"])
    got = obs.stats[("code", FP8)]
    assert got.samples == 200
    assert got.agreement == pytest.approx(0.98 / 0.9)
    assert (got.rules, got.reasons) == ("Pass", ())
    assert obs.mix == {"code": 1.0}
    assert obs.unavailable is None


def test_every_class_and_tier_gets_stats_even_without_data() -> None:
    obs = parse({}, [FP8, INT4], BASE, RULES, 50, CLASSES)
    assert set(obs.stats) == {(c, t) for c in CLASSES for t in (FP8, INT4)}
    for got in obs.stats.values():
        assert (got.samples, got.agreement, got.rules) == (0, None, "Inconclusive")
        assert got.reasons == ("too few requests (0 < 50)",)
    assert obs.mix == {}


def test_no_calibration_of_the_class_means_no_agreement() -> None:
    answers = healthy("math", INT4)
    answers[SELF_COUNT] = [one("code", BASE, 10)]  # calibrated for another class only
    answers[SELF_SUM] = [one("code", BASE, 10)]
    got = parse(answers, [INT4], BASE, RULES, 50, ["math"]).stats[("math", INT4)]
    assert got.samples == 200
    assert got.agreement is None


def test_rules_are_scoped_by_class_and_tier() -> None:
    answers = healthy("code", INT4)
    chat = healthy("chat-short", INT4)
    for key, series in chat.items():
        answers[key] = answers[key] + series
    # code loops on int4 (40 of 200 answers); chat does not.
    answers[REPETITIONS] = [one("code", INT4, 40), one("chat-short", INT4, 0)]
    obs = parse(answers, [INT4], BASE, RULES, 50, ["code", "chat-short"])
    assert obs.stats[("code", INT4)].rules == "Fail"
    assert obs.stats[("code", INT4)].reasons == ("repetition-rate 0.2 > 0.15",)
    assert obs.stats[("chat-short", INT4)].rules == "Pass"
    assert obs.verdicts() == {("code", INT4): "Fail", ("chat-short", INT4): "Pass"}
    assert obs.reasons() == {("code", INT4): ("repetition-rate 0.2 > 0.15",)}


def test_comparative_rules_compare_with_the_baseline_of_the_same_class() -> None:
    answers = healthy("tools", FP8)
    answers[TOKENS] = [one("tools", FP8, 40 * 200), one("tools", BASE, 100 * 200)]
    answers[REFUSALS] = [one("tools", FP8, 60), one("tools", BASE, 20)]
    got = parse(answers, [FP8], BASE, RULES, 50, ["tools"]).stats[("tools", FP8)]
    assert got.rules == "Fail"
    assert got.reasons == ("refusal-rate-increase 0.2 > 0.1", "output-length-ratio 0.4 < 0.6")


def test_errors_count_shadow_errors_over_attempts() -> None:
    answers = healthy("code", FP8)
    answers[SHADOW] = [
        one("code", FP8, 190, outcome="compared"),
        one("code", FP8, 10, outcome="error"),
    ]
    got = parse(answers, [FP8], BASE, RULES, 50, ["code"]).stats[("code", FP8)]
    assert (got.rules, got.reasons) == ("Fail", ("error-rate 0.05 > 0.01",))


def test_missing_baseline_answers_are_inconclusive_never_pass() -> None:
    answers = healthy("code", FP8)
    answers[RESPONSES] = [one("code", FP8, 200)]  # the baseline answered nothing of this class
    answers[TOKENS] = [one("code", FP8, 200)]
    answers[REFUSALS] = [one("code", FP8, 0)]
    got = parse(answers, [FP8], BASE, RULES, 50, ["code"]).stats[("code", FP8)]
    assert got.rules == "Inconclusive"
    assert got.reasons == ("refusal-rate-increase: no data", "output-length-ratio: no data")


def test_too_few_requests_is_inconclusive() -> None:
    got = parse(healthy("code", FP8, n=20), [FP8], BASE, RULES, 50, ["code"]).stats[("code", FP8)]
    assert got.rules == "Inconclusive"
    assert got.reasons == ("too few requests (20 < 50)",)


def test_nan_is_no_data() -> None:
    answers = healthy("code", FP8)
    answers[REPETITIONS] = [one("code", FP8, math.nan)]
    got = parse(answers, [FP8], BASE, RULES, 50, ["code"]).stats[("code", FP8)]
    assert got.rules == "Inconclusive"


def test_unclassified_series_are_ignored() -> None:
    assert mix([Series({s.CLASS: "", s.TIER: BASE}, 10), one("code", BASE, 5)]) == {"code": 1.0}


@given(
    st.dictionaries(
        st.tuples(st.sampled_from(CLASSES), st.sampled_from([BASE, FP8, INT4])),
        st.floats(min_value=0, max_value=1e9, allow_nan=False),
    )
)
def test_mix_sums_to_one_or_is_empty(counts: dict[tuple[str, str], float]) -> None:
    got = mix([one(c, t, v) for (c, t), v in counts.items()])
    if got:
        assert math.isclose(sum(got.values()), 1.0)
        assert all(0 <= v <= 1 for v in got.values())
    else:
        assert sum(counts.values()) == 0
