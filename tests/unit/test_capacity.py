"""The capacity plan, exhaustively: tables for the named cases of issue 12 (a rollout's sizes,
the bake and standby, rollbacks with a full and a low reserve, the handover to a new target
after full, capacity that cannot be scheduled, autoscaling bounds), hypothesis for the
invariants on any one pass, and hypothesis walking passes against a simulated cluster whose
replicas become Ready some passes after they are asked for."""

from __future__ import annotations

import datetime
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantrollout import defaults
from quantrollout.api.resolve import tiers
from quantrollout.api.spec import QuantizedModelSpec
from quantrollout.rollout.after_bake import AfterBake, watch
from quantrollout.rollout.capacity import (
    CapacityPlan,
    Inputs,
    Phase,
    Settings,
    TierInput,
    Traffic,
    applied_traffic,
    can_carry,
    gpu_usage,
    needed,
    next_traffic,
    plan,
    reserve,
    settings_for,
    step_traffic,
    tier_input,
    two_tiers,
)
from quantrollout.rollout.machine import Action, AnalysisSettings, Evaluation, RolloutState
from quantrollout.rollout.machine import Inputs as MachineInputs
from quantrollout.rollout.steps import Step, stages_hash

T0 = datetime.datetime(2026, 11, 23, 10, 0, tzinfo=datetime.UTC)
MIN = datetime.timedelta(minutes=1)
SETTINGS = Settings(
    rollback_reserve_percent=100,
    standby_replicas=0,
    bake_s=3600,
    abort_scale_down_delay_s=600,
    scale_up_lead_s=600,
)


