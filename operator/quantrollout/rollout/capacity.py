"""Capacity follows traffic: how many replicas each tier runs, and when traffic may move.

Pure (values in, values out; the import-linter contract on rollout/ forbids I/O). GPUs take
minutes to come back, so the plan keeps three promises:

- **up before on**: weight (live or mirrored) moves onto a tier only once that tier has Ready
  replicas for it. A forward move (a promotion) is all or nothing: `ready_for_next` says whether
  the next step's weights may be applied now. A move back onto the baseline (a rollback, or the
  handover from a tier no longer in the spec) goes as far as the baseline's Ready replicas
  allow, and the rest stays where it is: `CapacityPlan.traffic`.
- **off before down**: a tier never wants fewer replicas than the weights the router applies
  *now* (`Inputs.current`) need, nor than the weights this pass applies (`CapacityPlan.traffic`),
  so a tier loses replicas only on a pass after its weight moved off.
- **a reserve while it matters**: while a rollout is active and during the bake after full, the
  baseline keeps `rollbackReservePercent` of its full replicas; after the bake it goes to
  `standbyReplicas`; after a rollback the target keeps its replicas for `abortScaleDownDelay`
  (for a retry), then goes to 0; a tier no longer in the spec is deleted once no traffic
  reaches it.

A tier's *full* replicas are the ones that carry all of the model's traffic (`serving.replicas`;
for an autoscaled tier `autoscaling.minReplicas`, with `maxReplicas` as the HPA's ceiling). A tier
taking load L% (live + mirrored, at most 100) needs `ceil(full * L/100 * (1 + headroom/100))`
replicas, at least 1 and at most `full`; it *can carry* L% once `ceil(full * L/100)` replicas
(at least 1) are Ready. The forward gate asks for the headroom too; a rollback does not wait for
it.

How a pass calls it (the executor owns the I/O):

1. Observe the tiers (`TierInput`: full replicas, GPUs per replica, the Deployment's replicas,
   Ready replicas, the scheduler's reason for a pod it cannot place; `role="retired"` for a tier
   Deployment labelled with the model but not in the spec any more) and the traffic the router
   applies now (`status.traffic`, not the rollout's own `targetWeight`).
2. `plan(Inputs(..., wanted=<the current state's weights>, next=<the next step's weights>,
   next_at=<when the step's time is up>))` and pass `ready_for_next` to the state machine as
   its `tiers_ready`: nothing is promoted onto capacity that is not Ready.
3. Decide; if the decided weights differ (a promotion, a rollback, a new rollout), `plan` again
   with `wanted=<the decided weights>`.
4. Apply, in this order: every tier whose `replicas` is above its Deployment's (and the HPAs,
   `manifests.autoscaler`), then `CapacityPlan.traffic` (which may be short of `wanted`: say
   `held` in the status), then every tier whose `replicas` is below its Deployment's, then
   delete the objects of the tiers in `delete` (by label selector). `degraded`, when set, is a
   rollback or handover that cannot finish (no GPUs): Degraded condition, Warning Event.
5. Write each tier's `replicas`, `reason` and `message` into `status.tiers[]`
   (`wantedReplicas`, `capacityReason`, `capacityMessage`) and `gpu_usage` into
   `status.gpuSaving`, and wake up at `wake_at` at the latest.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from quantrollout import defaults
from quantrollout.api.durations import parse_duration
from quantrollout.api.resolve import Tier
from quantrollout.api.spec import QuantizedModelSpec
from quantrollout.api.status import CapacityReason

from .steps import Step

Role = Literal["baseline", "target", "retired"]
Phase = Literal["Pending", "Progressing", "Paused", "Succeeded", "RolledBack"]
_ACTIVE: tuple[Phase, ...] = ("Pending", "Progressing", "Paused")


@dataclass(frozen=True)
class TierInput:
    """One tier as observed: its sizing and what runs now."""

    name: str
    role: Role
    full_replicas: int  # replicas that carry all of the model's traffic
    gpus_per_replica: int
    replicas: int = 0  # the Deployment's spec.replicas now (0 when absent or scaled to zero)
    ready_replicas: int = 0
    unschedulable: str | None = None  # the scheduler's reason for a pod it cannot place
    headroom_percent: int = defaults.HEADROOM_PERCENT
    autoscale_max: int | None = None  # autoscaling.maxReplicas when an HPA scales the tier


@dataclass(frozen=True)
class Traffic:
    """Per tier: % of live requests it answers (summing to 100) and % of requests mirrored to it.
    A tier missing from a mapping has 0."""

    live: Mapping[str, int]
    mirror: Mapping[str, int] = field(default_factory=dict)

    def load(self, tier: str) -> int:
        """The % of the model's requests the tier must serve (a mirrored request costs as much)."""
        return min(100, self.live.get(tier, 0) + self.mirror.get(tier, 0))

    def same_as(self, other: Traffic) -> bool:
        names = set(self.live) | set(other.live) | set(self.mirror) | set(other.mirror)
        return all(
            self.live.get(n, 0) == other.live.get(n, 0)
            and self.mirror.get(n, 0) == other.mirror.get(n, 0)
            for n in names
        )

    def describe(self) -> str:
        parts = [f"{n} {w}%" for n, w in sorted(self.live.items()) if w]
        parts += [f"{n} mirror {w}%" for n, w in sorted(self.mirror.items()) if w]
        return ", ".join(parts) or "no traffic"


