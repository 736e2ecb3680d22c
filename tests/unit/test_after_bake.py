"""After full: the bake and the watch that follows it (rollout/after_bake.py), with the real
state machine for every other phase."""

from __future__ import annotations

import datetime
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantrollout.api.spec import QuantizedModelSpec
from quantrollout.rollout.after_bake import AfterBake, after_bake_of, next_watch_at, watch
from quantrollout.rollout.machine import (
    Action,
    AnalysisSettings,
    Evaluation,
    Inputs,
    RolloutState,
    decide,
)
from quantrollout.rollout.schedule import next_evaluation_at
from quantrollout.rollout.steps import Step, stages_hash

T0 = datetime.datetime(2026, 11, 23, 10, 0, tzinfo=datetime.UTC)
STEPS = (Step("ab", 10, 0, 60), Step("full", 100, 0, None))
ANALYSIS = AnalysisSettings(
    interval_s=30,
    failure_limit=2,
    on_metrics_unavailable="rollback",
    metrics_unavailable_grace_s=60,
)
ROLLBACK = AfterBake(bake_s=3600, interval_s=300, on_breach="rollback")
ALERT = replace(ROLLBACK, on_breach="alert")
FULL = RolloutState(
    rollout_id="r1", phase="Succeeded", step=1, target_weight=100, step_started_at=T0,
    stages_hash=stages_hash(STEPS), last_evaluation_at=T0,
)  # fmt: skip
FAIL = Evaluation("Fail", ("repetition-rate 0.21 > 0.15",))
PASS, NODATA = Evaluation("Pass"), Evaluation("Inconclusive", ("no series",))


def at(minutes: float) -> datetime.datetime:
    return T0 + datetime.timedelta(minutes=minutes)


def inputs(now: datetime.datetime, **kw: object) -> Inputs:
    base: dict[str, object] = {
        "rollout_id": "r1", "steps": STEPS, "stages_hash": stages_hash(STEPS), "analysis": ANALYSIS, "now": now,
    }  # fmt: skip
    return Inputs(**{**base, **kw})  # type: ignore[arg-type]


def test_a_breach_during_the_bake_rolls_back_at_once() -> None:
    first = watch(FULL, inputs(at(10), evaluation=FAIL), ALERT).decision.state
    assert (first.phase, first.failures) == ("Succeeded", 1)
    w = watch(first, inputs(at(10.5), evaluation=FAIL), ALERT)  # alert applies after the bake only
    assert w.decision.state.phase == "RolledBack"
    assert w.decision.state.target_weight == 0
    assert w.decision.state.rollback_reasons == (
        "repetition-rate 0.21 > 0.15 for 2 consecutive evaluations (during the bake)",
    )
    (event,) = w.decision.events
    assert (event.type, event.reason) == ("Warning", "RolledBack")
    assert event.message.startswith("all traffic back to the baseline")


def test_after_the_bake_a_breach_rolls_back_as_capacity_comes() -> None:
    state = watch(FULL, inputs(at(70), evaluation=FAIL), ROLLBACK).decision.state
    w = watch(state, inputs(at(75), evaluation=FAIL), ROLLBACK)
    assert w.decision.state.phase == "RolledBack"
    assert w.decision.state.rolled_back_at == at(75)
    assert "(after the bake)" in w.decision.state.rollback_reasons[0]
    assert "as its replicas become Ready" in w.decision.events[0].message


def test_after_the_bake_alert_only_alerts_and_traffic_stays() -> None:
    state = FULL
    alerts = []
    for minute in (70, 75, 80, 85):
        w = watch(state, inputs(at(minute), evaluation=FAIL), ALERT)
        state = w.decision.state
        assert (state.phase, state.target_weight) == ("Succeeded", 100)
        alerts.append(w.alert)
    assert [a is not None for a in alerts] == [False, True, False, True]  # once per streak
    assert alerts[1] is not None
    assert "afterBake: alert" in alerts[1]
    assert "repetition-rate 0.21 > 0.15 for 2 consecutive evaluations" in alerts[1]
    assert [e.reason for e in watch(replace(state, failures=1), inputs(at(90), evaluation=FAIL), ALERT).decision.events] == ["BreachAfterBake"]  # fmt: skip