def tier(name: str, role: str, full: int = 4, replicas: int = 4, ready: int | None = None, **kw: object) -> TierInput:  # fmt: skip
    return TierInput(
        name=name, role=role, full_replicas=full, gpus_per_replica=1, replicas=replicas,  # type: ignore[arg-type]
        ready_replicas=replicas if ready is None else ready, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def live(**weights: int) -> Traffic:
    return Traffic(dict(weights))


BASE, TARGET = "fp16", "int4"


def replicas(p: CapacityPlan) -> dict[str, int]:
    return {t.name: t.replicas for t in p.tiers}


# ---------------------------------------------------------------------------------------------
# Sizing


@pytest.mark.parametrize(
    ("full", "load", "headroom", "expected"),
    [
        (4, 0, 20, 0),
        (4, 1, 20, 1),  # floor of 1 for any traffic
        (4, 10, 20, 1),
        (4, 25, 20, 2),  # 1.2 -> 2
        (4, 25, 0, 1),  # exactly 1 (no float drift to 2)
        (4, 50, 20, 3),
        (4, 75, 20, 4),
        (4, 100, 20, 4),  # headroom never above full
        (10, 30, 20, 4),
        (0, 50, 20, 1),
    ],
)
def test_needed(full: int, load: int, headroom: int, expected: int) -> None:
    assert needed(tier("x", "target", full, headroom_percent=headroom), load) == expected


@pytest.mark.parametrize(
    ("ready", "expected"), [(0, 0), (1, 25), (2, 50), (3, 75), (4, 100), (9, 100)]
)
def test_can_carry(ready: int, expected: int) -> None:
    assert can_carry(tier("x", "baseline", 4, ready=ready)) == expected


@given(full=st.integers(0, 12), ready=st.integers(0, 14))
def test_can_carry_is_the_most_load_the_ready_replicas_need(full: int, ready: int) -> None:
    t = tier("x", "baseline", full, ready=ready)
    fits = [w for w in range(101) if needed(t, w, headroom=False) <= ready]
    assert can_carry(t) == (max(fits) if ready else 0)


def test_reserve_rounds_up_and_never_exceeds_full() -> None:
    t = tier("x", "baseline", 4)
    assert [reserve(t, p) for p in (0, 10, 25, 26, 100)] == [0, 1, 1, 2, 4]


def test_gpu_usage_against_the_fp16_fleet() -> None:
    base = replace(tier(BASE, "baseline", 4, replicas=0), gpus_per_replica=2)
    target = tier(TARGET, "target", 4, replicas=4)
    assert gpu_usage((base, target)) == (4, 8, 4)
    assert gpu_usage((replace(base, replicas=4), target)) == (12, 8, -4)


# ---------------------------------------------------------------------------------------------
# Named cases


def test_a_default_rollout_sizes_the_target_to_its_share_and_keeps_the_reserve() -> None:
    sizes = []
    for w in (10, 25, 50, 75, 100):
        weights = live(fp16=100 - w, int4=w)
        p = plan(
            Inputs((tier(BASE, "baseline"), tier(TARGET, "target")), weights, weights, "Progressing", T0)
        )  # fmt: skip
        sizes.append(replicas(p))
        assert p.tier(BASE).reason == ("RollbackReserve" if w > 25 else "FollowingTraffic")
    assert [s[TARGET] for s in sizes] == [1, 2, 3, 4, 4]
    assert {s[BASE] for s in sizes} == {4}


def test_shadow_sizes_the_target_for_the_mirrored_load() -> None:
    p = plan(
        Inputs(
            (tier(BASE, "baseline"), tier(TARGET, "target")),
            Traffic({BASE: 100}, {TARGET: 50}), Traffic({BASE: 100}, {TARGET: 50}), "Progressing", T0,
        )
    )  # fmt: skip
    assert replicas(p) == {BASE: 4, TARGET: 3}


def test_scale_up_for_the_next_step_starts_one_lead_before_the_step_ends() -> None:
    tiers = (tier(BASE, "baseline"), tier(TARGET, "target", replicas=1))
    now = live(fp16=90, int4=10)
    nxt = live(fp16=75, int4=25)
    early = plan(Inputs(tiers, now, now, "Progressing", T0, SETTINGS, next=nxt, next_at=T0 + 20 * MIN))  # fmt: skip
    assert early.tier(TARGET).replicas == 1
    assert early.wake_at == T0 + 10 * MIN
    assert not early.ready_for_next
    due = plan(Inputs(tiers, now, now, "Progressing", T0 + 10 * MIN, SETTINGS, next=nxt, next_at=T0 + 20 * MIN))  # fmt: skip
    assert due.tier(TARGET).replicas == 2
    assert due.tier(TARGET).reason == "ScalingUpForNextStep"
    assert not due.ready_for_next
    assert "int4: 1/2 replicas Ready" in (due.next_held or "")
    ready = plan(Inputs((tiers[0], tier(TARGET, "target", replicas=2)), now, now, "Progressing", T0, SETTINGS, next=nxt))  # fmt: skip
    assert ready.ready_for_next
    assert ready.next_held is None


def test_a_promotion_onto_missing_capacity_holds_with_the_schedulers_reason() -> None:
    why = "0/4 nodes are available: 4 Insufficient nvidia.com/gpu"
    tiers = (tier(BASE, "baseline"), tier(TARGET, "target", replicas=2, ready=1, unschedulable=why))
    p = plan(Inputs(tiers, live(fp16=90, int4=10), live(fp16=75, int4=25), "Progressing", T0))
    assert p.traffic.same_as(live(fp16=90, int4=10))
    assert p.held
    assert why in p.held
    assert p.degraded is None  # a held step is not a failure: nothing moved
    assert p.tier(TARGET).replicas == 2


def test_bake_then_standby() -> None:
    tiers = (tier(BASE, "baseline", replicas=4), tier(TARGET, "target"))
    full = live(int4=100)
    baking = plan(Inputs(tiers, full, full, "Succeeded", T0 + 59 * MIN, SETTINGS, full_at=T0))
    assert baking.tier(BASE).replicas == 4
    assert baking.tier(BASE).reason == "Baking"
    assert baking.wake_at == T0 + 60 * MIN
    baked = plan(Inputs(tiers, full, full, "Succeeded", T0 + 60 * MIN, SETTINGS, full_at=T0))
    assert baked.tier(BASE).replicas == 0
    assert baked.tier(BASE).reason == "Standby"
    one = replace(SETTINGS, standby_replicas=1)
    assert plan(Inputs(tiers, full, full, "Succeeded", T0 + 61 * MIN, one, full_at=T0)).tier(BASE).replicas == 1  # fmt: skip


def test_a_rollback_with_the_full_reserve_is_instant() -> None:
    tiers = (tier(BASE, "baseline"), tier(TARGET, "target"))
    p = plan(Inputs(tiers, live(fp16=25, int4=75), live(fp16=100), "RolledBack", T0, SETTINGS, rolled_back_at=T0))  # fmt: skip
    assert p.traffic.same_as(live(fp16=100))
    assert p.held is None
    assert p.tier(TARGET).replicas == 4  # weight moves off first; scaled down later


def test_after_a_rollback_the_target_is_kept_for_retry_then_scaled_to_zero() -> None:
    tiers = (tier(BASE, "baseline"), tier(TARGET, "target", replicas=3))
    back = live(fp16=100)
    kept = plan(Inputs(tiers, back, back, "RolledBack", T0 + 9 * MIN, SETTINGS, rolled_back_at=T0))
    assert kept.tier(TARGET).replicas == 3
    assert kept.tier(TARGET).reason == "KeptForRetry"
    assert kept.wake_at == T0 + 10 * MIN
    gone = plan(Inputs(tiers, back, back, "RolledBack", T0 + 10 * MIN, SETTINGS, rolled_back_at=T0))
    assert gone.tier(TARGET).replicas == 0
    assert gone.tier(TARGET).reason == "ScaledDownAfterRollback"


def test_a_rollback_after_the_bake_moves_traffic_as_baseline_replicas_become_ready() -> None:
    """Baseline at standby 0: it is scaled up first; each Ready replica takes its share back."""
    moved = []
    current = live(int4=100)
    for ready in range(5):
        tiers = (tier(BASE, "baseline", replicas=4, ready=ready), tier(TARGET, "target"))
        p = plan(Inputs(tiers, current, live(fp16=100), "RolledBack", T0, SETTINGS, rolled_back_at=T0))  # fmt: skip
        assert p.tier(BASE).replicas == 4
        assert p.tier(TARGET).replicas == 4  # keeps serving what the baseline cannot take yet
        moved.append(p.traffic.live.get(BASE, 0))
        assert (p.held is None) == (ready == 4)
        current = p.traffic
    assert moved == [0, 25, 50, 75, 100]


def test_a_rollback_whose_baseline_cannot_come_back_keeps_the_target_serving_and_says_so() -> None:
    why = "0/4 nodes are available: 4 Insufficient nvidia.com/gpu"
    tiers = (
        tier(BASE, "baseline", replicas=4, ready=1, unschedulable=why),
        tier(TARGET, "target"),
    )
    p = plan(Inputs(tiers, live(int4=100), live(fp16=100), "RolledBack", T0 + 60 * MIN, SETTINGS, rolled_back_at=T0))  # fmt: skip
    assert p.traffic.same_as(live(fp16=25, int4=75))
    assert p.degraded
    assert why in p.degraded
    assert "traffic stays at fp16 25%, int4 75%" in p.degraded
    assert p.tier(TARGET).replicas == 4  # not scaled down after the delay: it still serves


def test_a_low_reserve_keeps_fewer_baseline_replicas_while_active() -> None:
    low = replace(SETTINGS, rollback_reserve_percent=25)
    tiers = (tier(BASE, "baseline"), tier(TARGET, "target"))
    p = plan(Inputs(tiers, live(fp16=25, int4=75), live(fp16=25, int4=75), "Progressing", T0, low))  # fmt: skip
    assert p.tier(BASE).replicas == 2  # 25% live + 20% headroom of 4
    p = plan(Inputs(tiers, live(int4=100), live(int4=100), "Succeeded", T0, low, full_at=T0))
    assert p.tier(BASE).replicas == 1
    assert p.tier(BASE).reason == "Baking"


def test_a_new_target_after_full_keeps_the_old_tier_serving_until_the_baseline_is_ready() -> None:
    """Renamed target after full: baseline at standby 0, old tier serving 100%, new tier new."""
    old, new = "int4-old", "int4-new"
    current = live(**{old: 100})
    wanted = live(fp16=100)  # the new rollout starts Pending: all live on the baseline
    shadow = Traffic({BASE: 100}, {new: 100})
    passes = []
    for ready in range(5):
        tiers = (
            tier(BASE, "baseline", replicas=4, ready=ready),
            tier(old, "retired"),
            tier(new, "target", replicas=4, ready=ready),
        )
        p = plan(Inputs(tiers, current, wanted, "Pending", T0, SETTINGS, next=shadow))
        passes.append(p)
        current = p.traffic
    assert [p.traffic.live.get(old, 0) for p in passes] == [100, 75, 50, 25, 0]
    assert [p.tier(old).replicas for p in passes] == [4, 4, 4, 3, 2]  # down only once moved off
    assert all(p.tier(BASE).replicas == 4 for p in passes)
    assert [p.delete for p in passes][-1] == ()  # it carried traffic at the start of that pass
    assert [p.ready_for_next for p in passes] == [False, False, False, False, True]
    # Asked for the shadow step while the old tier still serves: only the baseline takes over.
    early = plan(
        Inputs(
            (tier(BASE, "baseline", ready=2), tier(old, "retired"), tier(new, "target")),
            live(**{old: 50, BASE: 50}), shadow, "Progressing", T0, SETTINGS,
        )
    )  # fmt: skip
    assert early.traffic.same_as(live(fp16=50, **{old: 50}))
    assert early.held
    assert "waits for the tiers no longer in the spec to drain" in early.held
    assert two_tiers(early.traffic, BASE) == (old, 50, 0)
    drained = plan(
        Inputs(
            (tier(BASE, "baseline"), tier(old, "retired", replicas=1), tier(new, "target")),
            current, wanted, "Pending", T0, SETTINGS, next=shadow,
        )
    )  # fmt: skip
    assert drained.delete == (old,)
    assert drained.tier(old).reason == "Draining"


def test_autoscaling_bounds_follow_the_share() -> None:
    scaled = tier(TARGET, "target", full=2, autoscale_max=8)
    bounds = []
    for w in (10, 50, 100):
        weights = live(fp16=100 - w, int4=w)
        p = plan(Inputs((tier(BASE, "baseline"), scaled), weights, weights, "Progressing", T0))
        bounds.append((p.tier(TARGET).replicas, p.tier(TARGET).max_replicas))
    assert bounds == [(1, 1), (2, 5), (2, 8)]
    standby = plan(
        Inputs(
            (tier(BASE, "baseline", autoscale_max=8), scaled),
            live(int4=100), live(int4=100), "Succeeded", T0 + 2 * SETTINGS_BAKE, SETTINGS, full_at=T0,
        )
    )  # fmt: skip
    assert (standby.tier(BASE).replicas, standby.tier(BASE).max_replicas) == (0, 0)


SETTINGS_BAKE = datetime.timedelta(seconds=SETTINGS.bake_s)


# ---------------------------------------------------------------------------------------------
# Invariants of one pass, for any input


PHASES: tuple[Phase, ...] = ("Pending", "Progressing", "Paused", "Succeeded", "RolledBack")


@st.composite
def tier_inputs(draw: st.DrawFn, name: str, role: str) -> TierInput:
    full = draw(st.integers(0, 8))
    reps = draw(st.integers(0, max(full, 1) + 1))
    return TierInput(
        name=name,
        role=role,  # type: ignore[arg-type]
        full_replicas=full,
        gpus_per_replica=draw(st.integers(1, 4)),
        replicas=reps,
        ready_replicas=draw(st.integers(0, reps)),
        unschedulable=draw(st.none() | st.just("0/4 nodes are available")),
        headroom_percent=draw(st.sampled_from([0, 20, 50, 100])),
        autoscale_max=draw(st.none() | st.integers(max(full, 1), 16)),
    )


@st.composite
def weights(draw: st.DrawFn, names: list[str]) -> Traffic:
    """Live weights summing to 100 over `names`, and a mirror % on the non-baseline tiers."""
    cuts = sorted(
        draw(st.lists(st.integers(0, 100), min_size=len(names) - 1, max_size=len(names) - 1))
    )
    bounds = [0, *cuts, 100]
    live_ = {n: bounds[i + 1] - bounds[i] for i, n in enumerate(names)}
    mirror = {n: draw(st.sampled_from([0, 0, 50, 100])) for n in names[1:]}
    return Traffic({n: w for n, w in live_.items() if w}, {n: m for n, m in mirror.items() if m})


@st.composite
def pass_inputs(draw: st.DrawFn) -> Inputs:
    retired = draw(st.booleans())
    names = [BASE, TARGET, *(["old"] if retired else [])]
    tiers = (
        draw(tier_inputs(BASE, "baseline")),
        draw(tier_inputs(TARGET, "target")),
        *([draw(tier_inputs("old", "retired"))] if retired else []),
    )
    phase = draw(st.sampled_from(PHASES))
    now = T0 + datetime.timedelta(minutes=draw(st.integers(0, 200)))
    s = Settings(
        rollback_reserve_percent=draw(st.sampled_from([0, 25, 50, 100])),
        standby_replicas=draw(st.integers(0, 3)),
        bake_s=draw(st.sampled_from([0, 60, 3600])),
        abort_scale_down_delay_s=draw(st.sampled_from([0, 600])),
        scale_up_lead_s=600,
    )
    return Inputs(
        tiers=tiers,
        current=draw(weights(names)),
        wanted=draw(weights([BASE, TARGET])),  # a rollout never wants a retired tier
        phase=phase,
        now=now,
        settings=s,
        full_at=T0 if phase == "Succeeded" else None,
        rolled_back_at=T0 if phase == "RolledBack" else None,
        next=draw(st.none() | weights([BASE, TARGET])),
        next_at=draw(st.none() | st.just(T0 + 30 * MIN)),
    )


@settings(max_examples=600, deadline=None)
@given(pass_inputs())
def test_invariants_of_one_pass(inputs: Inputs) -> None:
    p = plan(inputs)
    tiers = {t.name: t for t in inputs.tiers}
    cur, want, now = inputs.current, inputs.wanted, p.traffic
    # Live weights still add up to 100, and each moved only from current towards wanted.
    assert sum(now.live.values()) == 100
    for name, t in tiers.items():
        c, w, n = cur.live.get(name, 0), want.live.get(name, 0), now.live.get(name, 0)
        assert min(c, w) <= n <= max(c, w), name
        # Weight never moves onto capacity that is not Ready.
        if now.load(name) > cur.load(name):
            assert t.ready_replicas >= needed(t, now.load(name), headroom=False), name
            if t.role != "baseline":  # a forward move waits for the headroom too
                assert t.ready_replicas >= needed(t, now.load(name)), name
        # Mirroring starts only onto Ready capacity.
        if now.mirror.get(name, 0) > cur.mirror.get(name, 0):
            assert t.ready_replicas >= needed(t, now.load(name)), name
    for tp in p.tiers:
        t = tiers[tp.name]
        # Never fewer replicas than the weights applied now, or after this pass, need; so a
        # tier loses replicas only on a pass after its weight moved off. Floor 1 with traffic.
        assert tp.replicas >= needed(t, cur.load(t.name))
        assert tp.replicas >= needed(t, now.load(t.name))
        if cur.load(t.name) or now.load(t.name):
            assert tp.replicas >= 1
        assert tp.replicas <= max(t.full_replicas, 1, t.replicas)
        assert tp.gpus == tp.replicas * t.gpus_per_replica
        # Autoscaled: the HPA's ceiling is above its floor, and there is none at 0 replicas.
        if t.autoscale_max is not None:
            assert tp.max_replicas is not None
            assert (tp.max_replicas == 0) == (tp.replicas == 0)
            assert tp.max_replicas >= tp.replicas
        else:
            assert tp.max_replicas is None
    base = p.tier(BASE)
    reserve_kept = reserve(tiers[BASE], inputs.settings.rollback_reserve_percent)
    if inputs.phase in ("Pending", "Progressing", "Paused"):
        assert base.replicas >= reserve_kept  # the reserve while active
    if inputs.phase == "Succeeded":
        baking = (inputs.now - T0).total_seconds() < inputs.settings.bake_s
        if baking:
            assert base.replicas >= reserve_kept
        elif not (cur.load(BASE) or want.load(BASE) or now.load(BASE)) and inputs.next is None:
            assert base.replicas == min(inputs.settings.standby_replicas, tiers[BASE].full_replicas)
            assert base.reason == "Standby"
    if inputs.phase == "RolledBack":
        target = p.tier(TARGET)
        delay_over = (inputs.now - T0).total_seconds() >= inputs.settings.abort_scale_down_delay_s
        quiet = not (cur.load(TARGET) or now.load(TARGET) or want.load(TARGET))
        if delay_over and quiet and inputs.next is None:
            assert target.replicas == 0
            assert target.reason == "ScaledDownAfterRollback"
        if not delay_over:
            assert target.replicas >= min(tiers[TARGET].replicas, tiers[TARGET].full_replicas)
    # A retired tier is deleted only once no traffic reaches it (now, or after this pass).
    for name in p.delete:
        assert tiers[name].role == "retired"
        assert cur.load(name) == 0
        assert now.load(name) == 0
    # Everything Ready: the move completes.
    if all(t.ready_replicas >= max(t.full_replicas, 1) for t in inputs.tiers):
        assert now.same_as(want)
        assert p.held is None
    # The gate opens only onto Ready capacity (with headroom).
    if inputs.next is not None and p.ready_for_next:
        for name, t in tiers.items():
            if inputs.next.load(name) > now.load(name):
                assert t.ready_replicas >= needed(t, inputs.next.load(name))
    # Degraded is a move back to the baseline blocked by capacity that cannot be scheduled.
    if p.degraded:
        assert any(t.unschedulable for t in inputs.tiers)
        assert not now.same_as(want)
    # Routers carry the baseline and one other tier: a pass never makes that two others.
    if len({n for n, w in (*cur.live.items(), *cur.mirror.items()) if w} - {BASE}) <= 1:
        two_tiers(now, BASE)
    # The same inputs give the same plan (a restart resumes the same decision).
    assert plan(inputs) == p


# ---------------------------------------------------------------------------------------------
# Passes against a simulated cluster


@settings(max_examples=300, deadline=None)
@given(
    load_passes=st.integers(0, 4),
    reserve_pct=st.sampled_from([0, 25, 50, 100]),
    full=st.integers(1, 6),
    start_target=st.sampled_from([0, 10, 50, 100]),
    rollback=st.booleans(),
    capacity=st.none() | st.integers(0, 6),
)
def test_passes_converge_and_never_move_onto_capacity_still_loading(
    load_passes: int, reserve_pct: int, full: int, start_target: int, rollback: bool, capacity: int | None
) -> None:  # fmt: skip
    """Each pass applies the plan in the executor's order; a replica asked for becomes Ready
    `load_passes` passes later, and only `capacity` baseline replicas can ever be scheduled.
    Traffic never lands on a replica still loading, a tier is scaled down only on a pass after
    its weight moved off, and the move finishes once the capacity is there."""
    s = replace(SETTINGS, rollback_reserve_percent=reserve_pct)
    phase: Phase = "RolledBack" if rollback else "Progressing"
    wanted = live(fp16=100) if rollback else live(fp16=100 - min(start_target + 25, 100), int4=min(start_target + 25, 100))  # fmt: skip
    current = live(fp16=100 - start_target, int4=start_target)
    base_reps = reserve(tier(BASE, "baseline", full), reserve_pct)
    base_reps = max(base_reps, needed(tier(BASE, "baseline", full), 100 - start_target))
    pods: dict[str, list[int]] = {BASE: [0] * base_reps, TARGET: [0] * needed(tier(TARGET, "target", full), start_target)}  # fmt: skip
    for n in range(30):
        tiers = []
        for name, role in ((BASE, "baseline"), (TARGET, "target")):
            ready = sum(1 for at in pods[name] if at <= n)
            limit = capacity if (name == BASE and capacity is not None) else None
            stuck = (
                "no GPUs left"
                if limit is not None and len(pods[name]) > max(limit, base_reps)
                else None
            )
            tiers.append(
                tier(name, role, full, replicas=len(pods[name]), ready=ready, unschedulable=stuck)
            )
        p = plan(Inputs(tuple(tiers), current, wanted, phase, T0 + n * MIN, s, rolled_back_at=T0, full_at=None))  # fmt: skip
        before = current
        # Capacity up (a pod that cannot be scheduled never becomes Ready)...
        for tp in p.tiers:
            while len(pods[tp.name]) < tp.replicas:
                placed = (
                    capacity is None
                    or tp.name != BASE
                    or len(pods[tp.name]) < max(capacity, base_reps)
                )
                pods[tp.name].append(n + load_passes if placed else 10**9)
        # ...traffic (only onto Ready pods)...
        for t in tiers:
            if p.traffic.load(t.name) > before.load(t.name):
                assert t.ready_replicas >= needed(t, p.traffic.load(t.name), headroom=False)
        current = p.traffic
        # ...capacity down: never below what the weights before or after this pass need.
        for tp, t in zip(p.tiers, tiers, strict=True):
            if tp.replicas < len(pods[tp.name]):
                assert tp.replicas >= needed(t, before.load(t.name))
                assert tp.replicas >= needed(t, current.load(t.name))
                pods[tp.name] = sorted(pods[tp.name])[: tp.replicas]  # the loading ones go first
    placeable = None if capacity is None else max(capacity, base_reps)
    if placeable is None or not rollback or placeable >= full:
        assert current.same_as(wanted)
    else:
        can = can_carry(tier(BASE, "baseline", full, ready=placeable))
        assert current.live.get(BASE, 0) == max(100 - start_target, can)


# ---------------------------------------------------------------------------------------------
# From the spec and the status


def _spec(**changes: object) -> QuantizedModelSpec:
    raw: dict[str, object] = {
        "model": "m",
        "baseline": {"artifact": "s3://b", "precision": "fp16"},
        "target": {"name": "int4-awq", "artifact": "s3://t", "precision": "int4", "format": "awq"},
        "serving": {"replicas": 4},
        **changes,
    }
    return QuantizedModelSpec.model_validate(raw)


def test_settings_default_from_defaults_py() -> None:
    s = settings_for(_spec())
    assert s == Settings(
        rollback_reserve_percent=defaults.ROLLBACK_RESERVE_PERCENT,
        standby_replicas=defaults.STANDBY_REPLICAS,
        bake_s=3600,
        abort_scale_down_delay_s=600,
        scale_up_lead_s=600,
    )
    tuned = settings_for(
        _spec(
            baseline={"artifact": "s3://b", "standbyReplicas": 1},
            rollout={
                "bakeDuration": "2h",
                "abortScaleDownDelay": "0s",
                "rollbackReservePercent": 0,
            },
        )
    )
    assert (tuned.standby_replicas, tuned.bake_s, tuned.abort_scale_down_delay_s) == (1, 7200, 0)
    assert tuned.rollback_reserve_percent == 0


def test_tier_input_from_a_resolved_tier() -> None:
    spec = _spec(
        serving={"replicas": 4, "headroomPercent": 10},
        target={
            "name": "int4-awq", "artifact": "s3://t", "precision": "int4", "format": "awq",
            "serving": {"autoscaling": {"minReplicas": 2, "maxReplicas": 6}, "gpu": {"count": 1}},
        },
    )  # fmt: skip
    base, target = tiers(spec)
    b = tier_input(base, replicas=3, ready_replicas=2)
    assert (b.full_replicas, b.headroom_percent, b.autoscale_max, b.role) == (
        4,
        10,
        None,
        "baseline",
    )
    t = tier_input(target, role="retired")
    assert (t.full_replicas, t.autoscale_max, t.role) == (2, 6, "retired")


def test_applied_traffic_reads_the_routers_configuration() -> None:
    assert applied_traffic(None, BASE).same_as(live(fp16=100))
    cfg = {"targetWeight": 25, "mirrorPercent": 0, "target": {"tier": "old"}}
    assert applied_traffic(cfg, BASE).same_as(live(fp16=75, old=25))
    shadow = {"targetWeight": 0, "mirrorPercent": 100, "target": {"tier": TARGET}}
    assert applied_traffic(shadow, BASE).same_as(Traffic({BASE: 100}, {TARGET: 100}))
    assert next_traffic(BASE, TARGET, Step("gradual", 50, 0, 60)).same_as(live(fp16=50, int4=50))


def test_traffic_on_a_tier_nobody_observed_goes_back_to_the_baseline() -> None:
    """Its Deployment deleted by hand while the router still sends to it."""
    tiers = (tier(BASE, "baseline", ready=2), tier(TARGET, "target", replicas=0))
    p = plan(Inputs(tiers, live(fp16=50, ghost=50), live(fp16=100), "Pending", T0))
    assert p.traffic.same_as(live(fp16=50, ghost=50))  # the baseline carries 50% only
    assert p.delete == ()
    assert [t.name for t in p.tiers] == [BASE, TARGET]
    ready = (tier(BASE, "baseline"), tiers[1])
    p = plan(Inputs(ready, live(fp16=50, ghost=50), live(fp16=100), "Pending", T0))
    assert p.traffic.same_as(live(fp16=100))


def test_traffic_wanted_on_a_tier_not_observed_is_a_callers_error() -> None:
    with pytest.raises(ValueError, match="not observed"):
        plan(
            Inputs(
                (tier(BASE, "baseline"),), live(fp16=100), live(fp16=90, int4=10), "Progressing", T0
            )
        )


# ---------------------------------------------------------------------------------------------
# The plan driving the real state machine, pass after pass


NEVER = 10**9  # a pod the scheduler cannot place
WALK_STEPS = (
    Step("shadow", 0, 100, 120),
    Step("ab", 10, 0, 180, "x-user-id"),
    Step("gradual", 50, 0, 120),
    Step("full", 100, 0, None),
)


@settings(max_examples=120, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.sampled_from([None, "Pass", "Pass", "Pass", "Fail", "Inconclusive"]),
            st.sampled_from([None] * 12 + ["promote", "abort", "retry"]),
        ),
        min_size=20,
        max_size=90,
    ),
    load_minutes=st.integers(0, 6),
    reserve_pct=st.sampled_from([0, 50, 100]),
    full=st.integers(1, 5),
    gpu_limit=st.none() | st.integers(0, 3),
    on_breach=st.sampled_from(["rollback", "alert"]),
)
def test_with_the_state_machine_nothing_lands_on_capacity_still_loading(
    events: list[tuple[str | None, str | None]],
    load_minutes: int,
    reserve_pct: int,
    full: int,
    gpu_limit: int | None,
    on_breach: str,
) -> None:
    """Every pass as the executor runs it: plan, decide (`after_bake.watch`: the machine, and
    the watch at full) with `ready_for_next` as the machine's readiness, plan the decided
    weights, scale up, apply traffic, scale down. A replica is Ready `load_minutes` after it is
    asked for; once the baseline gave replicas back, only `gpu_limit` of its replicas can be
    scheduled again (its GPUs went to someone else). Whatever the verdicts and actions, traffic
    lands only on Ready replicas, no tier drops below what its traffic needs, and the reserve is
    kept while the rollout is active."""
    s = replace(SETTINGS, rollback_reserve_percent=reserve_pct, bake_s=300, abort_scale_down_delay_s=240)  # fmt: skip
    at_full = AfterBake(bake_s=s.bake_s, interval_s=60, on_breach=on_breach)  # type: ignore[arg-type]
    analysis = AnalysisSettings(interval_s=60, failure_limit=2, on_metrics_unavailable="pause", metrics_unavailable_grace_s=300)  # fmt: skip
    pods: dict[str, list[int]] = {BASE: [0] * full, TARGET: []}
    base_limit = gpu_limit  # once given back, the GPUs may be gone to someone else
    state, current = RolloutState(), live(fp16=100)

    def observe(minute: int) -> tuple[TierInput, TierInput]:
        out = []
        for name, role in ((BASE, "baseline"), (TARGET, "target")):
            ready = sum(1 for at in pods[name] if at <= minute)
            stuck = "no GPUs left" if any(at == NEVER for at in pods[name]) else None
            out.append(
                tier(name, role, full, replicas=len(pods[name]), ready=ready, unschedulable=stuck)
            )
        return out[0], out[1]

    def capacity(st_: RolloutState, observed: tuple[TierInput, TierInput], minute: int, retry: bool) -> CapacityPlan:  # fmt: skip
        started = st_.phase != "Pending"
        nxt = None
        if not started or (st_.phase == "RolledBack" and retry):
            nxt = next_traffic(BASE, TARGET, WALK_STEPS[0])
        elif st_.phase in ("Progressing", "Paused") and st_.step + 1 < len(WALK_STEPS):
            nxt = next_traffic(BASE, TARGET, WALK_STEPS[st_.step + 1])
        wanted = step_traffic(BASE, TARGET, st_.target_weight, st_.mirror_percent)
        return plan(
            Inputs(
                observed, current, wanted, st_.phase, T0 + minute * MIN, s,
                full_at=st_.step_started_at if st_.phase == "Succeeded" else None,
                rolled_back_at=st_.rolled_back_at, next=nxt,
            )
        )  # fmt: skip

    for minute, (verdict, asked) in enumerate(events):
        observed = observe(minute)
        before = capacity(state, observed, minute, asked == "retry")
        # The executor holds a promote (its annotation kept) until the next step is Ready: a
        # promote skips the analysis, never the capacity.
        action = None if asked == "promote" and not before.ready_for_next else asked
        decision = watch(
            state,
            MachineInputs(
                rollout_id="r1", steps=WALK_STEPS, stages_hash=stages_hash(WALK_STEPS),
                analysis=analysis, now=T0 + minute * MIN, tiers_ready=before.ready_for_next,
                evaluation=Evaluation(verdict, ("breach",)) if verdict else None,  # type: ignore[arg-type]
                action=Action(action, "test") if action else None,  # type: ignore[arg-type]
            ),
            at_full,
        ).decision  # fmt: skip
        promoted = decision.state.target_weight > state.target_weight or (
            decision.state.mirror_percent > state.mirror_percent
        )
        if promoted and decision.state.rollout_id == state.rollout_id:
            assert before.ready_for_next  # the machine never promotes onto capacity not Ready
        state = decision.state
        after = capacity(state, observed, minute, False)
        for tp in after.tiers:  # capacity up
            while len(pods[tp.name]) < tp.replicas:
                placed = tp.name != BASE or base_limit is None or len(pods[BASE]) < base_limit
                pods[tp.name].append(minute + load_minutes if placed else NEVER)
        for t in observed:  # traffic, onto Ready replicas only
            if after.traffic.load(t.name) > current.load(t.name):
                assert t.ready_replicas >= needed(t, after.traffic.load(t.name), headroom=False)
        previous, current = current, after.traffic
        for tp, t in zip(after.tiers, observed, strict=True):  # capacity down
            assert tp.replicas >= needed(t, previous.load(t.name))
            assert tp.replicas >= needed(t, current.load(t.name))
            if tp.replicas < len(pods[tp.name]):
                pods[tp.name] = sorted(pods[tp.name])[: tp.replicas]
        if state.phase in ("Pending", "Progressing", "Paused"):
            assert after.tier(BASE).replicas >= reserve(observed[0], reserve_pct)
        assert sum(current.live.values()) == 100