@dataclass(frozen=True)
class Settings:
    """The capacity settings of one model, resolved (see defaults.py, capacity section)."""

    rollback_reserve_percent: int = defaults.ROLLBACK_RESERVE_PERCENT
    standby_replicas: int = defaults.STANDBY_REPLICAS
    bake_s: float = parse_duration(defaults.BAKE_DURATION)
    abort_scale_down_delay_s: float = parse_duration(defaults.ABORT_SCALE_DOWN_DELAY)
    scale_up_lead_s: float = parse_duration(defaults.SCALE_UP_LEAD)


@dataclass(frozen=True)
class Inputs:
    tiers: tuple[TierInput, ...]
    current: Traffic  # what the router applies now
    wanted: Traffic  # where the rollout's state puts traffic (rolled back: all on the baseline)
    phase: Phase
    now: datetime.datetime
    settings: Settings = Settings()
    full_at: datetime.datetime | None = None  # when the rollout reached full (phase Succeeded)
    rolled_back_at: datetime.datetime | None = None  # phase RolledBack
    next: Traffic | None = None  # the next step's weights, to have capacity Ready for in time
    next_at: datetime.datetime | None = None  # when the step's time is up; None: now


@dataclass(frozen=True)
class TierPlan:
    name: str
    replicas: int  # replicas wanted now; for an autoscaled tier, the HPA's minReplicas
    max_replicas: int | None  # autoscaled: the HPA's maxReplicas (0: no HPA); else None
    share_percent: int  # the % of the model's traffic the tier is sized for
    reason: CapacityReason
    message: str
    gpus: int  # GPUs the wanted replicas hold


@dataclass(frozen=True)
class CapacityPlan:
    tiers: tuple[TierPlan, ...]
    traffic: Traffic  # the weights to apply now: `wanted`, or as close as Ready capacity allows
    held: str | None  # why `traffic` is short of `wanted`, or None
    ready_for_next: bool  # may traffic move to `next` now (True when there is no next)
    next_held: str | None  # why not
    degraded: str | None  # a move back to the baseline that cannot finish: capacity unschedulable
    delete: tuple[str, ...]  # retired tiers with no traffic left: delete their objects
    wake_at: datetime.datetime | None  # when a timer changes this plan (bake, abort delay, lead)

    def tier(self, name: str) -> TierPlan:
        return next(t for t in self.tiers if t.name == name)


# ---------------------------------------------------------------------------------------------
# Sizing


def needed(tier: TierInput, load: int, *, headroom: bool = True) -> int:
    """Replicas a tier needs to take `load`% of the model's requests: 0 for none, else at least
    1 and at most its full replicas (headroom never asks for more than full)."""
    if load <= 0:
        return 0
    factor = 1 + (tier.headroom_percent / 100 if headroom else 0)
    # Rounded to 1e-9 first: 4 * 25/100 * 1.0 must be 1, not 1.0000000000000002 -> 2.
    exact = round(tier.full_replicas * load / 100 * factor, 9)
    return max(1, min(tier.full_replicas, math.ceil(exact)))


def can_carry(tier: TierInput, ready: int | None = None) -> int:
    """The largest load (%) the tier's Ready replicas carry without headroom."""
    ready = tier.ready_replicas if ready is None else ready
    if ready <= 0:
        return 0
    if tier.full_replicas <= 0 or ready >= tier.full_replicas:
        return 100
    return 100 * ready // tier.full_replicas  # the largest w with ceil(full * w/100) <= ready


