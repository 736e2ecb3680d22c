"""Mixed precision in the pass (`spec.targets`): the policy as the rollout carries it. Pure.

With several quantized tiers the state machine still walks the steps (shadow, A/B, gradual,
full) and still owns the whole-model rollback; what the step's weight moves is no longer one
target's share but each request class's share onto its own tier (`rollout.policy`). This module
turns the values a pass has into the values it writes:

- `build_policy`: at the end of shadow, the policy: learned from shadow's per-(class, tier)
  statistics (`policy.compile_policy`) or the hand-written one (`policy.check_policy`; a tier
  not Ready holds its class on the baseline with the reason). Without an observation (metrics
  missing, or no shadow stage) a learned policy keeps every class on the baseline: missing
  data never promotes.
- `judge`: each analysis round after shadow, the per-(class, tier) verdicts
  (`policy.apply_verdicts`): a class that breaches moves alone to the next higher precision that
  passed shadow for it, else to the baseline, with an Event; a tier carrying classes with no
  ready pod moves its classes the same way.
- `evaluation`: the verdict the state machine judges the step on: Inconclusive while the class
  observation is missing or a class on a quantized tier has no verdict (never promotes), Fail
  when a tier's model-wide rules fail (the whole-model rollback stays for what is not per
  class), else Pass.
- `traffic_entries` / `tier_traffic`: the router's `status.traffic.classes` at a step's weight,
  and each tier's share of the load for the capacity planner (`tier_shares` over the observed
  class mix; without a mix each quantized tier is sized for the largest share it could get,
  the step's whole weight, and the baseline for all of the traffic).
- `to_status` / `from_status`: the policy, the mix and the verdicts live in `status.classes`
  and `status.policy`, so a restart resumes the same policy, step and weights.
- `next_policy`, `capacity_inputs`, `status_fields`: what `pass_/plan.py` calls for a spec with
  `targets` (when to compile or judge; the planner's inputs; the status fields).
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from quantrollout import defaults
from quantrollout.analysis.class_stats import ClassObservation
from quantrollout.api.durations import format_duration, parse_duration
from quantrollout.api.resolve import Tier as ResolvedTier
from quantrollout.api.resolve import all_tiers
from quantrollout.api.spec import QuantizedModelSpec
from quantrollout.api.status import TrafficBackend, TrafficStatus
from quantrollout.manifests.vllm import VLLM_PORT, resource_name
from quantrollout.router.classify import CLASSES

from . import policy as p
from .capacity import Inputs, TierInput, Traffic, applied_traffic, settings_for
from .machine import ACTIVE, Action, Evaluation, Event, RolloutState
from .steps import Step, rollout_id, steps_for

POLICY_FIELD = "spec.rollout.policy.classes"
Source = Literal["learned", "hand"]


@dataclass(frozen=True)
class Mixed:
    """The policy a rollout carries: where each class goes, the class mix last observed (empty:
    none yet), each class's latest verdict on its tier, and where it came from."""

    rollout: str  # the rollout id and attempt the policy was compiled for
    source: Source
    choices: Mapping[str, p.Choice]
    mix: Mapping[str, float] = field(default_factory=dict)
    verdicts: Mapping[str, str] = field(default_factory=dict)  # class -> Pass/Fail/Inconclusive


def rollout_key(rollout_id: str | None, attempt: int) -> str:
    return f"{rollout_id}-{attempt}"


def policy_tiers(
    tiers: Sequence[ResolvedTier], ready: Mapping[str, bool]
) -> tuple[p.Tier, list[p.Tier]]:
    """The baseline and the quantized tiers as the policy prices them: GPUs per replica over a
    replica's throughput relative to the baseline's (`defaults.MIXED_RELATIVE_THROUGHPUT`)."""

    def one(t: ResolvedTier) -> p.Tier:
        return p.Tier(
            name=t.name,
            precision=t.precision,  # type: ignore[arg-type]
            gpus_per_replica=t.serving.gpu.count,
            relative_throughput=defaults.MIXED_RELATIVE_THROUGHPUT[t.precision],
            ready=ready.get(t.name, False),
        )

    return one(tiers[0]), [one(t) for t in tiers[1:]]


