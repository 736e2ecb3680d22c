"""Mixed precision's traffic and capacity decisions (`rollout/mixed.py`), checked over generated
policies, class mixes, weights and Ready replicas: the class split the router gets, each tier's
load the planner sizes, the round trip through status, per-class judging, and that weight never
moves onto a tier before it has Ready replicas for it nor off one before it is scaled down."""

from __future__ import annotations

import datetime
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from quantrollout.analysis.class_stats import ClassObservation
from quantrollout.api.durations import format_duration, parse_duration
from quantrollout.api.resolve import all_tiers
from quantrollout.api.spec import QuantizedModelSpec
from quantrollout.rollout import capacity
from quantrollout.rollout import mixed as mx
from quantrollout.rollout.machine import Evaluation
from quantrollout.rollout.policy import Choice, ShadowStats
from quantrollout.router.classify import CLASSES

BASE = "fp16"
TARGETS = ("fp8", "int4-awq")
NOW = datetime.datetime(2027, 1, 1, tzinfo=datetime.UTC)
# precision order, lowest first: a fallback is always higher than the tier it leaves
ORDER = {"int4-awq": 0, "fp8": 1, BASE: 2}


@st.composite
def policies(draw: st.DrawFn, with_mix: bool | None = None) -> mx.Mixed:
    choices = {}
    for cls in CLASSES:
        tier = draw(st.sampled_from((BASE, *TARGETS)))
        higher = [t for t in TARGETS if ORDER[t] > ORDER[tier]] if tier != BASE else []
        fallbacks = tuple(higher[:1]) if higher and draw(st.booleans()) else ()
        choices[cls] = Choice(tier, f"{tier}: drawn", fallbacks, 0.97, 200)
    mix: dict[str, float] = {}
    if with_mix if with_mix is not None else draw(st.booleans()):
        raw = {c: draw(st.floats(0.0, 1.0)) for c in CLASSES}
        total = sum(raw.values())
        if total > 0:
            mix = {c: v / total for c, v in raw.items()}
    verdicts = {c: draw(st.sampled_from(["Pass", "Fail", "Inconclusive"])) for c in CLASSES}
    return mx.Mixed("r-0", draw(st.sampled_from(["learned", "hand"])), choices, mix, verdicts)


weights = st.integers(0, 100)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(CLASSES), st.floats(0.0, 1.0), min_size=1))
def test_percents_sum_to_100_and_stay_within_one_point(fractions: dict[str, float]) -> None:
    total = sum(fractions.values())
    out = mx.percents(fractions)
    if total <= 0:
        assert out == {}
        return
    assert sum(out.values()) == 100
    for k, v in fractions.items():
        assert abs(out.get(k, 0) - 100 * v / total) < 1 + 1e-9


@settings(max_examples=400, deadline=None)
@given(policies(), weights, st.sampled_from([0, 10, 100]), st.booleans())
def test_tier_loads_cover_every_class_share_and_no_tier_without_a_class(
    m: mx.Mixed, weight: int, mirror: int, reserve: bool
) -> None:
    t = mx.tier_traffic(m, weight, mirror, BASE, TARGETS, reserve)
    assert sum(t.live.values()) == 100
    used = {ch.tier for ch in m.choices.values()}
    fallbacks = {ch.fallbacks[0] for ch in m.choices.values() if ch.fallbacks and ch.tier != BASE}
    for tier in TARGETS:
        if weight and tier not in used and not (reserve and tier in fallbacks):
            assert t.load(tier) == min(100, mirror), "a tier no class uses carries nothing"
        if mirror:
            assert t.mirror.get(tier, 0) >= mirror, "in shadow every tier gets the copies"
    if weight == 0:
        assert t.live == {BASE: 100}
        return
    shares = {c: (ch.tier, weight if ch.tier != BASE else 100) for c, ch in m.choices.items()}
    for tier in TARGETS:
        if m.mix:
            exact = 100 * sum(m.mix[c] * w / 100 for c, (x, w) in shares.items() if x == tier)
            assert t.load(tier) >= min(100, exact - 1 + 1e-9) - 1e-9 or t.load(tier) == 100
        elif tier in used:
            assert t.load(tier) >= weight, "without a mix: the most the tier could get"
    if not m.mix:
        assert t.load(BASE) == 100


@settings(max_examples=300, deadline=None)
@given(policies(), weights)
def test_every_class_sends_the_step_weight_to_its_tier_and_the_rest_to_the_baseline(
    m: mx.Mixed, weight: int
) -> None:
    entries = mx.traffic_entries(m, weight, BASE)
    assert sorted(e["class"] for e in entries) == sorted(CLASSES)
    for e in entries:
        assert e["rest"] == BASE
        assert e["tier"] == m.choices[e["class"]].tier
        assert e["weight"] == (100 if e["tier"] == BASE else weight)
    assert mx.traffic_entries(None, weight, BASE) == []


