"""The per-class split: sticky, exact shares, and a baseline fallback instead of a dropped request.
Pure."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantrollout.router.class_split import FALLBACKS, ClassRoute, decide_class
from quantrollout.router.classify import CLASSES
from quantrollout.router.split import BUCKETS, sticky_bucket

TIERS = ["fp16", "fp8", "int4-awq", "gone"]
KNOWN = {"fp16", "fp8", "int4-awq"}
buckets = st.integers(0, BUCKETS - 1)
weights = st.integers(0, 100)
routes = st.dictionaries(
    st.sampled_from(CLASSES),
    st.builds(ClassRoute, tier=st.sampled_from(TIERS), weight=weights, rest=st.sampled_from(TIERS)),
)


@given(routes, st.sampled_from(CLASSES), buckets)
def test_every_request_gets_a_known_tier_and_a_fallback_only_with_a_reason(
    table: dict[str, ClassRoute], cls: str, bucket: int
) -> None:
    decision = decide_class(table, cls, bucket, KNOWN, "fp16")
    assert decision.tier in KNOWN
    if decision.fallback is not None:
        assert decision.fallback in FALLBACKS
        assert decision.tier == "fp16"
    else:
        route = table[cls]
        assert decision.tier in {route.tier, route.rest}


@given(st.sampled_from(CLASSES), buckets)
def test_a_class_without_a_route_goes_to_the_baseline_counted(cls: str, bucket: int) -> None:
    assert decide_class({}, cls, bucket, KNOWN, "fp16").fallback == "no-route"


def test_a_tier_the_router_does_not_know_falls_back_to_the_baseline() -> None:
    table = {"code": ClassRoute("gone", 100, "fp16")}
    decision = decide_class(table, "code", 0, KNOWN, "fp16")
    assert (decision.tier, decision.fallback) == ("fp16", "tier-missing")


@given(weights)
def test_the_class_share_on_its_tier_is_exactly_the_weight(weight: int) -> None:
    table = {"code": ClassRoute("fp8", weight, "fp16")}
    on_tier = sum(
        decide_class(table, "code", b, KNOWN, "fp16").tier == "fp8" for b in range(0, BUCKETS, 10)
    )
    assert on_tier == weight * 10  # every 10th bucket: 1,000 buckets, 10 per percent


@given(st.text(min_size=1, max_size=20), weights, weights)
def test_raising_a_weight_only_moves_users_onto_the_chosen_tier(user: str, a: int, b: int) -> None:
    low, high = sorted((a, b))
    bucket = sticky_bucket("rollout-1", user)
    before = decide_class(
        {"math": ClassRoute("int4-awq", low, "fp8")}, "math", bucket, KNOWN, "fp16"
    )
    after = decide_class(
        {"math": ClassRoute("int4-awq", high, "fp8")}, "math", bucket, KNOWN, "fp16"
    )
    assert before.tier == after.tier or (before.tier, after.tier) == ("fp8", "int4-awq")


def test_a_bad_weight_is_refused() -> None:
    with pytest.raises(ValueError, match=r"weight must be within 0\.\.100"):
        ClassRoute("fp8", 101, "fp16")
