"""What one pass reads: the model, its children, the scheduler's reasons for pods it cannot
place, an evaluation when one is due, a user's action. I/O only through the `io` Protocols.

Children are read again only when something says they changed (a watch event on one of them, a
spec edit, the first pass): a pass woken by the analysis clock costs one GET of the model (and
the evaluation's queries), however many children the model has.
"""

from __future__ import annotations

import asyncio
import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from quantrollout import __version__, defaults, health
from quantrollout.analysis.rules import Scope, default_window
from quantrollout.api.resolve import all_tiers, tiers
from quantrollout.api.spec import QuantizedModelSpec
from quantrollout.io.kube import KubeIO
from quantrollout.io.prometheus import Metrics
from quantrollout.manifests.plan import Problem, parse_spec
from quantrollout.manifests.plan import plan as manifests_for
from quantrollout.manifests.vllm import MODEL_LABEL, TIER_LABEL, resource_name, selector_labels
from quantrollout.rollout import mixed as mx
from quantrollout.rollout import preflight_step
from quantrollout.rollout.machine import ACTIVE, Evaluation, RolloutState
from quantrollout.rollout.schedule import round_start
from quantrollout.rollout.settings import analysis_of, settings_of
from quantrollout.rollout.steps import Step, steps_for

from .plan import (
    ChildKey,
    Measured,
    Observed,
    action_of,
    children_of,
    current_state,
    measurement_due,
    preflight_job_due,
)

# The scheduler's message for the first pod matching a selector it cannot place, from the pod
# events the operator watches (None: no such pod seen).
PodReasons = Callable[[str, dict[str, str]], str | None]


@dataclass
class Memory:
    """What a model's runner keeps between passes."""

    children: dict[ChildKey, dict[str, Any] | None] = field(default_factory=dict)
    retired: dict[str, dict[str, Any]] = field(default_factory=dict)  # tier -> its Deployment
    tiers: frozenset[str] | None = None  # the spec's tiers when the Deployments were last listed
    stale: bool = True  # the children must be read again
    route_pending: bool = False  # a route written by a decision whose status write lost a race
    traffic_refused: str | None = None  # why the route cannot be written, while it cannot


def _reported_unschedulable(qm: dict[str, Any]) -> bool:
    conditions = (qm.get("status") or {}).get("conditions") or []
    return any(c.get("reason") == "Unschedulable" for c in conditions)