def check(spec: QuantizedModelSpec) -> str | None:
    """Why a hand-written policy is refused (a class or tier that does not exist), naming the
    field; CEL refuses it at admission too, this covers objects stored before."""
    pol = spec.rollout.policy if spec.rollout else None
    if not spec.mixed or pol is None or pol.classes is None:
        return None
    base = spec.baseline.precision
    tiers = [p.Tier(t.name, t.precision, 1) for t in spec.quantized()]
    checked = p.check_policy(pol.classes, CLASSES, p.Tier(base, base, 1), tiers, POLICY_FIELD)
    return "; ".join(checked.refused) or None


def build_policy(
    spec: QuantizedModelSpec,
    tiers: Sequence[ResolvedTier],
    ready: Mapping[str, bool],
    observed: ClassObservation | None,
    rollout: str,
) -> tuple[Mixed, tuple[Event, ...]]:
    """The policy at the end of shadow, and an Event saying what it is (Warnings for classes a
    hand-written policy holds on the baseline)."""
    baseline, quantized = policy_tiers(tiers, ready)
    usable = observed is not None and observed.unavailable is None
    stats = dict(observed.stats) if observed is not None and usable else {}
    mix = dict(observed.mix) if observed is not None and usable else {}
    pol = spec.rollout.policy if spec.rollout else None
    events: list[Event] = []
    if pol is not None and pol.classes is not None:
        checked = p.check_policy(
            pol.classes, CLASSES, baseline, quantized, POLICY_FIELD, stats or None,
            _thresholds(spec),
        )  # fmt: skip
        if checked.policy is None:  # refused: `check` holds the rollout before it gets here
            raise ValueError("; ".join(checked.refused))
        choices: dict[str, p.Choice] = checked.policy
        source: Source = "hand"
        events += [Event("Warning", "ClassHeld", why) for why in checked.held]
    else:
        choices = p.compile_policy(CLASSES, baseline, quantized, stats, _thresholds(spec))
        source = "learned"
        if not usable:
            why = observed.unavailable if observed is not None else "no shadow observation"
            choices = {c: replace(ch, reason=f"{ch.reason} ({why})") for c, ch in choices.items()}
    mixed = Mixed(rollout, source, choices, mix)
    summary = ", ".join(f"{c} -> {ch.tier}" for c, ch in sorted(choices.items()))
    events.insert(0, Event("Normal", "PolicyCompiled", f"{source} policy: {summary}"))
    return mixed, tuple(events)


def _thresholds(spec: QuantizedModelSpec) -> p.Thresholds:
    pol = spec.rollout.policy if spec.rollout else None
    learn = pol.learn if pol else None
    if learn is None:
        return p.Thresholds()
    return p.Thresholds(learn.min_samples, learn.min_agreement)


def class_window(
    analysis_window: str, stage: str, step_started_at: datetime.datetime | None,
    now: datetime.datetime,
) -> str:  # fmt: skip
    """The window of the per-(class, tier) observation. In shadow, the whole stage so far: the
    policy is compiled from every shadow comparison of the stage, so a class of a few percent
    of the traffic gathers its minSamples over a 30m stage, not over the last few analysis
    rounds; never shorter than the analysis window. Elsewhere the analysis window: a class's
    verdict follows what its tier does now."""
    if stage != "shadow" or step_started_at is None:
        return analysis_window
    elapsed = math.ceil((now - step_started_at).total_seconds())
    return format_duration(max(parse_duration(analysis_window), elapsed))


