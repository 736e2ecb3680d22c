"""When a model's analysis runs: on a clock shared by every model with the same interval. Pure.

Round k of an interval starts at `k * interval` seconds since the epoch; a model's slot in it is
`k * interval + phase`, where `phase` is the model's own fixed offset within the first SPREAD of
the interval, from a hash of its namespace and name. So every model with one interval evaluates
in the same round: the first of them sends each batched query, and the others reuse its answer
(`analysis.coalesce` reuses an answer sent since the start of the asker's round). That is one
Prometheus query per rule per round for all models, where clocks spread over the whole interval
asked each query about twice. The phase spreads a round's reads and status writes over SPREAD
of the interval instead of one burst.

An evaluation is due at the first slot at least MIN_GAP of an interval after the last one: a
model whose last evaluation fell just before a slot skips that slot rather than judging the same
data twice (a breach counted twice); in steady state evaluations are one interval apart.
Evaluations are counted by time, not by calls: `last_evaluation_at` lives in status, so a burst
of reconciles or a restart never adds one.
"""

from __future__ import annotations

import datetime
import hashlib
import math

from .machine import ACTIVE, AnalysisSettings, RolloutState

SPREAD = 0.25  # of the interval: the share of each round in which the models' slots fall
MIN_GAP = 0.5  # of the interval: the least time between two evaluations of one model
_SLACK_S = 0.001
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def phase_s(namespace: str, name: str, interval_s: float) -> float:
    """The model's fixed offset into each round, in [0, SPREAD * interval)."""
    digest = hashlib.blake2b(f"{namespace}/{name}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") / 2**32 * SPREAD * interval_s


def next_evaluation_at(state: RolloutState, analysis: AnalysisSettings) -> datetime.datetime | None:
    """None while no rollout is active; the distant past before the first evaluation (it is due
    at once); otherwise the model's first slot at least MIN_GAP of an interval after the last."""
    if state.phase not in ACTIVE:
        return None
    if state.last_evaluation_at is None:
        return datetime.datetime.min.replace(tzinfo=datetime.UTC)
    interval = analysis.interval_s
    last = (state.last_evaluation_at - _EPOCH).total_seconds()
    if interval <= 0:
        return state.last_evaluation_at
    k = math.ceil((last + MIN_GAP * interval - analysis.phase_s) / interval)
    return _EPOCH + datetime.timedelta(seconds=k * interval + analysis.phase_s)


def evaluation_due(state: RolloutState, analysis: AnalysisSettings, now: datetime.datetime) -> bool:
    """Analysis runs only while a rollout is active, once per round of the shared clock."""
    at = next_evaluation_at(state, analysis)
    return at is not None and now >= at


def round_start(now: datetime.datetime, analysis: AnalysisSettings) -> float:
    """When the round of an evaluation made at `now` began (seconds since the epoch): the start
    of the round holding the model's latest slot at or before `now`."""
    interval = analysis.interval_s
    t = (now - _EPOCH).total_seconds()
    if interval <= 0:
        return t
    # A slot is stored to the microsecond and may read a hair before its exact time.
    return math.floor((t - analysis.phase_s + _SLACK_S) / interval) * interval
