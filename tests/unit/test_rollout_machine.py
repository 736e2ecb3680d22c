"""The rollout state machine, exhaustively: tables for the named behaviours, and hypothesis
walking random sequences of verdicts, actions, pauses, readiness and clock ticks through it while
checking the invariants after every transition."""

from __future__ import annotations

import datetime
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from quantrollout.rollout.machine import (
    Action,
    AnalysisSettings,
    Decision,
    Evaluation,
    Inputs,
    RolloutState,
    decide,
)
from quantrollout.rollout.schedule import evaluation_due
from quantrollout.rollout.steps import Step, stages_hash

T0 = datetime.datetime(2026, 11, 23, 10, 0, tzinfo=datetime.UTC)
STEPS = (
    Step("shadow", 0, 100, 60),
    Step("ab", 10, 0, 60, "x-user-id"),
    Step("gradual", 25, 0, 30),
    Step("gradual", 50, 0, 30),
    Step("gradual", 75, 0, 30),
    Step("full", 100, 0, None),
)
ANALYSIS = AnalysisSettings(
    interval_s=10, failure_limit=2, on_metrics_unavailable="pause", metrics_unavailable_grace_s=60
)
PASS, FAIL, NODATA = (
    Evaluation("Pass"),
    Evaluation("Fail", ("repetition-rate 0.21 > 0.15",)),
    Evaluation("Inconclusive", ("no series",)),
)


def inputs(now: datetime.datetime, **kw: object) -> Inputs:
    base: dict[str, object] = {
        "rollout_id": "r1", "steps": STEPS, "stages_hash": stages_hash(STEPS), "analysis": ANALYSIS, "now": now,
    }  # fmt: skip
    return Inputs(**{**base, **kw})  # type: ignore[arg-type]


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def started() -> RolloutState:
    return decide(RolloutState(), inputs(T0)).state


def test_first_sight_starts_at_shadow() -> None:
    d = decide(RolloutState(), inputs(T0))
    assert (d.state.phase, d.state.step, d.state.target_weight, d.state.mirror_percent) == (
        "Progressing",
        0,
        0,
        100,
    )
    assert d.events[0].reason == "RolloutStarted"


def test_waits_for_tiers_before_starting() -> None:
    d = decide(RolloutState(), inputs(T0, tiers_ready=False))
    assert (d.state.phase, d.state.target_weight, d.state.mirror_percent) == ("Pending", 0, 0)
    d = decide(d.state, inputs(at(5), tiers_ready=True))
    assert (d.state.phase, d.state.mirror_percent) == ("Progressing", 100)


def test_promotes_only_on_a_pass_after_the_duration() -> None:
    s = started()
    assert decide(s, inputs(at(30), evaluation=PASS)).state.step == 0  # too early
    assert decide(s, inputs(at(60), evaluation=NODATA)).state.step == 0
    assert decide(s, inputs(at(60), evaluation=None)).state.step == 0
    d = decide(s, inputs(at(60), evaluation=PASS))
    assert (d.state.step, d.state.target_weight, d.state.mirror_percent) == (1, 10, 0)
    assert d.events[-1].message == "analysis passed; now at ab (10% live)"


def test_walks_to_full_and_succeeds() -> None:
    s, t = started(), 0.0
    while s.phase != "Succeeded":
        t += 60
        s = decide(s, inputs(at(t), evaluation=PASS)).state
    assert (s.step, s.target_weight, s.mirror_percent) == (5, 100, 0)
    assert not evaluation_due(s, ANALYSIS, at(t + 1000))


def test_failure_limit_consecutive_fails_roll_back_in_one_transition() -> None:
    s = started()
    s = decide(s, inputs(at(60), evaluation=PASS)).state
    s = decide(s, inputs(at(130), evaluation=PASS)).state
    assert s.target_weight == 25
    s = decide(s, inputs(at(140), evaluation=FAIL)).state
    assert (s.phase, s.target_weight, s.failures) == ("Progressing", 25, 1)
    s = decide(
        s, inputs(at(145), evaluation=NODATA)
    ).state  # an Inconclusive does not break the streak
    d = decide(s, inputs(at(150), evaluation=FAIL))
    assert (d.state.phase, d.state.target_weight, d.state.mirror_percent) == ("RolledBack", 0, 0)
    assert d.state.rollback_reasons == (
        "repetition-rate 0.21 > 0.15 for 2 consecutive evaluations",
    )
    assert d.events[0].type == "Warning"


