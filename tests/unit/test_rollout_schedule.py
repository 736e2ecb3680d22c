"""The shared evaluation clock: each model's slots, and what they buy together with the
coalescer, one Prometheus query per rule per round for any number of models."""

from __future__ import annotations

import datetime
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from quantrollout.analysis.batch import Series
from quantrollout.analysis.coalesce import Coalescer
from quantrollout.analysis.judge import Measurement
from quantrollout.rollout.machine import AnalysisSettings, RolloutState
from quantrollout.rollout.schedule import (
    MIN_GAP,
    SPREAD,
    evaluation_due,
    next_evaluation_at,
    phase_s,
    round_start,
)

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
T0 = datetime.datetime(2026, 11, 23, 10, 0, tzinfo=datetime.UTC)
names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=30)
intervals = st.sampled_from([1.0, 5.0, 10.0, 30.0, 60.0, 300.0])


def settings_for(interval: float, namespace: str, name: str) -> AnalysisSettings:
    return AnalysisSettings(
        interval_s=interval,
        failure_limit=2,
        on_metrics_unavailable="pause",
        metrics_unavailable_grace_s=60,
        phase_s=phase_s(namespace, name, interval),
    )


def evaluated_at(t: float) -> RolloutState:
    return RolloutState(
        rollout_id="r",
        phase="Progressing",
        last_evaluation_at=EPOCH + datetime.timedelta(seconds=t),
    )


def seconds(at: datetime.datetime) -> float:
    return (at - EPOCH).total_seconds()


@settings(max_examples=300)
@given(names, names, intervals, st.floats(min_value=0, max_value=3600 * 24 * 365, allow_nan=False))
def test_the_next_slot_is_on_the_shared_clock_and_about_one_interval_on(
    namespace: str, name: str, interval: float, offset: float
) -> None:
    analysis = settings_for(interval, namespace, name)
    assert 0 <= analysis.phase_s < SPREAD * interval
    last = seconds(T0) + offset
    nxt = next_evaluation_at(evaluated_at(last), analysis)
    assert nxt is not None
    gap = seconds(nxt) - last
    assert MIN_GAP * interval - 1e-3 <= gap < (MIN_GAP + 1) * interval + 1e-3
    rounds = (seconds(nxt) - analysis.phase_s) / interval
    assert abs(rounds - round(rounds)) < 1e-6
    before = nxt - datetime.timedelta(milliseconds=1)
    assert not evaluation_due(evaluated_at(last), analysis, before)
    assert evaluation_due(evaluated_at(last), analysis, nxt)


def test_first_evaluation_is_due_at_once_and_none_without_an_active_rollout() -> None:
    analysis = settings_for(30, "llm", "m")
    assert evaluation_due(RolloutState(rollout_id="r", phase="Progressing"), analysis, T0)
    for phase in ("Pending", "Succeeded", "RolledBack"):
        state = RolloutState(rollout_id="r", phase=phase, last_evaluation_at=T0)  # type: ignore[arg-type]
        assert next_evaluation_at(state, analysis) is None
        assert not evaluation_due(state, analysis, T0 + datetime.timedelta(days=1))


def test_an_evaluation_just_before_a_slot_skips_it() -> None:
    analysis = AnalysisSettings(10, 2, "pause", 60)  # phase 0: slots on multiples of 10 s
    nxt = next_evaluation_at(evaluated_at(seconds(T0) + 9.9), analysis)
    assert nxt == T0 + datetime.timedelta(seconds=20)  # not 0.1 s later, at T0 + 10


class CountingProvider:
    def __init__(self) -> None:
        self.asked: list[float] = []
        self.now = 0.0

    def measure(self, expr: str) -> Measurement:
        raise AssertionError("not used")

    def series(self, expr: str) -> list[Series]:
        self.asked.append(self.now)
        return []

    def describe(self, err: Exception) -> str:
        return "fake"


@settings(max_examples=60, deadline=None)
@given(
    st.lists(names, min_size=1, max_size=60, unique=True),
    intervals,
    st.data(),
)
def test_models_on_the_shared_clock_ask_each_query_once_per_round(
    models: list[str], interval: float, data: st.DataObject
) -> None:
    """Models start at any time in the first three rounds and evaluate whenever due, each late
    by up to 0.45 of the interval (a busy operator; at half an interval late the next slot is
    less than MIN_GAP away and is skipped); from the round after the last start on, each round
    asks the query exactly once, and every model evaluates exactly once in it."""
    lateness = st.floats(min_value=0, max_value=0.45 * interval)
    start = seconds(T0)
    rounds = 12
    evaluations: list[tuple[float, str, AnalysisSettings]] = []
    first_round = 0
    for name in models:
        analysis = settings_for(interval, "llm", name)
        t = start + data.draw(st.floats(min_value=0, max_value=3 * interval))
        first_round = max(first_round, int((t - start) // interval))
        while t < start + rounds * interval:
            evaluations.append((t, name, analysis))
            nxt = next_evaluation_at(evaluated_at(t), analysis)
            assert nxt is not None
            t = seconds(nxt) + data.draw(lateness)
    provider = CountingProvider()
    coalescer = Coalescer(provider, clock=lambda: provider.now)
    for t, _, analysis in sorted(evaluations, key=lambda e: e[0]):
        provider.now = t
        coalescer.answer("q", since=round_start(EPOCH + datetime.timedelta(seconds=t), analysis))

    def round_of(t: float) -> int:
        return int((t - start) // interval)

    settled = range(first_round + 2, rounds - 1)
    queries = Counter(round_of(t) for t in provider.asked)
    assert [queries[k] for k in settled] == [1 for _ in settled]
    per_model = Counter(
        (round_of(round_start(EPOCH + datetime.timedelta(seconds=t), a)), name)
        for t, name, a in evaluations
    )
    for k in settled:
        assert all(per_model[(k, name)] == 1 for name in models)
