"""The per-class split: sticky, exact shares, and a baseline fallback instead of a dropped request.
Pure."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantrollout.api.status import ClassTraffic, TrafficBackend, TrafficStatus
from quantrollout.router.class_split import (
    FALLBACKS,
    ClassDecision,
    ClassRoute,
    class_table,
    decide_class,
    decide_mixed,
    describe,
    is_mixed,
)
from quantrollout.router.classify import CLASSES, classify
from quantrollout.router.routes import ModelTraffic
from quantrollout.router.split import BUCKETS, choose_bucket, sticky_bucket
from quantrollout.router.workers import decode_table, encode_table

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


# --- the split of a mixed model's status.traffic, as the router applies it per request ---------

BASE = "fp16"
QUANTIZED = ["fp8", "int4-awq", "int8"]


def backend(tier: str) -> TrafficBackend:
    return TrafficBackend(tier=tier, service=f"m-{tier}")


class_entries = st.lists(
    st.builds(
        lambda c, t, w, r: ClassTraffic.model_validate(
            {"class": c, "tier": t, "weight": w, "rest": r}
        ),
        st.sampled_from(CLASSES),
        st.sampled_from([BASE, *QUANTIZED, "gone"]),
        weights,
        st.sampled_from([BASE, *QUANTIZED]),
    ),
    max_size=8,
)
mixed_traffic = st.builds(
    lambda targets, classes: TrafficStatus(
        rollout_id="r1",
        served_model="m",
        target_weight=0,
        mirror_percent=0,
        baseline=backend(BASE),
        targets=[backend(t) for t in targets],
        classes=classes,
    ),
    st.lists(st.sampled_from(QUANTIZED), min_size=1, max_size=3),
    st.none() | class_entries,
)
bodies = st.fixed_dictionaries(
    {
        "messages": st.lists(
            st.fixed_dictionaries({"role": st.just("user"), "content": st.text(max_size=60)}),
            max_size=2,
        )
    },
    optional={
        "tools": st.just([{"type": "function"}]),
        "response_format": st.just({"type": "json_object"}),
    },
)


@given(mixed_traffic, bodies, st.text(max_size=8), st.none() | st.text(max_size=12))
def test_every_request_of_a_mixed_model_goes_to_the_baseline_or_a_target(
    traffic: TrafficStatus, body: dict[str, object], user: str, named: str | None
) -> None:
    table = class_table(traffic)
    cls = classify(body, named)
    decision = decide_mixed(table, cls, choose_bucket(traffic.rollout_id, user or None), BASE)
    targets = {t.tier for t in traffic.targets or ()}
    assert decision.tier == BASE or decision.tier in targets
    assert decision.tier in table.targets or decision.tier == BASE  # the router has its upstream
    if traffic.classes is None:
        assert decision == ClassDecision(BASE)  # shadow: nothing to fall back from
    if decision.fallback is not None:
        assert decision.tier == BASE
    assert [b.tier for b in table.mirrored] == list(
        dict.fromkeys(t.tier for t in traffic.targets or ())
    )


@given(mixed_traffic, bodies, st.text(min_size=1, max_size=8))
def test_a_user_stays_on_one_tier_per_class(
    traffic: TrafficStatus, body: dict[str, object], user: str
) -> None:
    table, cls = class_table(traffic), classify(body)
    first = decide_mixed(table, cls, choose_bucket("r1", user), BASE)
    for _ in range(3):
        assert decide_mixed(table, cls, choose_bucket("r1", user), BASE) == first


@given(st.sampled_from(CLASSES), st.text(min_size=1, max_size=8), weights, weights)
def test_raising_a_class_weight_in_the_status_only_moves_users_onto_its_tier(
    cls: str, user: str, a: int, b: int
) -> None:
    low, high = sorted((a, b))

    def tier_at(weight: int) -> str:
        entry = ClassTraffic.model_validate(
            {"class": cls, "tier": "int4-awq", "weight": weight, "rest": "fp8"}
        )
        traffic = TrafficStatus(
            rollout_id="r1", served_model="m", target_weight=0, mirror_percent=0,
            baseline=backend(BASE), targets=[backend("fp8"), backend("int4-awq")], classes=[entry],
        )  # fmt: skip
        return decide_mixed(class_table(traffic), cls, choose_bucket("r1", user), BASE).tier

    before, after = tier_at(low), tier_at(high)
    assert before == after or (before, after) == ("fp8", "int4-awq")


def test_a_model_is_mixed_when_it_has_targets_or_classes() -> None:
    single = TrafficStatus(
        rollout_id="r", served_model="m", target_weight=10, mirror_percent=0,
        baseline=backend(BASE), target=backend("int4-awq"),
    )  # fmt: skip
    assert not is_mixed(single)
    assert is_mixed(single.model_copy(update={"targets": [backend("fp8")]}))
    assert is_mixed(single.model_copy(update={"classes": []}))  # no route: every class falls back
    table = class_table(single.model_copy(update={"classes": []}))
    assert decide_mixed(table, "code", 0, BASE) == ClassDecision(BASE, "no-route")


def test_a_split_in_words() -> None:
    single = TrafficStatus(
        rollout_id="r", served_model="m", target_weight=10, mirror_percent=0,
        baseline=backend(BASE), target=backend("int4-awq"),
    )  # fmt: skip
    assert describe(single) == "target int4-awq at 10%, mirror 0%"
    shadow = single.model_copy(update={"target": None, "targets": [backend("fp8")]})
    assert describe(shadow) == (
        "targets fp8; classes: none yet (all live on the baseline); mirror 0%"
    )
    code = ClassTraffic.model_validate({"class": "code", "tier": "fp8", "weight": 25, "rest": BASE})
    assert describe(shadow.model_copy(update={"classes": [code]})) == (
        "targets fp8; classes: code 25% fp8 (rest fp16); mirror 0%"
    )


def test_the_split_reaches_router_workers_whole() -> None:
    """Router workers get the table as JSON (workers.encode_table): classes keep their alias."""
    code = ClassTraffic.model_validate({"class": "code", "tier": "fp8", "weight": 25, "rest": BASE})
    traffic = TrafficStatus(
        rollout_id="r", served_model="m", target_weight=0, mirror_percent=0,
        baseline=backend(BASE), targets=[backend("fp8")], classes=[code],
    )  # fmt: skip
    _, [decoded] = decode_table(encode_table(1, [ModelTraffic("ns", "m", "t", traffic)]))
    assert decoded.traffic == traffic
    assert class_table(decoded.traffic) == class_table(traffic)
