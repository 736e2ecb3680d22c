"""The phase -> actions table (`rollout/actions.py`) against the state machine itself: an action
the table accepts changes what `decide` does, and one it refuses changes nothing, in every phase,
with and without tiers ready, paused or not, at every step."""

from __future__ import annotations

import datetime
from dataclasses import replace
from typing import get_args

import pytest

from quantrollout.rollout.actions import ACTS_IN, ONE_SHOT, PHASES, offered, refusal
from quantrollout.rollout.machine import Action, Inputs, Phase, RolloutState, decide
from quantrollout.rollout.steps import stages_hash

from .test_rollout_machine import ANALYSIS, STEPS, T0

NOW = T0 + datetime.timedelta(seconds=5)


def state_in(phase: Phase, step: int) -> RolloutState:
    """A rollout of `r1` in `phase` at `step`, as the machine would have left it."""
    s = STEPS[min(step, len(STEPS) - 1)]
    base = RolloutState(
        rollout_id="r1", phase=phase, step=step, target_weight=s.weight, mirror_percent=s.mirror,
        step_started_at=T0, stages_hash=stages_hash(STEPS),
    )  # fmt: skip
    if phase == "Pending":
        return replace(base, step=0, target_weight=0, mirror_percent=0, step_started_at=None)
    if phase == "RolledBack":
        return replace(base, target_weight=0, mirror_percent=0, rollback_reasons=("breach",))
    return base


@pytest.mark.parametrize("ready", [True, False])
@pytest.mark.parametrize("paused", [True, False])
@pytest.mark.parametrize("step", [0, 2, len(STEPS) - 2])
@pytest.mark.parametrize("phase", get_args(Phase))
@pytest.mark.parametrize("kind", ONE_SHOT)
def test_an_accepted_action_acts_and_a_refused_one_does_nothing(
    kind: str, phase: Phase, step: int, paused: bool, ready: bool
) -> None:
    if phase == "Succeeded":
        step = len(STEPS) - 1
    state = state_in(phase, step)
    common = {"rollout_id": "r1", "steps": STEPS, "stages_hash": stages_hash(STEPS),
              "analysis": ANALYSIS, "now": NOW, "paused": paused, "tiers_ready": ready}  # fmt: skip
    without = decide(state, Inputs(**common))  # type: ignore[arg-type]
    with_action = decide(state, Inputs(**common, action=Action(kind, "a test")))  # type: ignore[arg-type]
    acted = with_action != without
    if kind == "promote" and not ready and refusal(kind, phase) is None:
        # An accepted promote waits for the next step's replicas to be Ready (its annotation
        # stays, see pass_.plan): it acts once they are, never onto missing capacity.
        assert not acted, (kind, phase, with_action, without)
        return
    assert acted == (refusal(kind, phase) is None), (kind, phase, with_action, without)


def test_refusals_name_the_action_and_the_phase() -> None:
    assert refusal("promote", "RolledBack") == (
        "promote acts only when the phase is Progressing or Paused, "
        "and the rollout was rolled back (retry it first)"
    )
    assert refusal("retry", None) == (
        "retry acts only when the phase is RolledBack, and no rollout has started yet"
    )
    assert (
        refusal("promte", "Progressing") == "unknown action 'promte': one of promote, abort, retry"
    )
    assert all(refusal(a, p) is None for a, phases in ACTS_IN.items() for p in phases)


def test_offered_pause_and_resume_follow_spec_rollout_paused() -> None:
    for phase in PHASES:
        assert offered(phase, paused=True)["resume"]
        assert not offered(phase, paused=True)["pause"]
        assert not offered(phase, paused=False)["resume"]
    assert [p for p in PHASES if offered(p, paused=False)["pause"]] == [
        None, "Pending", "Progressing", "Paused",
    ]  # fmt: skip