def judge(
    mixed: Mixed,
    observed: ClassObservation | None,
    baseline: str,
    down: Mapping[str, str] | None = None,
) -> tuple[Mixed, tuple[Event, ...]]:
    """One analysis round after shadow: each class on a quantized tier judged by its
    (class, tier) verdict; a Fail moves that class alone (`policy.apply_verdicts`). `down`: tiers
    with no ready pod (and why): their classes move the same way. The mix is updated when
    observed."""
    verdicts: dict[tuple[str, str], p.Verdict] = {}
    reasons: dict[tuple[str, str], Sequence[str]] = {}
    seen: dict[str, str] = dict(mixed.verdicts)
    usable = observed is not None and observed.unavailable is None
    for cls, choice in mixed.choices.items():
        if choice.tier == baseline:
            seen[cls] = "Pass"  # the baseline is the yardstick, not judged per class
            continue
        if down and choice.tier in down:
            verdicts[(cls, choice.tier)] = "Fail"
            reasons[(cls, choice.tier)] = (down[choice.tier],)
            seen[cls] = "Fail"
            continue
        stats = observed.stats.get((cls, choice.tier)) if observed is not None and usable else None
        verdict: p.Verdict = stats.rules if stats is not None else "Inconclusive"
        verdicts[(cls, choice.tier)] = verdict
        reasons[(cls, choice.tier)] = stats.reasons if stats is not None else ()
        seen[cls] = verdict
    after = p.apply_verdicts(mixed.choices, verdicts, baseline, reasons)
    events = []
    for cls in sorted(after):
        was, now = mixed.choices[cls], after[cls]
        if was.tier != now.tier:
            why = "; ".join(reasons.get((cls, was.tier), ())) or "breached"
            events.append(
                Event(
                    "Warning",
                    "ClassRolledBack",
                    f"class {cls} breached on {was.tier}: {why}; now on {now.tier}",
                )
            )
            seen[cls] = "Fail"
    mix = dict(observed.mix) if observed is not None and usable and observed.mix else mixed.mix
    return replace(mixed, choices=after, mix=mix, verdicts=seen), tuple(events)


def evaluation(
    stage: str,
    observed: ClassObservation | None,
    tier_evaluations: Sequence[Evaluation],
    mixed: Mixed | None,
    baseline: str,
) -> Evaluation:
    """The verdict the state machine judges a step on. In shadow the policy compile is the
    judgement, so the step passes once the class observation is there (a class whose tiers did
    not pass goes to the baseline, it does not fail the model); after shadow, every class on a
    quantized tier needs a verdict, and a tier's model-wide rules failing fails the step."""
    if observed is None or observed.unavailable is not None:
        why = observed.unavailable if observed is not None else "no class observation"
        return Evaluation("Inconclusive", (f"per-class metrics unavailable: {why}",))
    if stage == "shadow":
        return Evaluation("Pass")
    if any(e.verdict == "Fail" for e in tier_evaluations):
        fails = tuple(r for e in tier_evaluations if e.verdict == "Fail" for r in e.reasons)
        return Evaluation("Fail", fails)
    waiting = [
        f"class {cls} on {ch.tier}: no verdict yet"
        for cls, ch in sorted((mixed.choices if mixed else {}).items())
        if ch.tier != baseline
        and ((s := observed.stats.get((cls, ch.tier))) is None or s.rules == "Inconclusive")
    ]
    unsure = tuple(r for e in tier_evaluations if e.verdict == "Inconclusive" for r in e.reasons)
    if waiting or unsure:
        return Evaluation("Inconclusive", (*unsure, *waiting))
    return Evaluation("Pass")


def result_row(verdict: Evaluation) -> dict[str, Any]:
    """The per-class judgement as a row of `status.lastAnalysis.results`."""
    row: dict[str, Any] = {"rule": "per-class", "verdict": verdict.verdict}
    if verdict.reasons:
        row["reason"] = "; ".join(verdict.reasons)[:1024]
    return row


# ---------------------------------------------------------------------------------------------
# Traffic


def traffic_entries(mixed: Mixed | None, weight: int, baseline: str) -> list[dict[str, Any]]:
    """`status.traffic.classes` at a step of `weight`%: each class sends `weight`% to its tier
    and the rest to the baseline (a class moved by a breach keeps the step's weight on its new
    tier: it passed shadow there). Before a policy exists, none: every class on the baseline."""
    if mixed is None:
        return []
    shares = p.class_shares(mixed.choices, weight, baseline)
    out = []
    for cls in sorted(shares):
        tier = mixed.choices[cls].tier
        on = shares[cls].get(tier, 0)
        out.append({"class": cls, "tier": tier, "weight": on, "rest": baseline})
    return out


