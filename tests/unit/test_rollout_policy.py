"""Mixed-precision policies: compiled from shadow, hand-written and checked, rolled back one class
at a time, split per class during steps. Pure; invariants checked over generated inputs."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantrollout.rollout.policy import (
    Choice,
    ShadowStats,
    Thresholds,
    Tier,
    apply_verdicts,
    assess,
    breach,
    check_policy,
    class_shares,
    compile_policy,
    relative_cost,
    tier_shares,
)
from quantrollout.router.classify import CLASSES

BASE = Tier("fp16", "fp16", gpus_per_replica=2)
FP8 = Tier("fp8", "fp8", gpus_per_replica=1, relative_throughput=1.5)
INT4 = Tier("int4-awq", "int4", gpus_per_replica=1, relative_throughput=2.5)
TIERS = [FP8, INT4]
LIMITS = Thresholds(min_samples=100, min_agreement=0.95)


def good(samples: int = 500, agreement: float = 0.99) -> ShadowStats:
    return ShadowStats(samples, agreement, "Pass")


# --- generated models ------------------------------------------------------------------------

quantized = st.builds(
    Tier,
    name=st.sampled_from(["fp8", "int8", "int4-awq", "int4-gptq", "w8a8"]),
    precision=st.sampled_from(["fp8", "int8", "int4"]),
    gpus_per_replica=st.integers(1, 8),
    relative_throughput=st.floats(0.25, 4.0),
    ready=st.sampled_from([True, True, True, False]),
)
tier_lists = st.lists(quantized, max_size=4, unique_by=lambda t: t.name)
baselines = st.builds(
    Tier,
    name=st.just("fp16"),
    precision=st.sampled_from(["fp16", "bf16"]),
    gpus_per_replica=st.integers(1, 8),
    relative_throughput=st.just(1.0),
)
shadow_stats = st.builds(
    ShadowStats,
    samples=st.integers(0, 400),
    # Mostly passing, so that several tiers pass for one class and their order is exercised.
    agreement=st.floats(0.9, 1.0) | st.floats(0.0, 1.0) | st.none(),
    rules=st.sampled_from(["Pass", "Pass", "Pass", "Fail", "Inconclusive"]),
)
thresholds = st.builds(
    Thresholds, min_samples=st.integers(1, 300), min_agreement=st.floats(0.5, 0.95)
)


@st.composite
def worlds(
    draw: st.DrawFn,
) -> tuple[Tier, list[Tier], dict[tuple[str, str], ShadowStats], Thresholds]:
    baseline, tiers, limits = draw(baselines), draw(tier_lists), draw(thresholds)
    stats = {
        (cls, t.name): draw(shadow_stats)
        for cls in CLASSES
        for t in tiers
        if draw(st.integers(0, 9))  # a few pairs never measured
    }
    return baseline, tiers, stats, limits


def passed(
    cls: str, tiers: list[Tier], stats: dict[tuple[str, str], ShadowStats], limits: Thresholds
) -> dict[str, Tier]:
    return {t.name: t for t in tiers if assess(t, stats.get((cls, t.name)), limits).passed}


# --- compiling -------------------------------------------------------------------------------


@settings(max_examples=400)
@given(worlds())
def test_compiled_every_class_gets_a_tier_that_passed_for_it_or_the_baseline(world) -> None:
    baseline, tiers, stats, limits = world
    policy = compile_policy(CLASSES, baseline, tiers, stats, limits)
    assert set(policy) == set(CLASSES)
    for cls, choice in policy.items():
        ok = passed(cls, tiers, stats, limits)
        assert choice.tier == baseline.name or choice.tier in ok
        assert choice.reason
        # The cheapest that passed and is cheaper than the baseline; brute force agrees.
        cheaper = [t for t in ok.values() if t.cost < baseline.cost]
        if cheaper:
            best = min(t.cost for t in cheaper)
            assert ok[choice.tier].cost == best
        else:
            assert choice.tier == baseline.name
        # Fallbacks only ever passed, higher precision and never cheaper.
        chosen_bits = baseline.bits if choice.tier == baseline.name else ok[choice.tier].bits
        chosen_cost = baseline.cost if choice.tier == baseline.name else ok[choice.tier].cost
        for name in choice.fallbacks:
            assert name in ok
            assert ok[name].bits > chosen_bits
            assert ok[name].cost >= chosen_cost
            assert ok[name].cost <= baseline.cost
            chosen_bits, chosen_cost = ok[name].bits, ok[name].cost  # each step up, never cheaper


@given(baselines, tier_lists, thresholds, st.integers(0, 299))
def test_too_few_samples_stays_on_the_baseline(baseline, tiers, limits, samples) -> None:
    few = min(samples, limits.min_samples - 1)
    stats = {(c, t.name): ShadowStats(few, 1.0, "Pass") for c in CLASSES for t in tiers}
    policy = compile_policy(CLASSES, baseline, tiers, stats, limits)
    assert all(choice.tier == baseline.name for choice in policy.values())


def test_each_class_gets_its_cheapest_passing_tier_with_reasons() -> None:
    stats = {
        ("chat-short", "int4-awq"): good(agreement=0.98),
        ("chat-short", "fp8"): good(),
        ("code", "int4-awq"): good(agreement=0.80),
        ("code", "fp8"): good(agreement=0.96),
        ("tools", "int4-awq"): good(samples=12),
        ("tools", "fp8"): ShadowStats(500, 0.99, "Fail", ("repetition-rate 0.2 > 0.15",)),
        ("math", "int4-awq"): ShadowStats(500, 0.99, "Inconclusive"),
        ("math", "fp8"): good(),
    }
    policy = compile_policy(CLASSES, BASE, TIERS, stats, LIMITS)
    assert policy["chat-short"].tier == "int4-awq"
    assert policy["chat-short"].fallbacks == ("fp8",)
    assert policy["chat-short"].agreement == 0.98
    assert policy["code"].tier == "fp8"
    assert "int4-awq agreement 0.800 < 0.950" in policy["code"].reason
    assert policy["tools"].tier == "fp16"
    assert "int4-awq has too few samples (12 < 100)" in policy["tools"].reason
    assert "fp8 rules failed: repetition-rate 0.2 > 0.15" in policy["tools"].reason
    assert policy["math"].tier == "fp8"
    assert "int4-awq rules inconclusive" in policy["math"].reason
    assert policy["chat-long"].tier == "fp16"  # nothing measured


def test_a_tier_not_ready_is_not_chosen() -> None:
    stats = {("chat-short", t.name): good() for t in TIERS}
    down = Tier("int4-awq", "int4", 1, 2.5, ready=False)
    policy = compile_policy(["chat-short"], BASE, [FP8, down], stats, LIMITS)
    assert policy["chat-short"].tier == "fp8"
    assert "int4-awq is not Ready" in policy["chat-short"].reason


def test_a_quantized_tier_dearer_than_the_baseline_is_not_chosen() -> None:
    dear = Tier("int8", "int8", gpus_per_replica=4, relative_throughput=1.0)
    policy = compile_policy(["code"], BASE, [dear], {("code", "int8"): good()}, LIMITS)
    assert policy["code"].tier == "fp16"
    assert "no passing tier is cheaper than the baseline" in policy["code"].reason


def test_at_equal_cost_the_higher_precision_wins() -> None:
    a = Tier("int4", "int4", 1, 2.0)
    b = Tier("fp8", "fp8", 1, 2.0)
    stats = {("code", "int4"): good(), ("code", "fp8"): good()}
    assert compile_policy(["code"], BASE, [a, b], stats, LIMITS)["code"].tier == "fp8"


# --- hand-written policies -------------------------------------------------------------------


def test_a_hand_policy_naming_an_unknown_tier_or_class_is_refused_with_the_field() -> None:
    check = check_policy({"code": "int3", "poetry": "fp8"}, CLASSES, BASE, TIERS)
    assert check.policy is None
    assert any(r.startswith("spec.policy.code: tier 'int3' does not exist") for r in check.refused)
    assert any(r.startswith("spec.policy.poetry: unknown request class") for r in check.refused)


def test_a_hand_policy_naming_a_tier_not_ready_holds_that_class_on_the_baseline() -> None:
    down = Tier("fp8", "fp8", 1, 1.5, ready=False)
    check = check_policy({"code": "fp8", "chat-short": "int4-awq"}, CLASSES, BASE, [down, INT4])
    assert check.policy is not None
    assert check.policy["code"].tier == "fp16"
    assert "fp8 is not Ready" in check.policy["code"].reason
    assert check.held == ("spec.policy.code: held on fp16: tier fp8 is not Ready",)
    assert check.policy["chat-short"].tier == "int4-awq"
    assert check.policy["math"].tier == "fp16"  # left out: the baseline
    assert check.policy["chat-short"].fallbacks == ()  # no shadow data: a breach goes to fp16


def test_a_hand_policy_with_shadow_data_falls_back_through_tiers_that_passed() -> None:
    stats = {("chat-short", "fp8"): good(), ("chat-short", "int4-awq"): good(agreement=0.5)}
    check = check_policy({"chat-short": "int4-awq"}, CLASSES, BASE, TIERS, stats=stats)
    assert check.policy is not None
    assert check.policy["chat-short"].fallbacks == ("fp8",)


@given(
    st.dictionaries(
        st.sampled_from([*CLASSES, "poetry"]),
        st.sampled_from(["fp16", "fp8", "int4-awq", "int3"]),
    ),
    tier_lists,
)
def test_hand_policies_are_taken_whole_or_refused_whole(wanted, tiers) -> None:
    check = check_policy(wanted, CLASSES, BASE, tiers)
    known = {t.name for t in tiers} | {"fp16"}
    bad = [c for c, t in wanted.items() if c not in CLASSES or t not in known]
    if bad:
        assert check.policy is None
        assert len(check.refused) == len(bad)
        return
    assert check.policy is not None
    assert set(check.policy) == set(CLASSES)
    ready = {t.name for t in tiers if t.ready} | {"fp16"}
    for cls, choice in check.policy.items():
        assert choice.tier in ready
        assert choice.tier == wanted.get(cls, "fp16") or wanted[cls] not in ready


# --- partial rollback ------------------------------------------------------------------------


@settings(max_examples=400)
@given(worlds(), st.data())
def test_a_breach_moves_one_class_up_never_cheaper_never_to_a_failed_tier(world, data) -> None:
    baseline, tiers, stats, limits = world
    policy = compile_policy(CLASSES, baseline, tiers, stats, limits)
    cls = data.draw(st.sampled_from(CLASSES))
    by_name = {t.name: t for t in [baseline, *tiers]}
    ok = passed(cls, tiers, stats, limits)
    # Breach again and again: the class climbs and ends on the baseline, in bounded steps.
    for _ in range(len(tiers) + 1):
        before = policy[cls]
        after = breach(policy, cls, before.tier, baseline.name, ["error-rate 0.05 > 0.01"])
        for other in CLASSES:
            if other != cls:
                assert after[other] == policy[other]
        now = after[cls]
        if before.tier == baseline.name:
            assert now == before
            break
        assert now.tier == baseline.name or now.tier in ok
        assert by_name[now.tier].bits > by_name[before.tier].bits
        assert by_name[now.tier].cost >= by_name[before.tier].cost
        assert "breached: error-rate 0.05 > 0.01" in now.reason
        policy = after
    assert policy[cls].tier == baseline.name


def test_a_breach_goes_to_the_next_higher_precision_that_passed() -> None:
    stats = {("code", "int4-awq"): good(), ("code", "fp8"): good()}
    policy = compile_policy(CLASSES, BASE, TIERS, stats, LIMITS)
    assert policy["code"].tier == "int4-awq"
    policy = breach(policy, "code", "int4-awq", "fp16", ["repetition-rate 0.3 > 0.15"])
    assert policy["code"].tier == "fp8"
    assert policy["code"].reason.startswith("fp8: next higher precision that passed shadow")
    policy = breach(policy, "code", "fp8", "fp16")
    assert policy["code"].tier == "fp16"
    assert "no higher precision tier passed" in policy["code"].reason


def test_a_late_verdict_for_a_tier_the_class_left_changes_nothing() -> None:
    policy = {"code": Choice("fp8", "x")}
    assert breach(policy, "code", "int4-awq", "fp16") == policy
    assert breach(policy, "math", "fp8", "fp16") == policy


def test_verdicts_roll_back_only_the_failing_classes() -> None:
    policy = {c: Choice("int4-awq", "x", ("fp8",)) for c in ("code", "chat-short")}
    after = apply_verdicts(
        policy,
        {("code", "int4-awq"): "Fail", ("chat-short", "int4-awq"): "Inconclusive"},
        "fp16",
        {("code", "int4-awq"): ["shadow-agreement 0.7 < 0.9"]},
    )
    assert after["code"].tier == "fp8"
    assert "shadow-agreement 0.7 < 0.9" in after["code"].reason
    assert after["chat-short"] == policy["chat-short"]


# --- shares during steps ---------------------------------------------------------------------

policies = st.dictionaries(
    st.sampled_from(CLASSES),
    st.builds(Choice, tier=st.sampled_from(["fp16", "fp8", "int4-awq"]), reason=st.just("r")),
)


@given(
    policies,
    st.integers(0, 100),
    st.dictionaries(st.sampled_from(CLASSES), st.sampled_from(["fp16", "fp8", "int4-awq"])),
)
def test_shares_sum_to_100_per_class_and_the_weight_lands_on_the_chosen_tier(
    policy, weight, previous
) -> None:
    shares = class_shares(policy, weight, "fp16", previous)
    assert set(shares) == set(policy)
    for cls, split in shares.items():
        assert sum(split.values()) == 100
        assert all(0 < v <= 100 for v in split.values())
        chosen, before = policy[cls].tier, previous.get(cls, "fp16")
        assert set(split) <= {chosen, before}
        assert split.get(chosen, 0) == (100 if chosen == before else weight)


@given(policies, st.integers(0, 100), st.integers(0, 100))
def test_raising_the_weight_never_moves_a_class_off_its_chosen_tier(policy, a, b) -> None:
    low, high = sorted((a, b))
    lo, hi = class_shares(policy, low, "fp16"), class_shares(policy, high, "fp16")
    for cls, choice in policy.items():
        assert lo[cls].get(choice.tier, 0) <= hi[cls].get(choice.tier, 0)


def test_a_bad_weight_is_refused() -> None:
    with pytest.raises(ValueError, match=r"weight must be within 0\.\.100"):
        class_shares({}, 101, "fp16")


@given(policies, st.integers(0, 100))
def test_tier_shares_of_a_mix_sum_to_one(policy, weight) -> None:
    shares = class_shares(policy, weight, "fp16")
    mix = {cls: 1 / len(policy) for cls in policy}
    if policy:
        assert math.isclose(sum(tier_shares(shares, mix).values()), 1.0)


def test_relative_cost() -> None:
    # fp16: 2 GPUs at throughput 1 = 2; int4: 1 / 2.5 = 0.4; fp8: 1 / 1.5.
    assert relative_cost({"fp16": 1.0}, TIERS, BASE) == 1.0
    assert math.isclose(relative_cost({"int4-awq": 1.0}, TIERS, BASE), 0.2)
    mixed = relative_cost({"int4-awq": 0.7, "fp8": 0.2, "fp16": 0.1}, TIERS, BASE)
    assert math.isclose(mixed, (0.7 * 0.4 + 0.2 / 1.5 + 0.1 * 2) / 2)