def reserve(tier: TierInput, percent: int) -> int:
    """`percent` of a tier's full replicas, rounded up (a reserve is plain replicas, no headroom)."""
    return min(tier.full_replicas, math.ceil(round(tier.full_replicas * percent / 100, 9)))


def gpu_usage(tiers: tuple[TierInput, ...]) -> tuple[int, int, int]:
    """(GPUs in use now, GPUs of the FP16-only fleet, saved = fleet - in use) for
    `status.gpuSaving`: the fleet is the baseline at its full replicas and nothing else."""
    in_use = sum(t.replicas * t.gpus_per_replica for t in tiers)
    fleet = sum(t.full_replicas * t.gpus_per_replica for t in tiers if t.role == "baseline")
    return in_use, fleet, fleet - in_use


def hpa_max(tier: TierInput, replicas: int, share: int) -> int:
    """The HPA's maxReplicas for an autoscaled tier sized for `share`% with minimum `replicas`."""
    if tier.autoscale_max is None or replicas == 0:
        return 0
    scaled = math.ceil(
        round(tier.autoscale_max * share / 100 * (1 + tier.headroom_percent / 100), 9)
    )
    return max(replicas, min(tier.autoscale_max, scaled))


# ---------------------------------------------------------------------------------------------
# Traffic


def _order(tier: TierInput) -> tuple[int, str]:
    """Which tiers give their weight up first when only part of a move fits: those leaving."""
    return ({"retired": 0, "target": 1, "baseline": 2}[tier.role], tier.name)


def two_tiers(traffic: Traffic, baseline: str) -> tuple[str | None, int, int]:
    """`traffic` as the routers' two-backend configuration: (the other tier or None, its live %,
    its mirror %). `reachable` never puts traffic on two tiers beside the baseline."""
    others = sorted(
        {n for n, w in (*traffic.live.items(), *traffic.mirror.items()) if w} - {baseline}
    )
    if len(others) > 1:
        raise ValueError(f"traffic on more than one tier beside the baseline: {traffic.describe()}")
    if not others:
        return None, 0, 0
    name = others[0]
    return name, traffic.live.get(name, 0), traffic.mirror.get(name, 0)


def reachable(inputs: Inputs) -> tuple[Traffic, str | None, str | None]:
    """The weights that may be applied now on the way from `current` to `wanted`, why they fall
    short (or None), and, when the shortfall is a move back to the baseline that capacity which
    cannot be scheduled blocks, the failure to report (degraded).

    Weight moving onto a target tier moves all or nothing, once the tier has Ready replicas for
    its new load with headroom (a step is a step); weight moving back onto the baseline moves as
    far as its Ready replicas carry, and the rest stays where it is. Mirroring onto a tier
    starts only once it has Ready replicas for its new load with headroom."""
    tiers = {t.name: t for t in inputs.tiers}
    cur, want = inputs.current, inputs.wanted
    blocked: list[str] = []
    stuck: list[str] = []
    live = {n: cur.live.get(n, 0) for n in tiers}
    gains: dict[str, int] = {}
    for name, tier in tiers.items():
        gain = want.live.get(name, 0) - live[name]
        if gain <= 0:
            continue
        if tier.role == "baseline":
            room = can_carry(tier) - want.mirror.get(name, 0) - live[name]
            allowed = max(0, min(gain, room))
        else:
            allowed = gain if tier.ready_replicas >= needed(tier, want.load(name)) else 0
        if allowed < gain:
            blocked.append(_short(tier, want.load(name), gain - allowed))
            if tier.unschedulable:
                stuck.append(f"{name}: {tier.unschedulable}")
        gains[name] = allowed
    moved = _shift(tiers, live, want, gains)
    # A tier no longer in the spec hands its traffic to the baseline: nothing moves onto a
    # target (live or mirrored) while it still serves after this pass, so at most one tier
    # beside the baseline ever carries traffic, as every router's two-backend configuration
    # can express.
    handing_over = any(moved[n] for n, t in tiers.items() if t.role == "retired")
    if handing_over:
        for name, gain in gains.items():
            if tiers[name].role == "target" and gain:
                gains[name] = 0
                blocked.append(f"{name} waits for the tiers no longer in the spec to drain")
        moved = _shift(tiers, live, want, gains)
    live = moved
    mirror: dict[str, int] = {}
    for name, tier in tiers.items():
        before, after = cur.mirror.get(name, 0), want.mirror.get(name, 0)
        load = min(100, live[name] + after)
        if after > before and tier.ready_replicas < needed(tier, load):
            mirror[name] = before
            blocked.append(_short(tier, load, 0, mirrored=after))
            if tier.unschedulable:
                stuck.append(f"{name}: {tier.unschedulable}")
        elif after > before and handing_over and tier.role == "target":
            mirror[name] = before
            blocked.append(
                f"mirroring to {name} waits for the tiers no longer in the spec to drain"
            )
        elif tier.role == "retired":
            mirror[name] = min(before, after)
        else:
            mirror[name] = after
    traffic = Traffic({n: w for n, w in live.items() if w}, {n: w for n, w in mirror.items() if w})
    held = "; ".join(blocked) or None
    moving_back = any(
        t.role == "baseline" and want.live.get(n, 0) > cur.live.get(n, 0) for n, t in tiers.items()
    )
    degraded = None
    if stuck and moving_back and not traffic.same_as(want):
        degraded = (
            f"traffic cannot all move back to the baseline: {'; '.join(stuck)}; "
            f"traffic stays at {traffic.describe()}"
        )
    return traffic, held, degraded


