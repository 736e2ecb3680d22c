"""`QuantizedModel.status`: what the operator observed and decided, for on-call humans, kubectl,
Argo CD (kstatus conditions) and the operator itself after a restart."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import ApiModel

Phase = Literal["Pending", "Progressing", "Paused", "Succeeded", "RolledBack", "Failed"]
Verdict = Literal["Pass", "Fail", "Inconclusive"]
# Why a tier runs the replicas it runs (rollout/capacity.py decides).
CapacityReason = Literal[
    "FollowingTraffic",  # sized for its share of live (or mirrored) traffic, plus headroom
    "ScalingUpForNextStep",  # sized for the weights the next step moves onto it
    "RollbackReserve",  # baseline: kept at rollbackReservePercent while a rollout is active
    "Baking",  # baseline: kept at its reserve during the bake after full
    "Standby",  # baseline: at standbyReplicas once the bake is over
    "KeptForRetry",  # target: kept after a rollback until abortScaleDownDelay has passed
    "ScaledDownAfterRollback",  # target: at 0 once abortScaleDownDelay has passed
    "Draining",  # a tier no longer in the spec, serving until its traffic moved off
]


class Condition(ApiModel):
    """A kstatus-compatible condition (the shape of metav1.Condition)."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024)
    message: str = Field("", max_length=32768)
    last_transition_time: str
    observed_generation: int | None = None


class TierStatus(ApiModel):
    name: str
    role: Literal["baseline", "target"]
    deployment: str | None = None
    replicas: int = 0
    ready_replicas: int = 0
    gpus: int = Field(0, description="GPUs the tier uses in all (replicas x GPUs per replica).")
    gpus_per_replica: int = 0
    estimated_weight_memory_gi_b: float | None = Field(None, alias="estimatedWeightMemoryGiB")
    estimated_memory_per_gpu_gi_b: float | None = Field(None, alias="estimatedMemoryPerGPUGiB")
    ready: bool = False
    message: str | None = None
    wanted_replicas: int | None = Field(
        None,
        description="Replicas the capacity plan wants now (for an autoscaled tier: its minimum).",
    )
    capacity_reason: CapacityReason | None = Field(
        None, description="Why the tier has that many replicas."
    )
    capacity_message: str | None = Field(None, description="The same, in words.")


class GPUSaving(ApiModel):
    """What the target saves over the baseline: weight memory estimated from the model's shape,
    and the GPUs the model holds now against the FP16-only fleet it ran before its rollout."""

    weight_memory_gi_b: float | None = Field(None, alias="weightMemoryGiB")
    weight_memory_percent: float | None = None
    gpus_per_replica: int = Field(
        0, description="GPUs per replica the target needs fewer than the baseline."
    )
    gpus_in_use: int | None = Field(
        None, description="GPUs the model's tiers hold now (replicas x GPUs per replica, summed)."
    )
    baseline_fleet_gpus: int | None = Field(
        None,
        description="GPUs of the FP16-only fleet: the baseline at its full replicas, no other tier.",
    )
    gpus_saved: int | None = Field(
        None,
        description="baselineFleetGpus - gpusInUse: negative while a rollout runs both tiers.",
    )


class RuleResult(ApiModel):
    rule: str
    value: float | None = None
    threshold: float | None = None
    verdict: Verdict
    reason: str | None = None


class AnalysisStatus(ApiModel):
    at: str
    verdict: Verdict
    results: list[RuleResult] = Field(default_factory=list)


class RollbackStatus(ApiModel):
    at: str
    reasons: list[str]


class TrafficBackend(ApiModel):
    tier: str
    service: str = Field(description="The tier's Service, in the model's namespace.")
    port: int = 8000


class TrafficStatus(ApiModel):
    """The traffic the router applies: written by the operator, watched by the router.

    Kept in the model's status, so a rollback changes traffic and records it in one write."""

    rollout_id: str = Field(description="Changes with every new rollout; salts the sticky hash.")
    served_model: str = Field(description="The model name clients ask for (spec.model).")
    target_weight: int = Field(
        ge=0, le=100, description="% of live requests answered by the target."
    )
    mirror_percent: int = Field(
        ge=0,
        le=100,
        description="% of requests also sent to the target, answers compared, never returned.",
    )
    sticky_header: str | None = Field(
        None, description="Request header keeping each user on one tier, e.g. x-user-id."
    )
    baseline: TrafficBackend
    target: TrafficBackend | None = None


class RolloutBookkeeping(ApiModel):
    """What the rollout state machine remembers, so a restart resumes the same step with the same
    counts (never counting one breach twice)."""

    id: str
    attempt: int = 0
    failures: int = 0
    inconclusive_since: str | None = None
    last_evaluation_time: str | None = None
    stages_hash: str | None = None
    rolled_back_at: str | None = None
    held_for: str | None = Field(
        None,
        description="The edit the operator refuses (its field and why) while it holds the "
        "rollout where it is; fixing the edit resumes the same step.",
    )


class QuantizedModelStatus(ApiModel):
    observed_generation: int | None = None
    phase: Phase | None = None
    stage: str | None = None
    step: int | None = None
    target_weight: int | None = None
    mirror_percent: int | None = None
    stage_started_at: str | None = None
    last_analysis: AnalysisStatus | None = None
    rollback: RollbackStatus | None = None
    tiers: list[TierStatus] | None = None
    gpu_saving: GPUSaving | None = Field(None, alias="gpuSaving")
    traffic: TrafficStatus | None = None
    rollout: RolloutBookkeeping | None = None
    conditions: list[Condition] | None = None
