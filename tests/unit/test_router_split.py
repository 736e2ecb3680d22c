"""Splitting: which tier answers, sticky per user, and what a weight change moves. Pure."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from quantrollout.api.status import TrafficBackend, TrafficStatus
from quantrollout.router.split import (
    BUCKETS,
    choose_bucket,
    decide,
    goes_to_target,
    is_mirrored,
    sticky_bucket,
)

weights = st.integers(min_value=0, max_value=100)
keys = st.text(min_size=1, max_size=40)
rollouts = st.text(min_size=1, max_size=20)


def traffic(weight: int = 0, mirror: int = 0, target: bool = True) -> TrafficStatus:
    return TrafficStatus(
        rollout_id="r1",
        served_model="m",
        target_weight=weight,
        mirror_percent=mirror,
        sticky_header="x-user-id",
        baseline=TrafficBackend(tier="fp16", service="m-fp16"),
        target=TrafficBackend(tier="int4-awq", service="m-int4-awq") if target else None,
    )


def test_the_bucket_is_stable_across_processes() -> None:
    # Pinned values: a change of hash would silently reshuffle every user mid-rollout.
    assert sticky_bucket("rollout-1", "alice") == 9546
    assert sticky_bucket("rollout-2", "alice") != sticky_bucket("rollout-1", "alice")


def test_the_separator_keeps_rollout_and_key_apart() -> None:
    assert sticky_bucket("ab", "c") != sticky_bucket("a", "bc")


@given(rollouts, keys)
def test_buckets_are_in_range(rollout: str, key: str) -> None:
    assert 0 <= sticky_bucket(rollout, key) < BUCKETS


@given(st.integers(0, BUCKETS - 1))
def test_weight_edges(bucket: int) -> None:
    assert not goes_to_target(bucket, 0)
    assert goes_to_target(bucket, 100)


def test_the_target_gets_exactly_its_share_of_buckets() -> None:
    for weight in range(101):
        assert sum(goes_to_target(b, weight) for b in range(BUCKETS)) == weight * BUCKETS // 100
        assert sum(is_mirrored(b, weight) for b in range(BUCKETS)) == weight * BUCKETS // 100


@given(rollouts, keys, weights, weights)
def test_raising_the_weight_moves_only_users_that_must_move(
    rollout: str, key: str, a: int, b: int
) -> None:
    low, high = sorted((a, b))
    bucket = sticky_bucket(rollout, key)
    # On the target at the lower weight: still there at the higher one (nobody moves back).
    if goes_to_target(bucket, low):
        assert goes_to_target(bucket, high)
    # Moved by the change: exactly the buckets between the two weights.
    moved = goes_to_target(bucket, high) and not goes_to_target(bucket, low)
    assert moved == (low * 100 <= bucket < high * 100)


@given(st.lists(keys, min_size=1, max_size=50, unique=True), weights, weights)
def test_a_raise_moves_users_only_from_baseline_to_target(users: list[str], a: int, b: int) -> None:
    low, high = sorted((a, b))
    before = {u for u in users if goes_to_target(sticky_bucket("r", u), low)}
    after = {u for u in users if goes_to_target(sticky_bucket("r", u), high)}
    assert before <= after


def test_sticky_users_spread_like_the_weight() -> None:
    users = [f"user-{i}" for i in range(20_000)]
    for weight in (10, 25, 50):
        share = sum(goes_to_target(sticky_bucket("r", u), weight) for u in users) / len(users)
        assert abs(share - weight / 100) < 0.015


@given(rollouts, keys)
def test_a_key_always_gets_its_sticky_bucket(rollout: str, key: str) -> None:
    assert choose_bucket(rollout, key, random.Random(1)) == sticky_bucket(rollout, key)


def test_without_a_key_the_bucket_is_drawn_per_request() -> None:
    rng = random.Random(7)
    drawn = {choose_bucket("r", None, rng) for _ in range(200)}
    assert len(drawn) > 150
    assert {choose_bucket("r", "", rng) for _ in range(200)} - drawn  # an empty key is no key


@given(keys, weights)
def test_decide_follows_the_sticky_bucket(key: str, weight: int) -> None:
    decision = decide(traffic(weight), key, random.Random(0))
    assert decision.live_on_target == goes_to_target(sticky_bucket("r1", key), weight)


def test_no_target_means_baseline_and_no_mirror() -> None:
    rng = random.Random(0)
    for _ in range(100):
        d = decide(traffic(weight=100, mirror=100, target=False), None, rng)
        assert not d.live_on_target
        assert not d.mirrored


def test_only_baseline_requests_are_mirrored() -> None:
    rng = random.Random(3)
    decisions = [decide(traffic(weight=50, mirror=100), None, rng) for _ in range(2000)]
    assert all(d.mirrored != d.live_on_target for d in decisions)
    assert 800 < sum(d.live_on_target for d in decisions) < 1200


def test_mirror_percent_is_the_share_mirrored() -> None:
    rng = random.Random(4)
    mirrored = sum(decide(traffic(mirror=30), None, rng).mirrored for _ in range(10_000))
    assert 2800 < mirrored < 3200
    assert not any(decide(traffic(mirror=0), None, rng).mirrored for _ in range(1000))


@given(st.one_of(keys, st.none()), weights, weights, st.integers(0, 100), st.integers(0, 2**32))
def test_only_mirrored_requests_are_calibrated(
    key: str | None, weight: int, mirror: int, calibration: int, seed: int
) -> None:
    d = decide(traffic(weight, mirror), key, random.Random(seed), calibration)
    assert not d.calibrated or d.mirrored
    if calibration == 0:
        assert not d.calibrated
    if calibration == 100:
        assert d.calibrated == d.mirrored
    # The calibration draw never changes where the request itself goes.
    assert (
        decide(traffic(weight, mirror), key, random.Random(seed)).live_on_target == d.live_on_target
    )


def test_calibration_percent_is_the_share_of_mirrored_requests() -> None:
    rng = random.Random(5)
    decisions = [decide(traffic(mirror=50), None, rng, 20) for _ in range(10_000)]
    mirrored = sum(d.mirrored for d in decisions)
    assert 4700 < mirrored < 5300
    assert 0.17 * mirrored < sum(d.calibrated for d in decisions) < 0.23 * mirrored
