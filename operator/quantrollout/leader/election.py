"""Leader election among operator replicas: the pure decision (see `quantrollout.leader.lease`
for the protocol). `decide` takes what a candidate read and what it saw before, and returns its
move; time is the candidate's own monotonic clock, never the timestamps other nodes wrote."""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "leader election needs 0 < retry period < renew deadline < lease duration, got "
                f"{self.retry_period} / {self.renew_deadline} / {self.lease_duration}"
            )


@dataclass(frozen=True)
class LeaseRecord:
    """What the Lease says, as far as the election cares."""

    holder: str  # "" when released
    duration_s: float
    renew_time: str
    transitions: int
    resource_version: str


@dataclass(frozen=True)
class Seen:
    """The Lease record a follower last saw change, and when (on its own monotonic clock)."""

    holder: str
    renew_time: str
    at: float


class Move(enum.Enum):
    CREATE = "create"  # no Lease yet
    RENEW = "renew"  # ours: write a new renewTime
    TAKE = "take"  # released or expired: write ourselves in as holder
    WAIT = "wait"  # someone else holds it and renews it


def decide(
    record: LeaseRecord | None, seen: Seen | None, me: str, now: float
) -> tuple[Move, Seen | None]:
    """What a candidate does with the Lease it just read; `now` is its monotonic clock."""
    if record is None:
        return Move.CREATE, None
    if record.holder == me:
        return Move.RENEW, None
    if not record.holder:
        return Move.TAKE, None
    if seen is None or (seen.holder, seen.renew_time) != (record.holder, record.renew_time):
        return Move.WAIT, Seen(
            record.holder, record.renew_time, now
        )  # it moved: the clock restarts
    if now - seen.at >= record.duration_s:
        return Move.TAKE, seen
    return Move.WAIT, seen