@settings(max_examples=200, deadline=None)
@given(policies(), weights)
def test_the_policy_round_trips_through_status(m: mx.Mixed, weight: int) -> None:
    rows, meta = mx.to_status(m, weight, BASE)
    back = mx.from_status({"classes": rows, "policy": meta})
    assert back is not None
    assert back.choices == m.choices
    assert back.verdicts == m.verdicts
    assert back.source == m.source
    assert back.rollout == m.rollout
    assert back.mix.keys() == m.mix.keys()
    assert all(abs(back.mix[c] - m.mix[c]) <= 5e-5 for c in m.mix)


@settings(max_examples=300, deadline=None)
@given(
    policies(),
    st.dictionaries(
        st.sampled_from(CLASSES), st.sampled_from(["Pass", "Fail", "Inconclusive"]), max_size=6
    ),
)
def test_judging_moves_only_the_failing_classes_and_only_up_in_precision(
    m: mx.Mixed, verdicts: dict[str, str]
) -> None:
    stats = {
        (c, m.choices[c].tier): ShadowStats(200, 0.97, v, (f"{c} broke",))  # type: ignore[arg-type]
        for c, v in verdicts.items()
    }
    after, events = mx.judge(m, ClassObservation(stats, {}), BASE)
    moved = {c for c in CLASSES if after.choices[c].tier != m.choices[c].tier}
    failing = {c for c, v in verdicts.items() if v == "Fail" and m.choices[c].tier != BASE}
    assert moved == failing
    for c in moved:
        assert ORDER[after.choices[c].tier] > ORDER[m.choices[c].tier]
        assert after.verdicts[c] == "Fail"
    assert len(events) == len(moved)
    assert all(e.message.startswith("class ") and " breached on " in e.message for e in events)


@settings(max_examples=200, deadline=None)
@given(policies(), st.sampled_from(["shadow", "ab", "gradual", "full"]), st.booleans())
def test_missing_per_class_data_never_passes_a_step(
    m: mx.Mixed, stage: str, unavailable: bool
) -> None:
    obs = ClassObservation({}, {}, "Prometheus is down" if unavailable else None)
    verdict = mx.evaluation(stage, obs, [Evaluation("Pass")], m, BASE)
    on_quantized = any(ch.tier != BASE for ch in m.choices.values())
    if unavailable or (stage != "shadow" and on_quantized):
        assert verdict.verdict == "Inconclusive"
    # in shadow the policy compile is the judgement (the observer runs no tier-wide rules)
    expected = "Inconclusive" if unavailable else "Pass" if stage == "shadow" else "Fail"
    assert mx.evaluation(stage, obs, [Evaluation("Fail")], m, BASE).verdict == expected


def _tier(name: str, role: capacity.Role, ready: int) -> capacity.TierInput:
    return capacity.TierInput(
        name=name, role=role, full_replicas=4, gpus_per_replica=1 if role != "baseline" else 2,
        replicas=max(ready, 1), ready_replicas=ready, headroom_percent=20,
    )  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    policies(),
    policies(),
    weights,
    weights,
    st.fixed_dictionaries({t: st.integers(0, 4) for t in (BASE, *TARGETS)}),
    st.sampled_from(["Progressing", "Succeeded"]),
)
def test_weight_moves_onto_a_tier_only_once_it_is_ready_and_off_one_before_it_shrinks(
    before: mx.Mixed,
    after: mx.Mixed,
    w0: int,
    w1: int,
    ready: dict[str, int],
    phase: str,
) -> None:
    """The pass's use of the planner: the router's classes move to the new split only when the
    planner reaches it (every tier gaining load has Ready replicas for it), else stay; a tier
    never wants fewer replicas than what the router applies now needs."""
    after = mx.Mixed(before.rollout, after.source, after.choices, before.mix, after.verdicts)
    w1 = max(w0, w1)  # forward: weights only rise (a rollback goes to 0, tested in the pass)
    previous = mx.router_traffic(
        name="m", served_model="m", rollout="r-0", baseline=BASE, targets=TARGETS, mixed=before,
        weight=w0, mirror=0, sticky_header=None, previous=None, moved=True,
    )  # fmt: skip
    current = mx.applied_of(previous, before, BASE)
    wanted = mx.tier_traffic(after, w1, 0, BASE, TARGETS)
    tiers = tuple(
        _tier(n, "baseline" if n == BASE else "target", ready[n]) for n in (BASE, *TARGETS)
    )
    plan = capacity.plan(
        capacity.Inputs(tiers=tiers, current=current, wanted=wanted, phase=phase, now=NOW)  # type: ignore[arg-type]
    )
    written = mx.router_traffic(
        name="m", served_model="m", rollout="r-0", baseline=BASE, targets=TARGETS, mixed=after,
        weight=w1, mirror=0, sticky_header=None, previous=previous, moved=plan.held is None,
    )  # fmt: skip
    by_name = {t.name: t for t in tiers}
    if written["classes"] != previous["classes"]:
        # the classes moved: every tier gaining load (routed, or held for a fallback) was Ready
        for name in TARGETS:
            if wanted.load(name) > current.load(name):
                assert ready[name] >= capacity.needed(by_name[name], wanted.load(name))
    if plan.held is not None:
        assert written["classes"] == previous["classes"]
        assert written["targetWeight"] == w0
    for tp in plan.tiers:
        assert tp.replicas >= capacity.needed(by_name[tp.name], current.load(tp.name))