def test_a_pass_breaks_the_failure_streak() -> None:
    s = decide(started(), inputs(at(10), evaluation=FAIL)).state
    s = decide(s, inputs(at(20), evaluation=PASS)).state
    s = decide(s, inputs(at(30), evaluation=FAIL)).state
    assert (s.phase, s.failures) == ("Progressing", 1)


def test_metrics_outage_pauses_by_default_and_rolls_back_by_policy() -> None:
    s = started()
    for t in range(10, 400, 10):
        s = decide(s, inputs(at(t), evaluation=NODATA)).state
    assert (s.phase, s.mirror_percent, s.step) == ("Progressing", 100, 0)
    policy = replace(ANALYSIS, on_metrics_unavailable="rollback")
    s = started()
    s = decide(s, inputs(at(10), evaluation=NODATA, analysis=policy)).state
    assert s.phase == "Progressing"
    d = decide(s, inputs(at(70), evaluation=NODATA, analysis=policy))
    assert d.state.phase == "RolledBack"
    assert d.state.rollback_reasons == ("metrics unavailable for 1m (no series)",)


def test_nothing_is_promoted_after_rollback_until_retry_or_new_target() -> None:
    s = decide(started(), inputs(at(10), action=Action("abort", "kubectl (alice)"))).state
    assert s.rollback_reasons == ("aborted by kubectl (alice)",)
    for t in (100, 200):
        assert decide(s, inputs(at(t), evaluation=PASS)).state == s
        assert decide(s, inputs(at(t), action=Action("promote", "bob"))).state == s
    retried = decide(s, inputs(at(300), action=Action("retry", "bob"))).state
    assert (retried.phase, retried.step, retried.attempt, retried.rollback_reasons) == (
        "Progressing",
        0,
        1,
        (),
    )
    renewed = decide(s, inputs(at(300), rollout_id="r2")).state
    assert (renewed.phase, renewed.rollout_id, renewed.mirror_percent) == ("Progressing", "r2", 100)


def test_a_new_target_restarts_from_shadow() -> None:
    s = started()
    s = decide(s, inputs(at(60), evaluation=PASS)).state
    assert s.target_weight == 10
    d = decide(s, inputs(at(70), rollout_id="r2"))
    assert (d.state.step, d.state.target_weight, d.state.mirror_percent) == (0, 0, 100)
    assert d.events[0].reason == "NewRollout"
    assert d.events[0].message.startswith(
        "what is rolled out changed (the target's artifact, format or precision): a new rollout "
        "from the first stage; the old target had 10% live, 0% mirrored"
    )


def test_a_target_with_no_ready_pod_rolls_back_from_any_active_step() -> None:
    down = "target tier int4-awq has no ready pod (0/2 ready)"
    s = started()
    for step in range(len(STEPS) - 1):
        at_step = replace(
            s, step=step, target_weight=STEPS[step].weight, mirror_percent=STEPS[step].mirror
        )
        for phase in ("Progressing", "Paused"):
            d = decide(
                replace(at_step, phase=phase), inputs(at(70), target_down=down, evaluation=PASS)
            )  # type: ignore[arg-type]
            assert (d.state.phase, d.state.target_weight, d.state.mirror_percent) == (
                "RolledBack",
                0,
                0,
            )
            assert d.state.rollback_reasons == (down,)
            assert d.events[0].reason == "RolledBack"
    # Before it takes traffic it is only waited for; once rolled back, nothing changes.
    pending = decide(RolloutState(), inputs(T0, tiers_ready=False, target_down=down)).state
    assert decide(pending, inputs(at(5), tiers_ready=False, target_down=down)).state == pending
    rolled = decide(s, inputs(at(5), target_down=down)).state
    assert decide(rolled, inputs(at(9), target_down=down, tiers_ready=True)).state == rolled


def test_pause_holds_but_a_breach_still_rolls_back() -> None:
    s = started()
    s = decide(s, inputs(at(60), evaluation=PASS, paused=True)).state
    assert (s.phase, s.step) == ("Paused", 0)
    s = decide(s, inputs(at(70), evaluation=FAIL, paused=True)).state
    s = decide(s, inputs(at(80), evaluation=FAIL, paused=True)).state
    assert s.phase == "RolledBack"


