"""The leader election's decision, without a cluster: who may take the Lease, and when."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantrollout.leader.election import LeaseRecord, Move, Seen, Timing, decide


def lease(holder: str, renew: str = "t0", duration: float = 15) -> LeaseRecord:
    return LeaseRecord(
        holder=holder, duration_s=duration, renew_time=renew, transitions=0, resource_version="1"
    )


def test_no_lease_is_created() -> None:
    assert decide(None, None, "me", 0.0) == (Move.CREATE, None)


def test_our_lease_is_renewed() -> None:
    assert decide(lease("me"), None, "me", 0.0)[0] is Move.RENEW


def test_a_released_lease_is_taken_at_once() -> None:
    assert decide(lease(""), None, "me", 0.0)[0] is Move.TAKE


def test_a_held_lease_is_watched_from_first_sight_on_our_own_clock() -> None:
    move, seen = decide(lease("other"), None, "me", 100.0)
    assert (move, seen) == (Move.WAIT, Seen("other", "t0", 100.0))
    assert decide(lease("other"), seen, "me", 114.9)[0] is Move.WAIT
    assert decide(lease("other"), seen, "me", 115.0) == (Move.TAKE, seen)


def test_a_renewal_restarts_the_clock() -> None:
    _, seen = decide(lease("other", "t0"), None, "me", 100.0)
    move, seen = decide(lease("other", "t1"), seen, "me", 114.0)
    assert (move, seen) == (Move.WAIT, Seen("other", "t1", 114.0))
    assert decide(lease("other", "t1"), seen, "me", 128.0)[0] is Move.WAIT
    assert decide(lease("other", "t1"), seen, "me", 129.0)[0] is Move.TAKE


def test_a_new_holder_restarts_the_clock_even_with_the_same_renew_time() -> None:
    _, seen = decide(lease("a", "t0"), None, "me", 0.0)
    move, seen = decide(lease("b", "t0"), seen, "me", 20.0)
    assert (move, seen) == (Move.WAIT, Seen("b", "t0", 20.0))


def test_the_lease_says_how_long_it_lasts() -> None:
    _, seen = decide(lease("other", duration=60), None, "me", 0.0)
    assert decide(lease("other", duration=60), seen, "me", 59.0)[0] is Move.WAIT


@pytest.mark.parametrize(
    ("duration", "deadline", "retry"), [(15, 15, 2), (15, 10, 10), (15, 10, 0), (10, 15, 2)]
)
def test_timing_must_leave_the_old_leader_time_to_stop(
    duration: float, deadline: float, retry: float
) -> None:
    with pytest.raises(ValueError, match="retry period < renew deadline < lease duration"):
        Timing(duration, deadline, retry)


# A follower watching a leader that renews (or not) at arbitrary moments.
renewals = st.lists(
    st.tuples(st.floats(0, 40), st.booleans()),  # (seconds until the next look, renewed since?)
    max_size=40,
)


@given(renewals, st.floats(1, 30))
def test_a_follower_never_takes_a_lease_renewed_less_than_its_duration_ago(
    looks: list[tuple[float, bool]], duration: float
) -> None:
    now, generation, seen = 0.0, 0, None
    last_change_seen_at = 0.0
    move, seen = decide(lease("leader", "r0", duration), seen, "me", now)
    for wait, renewed in looks:
        now += wait
        if renewed:
            generation += 1
        record = lease("leader", f"r{generation}", duration)
        before = seen
        move, seen = decide(record, seen, "me", now)
        if before is None or before.renew_time != record.renew_time:
            last_change_seen_at = now
        if move is Move.TAKE:
            assert now - last_change_seen_at >= duration
            assert not renewed  # a renewal we can see is never overridden
            return
        assert move is Move.WAIT
        if now - last_change_seen_at >= duration:
            pytest.fail("a lease unrenewed for its whole duration was not taken")