def _shift(
    tiers: Mapping[str, TierInput], live: Mapping[str, int], want: Traffic, gains: Mapping[str, int]
) -> dict[str, int]:
    """`live` with each tier's gain added and taken off the tiers losing weight, those leaving
    the spec first. With weights that each sum to 100 the losers always have enough; if not,
    the gains shrink to fit (the baseline's last)."""
    after = dict(live)
    supply = sum(max(0, live[n] - want.live.get(n, 0)) for n in tiers)
    spare = min(sum(gains.values()), supply)
    for tier in sorted(tiers.values(), key=_order):
        taken = min(max(0, live[tier.name] - want.live.get(tier.name, 0)), spare)
        after[tier.name] -= taken
        spare -= taken
    give = min(sum(gains.values()), supply)
    for name in sorted(gains, key=lambda n: _order(tiers[n]), reverse=True):
        share = min(gains[name], give)
        after[name] += share
        give -= share
    return after


def _short(tier: TierInput, load: int, weight: int, mirrored: int = 0) -> str:
    what = f"mirror {mirrored}%" if mirrored else f"{weight}% of live traffic"
    text = (
        f"{what} waits for {tier.name}: {tier.ready_replicas}/{needed(tier, load)} "
        f"replicas Ready for {load}% of the load"
    )
    if tier.unschedulable:
        text += f" (cannot be scheduled: {tier.unschedulable})"
    return text


def gate(inputs: Inputs, to: Traffic, start: Traffic) -> tuple[bool, str | None]:
    """May traffic move from `start` to `to` now: every tier that takes more load has Ready
    replicas for it (with headroom), so nothing moves onto capacity still loading."""
    reasons = []
    for tier in inputs.tiers:
        after = to.load(tier.name)
        if after > start.load(tier.name) and tier.ready_replicas < needed(tier, after):
            reasons.append(
                _short(tier, after, to.live.get(tier.name, 0), to.mirror.get(tier.name, 0))
            )
    return not reasons, "; ".join(reasons) or None


# ---------------------------------------------------------------------------------------------
# The plan


def _due(at: datetime.datetime | None, after_s: float, now: datetime.datetime) -> bool:
    return at is not None and (now - at).total_seconds() >= after_s


def _later(at: datetime.datetime | None, after_s: float) -> datetime.datetime | None:
    return None if at is None else at + datetime.timedelta(seconds=after_s)