async def observe(
    kube: KubeIO,
    metrics: Metrics,
    memory: Memory,
    namespace: str,
    name: str,
    now: datetime.datetime,
    pod_reasons: PodReasons,
    measured: Measured | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> Observed | None:
    """None when the model is gone (or going). `measured`: an evaluation made by an earlier
    attempt of this pass, reused if it is for the same step (a lost race measures nothing twice)."""
    qm = await asyncio.to_thread(kube.get_quantizedmodel, namespace, name)
    if qm is None or qm["metadata"].get("deletionTimestamp"):
        return None
    manifests = manifests_for(name, namespace, qm.get("spec", {}))
    keys = children_of(manifests, name)
    spec_tiers = frozenset(tp.tier.name for tp in manifests.tiers)
    if memory.stale or any(k not in memory.children for k in keys):
        memory.stale = False  # before reading: a change seen while we read marks it again
        listed: dict[str, dict[str, Any]] | None = None
        if memory.tiers != spec_tiers:
            # First sight, or the spec's tiers changed: list the model's Deployments once to
            # find tiers that left the spec. Otherwise each child is read by name (a LIST scans
            # the whole namespace on the API server, a GET does not).
            found = await asyncio.to_thread(kube.list_deployments, namespace, {MODEL_LABEL: name})
            listed = {d["metadata"]["name"]: d for d in found}
            memory.retired = {
                tier: d
                for d in found
                if (tier := (d["metadata"].get("labels") or {}).get(TIER_LABEL)) is not None
                and tier not in spec_tiers
            }
            memory.tiers = spec_tiers
        read: dict[ChildKey, dict[str, Any] | None] = {}
        for kind, child in keys:
            if listed is not None and kind == "Deployment":
                read[(kind, child)] = listed.get(child)
            else:
                read[(kind, child)] = await asyncio.to_thread(kube.get, kind, namespace, child)
        for tier, d in list(memory.retired.items()):
            # A tier that left the spec is read again too, until it is deleted.
            again = await asyncio.to_thread(
                kube.get, "Deployment", namespace, d["metadata"]["name"]
            )
            if again is None:
                del memory.retired[tier]
            else:
                memory.retired[tier] = again
        memory.children = read
    children = {k: memory.children.get(k) for k in keys}

    unschedulable: dict[str, str] = {}
    for tp in manifests.tiers:
        live = children.get(("Deployment", resource_name(name, tp.tier)))
        if not tp.deployable or health.observe_deployment(live, None).ready:
            continue
        selector = selector_labels(name, tp.tier)
        reason = pod_reasons(namespace, selector)
        if reason is None and _reported_unschedulable(qm):
            # Said so before, and no pod event says so now: either it was placed, or this
            # operator just started and the pod events are still coming. Ask the API once.
            reason = await asyncio.to_thread(kube.unschedulable_message, namespace, selector)
        if reason is not None:
            unschedulable[tp.tier.name] = reason

    due = measurement_due(qm, now) or _promoting_out_of_shadow(qm)
    if due is not None:
        spec, state, step = due
        key = (int(qm["metadata"].get("generation", 0)), state.rollout_id, state.step)
        if (measured is None or measured.key != key) and spec.mixed:
            since = round_start(now, settings_of(analysis_of(spec), namespace, name))
            window = mx.class_window(
                default_window(analysis_of(spec)), step.stage, state.step_started_at, now
            )
            measured = await _measure_mixed(
                kube, metrics, qm, spec, namespace, name, step.stage, since, window, key
            )
            why = "; ".join(measured.evaluation.reasons) or "all classes pass"
            log(f"analysis {measured.evaluation.verdict}: {why}")
        elif measured is None or measured.key != key:
            baseline, target = tiers(spec)
            scope = Scope(
                namespace=namespace, model=name, baseline=baseline.name, target=target.name
            )
            since = round_start(now, settings_of(analysis_of(spec), namespace, name))
            evaluation, results = await asyncio.to_thread(
                metrics.evaluate, kube, spec, scope, step.stage, since
            )
            log(
                f"analysis {evaluation.verdict}: {'; '.join(evaluation.reasons) or 'all rules pass'}"
            )
            measured = Measured(key, evaluation, tuple(results))
    else:
        measured = None
    preflight_job = None
    job_name = preflight_job_due(qm)
    if job_name is not None:
        # Read on every pass while preflight runs: the Job's status says when it ended, its
        # pod holds the result (the termination message) and why it does not run, if it does not.
        job = await asyncio.to_thread(kube.get, "Job", namespace, job_name)
        pods = await asyncio.to_thread(kube.job_pods, namespace, job_name) if job else []
        preflight_job = preflight_step.job_seen(job_name, job, pods)
    return Observed(
        model=qm,
        children=children,
        unschedulable=unschedulable,
        measured=measured,
        action=action_of(qm),
        route_pending=memory.route_pending or memory.traffic_refused is not None,
        retired=dict(memory.retired) if not manifests.invalid else {},
        preflight_job=preflight_job,
        preflight_image=operator_image(),
    )


def operator_image() -> str:
    """The operator's own image, which the preflight Job runs (the chart says which)."""
    return os.environ.get(defaults.PREFLIGHT_IMAGE_ENV) or (
        f"{defaults.PREFLIGHT_IMAGE_REPOSITORY}:{__version__}"
    )


def _promoting_out_of_shadow(
    qm: dict[str, Any],
) -> tuple[QuantizedModelSpec, RolloutState, Step] | None:
    """A mixed model asked to promote out of shadow between evaluations: the policy is compiled
    from the observation, so one is made now (else every class would stay on the baseline)."""
    action = action_of(qm)
    parsed = parse_spec(qm.get("spec", {}))
    if action is None or action.kind != "promote" or isinstance(parsed, Problem):
        return None
    state = current_state(qm.get("status") or {}, parsed)
    steps = steps_for(parsed)
    step = steps[min(state.step, len(steps) - 1)]
    if not parsed.mixed or state.phase not in ACTIVE or step.stage != "shadow":
        return None
    return parsed, state, step


async def _measure_mixed(
    kube: KubeIO,
    metrics: Metrics,
    qm: dict[str, Any],
    spec: QuantizedModelSpec,
    namespace: str,
    name: str,
    stage: str,
    since: float,
    window: str,
    key: tuple[int, str | None, int],
) -> Measured:
    """Mixed precision: the per-(class, tier) observation over `window` (`mx.class_window`),
    and after shadow each tier's model-wide rules on the tiers carrying classes
    (`rollout.mixed.evaluation` combines them)."""
    resolved = all_tiers(spec)
    base, names = resolved[0].name, [t.name for t in resolved[1:]]
    observation = await asyncio.to_thread(
        metrics.classes, kube, spec, namespace, name, names, base, window
    )
    recorded = mx.from_status(qm.get("status") or {})
    evaluations = []
    results: list[dict[str, Any]] = []
    if stage != "shadow" and recorded is not None:
        for tier in sorted({c.tier for c in recorded.choices.values()} - {base}):
            scope = Scope(namespace=namespace, model=name, baseline=base, target=tier)
            evaluation, found = await asyncio.to_thread(
                metrics.evaluate, kube, spec, scope, stage, since
            )
            reasons = tuple(f"{tier}: {r}" for r in evaluation.reasons)
            evaluations.append(Evaluation(evaluation.verdict, reasons))
            results += [{**r, "rule": f"{r['rule']} ({tier})"} for r in found]
    verdict = mx.evaluation(stage, observation, evaluations, recorded, base)
    results.insert(0, mx.result_row(verdict))
    return Measured(key, verdict, tuple(results), observation)
