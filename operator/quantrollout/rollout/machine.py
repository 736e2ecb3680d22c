"""The rollout state machine: `decide(state, inputs) -> Decision`. Pure: the clock, the analysis
verdict, the tiers' readiness and any user action come in as values.

The rules it keeps (and the property tests check):
- it never moves to the next step on an Inconclusive or Fail verdict, nor without a verdict;
  only a Pass at the end of a step's duration, or a user's promote, moves it on, and either
  only once the tiers are ready for the next step's weights (`Inputs.tiers_ready`);
- `failureLimit` consecutive Fails (an Inconclusive does not break the streak, a Pass does) roll
  back, from any step, in one transition, to 0% live and 0% mirror; so does an outage of metrics
  longer than its grace when `onMetricsUnavailable` is rollback, a target tier left with no
  ready pod (crash-looping, say) while it takes traffic, and a user's abort;
- the live weight never goes down except by a rollback (or a new rollout of a new target);
- deciding again with no new verdict changes nothing, so a restart resumes the same step with
  the same weights;
- after a rollback nothing is promoted until the target changes or a user asks to retry;
- an edit the operator refuses (`Inputs.refused`) holds the rollout where it is: Paused, the
  same step and weights, no new rollout even if the target changed (a breach, an outage past its
  grace, a target with no ready pod or an abort still roll back); fixing the edit resumes the
  same step.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, replace
from typing import Literal

from quantrollout.api.durations import format_duration

from .steps import Step

Phase = Literal["Pending", "Progressing", "Paused", "Succeeded", "RolledBack"]
Verdict = Literal["Pass", "Fail", "Inconclusive"]
ActionKind = Literal["promote", "abort", "retry"]


@dataclass(frozen=True)
class RolloutState:
    """What the machine remembers between decisions (kept in the model's status)."""

    rollout_id: str | None = None
    attempt: int = 0
    phase: Phase = "Pending"
    step: int = 0
    target_weight: int = 0
    mirror_percent: int = 0
    step_started_at: datetime.datetime | None = None
    failures: int = 0
    inconclusive_since: datetime.datetime | None = None
    last_evaluation_at: datetime.datetime | None = None
    stages_hash: str | None = None
    rollback_reasons: tuple[str, ...] = ()
    rolled_back_at: datetime.datetime | None = None
    held: str | None = None  # the refused edit that holds the rollout, naming its field


@dataclass(frozen=True)
class Evaluation:
    verdict: Verdict
    reasons: tuple[str, ...] = ()  # Fail: the breaches; Inconclusive: why there was no answer


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    by: str  # who or what asked, for the Event


@dataclass(frozen=True)
class AnalysisSettings:
    interval_s: float
    failure_limit: int
    on_metrics_unavailable: Literal["pause", "rollback"]
    metrics_unavailable_grace_s: float
    phase_s: float = 0.0  # the model's offset into each round of the shared clock (schedule)


@dataclass(frozen=True)
class Inputs:
    rollout_id: str
    steps: tuple[Step, ...]
    stages_hash: str
    analysis: AnalysisSettings
    now: datetime.datetime
    paused: bool = False
    tiers_ready: bool = True
    target_down: str | None = None  # why the target tier has no ready pod, if it has none
    evaluation: Evaluation | None = None
    action: Action | None = None
    refused: str | None = None  # why the operator refuses the spec as edited (field and reason)


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    state: RolloutState
    events: tuple[Event, ...] = ()


ACTIVE: tuple[Phase, ...] = ("Progressing", "Paused")


def _at_step(
    state: RolloutState, steps: tuple[Step, ...], index: int, now: datetime.datetime
) -> RolloutState:
    step = steps[index]
    return replace(
        state,
        step=index,
        target_weight=step.weight,
        mirror_percent=step.mirror,
        step_started_at=now,
        phase="Succeeded" if step.stage == "full" else "Progressing",
    )


def _describe(step: Step) -> str:
    if step.stage == "shadow":
        return f"shadow ({step.mirror}% mirrored, 0% live)"
    return f"{step.stage} ({step.weight}% live)"


def rollback(
    state: RolloutState,
    reasons: tuple[str, ...],
    now: datetime.datetime,
    how: str = "all traffic back to the baseline",
) -> Decision:
    """The rollout rolled back for `reasons`: no live or mirrored traffic on the target, the
    counts cleared, and a RolledBack Event saying `how` and why."""
    rolled = replace(
        state,
        phase="RolledBack",
        target_weight=0,
        mirror_percent=0,
        rollback_reasons=reasons,
        rolled_back_at=now,
        failures=0,
        inconclusive_since=None,
    )
    return Decision(rolled, (Event("Warning", "RolledBack", f"{how}: " + "; ".join(reasons)),))


def _start(state: RolloutState, inputs: Inputs, reason: str, message: str) -> Decision:
    fresh = replace(
        state,
        phase="Pending",
        step=0,
        target_weight=0,
        mirror_percent=0,
        step_started_at=None,
        failures=0,
        inconclusive_since=None,
        last_evaluation_at=None,
        stages_hash=inputs.stages_hash,
        rollback_reasons=(),
        rolled_back_at=None,
        held=None,
    )
    if not inputs.tiers_ready:
        return Decision(
            fresh, (Event("Normal", reason, message + "; waiting for both tiers to be ready"),)
        )
    started = _paused(_at_step(fresh, inputs.steps, 0, inputs.now), inputs.paused)
    return Decision(
        started, (Event("Normal", reason, f"{message}; now at {_describe(inputs.steps[0])}"),)
    )


def _paused(state: RolloutState, paused: bool) -> RolloutState:
    return replace(state, phase="Paused") if paused and state.phase == "Progressing" else state


def _relocate(state: RolloutState, steps: tuple[Step, ...]) -> int:
    """After an edit of the stages: the last step whose weight is at most the live weight (so the
    next promotion can only raise it), in a stage no earlier than where traffic stands."""
    best = 0
    for i, step in enumerate(steps):
        if step.weight <= state.target_weight:
            best = i
    return best


def _live(state: RolloutState) -> str:
    return f"{state.target_weight}% live, {state.mirror_percent}% mirrored"


def _hold(state: RolloutState, inputs: Inputs, refused: str) -> Decision:
    """A refused edit: nothing moves but a rollback; the verdicts are still counted."""
    events: list[Event] = []
    if state.held != refused:
        events.append(
            Event(
                "Warning",
                "EditRefused",
                f"{refused}; traffic held at {_live(state)} until the edit is fixed",
            )
        )
    state = replace(state, held=refused)
    if state.phase not in ACTIVE:
        return Decision(state, tuple(events))
    action = inputs.action
    if action and action.kind == "abort":
        return rollback(state, (f"aborted by {action.by}",), inputs.now)
    if inputs.target_down:
        return rollback(state, (inputs.target_down,), inputs.now)
    counted = _count(state, inputs)
    if isinstance(counted, Decision):
        return counted
    return Decision(replace(counted, phase="Paused"), tuple(events))


def _count(state: RolloutState, inputs: Inputs) -> RolloutState | Decision:
    """Counts the verdict (at most once per evaluation: the caller throttles by time); a
    Decision when it rolls back."""
    now = inputs.now
    ev = inputs.evaluation
    if ev is None:
        return state
    state = replace(state, last_evaluation_at=now)
    if ev.verdict == "Pass":
        return replace(state, failures=0, inconclusive_since=None)
    if ev.verdict == "Fail":
        state = replace(state, failures=state.failures + 1, inconclusive_since=None)
        limit = inputs.analysis.failure_limit
        if state.failures >= limit:
            times = "evaluation" if limit == 1 else f"{limit} consecutive evaluations"
            return rollback(
                state,
                tuple(f"{r} for {times}" for r in ev.reasons) or ("analysis failed",),
                now,
            )
        return state
    since = state.inconclusive_since or now
    state = replace(state, inconclusive_since=since)
    out_for = (now - since).total_seconds()
    analysis = inputs.analysis
    if (
        analysis.on_metrics_unavailable == "rollback"
        and out_for >= analysis.metrics_unavailable_grace_s
    ):
        why = "; ".join(ev.reasons) or "no data"
        return rollback(
            state, (f"metrics unavailable for {format_duration(out_for)} ({why})",), now
        )
    return state


def decide(state: RolloutState, inputs: Inputs) -> Decision:
    # An edit the operator refuses never starts anything: the rollout holds where it is.
    if inputs.refused is not None and state.rollout_id is not None:
        return _hold(state, inputs, inputs.refused)
    if state.held is None:
        return _decide(state, inputs)
    # The edit that held it was fixed: the same step goes on (or, paused in spec, stays paused).
    phase: Phase = "Progressing" if state.phase == "Paused" and not inputs.paused else state.phase
    decided = _decide(replace(state, held=None, phase=phase), inputs)
    fixed = Event("Normal", "EditAccepted", f"the refused edit was fixed ({state.held})")
    return Decision(decided.state, (fixed, *decided.events))


def _decide(state: RolloutState, inputs: Inputs) -> Decision:
    now, steps = inputs.now, inputs.steps
    action = inputs.action

    # A new target (or the first sight of this model) starts a new rollout from the first stage.
    if state.rollout_id != inputs.rollout_id:
        first = state.rollout_id is None
        new = replace(state, rollout_id=inputs.rollout_id, attempt=0)
        if first:
            return _start(new, inputs, "RolloutStarted", "rollout started")
        # Says so, with what it costs: whatever the old target had goes back to the baseline.
        return _start(
            new,
            inputs,
            "NewRollout",
            "what is rolled out changed (the target's artifact, format or precision): a new "
            f"rollout from the first stage; the old target had {_live(state)}",
        )

    if action and action.kind == "abort" and state.phase in ("Pending", *ACTIVE):
        return rollback(state, (f"aborted by {action.by}",), now)
    if action and action.kind == "retry" and state.phase == "RolledBack":
        retried = replace(state, attempt=state.attempt + 1)
        return _start(retried, inputs, "RolloutRetried", f"retry requested by {action.by}")

    if state.phase in ("RolledBack", "Succeeded"):
        return Decision(state)  # final until the target changes (or a retry, above)

    if state.phase == "Pending":
        if inputs.tiers_ready:
            started = _paused(_at_step(state, steps, 0, now), inputs.paused)
            return Decision(
                started,
                (
                    Event(
                        "Normal",
                        "RolloutStarted",
                        f"both tiers ready; now at {_describe(steps[0])}",
                    ),
                ),
            )
        return Decision(state)

    # A target with no ready pod must not keep its share of traffic (or of mirrored requests).
    if inputs.target_down:
        return rollback(state, (inputs.target_down,), now)

    events: list[Event] = []
    if state.stages_hash != inputs.stages_hash:
        index = _relocate(state, steps)
        state = replace(state, stages_hash=inputs.stages_hash, step=index)
        events.append(
            Event(
                "Normal", "StagesChanged", f"stages edited; holding at {state.target_weight}% live"
            )
        )

    counted = _count(state, inputs)
    if isinstance(counted, Decision):
        return counted
    state = counted
    ev = inputs.evaluation

    paused = inputs.paused
    if paused != (state.phase == "Paused"):
        state = replace(state, phase="Paused" if paused else "Progressing")
        events.append(
            Event(
                "Normal",
                "Paused" if paused else "Resumed",
                "spec.rollout.paused is " + str(paused).lower(),
            )
        )

    # A user's promote skips the analysis, never the capacity: the next step's weights move only
    # onto Ready replicas (the caller keeps the request until they are).
    promote_now = action is not None and action.kind == "promote" and inputs.tiers_ready
    if not promote_now:
        if paused or not inputs.tiers_ready or ev is None or ev.verdict != "Pass":
            return Decision(state, tuple(events))
        step = steps[state.step]
        held = (now - state.step_started_at).total_seconds() if state.step_started_at else 0.0
        if step.duration_s is None or held < step.duration_s:
            return Decision(state, tuple(events))
    if state.step + 1 >= len(steps):
        return Decision(state, tuple(events))
    promoted = _paused(_at_step(state, steps, state.step + 1, now), paused)
    why = f"promoted by {action.by}" if promote_now and action else "analysis passed"
    events.append(Event("Normal", "Promoted", f"{why}; now at {_describe(steps[promoted.step])}"))
    if promoted.phase == "Succeeded":
        events.append(
            Event("Normal", "Succeeded", "rollout complete: 100% of live traffic on the target")
        )
    return Decision(promoted, tuple(events))
