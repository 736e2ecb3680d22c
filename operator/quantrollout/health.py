"""From what the operator planned and what it observed to the status on-call reads: per-tier
readiness and kstatus-style conditions (Ready, Progressing, Degraded). Pure: the handlers pass in
what they read from the API and the time, and get back the status and the condition changes
(each of which becomes an Event).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from quantrollout.api.status import Condition, TierStatus
from quantrollout.manifests.plan import Plan, Problem
from quantrollout.manifests.vllm import resource_name


@dataclass(frozen=True)
class ObservedTier:
    """The facts about one tier's Deployment (and its pods) that decide its health."""

    exists: bool = False
    replicas: int = 0
    ready_replicas: int = 0
    updated_replicas: int = 0
    available: bool = False
    generation_observed: bool = False
    progress_deadline_exceeded: bool = False
    unschedulable: str | None = None  # the scheduler's message for a pod it cannot place

    @property
    def ready(self) -> bool:
        return (
            self.exists
            and self.generation_observed
            and self.available
            and self.updated_replicas >= self.replicas
            and self.ready_replicas >= self.replicas
        )


def observe_deployment(obj: dict[str, Any] | None, unschedulable: str | None) -> ObservedTier:
    """Extracts an ObservedTier from a Deployment as the API returns it (camelCase dict)."""
    if not obj:
        return ObservedTier(unschedulable=unschedulable)
    status = obj.get("status") or {}
    conditions = {c["type"]: c for c in status.get("conditions") or []}
    progressing = conditions.get("Progressing", {})
    return ObservedTier(
        exists=True,
        replicas=int(obj.get("spec", {}).get("replicas", 1)),
        ready_replicas=int(status.get("readyReplicas") or 0),
        updated_replicas=int(status.get("updatedReplicas") or 0),
        available=conditions.get("Available", {}).get("status") == "True",
        generation_observed=int(status.get("observedGeneration") or 0)
        >= int(obj["metadata"].get("generation", 0)),
        progress_deadline_exceeded=progressing.get("reason") == "ProgressDeadlineExceeded",
        unschedulable=unschedulable,
    )


@dataclass(frozen=True)
class Transition:
    """A condition that changed, for an Event."""

    type: str
    status: str
    reason: str
    message: str

    @property
    def event_type(self) -> Literal["Normal", "Warning"]:
        bad = (self.type == "Degraded" and self.status == "True") or (
            self.type == "Ready" and self.status == "False" and self.reason != "TiersNotReady"
        )
        return "Warning" if bad else "Normal"


def _condition(
    ctype: str,
    status: bool,
    reason: str,
    message: str,
    previous: dict[str, Condition],
    now: str,
    generation: int,
) -> Condition:
    value: Literal["True", "False"] = "True" if status else "False"
    before = previous.get(ctype)
    since = before.last_transition_time if before and before.status == value else now
    return Condition(
        type=ctype, status=value, reason=reason, message=message,
        last_transition_time=since, observed_generation=generation,
    )  # fmt: skip


def tier_problems(plan: Plan, observed: dict[str, ObservedTier]) -> list[Problem]:
    problems = []
    for tp in plan.tiers:
        seen = observed.get(tp.tier.name, ObservedTier())
        if tp.problem:
            problems.append(tp.problem)
        elif seen.unschedulable and not seen.ready:
            problems.append(
                Problem(
                    "Unschedulable",
                    f"tier {tp.tier.name} cannot be scheduled: {seen.unschedulable}",
                )
            )
        elif seen.progress_deadline_exceeded and not seen.ready:
            deadline = tp.tier.serving.readiness_deadline
            problems.append(
                Problem(
                    "ReadinessDeadlineExceeded",
                    f"tier {tp.tier.name} was not ready within its readiness deadline ({deadline})",
                )
            )
    return problems


def _kstatus(
    conditions: list[Condition], phase: str | None, cond: Callable[[str, bool, str, str], Condition]
) -> list[Condition]:
    """kstatus' two "abnormal-true" conditions (sigs.k8s.io/cli-utils, what Flux's health checks
    read), present only while true: Stalled while Degraded (rolled back, invalid, a tier that
    cannot run: it will not get better by itself), else Reconciling while anything still moves
    (a tier rolling out, a rollout not started, progressing or paused). Neither: Current."""
    by_type = {c.type: c for c in conditions}
    degraded, progressing = by_type["Degraded"], by_type["Progressing"]
    if degraded.status == "True":
        return [cond("Stalled", True, degraded.reason, degraded.message)]
    if progressing.status == "True":
        return [cond("Reconciling", True, progressing.reason, progressing.message)]
    if phase in (None, "Pending"):
        why = "both tiers ready; waiting for the rollout to start"
        return [cond("Reconciling", True, "RolloutPending", why)]
    return []


