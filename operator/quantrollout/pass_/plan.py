"""One pass's decision for one model: `plan(observed, now) -> Plan`. Pure: what the observer read
comes in as values; everything to do goes out as values, for the executor (`pass_.execute`) to
apply in its fixed order: capacity up, traffic, capacity down, status once, Events.

What it decides, from the model as read, its children, the pods' reasons, a verdict (when one
was due) and a user's action:

- the capacity plan (`rollout.capacity`): whether the next step's weights have Ready replicas
  (the state machine starts or promotes only then), each tier's replicas (and HPA bounds), the
  traffic that may be applied now (weight moves onto a tier only once it is Ready for it, back
  to the baseline as far as its Ready replicas carry), tiers that left the spec to delete;
- the preflight step (`rollout.preflight_step`): while a rollout is about to start, whether this
  attempt's preflight passed (until it has, the machine is told the tiers are not ready: no
  traffic moves), the preflight Job to create, the one to delete (superseded, or given up on),
  and the rollback of a failed one;
- the rollout's next state (`rollout.machine.decide`), and with it the traffic (the built-in
  router's `status.traffic`; the user's HTTPRoute rules for Gateway API);
- the children to apply or delete, each marked capacity up (applied before traffic moves) or
  capacity down (only after traffic moved off);
- one status patch holding only what changed (none at steady state), the Events of the rollout
  and of every condition that changed, and when to run again.

An edit the operator refuses (a check CEL cannot make, a tier that cannot fit its GPUs) while a
rollout exists holds everything where it is: no child is written, traffic stays at its weights,
the phase is Paused with the field and the reason (`status.rollout.heldFor`, the conditions, an
EditRefused Event). Fixing the edit resumes the same step. Only a change of what is rolled out
(`rollout.steps.rollout_id`) starts a new rollout.

No field is read back out of status that another module wrote: the tiers' readiness comes from
the children observed, and the rollout's own record is the only status this reads.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from quantrollout import health
from quantrollout.analysis.class_stats import ClassObservation
from quantrollout.api.crd import GROUP, KIND, VERSION
from quantrollout.api.resolve import all_tiers, tiers
from quantrollout.api.spec import QuantizedModelSpec
from quantrollout.defaults import (
    ACTION_ANNOTATION as ACTION_ANNOTATION,  # the executor reads it here
)
from quantrollout.manifests.autoscaler import build_hpa
from quantrollout.manifests.drift import drifted
from quantrollout.manifests.plan import Plan as Manifests
from quantrollout.manifests.plan import Problem, parse_spec
from quantrollout.manifests.plan import plan as manifests_for
from quantrollout.manifests.preflight_job import build_preflight_job
from quantrollout.manifests.vllm import GPU_RESOURCE, resource_name
from quantrollout.rollout import actions, after_bake, capacity, preflight_step
from quantrollout.rollout import mixed as mx
from quantrollout.rollout.codec import rfc3339, state_from_status, status_from_state
from quantrollout.rollout.machine import (
    ACTIVE,
    Action,
    AnalysisSettings,
    Decision,
    Evaluation,
    Event,
    Inputs,
    RolloutState,
    decide,
    rollback,
)
from quantrollout.rollout.schedule import next_evaluation_at
from quantrollout.rollout.settings import analysis_of, settings_of
from quantrollout.rollout.steps import Step, legacy_rollout_id, rollout_id, stages_hash, steps_for
from quantrollout.traffic.desired import builtin_config, http_route_rules

# Deciding with an unparsable spec: no analysis runs, so its settings are never read.
_NO_ANALYSIS = AnalysisSettings(0.0, 1, "pause", 0.0)

_TRAFFIC_RETRY_S = 30.0  # the longest a pass that could not write traffic waits to try again
_DRAIN_CHECK_S = 1.0  # how soon to look again at a tier that left the spec and still exists
_PREFLIGHT_CHECK_S = 10.0  # how often to read a running preflight Job without being woken

ChildKey = tuple[str, str]  # (kind, name)
HPA = "HorizontalPodAutoscaler"


@dataclass(frozen=True)
class Measured:
    """An evaluation made for one step of one rollout of one generation of the spec."""

    key: tuple[int, str | None, int]
    evaluation: Evaluation
    results: tuple[dict[str, Any], ...]
    classes: ClassObservation | None = None  # mixed precision: the per-class observation


@dataclass(frozen=True)
class Observed:
    """Everything one pass read: the model, its children (None: absent), the scheduler's reason
    for each tier it cannot place, a verdict when one was due, a user's action."""

    model: dict[str, Any]
    children: Mapping[ChildKey, dict[str, Any] | None] = field(default_factory=dict)
    unschedulable: Mapping[str, str] = field(default_factory=dict)  # tier -> scheduler's message
    measured: Measured | None = None
    action: Action | None = None
    route_pending: bool = False  # the HTTPRoute may not match the record (a lost race, a refusal)
    # Deployments labelled with the model whose tier is no longer in the spec, by tier.
    retired: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    # The preflight Job of the attempt about to start (None: none in play, not looked for).
    preflight_job: preflight_step.JobSeen | None = None
    preflight_image: str = ""  # the operator's own image, which the preflight Job runs


