"""After full: the bake, and the watch that follows it. Pure.

The state machine (`machine.decide`) treats full (phase Succeeded) as final: nothing is promoted
any more. This module keeps judging the target there, so a quantized tier that degrades after
full is still caught, while the baseline's GPUs are given back:

- during the bake (`spec.rollout.bakeDuration` from reaching full) analysis runs at the rollout's
  own interval, and `failureLimit` consecutive Fails roll back as before full: the baseline still
  has its rollback reserve (`rollout.capacity`), so traffic is back at once;
- after the bake it runs every `spec.rollout.afterBakeInterval`, and `failureLimit` consecutive
  Fails either roll back (`afterBake: rollback`: the capacity plan scales the baseline up from
  `standbyReplicas` and moves traffic back as its replicas become Ready, saying so) or only alert
  (`afterBake: alert`: a Warning Event `BreachAfterBake` each time a streak completes, and
  `Watch.alert` for the Degraded condition; traffic stays on the target);
- a user's abort rolls back from full too (the on-call's way back), and so does a target left
  with no ready pod (it answers every request), whatever `afterBake` says.

Missing data is never a breach after full either: an Inconclusive neither breaks nor extends a
streak, and `onMetricsUnavailable` does not apply (nothing is promoted any more).

How a pass uses it: for a model at Succeeded call `watch` instead of `machine.decide` (it calls
`decide` itself for every other phase), and `next_watch_at` instead of
`schedule.next_evaluation_at` to know when an evaluation is due.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, replace
from typing import Literal

from quantrollout import defaults
from quantrollout.api.durations import parse_duration
from quantrollout.api.spec import QuantizedModelSpec

from .machine import AnalysisSettings, Decision, Event, Inputs, RolloutState, decide, rollback
from .schedule import next_evaluation_at


@dataclass(frozen=True)
class AfterBake:
    bake_s: float
    interval_s: float  # afterBakeInterval: between evaluations once the bake is over
    on_breach: Literal["rollback", "alert"]


def after_bake_of(spec: QuantizedModelSpec) -> AfterBake:
    rollout = spec.rollout
    return AfterBake(
        bake_s=parse_duration((rollout and rollout.bake_duration) or defaults.BAKE_DURATION),
        interval_s=parse_duration(
            (rollout and rollout.after_bake_interval) or defaults.AFTER_BAKE_INTERVAL
        ),
        on_breach=(rollout and rollout.after_bake) or defaults.AFTER_BAKE,  # type: ignore[arg-type]
    )


@dataclass(frozen=True)
class Watch:
    decision: Decision
    alert: str | None = None  # afterBake alert: the breach a streak just completed, in words


def bake_ends_at(state: RolloutState, after: AfterBake) -> datetime.datetime | None:
    """When the bake is over (full is reached when the last step starts)."""
    if state.phase != "Succeeded" or state.step_started_at is None:
        return None
    return state.step_started_at + datetime.timedelta(seconds=after.bake_s)


def baking(state: RolloutState, after: AfterBake, now: datetime.datetime) -> bool:
    end = bake_ends_at(state, after)
    return end is not None and now < end


def watch(state: RolloutState, inputs: Inputs, after: AfterBake) -> Watch:
    """`machine.decide`, extended to a rollout at full: see the module docstring."""
    if state.phase != "Succeeded" or state.rollout_id != inputs.rollout_id:
        return Watch(decide(state, inputs))
    now, action = inputs.now, inputs.action
    in_bake = baking(state, after, now)
    if action is not None and action.kind == "abort":
        return Watch(_rollback(state, (f"aborted by {action.by}",), now, in_bake))
    if inputs.target_down:
        # Every request is on the target: with no pod to answer, waiting for a streak (or
        # only alerting) would leave users with errors. Back to the baseline, whatever afterBake.
        return Watch(_rollback(state, (inputs.target_down,), now, in_bake))
    ev = inputs.evaluation
    if ev is None or ev.verdict == "Inconclusive":
        at = now if ev is not None else state.last_evaluation_at
        return Watch(Decision(replace(state, last_evaluation_at=at)))
    state = replace(state, last_evaluation_at=now)
    if ev.verdict == "Pass":
        return Watch(Decision(replace(state, failures=0, inconclusive_since=None)))
    failures = state.failures + 1
    limit = inputs.analysis.failure_limit
    if failures < limit:
        return Watch(Decision(replace(state, failures=failures)))
    times = "evaluation" if limit == 1 else f"{limit} consecutive evaluations"
    reasons = tuple(f"{r} for {times}" for r in ev.reasons) or ("analysis failed",)
    when = "during the bake" if in_bake else "after the bake"
    if in_bake or after.on_breach == "rollback":
        return Watch(_rollback(state, tuple(f"{r} ({when})" for r in reasons), now, in_bake))
    message = f"breach at full {when} (afterBake: alert, traffic stays): " + "; ".join(reasons)
    alerted = replace(state, failures=0)
    return Watch(Decision(alerted, (Event("Warning", "BreachAfterBake", message),)), message)


def _rollback(
    state: RolloutState, reasons: tuple[str, ...], now: datetime.datetime, in_bake: bool
) -> Decision:
    how = (
        "all traffic back to the baseline"
        if in_bake
        else "traffic moves back to the baseline as its replicas become Ready"
    )
    return rollback(state, reasons, now, how)


def next_watch_at(
    state: RolloutState, analysis: AnalysisSettings, after: AfterBake
) -> datetime.datetime | None:
    """When the next evaluation is due: `schedule.next_evaluation_at` while a rollout is
    active; at full, on the same shared clock at the rollout's interval during the bake and
    at `afterBakeInterval` after it (the model's offset scaled to that interval)."""
    if state.phase != "Succeeded":
        return next_evaluation_at(state, analysis)
    end = bake_ends_at(state, after)
    last = state.last_evaluation_at
    judging = replace(state, phase="Progressing")  # the schedule runs for active rollouts only
    if end is not None and (last is None or last < end):
        at = next_evaluation_at(judging, analysis)
        if at is not None and at <= end:
            return at
    interval = after.interval_s
    share = analysis.phase_s / analysis.interval_s if analysis.interval_s > 0 else 0.0
    slow = replace(analysis, interval_s=interval, phase_s=share * interval)
    return next_evaluation_at(judging, slow)