def percents(fractions: Mapping[str, float]) -> dict[str, int]:
    """Fractions (summing to 1) as whole percents summing to 100 (largest remainder)."""
    total = sum(fractions.values())
    if total <= 0:
        return {}
    exact = {k: 100 * v / total for k, v in fractions.items()}
    out = {k: math.floor(round(v, 9)) for k, v in exact.items()}
    left = 100 - sum(out.values())
    for k in sorted(exact, key=lambda k: (out[k] - exact[k], k))[:left]:
        out[k] += 1
    return {k: v for k, v in out.items() if v}


def tier_traffic(
    mixed: Mixed | None,
    weight: int,
    mirror: int,
    baseline: str,
    targets: Sequence[str],
    reserve: bool = True,
) -> Traffic:
    """Each tier's share of the model's load at a step of `weight`% live (and `mirror`% mirrored
    to every quantized tier, in shadow), for the capacity planner.

    Loads the planner must size for but the router does not send are given to it as mirrored
    load (sized and gated the same, never routed):
    - with no class mix observed, each quantized tier that serves a class is sized for the
      step's whole weight, the most it could get, and the baseline for all of the traffic;
    - `reserve` (while the rollout runs and during the bake): the next fallback tier of each
      class holds that class's share too, so a partial rollback lands on Ready replicas at
      once, as the baseline's rollback reserve does for a whole rollback."""
    slot = {t: mirror for t in targets if mirror}
    if mixed is None or weight == 0:
        return Traffic({baseline: 100}, slot)
    shares = p.class_shares(mixed.choices, weight, baseline)
    if mixed.mix:
        live = percents(p.tier_shares(shares, mixed.mix)) or {baseline: 100}
    else:
        live = {baseline: 100}
        for ch in mixed.choices.values():
            if ch.tier != baseline:
                slot[ch.tier] = max(slot.get(ch.tier, 0), weight)
    if reserve:
        for cls, ch in sorted(mixed.choices.items()):
            if ch.tier == baseline or not ch.fallbacks or ch.fallbacks[0] == baseline:
                continue
            share = weight * mixed.mix[cls] if mixed.mix else weight
            slot[ch.fallbacks[0]] = slot.get(ch.fallbacks[0], 0) + math.ceil(round(share, 9))
    return Traffic(live, {t: min(100, w) for t, w in slot.items() if w})


def applied_of(
    status_traffic: Mapping[str, Any] | None,
    mixed: Mixed | None,
    baseline: str,
    reserve: bool = True,
) -> Traffic:
    """What the router applies now, from `status.traffic` (its classes and mirror), as tier
    loads (with the mix and fallbacks of `mixed`, as `tier_traffic` sizes them)."""
    if not status_traffic:
        return Traffic({baseline: 100})
    if status_traffic.get("target") and not status_traffic.get("classes"):
        return applied_traffic(status_traffic, baseline)  # a single target's split
    targets = [b["tier"] for b in status_traffic.get("targets") or []]
    mirror = int(status_traffic.get("mirrorPercent") or 0)
    entries = status_traffic.get("classes") or []
    if mixed is None or not entries:
        return Traffic({baseline: 100}, {t: mirror for t in targets if mirror})
    known = mixed.choices
    choices = {
        e["class"]: p.Choice(
            e["tier"],
            "",
            known[e["class"]].fallbacks
            if e["class"] in known and known[e["class"]].tier == e["tier"]
            else (),
        )
        for e in entries
        if e.get("weight") and e["tier"]
    }
    weight = max((int(e.get("weight") or 0) for e in entries if e["tier"] != baseline), default=0)
    return tier_traffic(replace(mixed, choices=choices), weight, mirror, baseline, targets, reserve)


# ---------------------------------------------------------------------------------------------
# Status