@dataclass(frozen=True)
class ChildWrite:
    op: Literal["apply", "delete"]
    kind: str
    name: str
    body: dict[str, Any] | None = None  # apply: the object, owner reference set


@dataclass(frozen=True)
class RouteWrite:
    namespace: str
    name: str
    rules: dict[str, Any]


@dataclass(frozen=True)
class Plan:
    namespace: str
    name: str
    resource_version: str
    capacity_up: tuple[ChildWrite, ...] = ()
    jobs: tuple[ChildWrite, ...] = ()  # the preflight Job, applied after capacity up
    route: RouteWrite | None = None
    capacity_down: tuple[ChildWrite, ...] = ()
    status: dict[str, Any] = field(default_factory=dict)  # the merge patch; {} writes nothing
    # The part of `status` that is written even when the traffic could not be (tiers, conditions).
    health_keys: frozenset[str] = frozenset()
    traffic_in_status: bool = True  # the built-in router reads its traffic from status
    events: tuple[Event, ...] = ()  # the rollout's, for the webhook too
    condition_events: tuple[Event, ...] = ()  # one per condition that changed
    remove_action: bool = False
    action_events: tuple[Event, ...] = ()  # an action refused in this phase, and why
    wake_in_s: float | None = None  # None: nothing scheduled until something changes
    traffic_retry_s: float = _TRAFFIC_RETRY_S  # the wait before trying a refused route again
    before: RolloutState | None = None
    after: RolloutState | None = None
    steps: tuple[Step, ...] = ()
    verdict: str | None = None


