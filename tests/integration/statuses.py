"""Every status the operator writes, built by the operator's own code (the rollout's fields
from `rollout.codec`, conditions and tiers from `health.compute` given the rollout's phase), in
every phase, step, tier situation and verdict: the inputs of the Argo CD and kstatus tests."""

from __future__ import annotations

import datetime
from dataclasses import replace
from typing import Any

from quantrollout.health import ObservedTier, compute
from quantrollout.manifests.plan import Problem, parse_spec, plan
from quantrollout.rollout.codec import status_from_state
from quantrollout.rollout.machine import RolloutState
from quantrollout.rollout.steps import steps_for

from .support import example

T = "2026-11-23T10:00:00Z"


def model(status: dict[str, Any] | None, generation: int = 2) -> dict[str, Any]:
    """A QuantizedModel as the API returns it (camelCase), with `status` unless None."""
    obj: dict[str, Any] = {
        "apiVersion": "quantrollout.io/v1alpha1",
        "kind": "QuantizedModel",
        "metadata": {"name": "llama3-8b", "namespace": "llm", "generation": generation},
        "spec": {"model": "meta-llama/Meta-Llama-3-8B-Instruct"},
    }
    if status is not None:
        obj["status"] = status
    return obj


SPEC = example()["spec"]
PARSED = parse_spec(SPEC)
assert not isinstance(PARSED, Problem)
STEPS = steps_for(PARSED)
READY = ObservedTier(True, 2, 2, 2, True, True)
STARTING = ObservedTier(True, 2, 0, 2, False, True)
UNSCHEDULABLE_TIER = ObservedTier(
    True,
    2,
    0,
    2,
    False,
    True,
    unschedulable="0/4 nodes are available: 4 Insufficient nvidia.com/gpu.",
)
LATE = ObservedTier(True, 2, 0, 2, False, True, progress_deadline_exceeded=True)
TIER_SITUATIONS = {
    "ready": {"fp16": READY, "int4-awq": READY},
    "starting": {"fp16": READY, "int4-awq": STARTING},
    "unschedulable": {"fp16": READY, "int4-awq": UNSCHEDULABLE_TIER},
    "deadline": {"fp16": READY, "int4-awq": LATE},
}
T0 = datetime.datetime(2026, 11, 23, 10, 0, tzinfo=datetime.UTC)
VERDICTS = {
    "none": None,
    "pass": {"at": T, "verdict": "Pass", "results": [
        {"rule": "latency-p99", "value": 0.183, "threshold": 0.25, "verdict": "Pass"}]},
    "fail": {"at": T, "verdict": "Fail", "results": [
        {"rule": "repetition-rate", "value": 0.21, "threshold": 0.15, "verdict": "Fail"}]},
    "inconclusive": {"at": T, "verdict": "Inconclusive", "results": [
        {"rule": "error-rate", "threshold": 0.01, "verdict": "Inconclusive", "reason": "no series"}]},
}  # fmt: skip


def rollout_states() -> dict[str, RolloutState]:
    """The rollout's state in every phase, at every step it can hold it."""
    states: dict[str, RolloutState] = {"no rollout yet": RolloutState()}
    states["Pending"] = RolloutState(rollout_id="r1", phase="Pending", stages_hash="h")
    for i, step in enumerate(STEPS):
        phase = "Succeeded" if step.stage == "full" else "Progressing"
        s = RolloutState(
            rollout_id="r1", phase=phase, step=i, target_weight=step.weight,
            mirror_percent=step.mirror, step_started_at=T0, stages_hash="h",
        )  # fmt: skip
        states[f"{phase} step {i} ({step.stage})"] = s
        if phase == "Progressing":
            states[f"Paused step {i} ({step.stage})"] = replace(s, phase="Paused")
            states[f"RolledBack from step {i} ({step.stage})"] = replace(
                s, phase="RolledBack", target_weight=0, mirror_percent=0, rolled_back_at=T0,
                rollback_reasons=("repetition-rate 0.21 > 0.15 for 2 consecutive evaluations",),
            )  # fmt: skip
    return states


def operator_statuses() -> dict[str, dict[str, Any]]:
    """Models whose status is what the operator writes: the rollout's fields (codec) and the
    conditions and tiers (health.compute, given the rollout's phase), in every combination."""
    the_plan = plan("llama3-8b", "llm", SPEC)
    models: dict[str, dict[str, Any]] = {}
    for sname, state in rollout_states().items():
        for tname, observed in TIER_SITUATIONS.items():
            for vname, verdict in VERDICTS.items():
                status: dict[str, Any] = {}
                if state.rollout_id:
                    status |= {
                        k: v for k, v in status_from_state(state, STEPS).items() if v is not None
                    }
                    if verdict:
                        status["lastAnalysis"] = verdict
                elif verdict:
                    continue
                owned, _ = compute(name="llama3-8b", generation=2, plan=the_plan, observed=observed,
                                   previous=None, now=T, rollout=status)  # fmt: skip
                status |= {k: v for k, v in owned.items() if v is not None}
                models[f"{sname}, tiers {tname}, analysis {vname}"] = model(status)
    bad = {**SPEC, "target": {**SPEC["target"], "serving": {"tensorParallelSize": 2}}}
    owned, _ = compute(name="llama3-8b", generation=2, plan=plan("llama3-8b", "llm", bad),
                       observed={}, previous=None, now=T)  # fmt: skip
    models["invalid spec"] = model({k: v for k, v in owned.items() if v is not None})
    return models
