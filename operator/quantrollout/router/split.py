"""Which tier answers a request: pure functions of the rollout, the weight and the user key.

Every request gets a bucket in [0, BUCKETS). It goes to the target iff `bucket < weight * 100`,
so the target's share is exactly `weight`% of the buckets. With a sticky key the bucket is a
stable hash of (rollout id, key): the same user stays on one tier for the whole rollout, and
raising the weight only ever moves users from the baseline to the target (the buckets
`[old * 100, new * 100)`), never back and forth. A new rollout id reshuffles users, so one
unlucky group is not always the first to see every new variant. Without a key the bucket is
drawn per request.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from quantrollout.api.status import TrafficStatus

BUCKETS = 10_000
_PER_PERCENT = BUCKETS // 100
_RNG = random.Random()  # per process: only the sticky buckets must agree across replicas


def sticky_bucket(rollout_id: str, key: str) -> int:
    """A bucket that depends only on (rollout_id, key), the same in every process and release.

    Not Python's `hash()`: it is salted per process, so replicas of the router would disagree.
    """
    # A NUL separator keeps ("a", "bc") and ("ab", "c") apart.
    digest = hashlib.blake2b(rollout_id.encode() + b"\0" + key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def random_bucket(rng: random.Random | None = None) -> int:
    """A bucket drawn per request, for requests without a sticky key."""
    return (rng or _RNG).randrange(BUCKETS)


def goes_to_target(bucket: int, weight: int) -> bool:
    """True iff a request in `bucket` is answered by the target at `weight`% (0..100)."""
    return bucket < weight * _PER_PERCENT


def is_mirrored(roll: int, mirror_percent: int) -> bool:
    """True iff a request with the per-request draw `roll` (a bucket) is also sent to the target."""
    return roll < mirror_percent * _PER_PERCENT


def choose_bucket(rollout_id: str, sticky_key: str | None, rng: random.Random | None = None) -> int:
    """The request's bucket: sticky when it carries a key, drawn otherwise."""
    if sticky_key:
        return sticky_bucket(rollout_id, sticky_key)
    return random_bucket(rng)


@dataclass(frozen=True, slots=True)
class Decision:
    """Where one request goes: its live tier, and whether the target also gets a shadow copy."""

    live_on_target: bool
    mirrored: bool
    calibrated: bool = False  # mirrored, and the baseline answers a second copy too


def decide(
    traffic: TrafficStatus,
    sticky_key: str | None,
    rng: random.Random | None = None,
    calibration_percent: int = 0,
) -> Decision:
    """The tiers of one request under `traffic`.

    Only a request answered by the baseline is mirrored (mirroring the target to itself would
    compare an answer with itself); the mirror draw is per request even for sticky users,
    since a shadow copy changes nothing the user sees. `calibration_percent`% of the mirrored
    requests, drawn apart, also go to the baseline a second time: its agreement with itself is
    what the target's agreement is judged against (agreement.py).
    """
    if traffic.target is None:
        return Decision(False, False)
    on_target = goes_to_target(
        choose_bucket(traffic.rollout_id, sticky_key, rng), traffic.target_weight
    )
    if on_target:
        return Decision(True, False)
    return Decision(False, *mirror_draws(traffic.mirror_percent, calibration_percent, rng))


def mirror_draws(
    mirror_percent: int, calibration_percent: int, rng: random.Random | None = None
) -> tuple[bool, bool]:
    """Whether a request the baseline answers is mirrored, and whether the baseline answers a
    calibration copy too: two draws apart, per request."""
    mirrored = mirror_percent > 0 and is_mirrored(random_bucket(rng), mirror_percent)
    calibrated = (
        mirrored
        and calibration_percent > 0
        and is_mirrored(random_bucket(rng), calibration_percent)
    )
    return mirrored, calibrated