def owner_reference(qm: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": qm["metadata"]["name"],
        "uid": qm["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def requested_action(qm: dict[str, Any]) -> tuple[str, str] | None:
    """The value of the action annotation, whatever it is, and who set it (its field manager)."""
    value = (qm["metadata"].get("annotations") or {}).get(ACTION_ANNOTATION)
    if value is None:
        return None
    by = "an annotation"
    for entry in qm["metadata"].get("managedFields") or []:
        annotations = (entry.get("fieldsV1") or {}).get("f:metadata", {}).get("f:annotations", {})
        if f"f:{ACTION_ANNOTATION}" in annotations:
            by = f"{entry.get('manager', 'someone')} (annotation {ACTION_ANNOTATION}={value})"
    return str(value), by


def action_of(qm: dict[str, Any]) -> Action | None:
    """The one-shot action asked for by annotation, and who asked (the field manager that set it)."""
    requested = requested_action(qm)
    kind = next((k for k in actions.ONE_SHOT if requested and k == requested[0]), None)
    if requested is None or kind is None:
        return None
    return Action(kind, requested[1])


def refused_action(
    qm: dict[str, Any], spec: QuantizedModelSpec | None, state: RolloutState, refused: bool
) -> Event | None:
    """A Warning Event for an action that does nothing in the phase it met (or an unknown one),
    instead of its annotation vanishing without a word (`rollout.actions`). `refused`: the
    operator refuses the spec as it stands."""
    requested = requested_action(qm)
    if requested is None:
        return None
    value, by = requested
    if spec is None or (refused and state.rollout_id != rollout_id(spec)):
        # An invalid model with no rollout to act on: the phase it shows (Failed).
        phase = (qm.get("status") or {}).get("phase")
    else:  # none if this pass starts a new rollout (decide ignores the action then)
        phase = state.phase if state.rollout_id == rollout_id(spec) else None
    why = actions.refusal(value, phase)
    if why is None:
        return None
    return Event("Warning", "ActionRefused", f"{value} refused: {why} (asked by {by})")


def current_state(status: dict[str, Any], spec: QuantizedModelSpec | None) -> RolloutState:
    """The rollout as last recorded; one recorded under the id of an older release is the same
    rollout (an upgrade restarts nothing)."""
    state = state_from_status(status)
    if spec is not None and state.rollout_id == legacy_rollout_id(spec):
        state = replace(state, rollout_id=rollout_id(spec))
    return state


def refusal(manifests: Manifests) -> Problem | None:
    """Why the operator refuses the spec as it stands: a check CEL cannot make, or a tier that
    cannot be deployed (it does not fit its GPUs)."""
    if manifests.invalid:
        return manifests.invalid
    return next((tp.problem for tp in manifests.tiers if tp.problem), None)


def children_of(manifests: Manifests, name: str) -> tuple[ChildKey, ...]:
    """The children a pass reads: every tier's Deployment and Service, and its
    HorizontalPodAutoscaler when the tier is autoscaled."""
    return tuple(
        (kind, resource_name(name, tp.tier))
        for tp in manifests.tiers
        for kind in ("Deployment", "Service", HPA)
        if kind != HPA or tp.tier.serving.autoscaling is not None
    )


def observed_tiers(
    manifests: Manifests, observed: Observed, name: str
) -> dict[str, health.ObservedTier]:
    """What each deployable tier's Deployment (and its pods) says of its health."""
    out = {}
    for tp in manifests.tiers:
        if not tp.deployable:
            continue
        live = observed.children.get(("Deployment", resource_name(name, tp.tier)))
        reason = observed.unschedulable.get(tp.tier.name)
        out[tp.tier.name] = health.observe_deployment(live, reason)
    return out


def tiers_ready(seen: Mapping[str, health.ObservedTier], names: tuple[str, ...]) -> bool:
    """Every tier of the spec observed ready (what a rollout waits for to start or promote)."""
    return bool(names) and all(n in seen and seen[n].ready for n in names)


def target_down(seen: Mapping[str, health.ObservedTier], target: str) -> str | None:
    """Why the target tier has no ready pod at all (crash-looping, say), or None."""
    tier = seen.get(target)
    if tier is not None and tier.replicas and not tier.ready_replicas:
        return f"target tier {target} has no ready pod (0/{tier.replicas} ready)"
    return None


def rollout_inputs(
    spec: QuantizedModelSpec,
    namespace: str,
    name: str,
    now: datetime.datetime,
    seen: Mapping[str, health.ObservedTier],
    evaluation: Evaluation | None = None,
    action: Action | None = None,
    refused: str | None = None,
    *,
    ready_for_next: bool = True,
) -> Inputs:
    """The state machine's inputs for a spec and what was observed of its tiers.
    `ready_for_next`: the capacity plan's word that the next step's weights have Ready replicas
    (`capacity_gate`): nothing starts or is promoted onto capacity still loading."""
    steps = steps_for(spec)
    baseline, target = tiers(spec)
    base = seen.get(baseline.name)
    return Inputs(
        rollout_id=rollout_id(spec), steps=steps, stages_hash=stages_hash(steps),
        analysis=settings_of(analysis_of(spec), namespace, name), now=now,
        paused=bool(spec.rollout and spec.rollout.paused),
        tiers_ready=ready_for_next and base is not None and base.ready,
        # Mixed precision: a tier with no ready pod moves its classes off (`mixed.judge`).
        target_down=None if spec.mixed else target_down(seen, target.name),
        evaluation=evaluation, action=action,
        refused=refused,
    )  # fmt: skip


def capacity_tiers(
    spec: QuantizedModelSpec,
    seen: Mapping[str, health.ObservedTier],
    retired: Mapping[str, tuple[health.ObservedTier, int]] | None = None,
    rolling: frozenset[str] = frozenset(),
) -> tuple[capacity.TierInput, ...]:
    """The tiers as the capacity planner takes them: the spec's, and those leaving it (with the
    GPUs per replica their Deployment asks for). A tier in `rolling` is having its pods
    replaced: none of its Ready pods counts (they run what is being replaced)."""
    out = []
    for tier in all_tiers(spec):
        o = seen.get(tier.name, health.ObservedTier())
        out.append(
            capacity.tier_input(
                tier,
                replicas=o.replicas if o.exists else 0,
                ready_replicas=0 if tier.name in rolling else o.ready_replicas,
                unschedulable=o.unschedulable,
            )
        )
    for tier_name, (o, gpus) in sorted((retired or {}).items()):
        out.append(
            capacity.TierInput(
                name=tier_name,
                role="retired",
                full_replicas=max(1, o.replicas),
                gpus_per_replica=gpus,
                replicas=o.replicas,
                ready_replicas=o.ready_replicas,
                unschedulable=o.unschedulable,
            )
        )
    return tuple(out)


def capacity_plan(
    spec: QuantizedModelSpec,
    state: RolloutState,
    tier_inputs: tuple[capacity.TierInput, ...],
    applied: Mapping[str, Any] | None,
    now: datetime.datetime,
    action: Action | None = None,
    policy: mx.Mixed | None = None,
    scale_down_now: bool = False,
) -> capacity.CapacityPlan:
    """The capacity plan for the rollout at `state`: replicas per tier, the traffic that may be
    applied now (from `applied`, the `status.traffic` the router reads), and whether the next
    step's weights (the first stage's, before a rollout starts) have Ready replicas.
    `scale_down_now`: the rollback was its preflight's, so the target (which never served)
    goes to 0 at once rather than after abortScaleDownDelay."""
    steps = steps_for(spec)
    baseline, target = tiers(spec)
    b, t = baseline.name, target.name
    if spec.mixed:
        return capacity.plan(
            mx.capacity_inputs(spec, state, tier_inputs, applied, now, action, policy)
        )
    nxt: capacity.Traffic | None = None
    nxt_at = None
    starting = state.rollout_id != rollout_id(spec) or state.phase == "Pending"
    retrying = state.phase == "RolledBack" and action is not None and action.kind == "retry"
    if starting or retrying:
        nxt = capacity.next_traffic(b, t, steps[0])
    elif state.phase in ACTIVE and state.step + 1 < len(steps):
        nxt = capacity.next_traffic(b, t, steps[state.step + 1])
        held_for = steps[state.step].duration_s
        promoting = action is not None and action.kind == "promote"
        if state.step_started_at is not None and held_for is not None and not promoting:
            nxt_at = state.step_started_at + datetime.timedelta(seconds=held_for)
    full_at = state.step_started_at if state.phase == "Succeeded" else None
    wanted = capacity.step_traffic(b, t, state.target_weight, state.mirror_percent)
    current = capacity.applied_traffic(applied, b)
    leaving = [x.name for x in tier_inputs if x.role == "retired" and current.load(x.name)]
    if starting or leaving:
        # Before a rollout starts, and while a tier that left the spec still has traffic, all of
        # it goes to the baseline first (routers carry two tiers, not three).
        wanted = capacity.Traffic({b: 100})
    settings = capacity.settings_for(spec)
    if scale_down_now:
        settings = dataclasses.replace(settings, abort_scale_down_delay_s=0.0)
    cap = capacity.plan(
        capacity.Inputs(
            tiers=tier_inputs, current=current, wanted=wanted,
            phase=state.phase, now=now, settings=settings, full_at=full_at,
            rolled_back_at=state.rolled_back_at, next=nxt, next_at=nxt_at,
        )
    )  # fmt: skip
    if leaving:
        why = f"traffic leaves {', '.join(leaving)} (no longer in the spec) first"
        cap = dataclasses.replace(cap, ready_for_next=False, next_held=why)
    return cap


def mixed_policy(
    spec: QuantizedModelSpec,
    new: RolloutState,
    recorded: mx.Mixed | None,
    measured: Measured | None,
    seen: Mapping[str, health.ObservedTier],
    steps: tuple[Step, ...],
) -> tuple[mx.Mixed | None, tuple[Event, ...]]:
    """The policy after this pass (`rollout.mixed.next_policy`), from what was observed."""
    down = {n: why for n in seen if (why := target_down(seen, n)) is not None}
    return mx.next_policy(
        spec, new, recorded, measured.classes if measured else None, measured is not None,
        {n: o.ready for n, o in seen.items()}, down, steps,
    )  # fmt: skip


def rollout_status(
    spec: QuantizedModelSpec,
    name: str,
    state: RolloutState,
    steps: tuple[Step, ...],
    traffic: capacity.Traffic | None = None,
    policy: mx.Mixed | None = None,
    applied: Mapping[str, Any] | None = None,
    moved: bool = True,
) -> dict[str, Any]:
    """The status fields the rollout owns, with the traffic the built-in router reads: the
    rollout's weights, or `traffic` (what capacity lets apply now, which may lag them). Mixed
    precision: the class table and each class's split (`policy`; `applied`: the traffic the
    router has now, kept while capacity holds a move: `moved` False)."""
    baseline, target = tiers(spec)
    fields = status_from_state(state, steps)
    sticky = next((s.sticky_header for s in steps if s.sticky_header), None)
    if spec.mixed:
        return {**fields, **mx.status_fields(spec, name, state, sticky, moved, policy, applied)}
    other, live, mirror = target.name, state.target_weight, state.mirror_percent
    if traffic is not None:
        beside, live, mirror = capacity.two_tiers(traffic, baseline.name)
        other = beside or target.name
    fields["traffic"] = builtin_config(
        name=name, served_model=spec.model, rollout_id=state.rollout_id or "",
        attempt=state.attempt, baseline=baseline, target=other,
        target_weight=live, mirror_percent=mirror, sticky_header=sticky,
    )  # fmt: skip
    # A merge patch: what a mixed-precision spec wrote before goes (a switch to spec.target).
    fields["traffic"].update(targets=None, classes=None)
    fields.update(classes=None, policy=None)
    return fields


def _held_status(
    status: dict[str, Any], state: RolloutState, steps: tuple[Step, ...]
) -> dict[str, Any]:
    """While an edit is refused: the rollout's record with its stage and traffic as they were,
    only the weights changed (by a rollback; a hold itself changes none)."""
    fields = status_from_state(state, steps or (Step("shadow", 0, 0, None),))
    fields["stage"] = status.get("stage")
    traffic = status.get("traffic")
    if traffic:
        fields["traffic"] = {
            **traffic,
            "targetWeight": state.target_weight,
            "mirrorPercent": state.mirror_percent,
        }
        if traffic.get("classes") and not state.target_weight:
            # rolled back: every class on the baseline (its `rest`)
            fields["traffic"]["classes"] = [{**c, "weight": 0} for c in traffic["classes"]]
    return fields


def _strip(value: Any) -> Any:
    """As a merge patch leaves it stored: no None values in objects."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def changed(status: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """The merge patch from `status` to `desired`: the top-level fields that differ."""
    return {k: v for k, v in desired.items() if _strip(status.get(k)) != _strip(v)}


def _template_drifted(body: dict[str, Any], live: dict[str, Any]) -> bool:
    """A change of the Deployment other than its replicas: its pods are replaced."""
    spec = {k: v for k, v in body.get("spec", {}).items() if k != "replicas"}
    return drifted({**body, "spec": spec}, live)


def _children(
    manifests: Manifests,
    observed: Observed,
    namespace: str,
    name: str,
    owner: dict[str, Any],
    cap: capacity.CapacityPlan | None,
) -> tuple[list[ChildWrite], list[ChildWrite], set[str]]:
    """Capacity up (new objects, more replicas, other changes), capacity down (fewer replicas,
    deletions), and the tiers whose pods are being replaced (not ready for a decision until
    the new ones are). Each tier runs the replicas the capacity plan wants (without one: the
    replicas its spec asks for); an autoscaled tier gets an HPA with the plan's bounds."""
    up: list[ChildWrite] = []
    down: list[ChildWrite] = []
    rolling: set[str] = set()
    for tp in manifests.tiers:
        rname = resource_name(name, tp.tier)
        if not tp.deployable:
            # A target that cannot run is removed (no traffic reaches it: a rollout that sends
            # it some is held instead); the baseline is never taken away by us.
            if tp.tier.role == "target":
                for kind in ("Deployment", "Service", HPA):
                    if observed.children.get((kind, rname)) is not None:
                        down.append(ChildWrite("delete", kind, rname))
            continue
        wanted = next((t for t in cap.tiers if t.name == tp.tier.name), None) if cap else None
        autoscaled = tp.tier.serving.autoscaling is not None
        live_deployment = observed.children.get(("Deployment", rname)) or {}
        have = live_deployment.get("spec", {}).get("replicas")
        for desired in tp.objects:
            body = {**desired, "metadata": {**desired["metadata"], "ownerReferences": [owner]}}
            kind = desired["kind"]
            if (
                kind == "Deployment"
                and wanted is not None
                and (not autoscaled or not wanted.replicas)
            ):
                body = {**body, "spec": {**body["spec"], "replicas": wanted.replicas}}
            live = observed.children.get((kind, rname))
            if live is not None and not drifted(body, live):
                continue
            write = ChildWrite("apply", kind, rname, body)
            if kind == "Deployment":
                if live is None or _template_drifted(body, live):
                    rolling.add(tp.tier.name)
                want = body["spec"].get("replicas")
                if live is not None and want is not None and have is not None and want < have:
                    down.append(write)
                    continue
            up.append(write)
        if autoscaled and wanted is not None:
            live_hpa = observed.children.get((HPA, rname))
            if wanted.replicas and wanted.max_replicas:
                hpa = build_hpa(
                    name=name, namespace=namespace, tier=tp.tier, min_replicas=wanted.replicas,
                    max_replicas=wanted.max_replicas,
                )  # fmt: skip
                hpa["metadata"]["ownerReferences"] = [owner]
                if live_hpa is None or drifted(hpa, live_hpa):
                    lower = live_hpa is not None and wanted.replicas < int(
                        live_hpa.get("spec", {}).get("minReplicas") or 0
                    )
                    (down if lower else up).append(ChildWrite("apply", HPA, rname, hpa))
            elif live_hpa is not None:
                down.append(ChildWrite("delete", HPA, rname))
    for tier_name in cap.delete if cap else ():
        # A tier no longer in the spec that no traffic reaches any more.
        for kind in ("Deployment", "Service", HPA):
            down.append(ChildWrite("delete", kind, resource_name(name, tier_name)))
    return up, down, rolling


def _gpus(deployment: dict[str, Any]) -> int:
    """GPUs per replica a Deployment asks for (its containers' nvidia.com/gpu limits)."""
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers")
    total = 0
    for c in containers or []:
        total += int((c.get("resources", {}).get("limits") or {}).get(GPU_RESOURCE, 0) or 0)
    return total


def _retired(observed: Observed) -> dict[str, tuple[health.ObservedTier, int]]:
    return {
        tier: (health.observe_deployment(d, observed.unschedulable.get(tier)), _gpus(d))
        for tier, d in observed.retired.items()
    }


def _condition_events(transitions: list[health.Transition]) -> list[Event]:
    return [
        Event(t.event_type, f"{t.type}{t.status}", f"{t.reason}: {t.message}") for t in transitions
    ]


def preflight_attempt(
    spec: QuantizedModelSpec, state: RolloutState, action: Action | None
) -> int | None:
    """The attempt whose preflight is in play this pass: a rollout about to start (a new
    target, Pending, a retry asked for after a rollback); None when none is, or preflight is off."""
    if preflight_step.settings_of(spec) is None:
        return None
    if state.rollout_id != rollout_id(spec):
        return 0
    if state.phase == "Pending":
        return state.attempt
    if state.phase == "RolledBack" and action is not None and action.kind == "retry":
        return state.attempt + 1
    return None


def preflight_job_due(qm: dict[str, Any]) -> str | None:
    """The name of the preflight Job to look at this pass, if one is in play (the observer
    reads it; `plan` decides)."""
    parsed = parse_spec(qm.get("spec", {}))
    if isinstance(parsed, Problem):
        return None
    state = current_state(qm.get("status") or {}, parsed)
    attempt = preflight_attempt(parsed, state, action_of(qm))
    if attempt is None:
        return None
    return preflight_step.job_name(qm["metadata"]["name"], rollout_id(parsed), attempt)


def _preflight(
    spec: QuantizedModelSpec,
    state: RolloutState,
    observed: Observed,
    tiers_ready: bool,
    now: datetime.datetime,
) -> preflight_step.Outcome | None:
    """This pass's preflight, when one is in play (`rollout.preflight_step`)."""
    settings = preflight_step.settings_of(spec)
    attempt = preflight_attempt(spec, state, observed.action)
    if settings is None or attempt is None:
        return None
    rid = rollout_id(spec)
    status = observed.model.get("status") or {}
    return preflight_step.advance(
        settings, preflight_step.record_of(status, rid, attempt),
        model=observed.model["metadata"]["name"], rollout_id=rid, attempt=attempt,
        tiers_ready=tiers_ready, job=observed.preflight_job, now=now,
    )  # fmt: skip


def _preflight_job(
    spec: QuantizedModelSpec, observed: Observed, record: dict[str, Any]
) -> ChildWrite | None:
    settings = preflight_step.settings_of(spec)
    if settings is None or not observed.preflight_image:
        return None
    meta = observed.model["metadata"]
    run_id = f"{record['rolloutId']}-{record['attempt']}"
    body = build_preflight_job(
        spec=spec, settings=settings, name=meta["name"], namespace=meta["namespace"],
        job_name=record["job"], run_id=run_id, image=observed.preflight_image,
        owner=owner_reference(observed.model),
    )  # fmt: skip
    return ChildWrite("apply", "Job", record["job"], body)


def _after_preflight(
    decision: Decision,
    pre: preflight_step.Outcome | None,
    now: datetime.datetime,
    recorded: dict[str, Any] | None,
) -> tuple[Decision, dict[str, Any] | None]:
    """The decision with a failed preflight's rollback (traffic stays at 0%), and the record
    to write; a rollout aborted while its preflight ran closes the record too (`recorded`, the
    one in status, is this attempt's when the pass left it unchanged)."""
    if pre is None:
        return decision, None
    record = pre.record
    if pre.failed:
        rolled = rollback(
            decision.state, pre.failed, now, "preflight failed, no traffic moved to the target"
        )
        return Decision(rolled.state, (*decision.events, *pre.events)), record
    events = (*decision.events, *pre.events)
    current = record if record is not None else recorded
    if (
        decision.state.phase == "RolledBack"
        and current is not None
        and current["phase"] == "Running"
    ):
        record = preflight_step.closed(current, decision.state.rollback_reasons, now)
    return Decision(decision.state, events), record


def decide_rollout(spec: QuantizedModelSpec, state: RolloutState, inputs: Inputs) -> Decision:
    """The state machine, watching on after full (`rollout.after_bake`); a refused edit holds
    whatever the phase."""
    if inputs.refused is not None:
        return decide(state, inputs)
    return after_bake.watch(state, inputs, after_bake.after_bake_of(spec)).decision


def next_evaluation(
    state: RolloutState,
    analysis: AnalysisSettings,
    spec: QuantizedModelSpec | None,
    status: dict[str, Any] | None = None,
) -> datetime.datetime | None:
    """When the next evaluation is due: while the rollout is active, and at full (during the
    bake at the rollout's interval, then at afterBakeInterval); never while a window would
    still reach back into the rollout's preflight (`preflight_step.analysis_clear_at`)."""
    if spec is None:
        return next_evaluation_at(state, analysis)
    due = after_bake.next_watch_at(state, analysis, after_bake.after_bake_of(spec))
    clear = preflight_step.analysis_clear_at(
        status or {}, state.rollout_id, state.attempt, analysis_of(spec)
    )
    return max(due, clear) if due is not None and clear is not None else due


def _wake_in(
    state: RolloutState,
    analysis: AnalysisSettings,
    now: datetime.datetime,
    cap: capacity.CapacityPlan | None = None,
    draining: bool = False,
    spec: QuantizedModelSpec | None = None,
    status: dict[str, Any] | None = None,
) -> float | None:
    """Until the next evaluation, or the next change of the capacity plan (a bake or a delay
    over), whichever comes first; soon while a tier that left the spec waits to be deleted."""
    due = next_evaluation(state, analysis, spec, status)
    times = [t for t in (due, cap.wake_at if cap else None) if t]
    if draining:
        times.append(now + datetime.timedelta(seconds=_DRAIN_CHECK_S))
    if not times:
        return None
    return max(0.05, (min(times) - now).total_seconds())


def _preflight_wake(wake: float | None, record: dict[str, Any] | None) -> float | None:
    """While preflight runs, look again now and then (Job and pod events wake it sooner)."""
    if record is None or record.get("phase") != "Running":
        return wake
    return min(wake, _PREFLIGHT_CHECK_S) if wake is not None else _PREFLIGHT_CHECK_S


def _promote_waits(observed: Observed, before: RolloutState, after: RolloutState) -> bool:
    """A promote that could not apply yet (the next step's replicas are not Ready): its
    annotation stays, and it applies once they are."""
    action = observed.action
    return (
        action is not None
        and action.kind == "promote"
        and after.phase in ACTIVE
        and after.held is None
        and (after.step, after.rollout_id) == (before.step, before.rollout_id)
        and after.step_started_at == before.step_started_at
        and not _last_step(observed, after)
    )


def _last_step(observed: Observed, state: RolloutState) -> bool:
    parsed = parse_spec(observed.model.get("spec", {}))
    return isinstance(parsed, Problem) or state.step + 1 >= len(steps_for(parsed))


def _weights(state: RolloutState) -> tuple[Any, ...]:
    """What the capacity plan reads of a rollout's state."""
    return (state.rollout_id, state.phase, state.step, state.target_weight, state.mirror_percent,
            state.step_started_at, state.rolled_back_at)  # fmt: skip


def _rolling(manifests: Manifests, observed: Observed, name: str) -> set[str]:
    """The tiers whose Deployment is missing or has a changed pod template."""
    out = set()
    for tp in manifests.tiers:
        for desired in tp.objects:
            if desired["kind"] != "Deployment":
                continue
            live = observed.children.get(("Deployment", resource_name(name, tp.tier)))
            if live is None or _template_drifted(desired, live):
                out.add(tp.tier.name)
    return out


def _with_capacity(
    health_fields: dict[str, Any],
    cap: capacity.CapacityPlan,
    tier_inputs: tuple[capacity.TierInput, ...],
) -> None:
    """Each tier's wanted replicas and why, and the GPUs the model holds against the FP16 fleet."""
    wanted = {t.name: t for t in cap.tiers}
    for tier in health_fields.get("tiers") or []:
        plan_of = wanted.get(tier["name"])
        if plan_of is not None:
            tier.update(capacity.tier_status(plan_of))
    health_fields["gpuSaving"] = {
        **(health_fields.get("gpuSaving") or {}),
        **capacity.gpu_status(tier_inputs),
    }


def plan(observed: Observed, now: datetime.datetime) -> Plan:
    qm = observed.model
    meta = qm["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    raw = qm.get("spec", {})
    status: dict[str, Any] = qm.get("status") or {}
    recorded_preflight = status.get("preflight")  # before this pass
    manifests = manifests_for(name, namespace, raw)
    parsed = parse_spec(raw)
    spec = None if isinstance(parsed, Problem) else parsed
    state = current_state(status, spec)
    problem = refusal(manifests)
    if problem is None and spec is not None and (why := mx.check(spec)) is not None:
        problem = Problem("InvalidSpec", why)  # holds traffic where it is, like any refused edit
    recorded = mx.from_status(status) if spec is not None and spec.mixed else None
    if recorded is not None and recorded.rollout != mx.rollout_key(state.rollout_id, state.attempt):
        recorded = None
    policy = recorded
    policy_events: tuple[Event, ...] = ()
    # A refused edit holds a rollout that exists; before one started there is nothing to hold.
    held = problem is not None and state.rollout_id is not None and state.phase != "Pending"
    evaluation = observed.measured.evaluation if observed.measured else None
    seen = observed_tiers(manifests, observed, name)

    # A tier whose pods are being replaced is not ready for a decision until its new ones are.
    rolling = _rolling(manifests, observed, name) if not held and not manifests.invalid else set()
    deciding = {
        n: replace(t, generation_observed=False) if n in rolling else t for n, t in seen.items()
    }

    decision: Decision | None = None
    preflight_record: dict[str, Any] | None = None
    pre: preflight_step.Outcome | None = None  # this pass's preflight, when one is in play
    jobs: tuple[ChildWrite, ...] = ()
    stopped: tuple[ChildWrite, ...] = ()  # a preflight Job no attempt waits for
    cap: capacity.CapacityPlan | None = None
    steps: tuple[Step, ...] = ()
    settings = _NO_ANALYSIS
    baseline_runs = bool(manifests.tiers) and manifests.tiers[0].deployable
    if spec is not None and (held or (baseline_runs and not manifests.invalid)):
        steps = steps_for(spec)
        settings = settings_of(analysis_of(spec), namespace, name)
        tier_inputs = capacity_tiers(spec, seen, _retired(observed), frozenset(rolling))
        applied = status.get("traffic")
        down_now = preflight_step.failed_here(status, state.rollout_id, state.attempt)
        gate = capacity_plan(
            spec, state, tier_inputs, applied, now, observed.action, recorded, down_now
        )
        base_ready = tiers_ready(seen, (tiers(spec)[0].name,))
        pre = (
            None
            if held
            else _preflight(spec, state, observed, gate.ready_for_next and base_ready, now)
        )
        decision = decide_rollout(
            spec,
            state,
            rollout_inputs(
                spec, namespace, name, now, deciding, evaluation, observed.action,
                problem.message if held and problem else None,
                ready_for_next=gate.ready_for_next and (pre is None or pre.passed),
            ),
        )  # fmt: skip
        decision, preflight_record = _after_preflight(decision, pre, now, recorded_preflight)
        if pre is not None and pre.create_job and preflight_record is not None:
            job = _preflight_job(spec, observed, preflight_record)
            jobs = (job,) if job is not None else ()
        stop = preflight_step.to_stop(recorded_preflight, preflight_record, observed.preflight_job)
        if stop is not None:
            stopped = (ChildWrite("delete", "Job", stop[0]),)
            decision = Decision(decision.state, (*decision.events, stop[1]))
        if spec.mixed and not held:
            policy, policy_events = mixed_policy(
                spec, decision.state, recorded, observed.measured, seen, steps
            )
        if not held:
            same = _weights(decision.state) == _weights(state) and policy == recorded
            # A rollout that ended in (or during) its preflight never served: the target goes.
            closed = preflight_record is not None and preflight_record["phase"] == "Failed"
            down_now = closed or (same and down_now)
            cap = (
                gate
                if same
                else capacity_plan(
                    spec, decision.state, tier_inputs, applied, now, None, policy, down_now
                )
            )
    elif held and problem is not None:
        # Unparsable, so no steps: hold (an abort still rolls back) and wait for a fix.
        decision = decide(
            state,
            Inputs(
                rollout_id=state.rollout_id or "", steps=(), stages_hash="", analysis=_NO_ANALYSIS,
                now=now, action=observed.action, refused=problem.message,
            ),
        )  # fmt: skip
    new = decision.state if decision else state

    up: list[ChildWrite] = []
    down: list[ChildWrite] = []
    if not held and not manifests.invalid:
        up, down, _ = _children(manifests, observed, namespace, name, owner_reference(qm), cap)

    rollout_fields: dict[str, Any] = {}
    if decision is not None:
        if new.held is not None:
            rollout_fields = _held_status(status, new, steps)
        elif spec is not None:
            rollout_fields = rollout_status(
                spec,
                name,
                new,
                steps,
                cap.traffic if cap else None,
                policy,
                status.get("traffic"),
                # a whole rollback moves every class back at once (the baseline's reserve)
                moved=cap is None or cap.held is None or new.phase == "RolledBack",
            )
        if observed.measured is not None:
            rollout_fields["lastAnalysis"] = {
                "at": rfc3339(now),
                "verdict": observed.measured.evaluation.verdict,
                "results": list(observed.measured.results),
            }
    health_fields, transitions = health.compute(
        name=name,
        generation=int(meta.get("generation", 0)),
        plan=manifests,
        observed=seen,
        previous=status.get("conditions"),
        now=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        rollout=rollout_fields or None,
        waiting="; ".join(w for w in (cap.held, cap.next_held) if w) if cap else None,
        capacity_problem=Problem("TrafficNotMovedBack", cap.degraded)
        if cap and cap.degraded
        else None,
        preflight=(preflight_record or recorded_preflight) if pre is not None else None,
    )
    if rollout_fields:
        health_fields.pop("phase", None)  # a rollout exists: its phase, never Failed
    if cap is not None and spec is not None:
        _with_capacity(health_fields, cap, capacity_tiers(spec, seen, _retired(observed)))
        if policy is not None:
            health_fields["gpuSaving"]["relativeCost"] = mx.relative_cost(policy, all_tiers(spec))
    if preflight_record is not None:
        rollout_fields["preflight"] = preflight_step.as_patch(preflight_record)
    patch = changed(status, {**health_fields, **rollout_fields})

    route = None
    gateway = (
        spec.traffic if spec and spec.traffic and spec.traffic.router == "gateway-api" else None
    )
    traffic = rollout_fields.get("traffic")
    if gateway and gateway.http_route and traffic and decision is not None:
        moved = (
            new != state
            or observed.measured is not None
            or observed.route_pending
            or _strip(traffic) != _strip(status.get("traffic"))
        )
        if moved:
            ref = gateway.http_route
            route = RouteWrite(ref.namespace or namespace, ref.name, http_route_rules(traffic))

    return Plan(
        namespace=namespace,
        name=name,
        resource_version=str(meta.get("resourceVersion", "")),
        capacity_up=tuple(up),
        jobs=jobs,
        route=route,
        capacity_down=(*down, *stopped),
        status=patch,
        health_keys=frozenset(k for k in patch if k in health_fields),
        traffic_in_status=route is None,
        events=(*decision.events, *policy_events) if decision else (),
        condition_events=tuple(_condition_events(transitions)),
        remove_action=ACTION_ANNOTATION in (meta.get("annotations") or {})
        and not _promote_waits(observed, state, new),
        action_events=tuple(
            e for e in (refused_action(qm, spec, state, problem is not None),) if e is not None
        ),
        wake_in_s=_preflight_wake(
            _wake_in(
                new,
                settings,
                now,
                cap,
                bool(observed.retired),
                spec,
                {**status, "preflight": preflight_record or recorded_preflight},
            ),
            preflight_record,
        )
        if decision
        else None,
        traffic_retry_s=max(1.0, min(_TRAFFIC_RETRY_S, settings.interval_s)),
        before=state,
        after=new,
        steps=steps,
        verdict=evaluation.verdict if evaluation else None,
    )


def measurement_due(
    qm: dict[str, Any], now: datetime.datetime
) -> tuple[QuantizedModelSpec, RolloutState, Step] | None:
    """Whether an evaluation is due for this model now, and what to evaluate: its spec, its
    rollout and the step traffic stands at (the observer measures; this decides when)."""
    parsed = parse_spec(qm.get("spec", {}))
    if isinstance(parsed, Problem):
        return None
    meta = qm["metadata"]
    state = current_state(qm.get("status") or {}, parsed)
    if state.rollout_id != rollout_id(parsed) or state.phase not in (*ACTIVE, "Succeeded"):
        return None
    settings = settings_of(analysis_of(parsed), meta["namespace"], meta["name"])
    due = next_evaluation(state, settings, parsed, qm.get("status") or {})
    if due is None or now < due:
        return None
    steps = steps_for(parsed)
    return parsed, state, steps[min(state.step, len(steps) - 1)]
