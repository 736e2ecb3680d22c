"""One pass's decision for one model: `plan(observed, now) -> Plan`. Pure: what the observer read
comes in as values; everything to do goes out as values, for the executor (`pass_.execute`) to
apply in its fixed order: capacity up, traffic, capacity down, status once, Events.

What it decides, from the model as read, its children, the pods' reasons, a verdict (when one
was due) and a user's action:

- the children to apply or delete, each marked capacity up (before traffic moves) or capacity
  down (only after traffic moved off). Capacity step: today every tier runs the replicas its
  spec asks for (the replica planner that makes replicas follow traffic plugs in here);
- the rollout's next state (`rollout.machine.decide`), and with it the traffic (the built-in
  router's `status.traffic`; the user's HTTPRoute rules for Gateway API);
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

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from quantrollout import health
from quantrollout.api.crd import GROUP, KIND, VERSION
from quantrollout.api.resolve import tiers
from quantrollout.api.spec import QuantizedModelSpec
from quantrollout.manifests.drift import drifted
from quantrollout.manifests.plan import Plan as Manifests
from quantrollout.manifests.plan import Problem, parse_spec
from quantrollout.manifests.plan import plan as manifests_for
from quantrollout.manifests.vllm import resource_name
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
)
from quantrollout.rollout.schedule import next_evaluation_at
from quantrollout.rollout.settings import analysis_of, settings_of
from quantrollout.rollout.steps import Step, legacy_rollout_id, rollout_id, stages_hash, steps_for
from quantrollout.traffic.desired import builtin_config, http_route_rules

ACTION_ANNOTATION = "quantrollout.io/action"
# Deciding with an unparsable spec: no analysis runs, so its settings are never read.
_NO_ANALYSIS = AnalysisSettings(0.0, 1, "pause", 0.0)

_TRAFFIC_RETRY_S = 30.0  # the longest a pass that could not write traffic waits to try again

ChildKey = tuple[str, str]  # (kind, name)


@dataclass(frozen=True)
class Measured:
    """An evaluation made for one step of one rollout of one generation of the spec."""

    key: tuple[int, str | None, int]
    evaluation: Evaluation
    results: tuple[dict[str, Any], ...]


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
    route: RouteWrite | None = None
    capacity_down: tuple[ChildWrite, ...] = ()
    status: dict[str, Any] = field(default_factory=dict)  # the merge patch; {} writes nothing
    # The part of `status` that is written even when the traffic could not be (tiers, conditions).
    health_keys: frozenset[str] = frozenset()
    traffic_in_status: bool = True  # the built-in router reads its traffic from status
    events: tuple[Event, ...] = ()  # the rollout's, for the webhook too
    condition_events: tuple[Event, ...] = ()  # one per condition that changed
    remove_action: bool = False
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


def action_of(qm: dict[str, Any]) -> Action | None:
    """The one-shot action asked for by annotation, and who asked (the field manager that set it)."""
    value = (qm["metadata"].get("annotations") or {}).get(ACTION_ANNOTATION)
    if value not in ("promote", "abort", "retry"):
        return None
    by = "an annotation"
    for entry in qm["metadata"].get("managedFields") or []:
        annotations = (entry.get("fieldsV1") or {}).get("f:metadata", {}).get("f:annotations", {})
        if f"f:{ACTION_ANNOTATION}" in annotations:
            by = f"{entry.get('manager', 'someone')} (annotation {ACTION_ANNOTATION}={value})"
    return Action(value, by)


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
    """The children a pass reads: both kinds of object of every tier of the spec."""
    return tuple(
        (kind, resource_name(name, tp.tier))
        for tp in manifests.tiers
        for kind in ("Deployment", "Service")
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
) -> Inputs:
    """The state machine's inputs for a spec and what was observed of its tiers."""
    steps = steps_for(spec)
    baseline, target = tiers(spec)
    return Inputs(
        rollout_id=rollout_id(spec), steps=steps, stages_hash=stages_hash(steps),
        analysis=settings_of(analysis_of(spec), namespace, name), now=now,
        paused=bool(spec.rollout and spec.rollout.paused),
        tiers_ready=tiers_ready(seen, (baseline.name, target.name)),
        target_down=target_down(seen, target.name), evaluation=evaluation, action=action,
        refused=refused,
    )  # fmt: skip


def rollout_status(
    spec: QuantizedModelSpec, name: str, state: RolloutState, steps: tuple[Step, ...]
) -> dict[str, Any]:
    """The status fields the rollout owns, with the traffic the built-in router reads."""
    baseline, target = tiers(spec)
    fields = status_from_state(state, steps)
    sticky = next((s.sticky_header for s in steps if s.sticky_header), None)
    fields["traffic"] = builtin_config(
        name=name, served_model=spec.model, rollout_id=state.rollout_id or "",
        attempt=state.attempt, baseline=baseline, target=target,
        target_weight=state.target_weight, mirror_percent=state.mirror_percent,
        sticky_header=sticky,
    )  # fmt: skip
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