def test_promote_action_moves_one_step_at_once() -> None:
    d = decide(started(), inputs(at(1), action=Action("promote", "annotation by carol")))
    assert (d.state.step, d.state.target_weight) == (1, 10)
    assert d.events[-1].message == "promoted by annotation by carol; now at ab (10% live)"


def test_stage_edit_mid_rollout_never_lowers_the_weight() -> None:
    s = started()
    for t in (60, 130, 170, 210):
        s = decide(s, inputs(at(t), evaluation=PASS)).state
    assert s.target_weight == 75
    edited = (
        Step("shadow", 0, 100, 60),
        Step("gradual", 60, 0, 30),
        Step("gradual", 90, 0, 30),
        Step("full", 100, 0, None),
    )
    d = decide(s, inputs(at(220), steps=edited, stages_hash=stages_hash(edited)))
    assert d.state.target_weight == 75
    d2 = decide(
        d.state, inputs(at(260), steps=edited, stages_hash=stages_hash(edited), evaluation=PASS)
    )
    assert d2.state.target_weight == 90


def test_evaluations_are_throttled_by_time() -> None:
    s = decide(started(), inputs(at(10), evaluation=PASS)).state
    assert not evaluation_due(s, ANALYSIS, at(19))
    assert evaluation_due(s, ANALYSIS, at(20))


# --- property tests -------------------------------------------------------------------------

Tick = tuple[float, Evaluation | None, Action | None, bool, bool]
ticks = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=90),
        st.sampled_from([None, PASS, PASS, PASS, FAIL, NODATA]),
        st.sampled_from(
            [
                None,
                None,
                None,
                None,
                Action("promote", "p"),
                Action("abort", "a"),
                Action("retry", "r"),
            ]
        ),
        st.booleans(),  # paused
        st.sampled_from([True, True, True, False]),  # tiers ready
    ),
    max_size=60,
)
policies = st.sampled_from(["pause", "rollback"])


@settings(max_examples=400, deadline=None)
@given(ticks, policies, st.integers(min_value=1, max_value=4))
def test_invariants_hold_on_every_transition(seq: list[Tick], policy: str, limit: int) -> None:
    analysis = replace(ANALYSIS, on_metrics_unavailable=policy, failure_limit=limit)  # type: ignore[arg-type]
    state, now, fails_in_a_row = RolloutState(), T0, 0
    for gap, ev, action, paused, ready in seq:
        now += datetime.timedelta(seconds=gap)
        inp = inputs(
            now, evaluation=ev, action=action, paused=paused, tiers_ready=ready, analysis=analysis
        )
        d: Decision = decide(state, inp)
        new = d.state
        promoted_by_user = action is not None and action.kind == "promote"
        retried = action is not None and action.kind == "retry"
        started_now = state.phase == "Pending" and new.phase in ("Progressing", "Succeeded")

        # Never advances without a Pass (or a user's promote, retry, or the initial start).
        if new.step > state.step and not (promoted_by_user or started_now):
            assert ev is not None
            assert ev.verdict == "Pass"
        # Weights never go down except by rollback or a retry (which starts over at shadow).
        if new.phase != "RolledBack" and not retried and state.phase != "RolledBack":
            assert new.target_weight >= state.target_weight
        # A rollback is one transition to 0% live and 0% mirror.
        if new.phase == "RolledBack":
            assert (new.target_weight, new.mirror_percent) == (0, 0)
            assert new.rollback_reasons
        # After a rollback nothing is promoted unless a user retries.
        if state.phase == "RolledBack" and not retried:
            assert new == state
        # failureLimit consecutive Fails always roll back.
        if state.phase in ("Progressing", "Paused") and ev is not None:
            fails_in_a_row = (
                fails_in_a_row + 1
                if ev.verdict == "Fail"
                else (0 if ev.verdict == "Pass" else fails_in_a_row)
            )
            if ev.verdict == "Fail" and fails_in_a_row >= limit:
                assert new.phase == "RolledBack"
        if new.phase != state.phase and new.phase in ("RolledBack", "Pending"):
            fails_in_a_row = 0
        # Deciding again with nothing new changes nothing (restart safety).
        again = decide(new, replace(inp, evaluation=None, action=None))
        assert again.state == new
        assert again.events == ()
        state = new