def test_missing_data_after_full_neither_breaks_nor_extends_a_streak() -> None:
    state = watch(FULL, inputs(at(70), evaluation=FAIL), ROLLBACK).decision.state
    for minute in (75, 80, 85):  # an outage far past its grace: no rollback after full
        state = watch(state, inputs(at(minute), evaluation=NODATA), ROLLBACK).decision.state
        assert (state.phase, state.failures, state.last_evaluation_at) == (
            "Succeeded",
            1,
            at(minute),
        )
    assert (
        watch(state, inputs(at(90), evaluation=FAIL), ROLLBACK).decision.state.phase == "RolledBack"
    )
    assert watch(state, inputs(at(90), evaluation=PASS), ROLLBACK).decision.state.failures == 0


def test_an_abort_at_full_rolls_back_and_other_actions_change_nothing() -> None:
    w = watch(FULL, inputs(at(200), action=Action("abort", "kubectl")), ALERT)
    assert w.decision.state.phase == "RolledBack"
    assert w.decision.state.rollback_reasons == ("aborted by kubectl",)
    for kind in ("promote", "retry"):
        same = watch(FULL, inputs(at(200), action=Action(kind, "kubectl")), ALERT)  # type: ignore[arg-type]
        assert same.decision.state == FULL
        assert same.decision.events == ()


def test_a_target_with_no_ready_pod_at_full_rolls_back_even_when_alerting_only() -> None:
    down = "target tier int4-awq has no ready pod (0/4 ready)"
    w = watch(FULL, inputs(at(200), target_down=down), ALERT)
    assert w.decision.state.phase == "RolledBack"
    assert w.decision.state.rollback_reasons == (down,)


def test_no_evaluation_changes_nothing() -> None:
    assert watch(FULL, inputs(at(500)), ROLLBACK).decision.state == FULL


def test_a_new_target_at_full_starts_a_new_rollout_as_the_machine_does() -> None:
    new = inputs(at(500), rollout_id="r2")
    assert watch(FULL, new, ROLLBACK).decision == decide(FULL, new)


@settings(max_examples=200, deadline=None)
@given(
    phase=st.sampled_from(["Pending", "Progressing", "Paused", "RolledBack"]),
    verdict=st.sampled_from([None, "Pass", "Fail", "Inconclusive"]),
    failures=st.integers(0, 3),
)
def test_every_other_phase_is_the_machines(phase: str, verdict: str | None, failures: int) -> None:
    state = replace(FULL, phase=phase, step=0, target_weight=10, failures=failures)  # type: ignore[arg-type]
    i = inputs(at(1), evaluation=Evaluation(verdict) if verdict else None)  # type: ignore[arg-type]
    assert watch(state, i, ROLLBACK).decision == decide(state, i)


def test_evaluations_at_full_run_at_the_rollout_interval_during_the_bake_then_slower() -> None:
    during = next_watch_at(replace(FULL, last_evaluation_at=at(10)), ANALYSIS, ROLLBACK)
    assert during is not None
    assert at(10.25) <= during <= at(10.75)  # every 30 s on the shared clock
    after = next_watch_at(replace(FULL, last_evaluation_at=at(61)), ANALYSIS, ROLLBACK)
    assert after is not None
    assert at(63.5) <= after <= at(66.5)  # every 5 min
    last_slot = next_watch_at(replace(FULL, last_evaluation_at=at(59.5)), ANALYSIS, ROLLBACK)
    assert last_slot == at(60)  # the bake's last slot is still taken
    past = next_watch_at(replace(FULL, last_evaluation_at=at(59.9)), ANALYSIS, ROLLBACK)
    assert past is not None
    assert past >= at(62)  # the next slot is after the bake: the slow clock
    active = replace(FULL, phase="Progressing", step=0, last_evaluation_at=at(10))
    assert next_watch_at(active, ANALYSIS, ROLLBACK) == next_evaluation_at(active, ANALYSIS)
    assert next_watch_at(replace(FULL, phase="RolledBack"), ANALYSIS, ROLLBACK) is None


@pytest.mark.parametrize(
    ("rollout", "expected"),
    [
        (None, AfterBake(3600, 300, "rollback")),
        ({"bakeDuration": "2h", "afterBakeInterval": "1m", "afterBake": "alert"}, AfterBake(7200, 60, "alert")),
    ],
)  # fmt: skip
def test_settings_from_the_spec(rollout: dict[str, str] | None, expected: AfterBake) -> None:
    raw: dict[str, object] = {
        "model": "m",
        "baseline": {"artifact": "s3://b"},
        "target": {"name": "int4-awq", "artifact": "s3://t", "precision": "int4", "format": "awq"},
    }
    if rollout:
        raw["rollout"] = rollout
    assert after_bake_of(QuantizedModelSpec.model_validate(raw)) == expected
