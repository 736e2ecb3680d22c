"""Batched analysis: one query per built-in rule for every model, split back per model (pure, with
hypothesis), and the coalescer that shares one answer among the models of a round (against a fake
metric provider and a fake clock). That the split equals each model's own query on a real
Prometheus is tests/integration/test_analysis_batch.py."""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantrollout.analysis import batch
from quantrollout.analysis.batch import Series, Who, batched_query, formula, index, leaves, split
from quantrollout.analysis.coalesce import Coalescer
from quantrollout.analysis.judge import Measurement
from quantrollout.analysis.rules import DEFAULT_RULES
from quantrollout.api.spec import Rule

BUILT_IN = [
    "latency-p99", "latency-p95", "ttft-p99", "latency-p99-ratio", "error-rate",
    "repetition-rate", "refusal-rate-increase", "output-length-ratio", "shadow-agreement",
]  # fmt: skip
LLAMA = Who("llm", "llama3-8b", baseline="fp16", target="int4-awq")


def f_of(name: str) -> batch.Formula:
    found = formula(Rule(name=name, max="1"))  # type: ignore[arg-type]
    assert found is not None
    return found


def answer(f: batch.Formula, who: Who, values: dict[tuple[int, str], float]) -> list[Series]:
    """Series for one model: {(leaf index, role): value}."""
    tiers = {"target": who.target, "baseline": who.baseline}
    return [
        Series({"qr_leaf": str(i), "namespace": who.namespace, "model": who.model,
                "tier": tiers[role]}, v)
        for (i, role), v in values.items()
    ]  # fmt: skip


def test_every_built_in_rule_batches_and_custom_does_not() -> None:
    for name in BUILT_IN:
        f = f_of(name)
        query = batched_query(f, "2m")
        assert query.count("label_replace(") == len(leaves(f))
        assert "by (namespace, model, tier" in query
        assert "llama3-8b" not in query
        assert "int4-awq" not in query
    assert formula(Rule(name="custom", query="sum(up)", max="1")) is None


def test_the_query_text_depends_on_the_rule_and_window_only() -> None:
    f = f_of("error-rate")
    assert batched_query(f, "2m") == batched_query(f_of("error-rate"), "2m")
    assert batched_query(f, "2m") != batched_query(f, "4m")
    assert batched_query(f, "2m") != batched_query(f_of("repetition-rate"), "2m")


def test_error_rate_leaves_count_missing_counters_as_zero() -> None:
    f = f_of("error-rate")  # (errors + shadow errors) / (requests + shadow requests)
    assert [leaf.kind for leaf in leaves(f)] == ["total"] * 4
    only_requests = answer(f, LLAMA, {(2, "target"): 200.0})
    assert split(f, index(only_requests), LLAMA) == Measurement(0.0)
    errors = answer(f, LLAMA, {(0, "target"): 3.0, (1, "target"): 1.0, (2, "target"): 100.0,
                               (3, "target"): 100.0})  # fmt: skip
    assert split(f, index(errors), LLAMA) == Measurement(0.02)
    # no traffic at all: 0 / 0, as the per-model query says (NaN, never a pass)
    assert split(f, index([]), LLAMA).unavailable == "no data (NaN)"


def test_shadow_agreement_is_relative_to_the_baseline_s_agreement_with_itself() -> None:
    f = f_of("shadow-agreement")  # mean(target vs baseline) / mean(baseline vs itself)
    assert [
        (leaf.metric.rsplit("_", 1)[0], r.role)
        for leaf, r in zip(
            leaves(f), [f.left.left, f.left.right, f.right.left, f.right.right], strict=True
        )
    ] == [
        ("quantrollout_router_shadow_agreement_ratio", "target"),
        ("quantrollout_router_shadow_agreement_ratio", "target"),
        ("quantrollout_router_shadow_self_agreement_ratio", "baseline"),
        ("quantrollout_router_shadow_self_agreement_ratio", "baseline"),
    ]
    shadow = {(0, "target"): 0.6, (1, "target"): 1.0}
    calibrated = shadow | {(2, "baseline"): 0.16, (3, "baseline"): 0.2}
    assert split(f, index(answer(f, LLAMA, calibrated)), LLAMA).value == pytest.approx(0.75)
    # no calibration answer yet, or a baseline that never agrees with itself: no value at all
    assert split(f, index(answer(f, LLAMA, shadow)), LLAMA).unavailable == "no series"
    never = shadow | {(2, "baseline"): 0.0, (3, "baseline"): 0.2}
    assert split(f, index(answer(f, LLAMA, never)), LLAMA).unavailable == "no series"


def test_comparative_rules_read_both_tiers() -> None:
    f = f_of("refusal-rate-increase")  # refusals/responses (target) - the same (baseline)
    values = {(0, "target"): 30.0, (1, "target"): 100.0, (0, "baseline"): 10.0,
              (1, "baseline"): 100.0}  # fmt: skip
    m = split(f, index(answer(f, LLAMA, values)), LLAMA)
    assert m.value == pytest.approx(0.2)
    del values[(1, "baseline")]
    assert split(f, index(answer(f, LLAMA, values)), LLAMA).unavailable == "no series"


def test_division_follows_promql() -> None:
    f = f_of("latency-p99-ratio")
    one = {(0, "target"): 2.0, (0, "baseline"): 0.0}
    assert split(f, index(answer(f, LLAMA, one)), LLAMA) == Measurement(math.inf)
    nan = {(0, "target"): math.nan, (0, "baseline"): 1.0}
    assert split(f, index(answer(f, LLAMA, nan)), LLAMA).unavailable == "no data (NaN)"