def _policy(
    tier: TierInput, inputs: Inputs
) -> tuple[int, int, CapacityReason | None, str, datetime.datetime | None]:
    """The replicas a tier keeps regardless of its traffic: (replicas, share %, reason, words,
    when that changes)."""
    s, now = inputs.settings, inputs.now
    if tier.role == "baseline":
        if inputs.phase in _ACTIVE:
            return (
                reserve(tier, s.rollback_reserve_percent),
                s.rollback_reserve_percent,
                "RollbackReserve",
                f"rollback reserve: {s.rollback_reserve_percent}% of {tier.full_replicas} replicas",
                None,
            )
        if inputs.phase == "Succeeded":
            # Not knowing when full was reached, it keeps baking: never a scale-down on a guess.
            if not _due(inputs.full_at, s.bake_s, now):
                return (
                    reserve(tier, s.rollback_reserve_percent),
                    s.rollback_reserve_percent,
                    "Baking",
                    f"baking after full: keeps {s.rollback_reserve_percent}% of "
                    f"{tier.full_replicas} replicas for an instant rollback",
                    _later(inputs.full_at, s.bake_s),
                )
            standby = min(s.standby_replicas, tier.full_replicas)
            share = 100 * standby // tier.full_replicas if tier.full_replicas else 0
            return (
                standby,
                share,
                "Standby",
                "standby after the bake (spec.baseline.standbyReplicas)",
                None,
            )
        return 0, 0, None, "", None
    if tier.role == "target" and inputs.phase == "RolledBack":
        if _due(inputs.rolled_back_at, s.abort_scale_down_delay_s, now):
            return 0, 0, "ScaledDownAfterRollback", "scaled down after the rollback", None
        kept = min(tier.replicas, tier.full_replicas)
        share = 100 * kept // tier.full_replicas if tier.full_replicas else 0
        until = _later(inputs.rolled_back_at, s.abort_scale_down_delay_s)
        return (
            kept,
            share,
            "KeptForRetry",
            "kept after the rollback for a retry"
            + (f" until {until.astimezone(datetime.UTC):%Y-%m-%dT%H:%M:%SZ}" if until else ""),
            until,
        )
    if tier.role == "retired":
        return 0, 0, "Draining", "no longer in the spec: serves until its traffic moved off", None
    return 0, 0, None, "", None


def _next_due(inputs: Inputs) -> tuple[bool, datetime.datetime | None]:
    if inputs.next is None:
        return False, None
    if inputs.next_at is None:
        return True, None
    start = inputs.next_at - datetime.timedelta(seconds=inputs.settings.scale_up_lead_s)
    return inputs.now >= start, (start if inputs.now < start else None)


def _unseen(inputs: Inputs) -> tuple[TierInput, ...]:
    """Tiers the traffic names but nobody observed (a Deployment deleted by hand while the
    router still sends to it): leaving, with nothing Ready, so their traffic goes back to the
    baseline as it can and nothing else lands on them."""
    seen = {t.name for t in inputs.tiers}
    for traffic in (inputs.wanted, inputs.next or inputs.wanted):
        missing = sorted({n for n in (*traffic.live, *traffic.mirror) if traffic.load(n)} - seen)
        if missing:
            raise ValueError(f"tiers {missing} get traffic but were not observed: pass every tier")
    named = {n for n, w in (*inputs.current.live.items(), *inputs.current.mirror.items()) if w}
    return tuple(
        TierInput(name=n, role="retired", full_replicas=0, gpus_per_replica=0)
        for n in sorted(named - seen)
    )


def plan(inputs: Inputs) -> CapacityPlan:
    """The replicas of every observed tier, the traffic to apply now, and the gate for the next
    step (see the module docstring for how the executor uses it)."""
    unseen = _unseen(inputs)
    traffic, held, degraded = reachable(replace(inputs, tiers=inputs.tiers + unseen))
    next_due, next_wake = _next_due(inputs)
    wakes = [next_wake] if next_wake else []
    plans: list[TierPlan] = []
    delete: list[str] = []
    for tier in inputs.tiers:
        name = tier.name
        # The load it carries: now, after this pass, where the rollout wants it, and next.
        loads = [inputs.current.load(name), traffic.load(name), inputs.wanted.load(name)]
        traffic_load = max(loads)
        traffic_replicas = needed(tier, traffic_load)
        next_load = inputs.next.load(name) if inputs.next is not None and next_due else 0
        next_replicas = needed(tier, next_load)
        kept, kept_share, kept_reason, kept_words, kept_wake = _policy(tier, inputs)
        if kept_wake:
            wakes.append(kept_wake)
        replicas = max(traffic_replicas, next_replicas, kept)
        reason: CapacityReason
        if traffic_replicas == replicas and replicas > 0:
            reason, share = "FollowingTraffic", traffic_load
            words = f"following traffic: {traffic_load}% of the load"
        elif next_replicas == replicas and replicas > 0:
            reason, share = "ScalingUpForNextStep", next_load
            words = f"scaling up for the next step: {next_load}% of the load"
        elif kept_reason is not None:
            reason, share, words = kept_reason, kept_share, kept_words
        else:
            reason, share, words = "FollowingTraffic", 0, "no traffic"
        if reason in ("FollowingTraffic", "ScalingUpForNextStep") and replicas:
            words += f", {tier.headroom_percent}% headroom, of {tier.full_replicas} replicas"
        if tier.role == "retired" and replicas == 0:
            delete.append(name)
        plans.append(
            TierPlan(
                name=name,
                replicas=replicas,
                max_replicas=hpa_max(tier, replicas, share)
                if tier.autoscale_max is not None
                else None,
                share_percent=share,
                reason=reason,
                message=f"{replicas} replica{'' if replicas == 1 else 's'}: {words}",
                gpus=replicas * tier.gpus_per_replica,
            )
        )
    ready, next_held = (True, None)
    if inputs.next is not None:
        ready, next_held = gate(inputs, inputs.next, traffic)
    return CapacityPlan(
        tiers=tuple(plans),
        traffic=traffic,
        held=held,
        ready_for_next=ready,
        next_held=next_held,
        degraded=degraded,
        delete=tuple(delete),
        wake_at=min(wakes) if wakes else None,
    )