def _children(
    manifests: Manifests, observed: Observed, name: str, owner: dict[str, Any]
) -> tuple[list[ChildWrite], list[ChildWrite], set[str]]:
    """Capacity up, capacity down, and the tiers whose Deployment is being (re)written (not
    ready for a decision until it has rolled out). Capacity step: every tier at the replicas
    its spec asks for."""
    up: list[ChildWrite] = []
    down: list[ChildWrite] = []
    rolling: set[str] = set()
    for tp in manifests.tiers:
        rname = resource_name(name, tp.tier)
        if not tp.deployable:
            # A target that cannot run is removed (no traffic reaches it: a rollout that sends
            # it some is held instead); the baseline is never taken away by us.
            if tp.tier.role == "target":
                for kind in ("Deployment", "Service"):
                    if observed.children.get((kind, rname)) is not None:
                        down.append(ChildWrite("delete", kind, rname))
            continue
        for desired in tp.objects:
            body = {**desired, "metadata": {**desired["metadata"], "ownerReferences": [owner]}}
            live = observed.children.get((desired["kind"], rname))
            if live is not None and not drifted(body, live):
                continue
            write = ChildWrite("apply", desired["kind"], rname, body)
            if desired["kind"] == "Deployment":
                rolling.add(tp.tier.name)
                want = desired.get("spec", {}).get("replicas")
                have = (live or {}).get("spec", {}).get("replicas")
                if live is not None and want is not None and have is not None and want < have:
                    down.append(write)
                    continue
            up.append(write)
    return up, down, rolling


def _condition_events(transitions: list[health.Transition]) -> list[Event]:
    return [
        Event(t.event_type, f"{t.type}{t.status}", f"{t.reason}: {t.message}") for t in transitions
    ]


def _wake_in(
    state: RolloutState, analysis: AnalysisSettings, now: datetime.datetime
) -> float | None:
    due = next_evaluation_at(state, analysis)
    if due is None:
        return None
    return max(0.05, (due - now).total_seconds())


def plan(observed: Observed, now: datetime.datetime) -> Plan:
    qm = observed.model
    meta = qm["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    raw = qm.get("spec", {})
    status: dict[str, Any] = qm.get("status") or {}
    manifests = manifests_for(name, namespace, raw)
    parsed = parse_spec(raw)
    spec = None if isinstance(parsed, Problem) else parsed
    state = current_state(status, spec)
    problem = refusal(manifests)
    # A refused edit holds a rollout that exists; before one started there is nothing to hold.
    held = problem is not None and state.rollout_id is not None and state.phase != "Pending"
    evaluation = observed.measured.evaluation if observed.measured else None
    seen = observed_tiers(manifests, observed, name)

    up: list[ChildWrite] = []
    down: list[ChildWrite] = []
    rolling: set[str] = set()
    if not held and not manifests.invalid:
        up, down, rolling = _children(manifests, observed, name, owner_reference(qm))
    # A tier being rewritten is not ready for a decision until its new pods are.
    deciding = {
        n: replace(t, generation_observed=False) if n in rolling else t for n, t in seen.items()
    }

    decision: Decision | None = None
    steps: tuple[Step, ...] = ()
    settings = _NO_ANALYSIS
    baseline_runs = bool(manifests.tiers) and manifests.tiers[0].deployable
    if spec is not None and (held or (baseline_runs and not manifests.invalid)):
        steps = steps_for(spec)
        settings = settings_of(analysis_of(spec), namespace, name)
        decision = decide(
            state,
            rollout_inputs(
                spec, namespace, name, now, deciding, evaluation, observed.action,
                problem.message if held and problem else None,
            ),
        )  # fmt: skip
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

    rollout_fields: dict[str, Any] = {}
    if decision is not None:
        if new.held is not None:
            rollout_fields = _held_status(status, new, steps)
        elif spec is not None:
            rollout_fields = rollout_status(spec, name, new, steps)
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
    )
    if rollout_fields:
        health_fields.pop("phase", None)  # a rollout exists: its phase, never Failed
    patch = changed(status, {**health_fields, **rollout_fields})

    route = None
    gateway = (
        spec.traffic if spec and spec.traffic and spec.traffic.router == "gateway-api" else None
    )
    traffic = rollout_fields.get("traffic")
    if gateway and gateway.http_route and traffic and decision is not None:
        moved = new != state or observed.measured is not None or observed.route_pending
        if moved:
            ref = gateway.http_route
            route = RouteWrite(ref.namespace or namespace, ref.name, http_route_rules(traffic))

    return Plan(
        namespace=namespace,
        name=name,
        resource_version=str(meta.get("resourceVersion", "")),
        capacity_up=tuple(up),
        route=route,
        capacity_down=tuple(down),
        status=patch,
        health_keys=frozenset(k for k in patch if k in health_fields),
        traffic_in_status=route is None,
        events=decision.events if decision else (),
        condition_events=tuple(_condition_events(transitions)),
        remove_action=observed.action is not None,
        wake_in_s=_wake_in(new, settings, now) if decision else None,
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
    if state.rollout_id != rollout_id(parsed) or state.phase not in ACTIVE:
        return None
    settings = settings_of(analysis_of(parsed), meta["namespace"], meta["name"])
    due = next_evaluation_at(state, settings)
    if due is None or now < due:
        return None
    steps = steps_for(parsed)
    return parsed, state, steps[min(state.step, len(steps) - 1)]