def test_a_duplicated_series_is_never_guessed() -> None:
    f = f_of("latency-p99")
    twice = answer(f, LLAMA, {(0, "target"): 0.1}) * 2
    assert split(f, index(twice), LLAMA).unavailable == "2 series where one was expected"


names = st.sampled_from(["a", "b", "llama3-8b", "mistral"])
tiers = st.sampled_from(["fp16", "bf16", "int4-awq", "fp8"])
values = st.one_of(st.floats(min_value=0, max_value=1e6), st.just(math.nan))


@st.composite
def models_and_answers(draw: Any) -> tuple[batch.Formula, list[Who], dict[Who, list[Series]]]:
    f = f_of(draw(st.sampled_from(BUILT_IN)))
    n = len(leaves(f))
    whos = draw(
        st.lists(st.builds(Who, names, names, tiers, tiers), min_size=1, max_size=6, unique_by=
                 lambda w: (w.namespace, w.model)).filter(
            lambda ws: all(w.baseline != w.target for w in ws))
    )  # fmt: skip
    own = {
        who: answer(f, who, draw(st.dictionaries(
            st.tuples(st.integers(0, n - 1), st.sampled_from(["target", "baseline"])), values)))
        for who in whos
    }  # fmt: skip
    return f, whos, own


def same(a: Measurement, b: Measurement) -> bool:
    if a.value is not None and b.value is not None and math.isnan(a.value):
        return math.isnan(b.value)
    return a == b


@given(models_and_answers())
def test_a_model_sees_only_its_own_series(
    case: tuple[batch.Formula, list[Who], dict[Who, list[Series]]],
) -> None:
    """Batched with any other models, each model's value is the one from its series alone."""
    f, whos, own = case
    everyone = index([one for who in whos for one in own[who]])
    for who in whos:
        assert same(split(f, everyone, who), split(f, index(own[who]), who))


@given(models_and_answers())
def test_missing_data_never_yields_a_value(
    case: tuple[batch.Formula, list[Who], dict[Who, list[Series]]],
) -> None:
    """A model with a non-zero-default leaf missing has no value; it is Inconclusive, not judged."""
    f, whos, own = case
    for who in whos:
        present = {(s.labels["qr_leaf"], s.labels["tier"]) for s in own[who]}
        needed = _refs_in(f, {leaf: i for i, leaf in enumerate(leaves(f))}, who)
        missing = [r for r in needed if r[0] not in present and r[1] != "total"]
        if missing:
            assert split(f, index(own[who]), who).value is None


def _refs_in(
    f: batch.Formula, ids: dict[batch.Leaf, int], who: Who
) -> list[tuple[tuple[str, str], str]]:
    if isinstance(f, batch.Ref):
        tier = who.target if f.role == "target" else who.baseline
        return [((str(ids[f.leaf]), tier), f.leaf.kind)]
    return _refs_in(f.left, ids, who) + _refs_in(f.right, ids, who)


class FakeProvider:
    """Counts queries; answers from a table, or fails; can hold a query until released."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.fail = False
        self.gate: threading.Event | None = None

    def measure(self, expr: str) -> Measurement:
        raise AssertionError("built-in rules are never measured one model at a time")

    def series(self, expr: str) -> list[Series]:
        self.asked.append(expr)
        if self.gate is not None:
            self.gate.wait(5)
        if self.fail:
            raise ConnectionError("refused")
        return [Series({"qr_leaf": "0", "namespace": "llm", "model": "m", "tier": "t"}, 1.0)]

    def describe(self, err: Exception) -> str:
        return f"prometheus at fake: {type(err).__name__}"


def test_one_answer_is_shared_within_a_round() -> None:
    now = [100.0]
    provider = FakeProvider()
    c = Coalescer(provider, clock=lambda: now[0])
    first = c.answer("q", since=90)  # the round began at 90; the first asker sends at 100
    now[0] += 25
    assert c.answer("q", since=90) is first  # 25 s later, same round: the same answer
    assert c.answer("q", since=100) is first  # a round that began as it was sent: still shared
    assert c.answer("other", since=90) is not first  # another query text: its own answer
    assert c.answer("q", since=120) is not first  # the next round asks again
    assert provider.asked == ["q", "other", "q"]
    assert c.answer("q", since=120) is c.answer("q", since=110)
    assert provider.asked.count("q") == 2


def test_a_failed_query_is_unavailable_for_everyone_in_the_round() -> None:
    now = [0.0]
    provider = FakeProvider()
    provider.fail = True
    c = Coalescer(provider, clock=lambda: now[0])
    failed = c.answer("q", since=0)
    assert failed.index is None
    assert failed.error
    assert "ConnectionError" in failed.error
    assert c.answer("q", since=0) is failed
    provider.fail = False
    now[0] += 6
    assert c.answer("q", since=5).index is not None  # the next round asks again
    assert len(provider.asked) == 2


def test_models_asking_at_once_share_one_query_in_flight() -> None:
    provider = FakeProvider()
    provider.gate = threading.Event()
    c = Coalescer(provider)
    got: list[object] = []
    threads = [
        threading.Thread(target=lambda: got.append(c.answer("q", since=0))) for _ in range(20)
    ]
    for t in threads:
        t.start()
    provider.gate.set()
    for t in threads:
        t.join(10)
    assert len(got) == 20
    assert all(a is got[0] for a in got)
    assert provider.asked == ["q"]


def test_default_rules_all_batch() -> None:
    assert all(formula(rule) is not None for rule in DEFAULT_RULES)