# ---------------------------------------------------------------------------------------------
# From the spec and the status: the values the executor passes in


def settings_for(spec: QuantizedModelSpec) -> Settings:
    """The model's capacity settings, defaults (defaults.py) filled in."""
    rollout = spec.rollout
    reserve_pct = rollout.rollback_reserve_percent if rollout else None
    standby = spec.baseline.standby_replicas
    return Settings(
        rollback_reserve_percent=defaults.ROLLBACK_RESERVE_PERCENT
        if reserve_pct is None
        else reserve_pct,
        standby_replicas=defaults.STANDBY_REPLICAS if standby is None else standby,
        bake_s=parse_duration((rollout and rollout.bake_duration) or defaults.BAKE_DURATION),
        abort_scale_down_delay_s=parse_duration(
            (rollout and rollout.abort_scale_down_delay) or defaults.ABORT_SCALE_DOWN_DELAY
        ),
        scale_up_lead_s=parse_duration(defaults.SCALE_UP_LEAD),
    )


def tier_input(
    tier: Tier,
    *,
    replicas: int = 0,
    ready_replicas: int = 0,
    unschedulable: str | None = None,
    role: Role | None = None,
) -> TierInput:
    """A resolved tier with what was observed of its Deployment. An autoscaled tier is sized by
    `autoscaling.minReplicas` (what must be Ready) with `maxReplicas` as the HPA's ceiling."""
    s = tier.serving
    return TierInput(
        name=tier.name,
        role=role or tier.role,
        full_replicas=s.autoscaling.min_replicas if s.autoscaling else s.replicas,
        gpus_per_replica=s.gpu.count,
        replicas=replicas,
        ready_replicas=ready_replicas,
        unschedulable=unschedulable,
        headroom_percent=s.headroom_percent,
        autoscale_max=s.autoscaling.max_replicas if s.autoscaling else None,
    )


def step_traffic(baseline: str, target: str, weight: int, mirror: int) -> Traffic:
    """The rollout's two-tier weights (`targetWeight`, `mirrorPercent`) as a Traffic."""
    live = {baseline: 100 - weight, target: weight}
    return Traffic({n: w for n, w in live.items() if w}, {target: mirror} if mirror else {})


def next_traffic(baseline: str, target: str, step: Step) -> Traffic:
    return step_traffic(baseline, target, step.weight, step.mirror)


def applied_traffic(status_traffic: Mapping[str, object] | None, baseline: str) -> Traffic:
    """What the router applies now, read from `status.traffic` (the built-in router's
    configuration): its target backend may be a tier no longer in the spec (a handover).
    Nothing written yet: everything on the baseline."""
    if not status_traffic:
        return Traffic({baseline: 100})
    target = status_traffic.get("target")
    name = target.get("tier") if isinstance(target, Mapping) else None
    weight = status_traffic.get("targetWeight")
    mirror = status_traffic.get("mirrorPercent")
    w = weight if isinstance(weight, int) else 0
    m = mirror if isinstance(mirror, int) else 0
    if not isinstance(name, str):
        return Traffic({baseline: 100})
    return step_traffic(baseline, name, w, m)


def tier_status(tier: TierPlan) -> dict[str, object]:
    """The fields of the tier's entry in `status.tiers[]` that the plan owns."""
    return {
        "wantedReplicas": tier.replicas,
        "capacityReason": tier.reason,
        "capacityMessage": tier.message,
    }


def gpu_status(tiers: tuple[TierInput, ...]) -> dict[str, object]:
    """The fields of `status.gpuSaving` that count GPUs held now against the FP16-only fleet."""
    in_use, fleet, saved = gpu_usage(tiers)
    return {"gpusInUse": in_use, "baselineFleetGpus": fleet, "gpusSaved": saved}