def _spec(policy: dict[str, Any] | None = None) -> QuantizedModelSpec:
    return QuantizedModelSpec.model_validate(
        {
            "model": "meta-llama/Meta-Llama-3-8B-Instruct",
            "baseline": {"artifact": "s3://m/fp16", "precision": "fp16"},
            "targets": [
                {"name": "fp8", "artifact": "s3://m/fp8", "precision": "fp8", "format": "fp8"},
                {"name": "int4-awq", "artifact": "s3://m/awq", "precision": "int4",
                 "format": "awq"},
            ],
            "rollout": {"policy": policy} if policy else None,
        }
    )  # fmt: skip


def test_a_hand_policy_holds_a_class_on_the_baseline_while_its_tier_is_not_ready() -> None:
    spec = _spec({"classes": {"code": "fp8", "chat-short": "int4-awq"}})
    ready = {"fp16": True, "fp8": False, "int4-awq": True}
    mixed, events = mx.build_policy(spec, all_tiers(spec), ready, None, "r-0")
    assert mixed.source == "hand"
    assert mixed.choices["code"].tier == BASE
    assert mixed.choices["code"].reason == "baseline: held, tier fp8 is not Ready"
    assert mixed.choices["chat-short"].tier == "int4-awq"
    assert mixed.choices["math"].reason == "baseline: not in the policy"
    assert ("Warning", "ClassHeld") in {(e.type, e.reason) for e in events}
    held = next(e.message for e in events if e.reason == "ClassHeld")
    assert held == "spec.rollout.policy.classes.code: held on fp16: tier fp8 is not Ready"


def test_a_hand_policy_naming_an_unknown_tier_or_class_is_refused_naming_the_field() -> None:
    assert mx.check(_spec({"classes": {"code": "fp8"}})) is None
    assert mx.check(_spec({"classes": {"code": "int3"}})) == (
        "spec.rollout.policy.classes.code: tier 'int3' does not exist (tiers: fp16, fp8, int4-awq)"
    )
    assert mx.check(_spec({"classes": {"poetry": "fp8"}})).startswith(  # type: ignore[union-attr]
        "spec.rollout.policy.classes.poetry: unknown request class"
    )


def test_a_learned_policy_without_an_observation_keeps_every_class_on_the_baseline() -> None:
    spec = _spec()
    ready = {"fp16": True, "fp8": True, "int4-awq": True}
    unavailable = ClassObservation(unavailable="Prometheus is down")
    for observation in (None, unavailable):
        mixed, _ = mx.build_policy(spec, all_tiers(spec), ready, observation, "r-0")
        assert {ch.tier for ch in mixed.choices.values()} == {BASE}
    mixed, _ = mx.build_policy(spec, all_tiers(spec), ready, unavailable, "r-0")
    assert mixed.choices["code"].reason.endswith("(Prometheus is down)")


@given(
    stage=st.sampled_from(["shadow", "ab", "gradual", "full"]),
    window_s=st.integers(1, 3600),
    elapsed_s=st.floats(0, 7 * 86400, allow_nan=False),
)
def test_the_class_window_covers_the_whole_shadow_stage_and_only_the_analysis_window_after_it(
    stage: str, window_s: int, elapsed_s: float
) -> None:
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    started = now - datetime.timedelta(seconds=elapsed_s)
    window = format_duration(window_s)
    got = parse_duration(mx.class_window(window, stage, started, now))
    if stage == "shadow":
        # every comparison since the stage began, and never less than the analysis window
        assert got >= elapsed_s
        assert got == max(window_s, math.ceil(elapsed_s))
    else:
        assert got == window_s
    assert mx.class_window(window, stage, None, now) == window  # no stage start known