def to_status(
    mixed: Mixed, weight: int, baseline: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """`status.classes` (the class table) and `status.policy` (what it belongs to)."""
    rows = []
    shares = p.class_shares(mixed.choices, weight, baseline)
    for cls in sorted(mixed.choices):
        ch = mixed.choices[cls]
        rows.append(
            {
                "class": cls,
                "tier": ch.tier,
                "share": shares[cls].get(ch.tier, 0),
                "agreement": ch.agreement,
                "samples": ch.samples,
                "verdict": mixed.verdicts.get(cls),
                "reason": ch.reason[:1024],
                "fallbacks": list(ch.fallbacks),
                "requestShare": round(mixed.mix[cls], 4) if cls in mixed.mix else None,
            }
        )
    return rows, {"for": mixed.rollout, "source": mixed.source}


def from_status(status: Mapping[str, Any]) -> Mixed | None:
    """The policy recorded in status, or None when there is none."""
    meta = status.get("policy")
    rows = status.get("classes")
    if not isinstance(meta, Mapping) or not rows:
        return None
    choices = {
        r["class"]: p.Choice(
            r["tier"], r.get("reason") or "", tuple(r.get("fallbacks") or ()),
            r.get("agreement"), int(r.get("samples") or 0),
        )
        for r in rows
    }  # fmt: skip
    mix = {r["class"]: float(r["requestShare"]) for r in rows if r.get("requestShare") is not None}
    verdicts = {r["class"]: r["verdict"] for r in rows if r.get("verdict")}
    source: Source = "hand" if meta.get("source") == "hand" else "learned"
    return Mixed(str(meta.get("for")), source, choices, mix, verdicts)


def relative_cost(mixed: Mixed, tiers: Sequence[ResolvedTier]) -> float | None:
    """GPU cost of the policy at full over the observed mix, relative to the baseline alone."""
    if not mixed.mix:
        return None
    baseline, quantized = policy_tiers(tiers, {})
    shares = p.class_shares(mixed.choices, 100, baseline.name)
    return round(p.relative_cost(p.tier_shares(shares, mixed.mix), quantized, baseline), 3)


def router_traffic(
    *, name: str, served_model: str, rollout: str, baseline: str, targets: Sequence[str],
    mixed: Mixed | None, weight: int, mirror: int, sticky_header: str | None,
    previous: Mapping[str, Any] | None, moved: bool,
) -> dict[str, Any]:  # fmt: skip
    """`status.traffic` for the router: every quantized tier as a backend (each gets the
    mirrored copies in shadow) and each class's split at the step's `weight`. `moved`: capacity
    lets the step's weights apply now; when not, the classes and mirror stay as `previous` (the
    router's current configuration): a class moves onto its tier whole or not at all."""

    def backend(tier: str) -> TrafficBackend:
        return TrafficBackend(tier=tier, service=resource_name(name, tier), port=VLLM_PORT)

    if not moved and previous and previous.get("target"):
        # a single target's split, from before spec.targets: kept whole until it can move
        return dict(previous)
    entries = traffic_entries(mixed, weight, baseline)
    if not moved and previous:
        entries = list(previous.get("classes") or [])
        weight = int(previous.get("targetWeight") or 0)
        mirror = int(previous.get("mirrorPercent") or 0)
    wire = TrafficStatus.model_validate(
        {
            "rolloutId": rollout,
            "servedModel": served_model,
            "targetWeight": weight,
            "mirrorPercent": mirror,
            "stickyHeader": sticky_header,
            "baseline": backend(baseline).to_wire(),
            "targets": [backend(t).to_wire() for t in targets],
            "classes": entries or None,
        }
    ).to_wire()
    # A merge patch: a single target's backend goes, and so do the classes while there are
    # none (the router then sends every live request to the baseline without counting a
    # fallback, where an empty list would count each as a class with no route).
    return {**wire, "target": None, "classes": wire.get("classes")}


# ---------------------------------------------------------------------------------------------
# The pass (`pass_/plan.py` calls these for a spec with `targets`)


def next_policy(
    spec: QuantizedModelSpec,
    new: RolloutState,
    recorded: Mixed | None,
    observed: ClassObservation | None,
    measured: bool,
    ready: Mapping[str, bool],
    down: Mapping[str, str],
    steps: tuple[Step, ...],
) -> tuple[Mixed | None, tuple[Event, ...]]:
    """The policy after this pass: compiled when the rollout leaves shadow (from the
    evaluation that ended it, `measured`), judged per class each round after that, kept as it
    was otherwise (a rolled-back rollout shows the table it had). `down`: tiers with no ready
    pod, and why."""
    key = rollout_key(new.rollout_id, new.attempt)
    current = recorded if recorded is not None and recorded.rollout == key else None
    if new.phase == "RolledBack" or new.held is not None:
        return current, ()
    if new.phase == "Pending" or steps[min(new.step, len(steps) - 1)].stage == "shadow":
        return None, ()
    resolved = all_tiers(spec)
    if current is None:
        return build_policy(spec, resolved, ready, observed, key)
    if not measured:
        return current, ()
    quantized = {t.name for t in resolved[1:]}
    gone = {n: why for n, why in down.items() if n in quantized}
    return judge(current, observed, resolved[0].name, gone)


def capacity_inputs(
    spec: QuantizedModelSpec,
    state: RolloutState,
    tiers: tuple[TierInput, ...],
    applied: Mapping[str, Any] | None,
    now: datetime.datetime,
    action: Action | None,
    policy: Mixed | None,
) -> Inputs:
    """The capacity planner's inputs for a mixed model: each tier's load is its classes' share
    of the step's weight over the class mix (`tier_traffic`); the mirrored copies go to every
    tier; the next step's loads are readied ahead as for a single target."""
    steps = steps_for(spec)
    names = [t.name for t in all_tiers(spec)]
    b, targets = names[0], names[1:]
    nxt: Traffic | None = None
    nxt_at = None
    starting = state.rollout_id != rollout_id(spec) or state.phase == "Pending"
    retrying = state.phase == "RolledBack" and action is not None and action.kind == "retry"
    if starting or retrying:
        nxt = tier_traffic(None, steps[0].weight, steps[0].mirror, b, targets)
    elif state.phase in ACTIVE and state.step + 1 < len(steps):
        step = steps[state.step + 1]
        nxt = tier_traffic(policy, step.weight, step.mirror, b, targets)
        held_for = steps[state.step].duration_s
        promoting = action is not None and action.kind == "promote"
        if state.step_started_at is not None and held_for is not None and not promoting:
            nxt_at = state.step_started_at + datetime.timedelta(seconds=held_for)
    full_at = state.step_started_at if state.phase == "Succeeded" else None
    settings = settings_for(spec)
    baked = full_at is not None and (now - full_at).total_seconds() >= settings.bake_s
    wanted = tier_traffic(
        policy, state.target_weight, state.mirror_percent, b, targets, reserve=not baked
    )
    current = applied_of(applied, policy, b, reserve=not baked)
    if starting:
        wanted = Traffic({b: 100})
    return Inputs(
        tiers=tiers, current=current, wanted=wanted, phase=state.phase, now=now,
        settings=settings, full_at=full_at, rolled_back_at=state.rolled_back_at, next=nxt,
        next_at=nxt_at,
    )  # fmt: skip


def status_fields(
    spec: QuantizedModelSpec,
    name: str,
    state: RolloutState,
    sticky: str | None,
    moved: bool,
    policy: Mixed | None,
    applied: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The status fields a mixed rollout owns beside the state machine's: `traffic` (each
    class's split; `moved` False keeps `applied`'s while capacity holds the move), `classes`
    and `policy`."""
    names = [t.name for t in all_tiers(spec)]
    b, targets = names[0], names[1:]
    weight = state.target_weight if policy is not None else 0
    out: dict[str, Any] = {
        "traffic": router_traffic(
            name=name, served_model=spec.model,
            rollout=rollout_key(state.rollout_id or "", state.attempt), baseline=b,
            targets=targets, mixed=policy, weight=weight, mirror=state.mirror_percent,
            sticky_header=sticky, previous=applied, moved=moved,
        ),
        "classes": None,
        "policy": None,
    }  # fmt: skip
    if policy is not None:
        out["classes"], out["policy"] = to_status(policy, weight, b)
    return out