def compute(
    *,
    name: str,
    generation: int,
    plan: Plan,
    observed: dict[str, ObservedTier],
    previous: list[dict[str, Any]] | None,
    now: str,
    rollout: dict[str, Any] | None = None,
    waiting: str | None = None,
    capacity_problem: Problem | None = None,
    preflight: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[Transition]]:
    """The status fields this module owns, and the conditions that changed since `previous`.

    `rollout` is the model's current status as the rollout wrote it (phase, stage, weights,
    rollback): a rollout in progress is Progressing, a rolled-back one Degraded. `waiting`: what
    the rollout waits for (capacity), said in Progressing; `capacity_problem`: traffic that
    cannot move back to the baseline (Degraded); `preflight`: the `status.preflight` record of
    the attempt about to start, when one is in play (a running one is Progressing)."""
    before = {c["type"]: Condition.model_validate(c) for c in previous or []}

    def cond(ctype: str, status: bool, reason: str, message: str) -> Condition:
        return _condition(ctype, status, reason, message, before, now, generation)

    tiers: list[TierStatus] = []
    if plan.invalid:
        p = plan.invalid
        conditions = [cond("Ready", False, p.reason, p.message), cond("Progressing", False, p.reason, p.message),
                      cond("Degraded", True, p.reason, p.message)]  # fmt: skip
        phase = "Failed"
    else:
        for tp in plan.tiers:
            seen = observed.get(tp.tier.name, ObservedTier())
            s = tp.tier.serving
            tiers.append(
                TierStatus(
                    name=tp.tier.name,
                    role=tp.tier.role,
                    deployment=resource_name(name, tp.tier) if tp.deployable else None,
                    replicas=seen.replicas,
                    ready_replicas=seen.ready_replicas,
                    gpus=seen.replicas * s.gpu.count,
                    gpus_per_replica=s.gpu.count,
                    estimated_weight_memory_gi_b=round(tp.estimate.weights_gib, 2)
                    if tp.estimate
                    else None,
                    estimated_memory_per_gpu_gi_b=round(tp.estimate.needed_per_gpu_gib, 2)
                    if tp.estimate
                    else None,
                    ready=seen.ready,
                    message=tp.problem.message if tp.problem else None,
                )
            )
        problems = tier_problems(plan, observed)
        if capacity_problem is not None:
            problems.append(capacity_problem)
        all_ready = all(t.ready for t in tiers)
        summary = ", ".join(f"{t.name} {t.ready_replicas}/{t.replicas} ready" for t in tiers)
        if problems:
            message = "; ".join(p.message for p in problems)
            conditions = [cond("Ready", False, problems[0].reason, message),
                          cond("Progressing", False, problems[0].reason, message),
                          cond("Degraded", True, problems[0].reason, message)]  # fmt: skip
        else:
            progressing, p_reason, p_message = not all_ready, "TiersRollingOut", summary
            degraded, d_reason, d_message = False, "TiersHealthy", summary
            phase_now = (rollout or {}).get("phase")
            if phase_now == "RolledBack":
                reasons = "; ".join(((rollout or {}).get("rollback") or {}).get("reasons") or [])
                degraded, d_reason, d_message = (
                    True,
                    "RolledBack",
                    f"all traffic back on the baseline: {reasons}",
                )
                progressing, p_reason, p_message = False, "RolledBack", d_message
            elif phase_now in ("Progressing", "Paused"):
                r = rollout or {}
                progressing, p_reason = (
                    True,
                    "RolloutPaused" if phase_now == "Paused" else "RolloutProgressing",
                )
                p_message = f"stage {r.get('stage')}: {r.get('targetWeight', 0)}% live, {r.get('mirrorPercent', 0)}% mirrored"
                if waiting:
                    p_message += f"; waiting: {waiting}"
            elif phase_now == "Pending" and preflight and preflight.get("phase") == "Running":
                job, pod_waiting = preflight.get("job"), preflight.get("waiting")
                progressing, p_reason = True, "PreflightRunning"
                p_message = f"preflight Job {job} running" if job else "preflight waiting"
                if pod_waiting:
                    p_message += f": {pod_waiting}"
            elif all_ready:
                p_reason = "RolloutSucceeded" if phase_now == "Succeeded" else "TiersReady"
            ready_message = "; ".join([summary, *plan.notes])
            conditions = [
                cond(
                    "Ready",
                    all_ready,
                    "TiersReady" if all_ready else "TiersNotReady",
                    ready_message,
                ),
                cond("Progressing", progressing, p_reason, p_message),
                cond("Degraded", degraded, d_reason, d_message),
            ]
        phase = None
    conditions += _kstatus(conditions, (rollout or {}).get("phase"), cond)

    # An Event for every change of a condition's status or reason (not for every new replica count).
    transitions = [
        Transition(c.type, c.status, c.reason, c.message)
        for c in conditions
        if c.type in ("Ready", "Progressing", "Degraded")  # the kstatus pair only mirrors these
        and (
            (old := before.get(c.type)) is None or (old.status, old.reason) != (c.status, c.reason)
        )
    ]
    targets = [tp.tier.name for tp in plan.tiers if tp.tier.role == "target"]
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "targetNames": ",".join(targets) or None,
        "tiers": [t.to_wire() for t in tiers] or None,
        "gpuSaving": plan.gpu_saving.to_wire() if plan.gpu_saving else None,
        "conditions": [c.to_wire() for c in conditions],
    }
    if phase:
        status["phase"] = phase
    return status, transitions
