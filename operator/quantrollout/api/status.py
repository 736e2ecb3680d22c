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

    type: str = Field(
        description="Ready, Progressing or Degraded; Reconciling and Stalled (kstatus) while true."
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        max_length=1024,
        description="Why, in one CamelCase word (e.g. TiersReady, RolledBack, Unschedulable).",
    )
    message: str = Field("", max_length=32768, description="Why, in words an on-call can act on.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(
        None, description="The metadata.generation the condition was computed for."
    )


class TierStatus(ApiModel):
    """One precision tier: its Deployment, replicas and readiness."""

    name: str = Field(description="The tier: the baseline's precision or spec.target.name.")
    role: Literal["baseline", "target"] = Field(description="baseline or target.")
    deployment: str | None = Field(
        None, description="The tier's Deployment (absent while the tier cannot be deployed)."
    )
    replicas: int = Field(0, description="Replicas the tier's Deployment asks for.")
    ready_replicas: int = Field(0, description="Replicas ready to serve.")
    gpus: int = Field(0, description="GPUs the tier uses in all (replicas x GPUs per replica).")
    gpus_per_replica: int = Field(0, description="GPUs each replica asks for.")
    estimated_weight_memory_gi_b: float | None = Field(
        None,
        alias="estimatedWeightMemoryGiB",
        description="Estimated memory of the tier's weights, in GiB (GPU memory pre-flight).",
    )
    estimated_memory_per_gpu_gi_b: float | None = Field(
        None,
        alias="estimatedMemoryPerGPUGiB",
        description="Estimated memory needed on each GPU, in GiB: weights, KV cache, overhead.",
    )
    ready: bool = Field(False, description="Every replica updated, available and ready.")
    message: str | None = Field(None, description="Why the tier cannot be deployed, if it cannot.")
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

    weight_memory_gi_b: float | None = Field(
        None,
        alias="weightMemoryGiB",
        description="GiB of weight memory the target saves per replica.",
    )
    weight_memory_percent: float | None = Field(
        None, description="The same saving, as a % of the baseline's weight memory."
    )
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
    relative_cost: float | None = Field(
        None,
        description="Mixed precision: GPU-seconds per request of the policy at full over the "
        "observed class mix, relative to the baseline serving everything.",
    )


class ClassStatus(ApiModel):
    """Mixed precision: one request class, the tier it is on and why."""

    class_: str = Field(alias="class", description="The request class (e.g. chat-short, code).")
    tier: str = Field(description="The tier the policy sends the class to.")
    share: int = Field(0, description="% of the class's live requests on that tier now.")
    agreement: float | None = Field(
        None, description="Shadow agreement of that tier with the baseline on this class."
    )
    samples: int = Field(0, description="Shadow comparisons of this class on that tier.")
    verdict: Verdict | None = Field(
        None, description="The latest per-class verdict on that tier (Pass, Fail, Inconclusive)."
    )
    reason: str = Field("", max_length=1024, description="Why the class is on that tier.")
    fallbacks: list[str] = Field(
        default_factory=list,
        description="Where a breach sends the class next (higher precision tiers that passed).",
    )
    request_share: float | None = Field(
        None, description="Fraction of the model's requests in this class, as last observed."
    )


class PolicyStatus(ApiModel):
    """Mixed precision: which rollout the class table belongs to, and how it was made."""

    for_: str = Field(alias="for", description="The rollout id and attempt it was compiled for.")
    source: Literal["learned", "hand"] = Field(
        description="learned (from shadow) or hand (spec.rollout.policy.classes)."
    )


class RuleResult(ApiModel):
    """One rule's measurement in one evaluation."""

    rule: str = Field(description="The rule's name (spec.rollout.analysis.rules).")
    value: float | None = Field(None, description="The measured value (absent when none).")
    threshold: float | None = Field(None, description="The limit it was compared with.")
    verdict: Verdict = Field(description="Pass, Fail or Inconclusive.")
    reason: str | None = Field(None, description="Why there was no answer, when Inconclusive.")


class AnalysisStatus(ApiModel):
    """The latest evaluation of the rules."""

    at: str = Field(description="When it was made (RFC 3339).")
    verdict: Verdict = Field(
        description="Pass, Fail or Inconclusive (missing data: never promotes)."
    )
    results: list[RuleResult] = Field(default_factory=list, description="Each rule's result.")


class RollbackStatus(ApiModel):
    """Why and when all traffic went back to the baseline."""

    at: str = Field(description="When (RFC 3339).")
    reasons: list[str] = Field(description="Why, in words (e.g. each breached rule and its value).")


class TrafficBackend(ApiModel):
    """One tier as the router reaches it."""

    tier: str = Field(description="The tier's name.")
    service: str = Field(description="The tier's Service, in the model's namespace.")
    port: int = Field(8000, description="The Service's port.")


class ClassTraffic(ApiModel):
    """Mixed precision: where one request class goes. `weight`% of the class's requests (by the
    same sticky bucket as `targetWeight`) go to `tier`, the rest to `rest` (the tier the class
    was on before: the baseline at first)."""

    class_: str = Field(alias="class", description="The request class (e.g. chat-short, code).")
    tier: str = Field(description="The tier the class is moving to (or is on).")
    weight: int = Field(ge=0, le=100, description="% of the class's requests on `tier`.")
    rest: str = Field(description="Where the rest of the class's requests go.")


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
    baseline: TrafficBackend = Field(description="Where the baseline's share goes.")
    target: TrafficBackend | None = Field(
        None, description="Where the target's share and the mirrored copies go."
    )
    targets: list[TrafficBackend] | None = Field(
        None,
        description="Mixed precision: every quantized tier (each receives the mirrored copies "
        "in shadow). Unset with a single target.",
    )
    classes: list[ClassTraffic] | None = Field(
        None,
        description="Mixed precision: each request class's split. A class without an entry, or "
        "naming a tier not in `targets`, is answered by the baseline (counted).",
    )


class RolloutBookkeeping(ApiModel):
    """What the rollout state machine remembers, so a restart resumes the same step with the same
    counts (never counting one breach twice)."""

    id: str = Field(description="Identifies this rollout (changes with the target).")
    attempt: int = Field(0, description="Retries of this rollout so far.")
    failures: int = Field(0, description="Consecutive failed evaluations so far.")
    inconclusive_since: str | None = Field(
        None, description="Since when evaluations have been inconclusive (RFC 3339)."
    )
    last_evaluation_time: str | None = Field(
        None, description="When the rules were last evaluated (RFC 3339)."
    )
    stages_hash: str | None = Field(
        None, description="Hash of the stages, so an edit mid-rollout is noticed."
    )
    rolled_back_at: str | None = Field(None, description="When it was rolled back (RFC 3339).")
    held_for: str | None = Field(
        None,
        description="The edit the operator refuses (its field and why) while it holds the "
        "rollout where it is; fixing the edit resumes the same step.",
    )


class PreflightGateResult(ApiModel):
    """One gate rule's verdict: the value it read and the bound it was held to."""

    rule: str = Field(description="The rule (spec.rollout.preflight.gate.rules[].name).")
    field: str = Field(description="What was read, e.g. target/baseline outputTokensPerSecond.")
    value: float | None = Field(None, description="The measured value (absent: none).")
    threshold: float = Field(description="The bound.")
    bound: Literal["min", "max"] = Field(description="min or max.")
    verdict: Literal["Pass", "Fail", "Inconclusive"] = Field(
        description="Pass, Fail or Inconclusive."
    )


class PreflightFigures(ApiModel):
    """One tier's figures under the benchmark's load (warm-up requests not counted)."""

    requests: int = Field(0, description="Measured requests sent.")
    errors: int = Field(0, description="Measured requests that failed.")
    ttft_p50: float | None = Field(None, description="Time to first token, median, seconds.")
    ttft_p99: float | None = Field(None, description="Time to first token, p99, seconds.")
    itl_p50: float | None = Field(None, description="Inter-token latency, median, seconds.")
    itl_p99: float | None = Field(None, description="Inter-token latency, p99, seconds.")
    output_tokens_per_second: float | None = Field(None, description="Output tokens per second.")
    seconds: float | None = Field(None, description="Wall time of the measured phase.")


class PreflightCheckStatus(ApiModel):
    """One check of the preflight Job: the artifact check or the gate (benchmark and probe)."""

    name: Literal["artifact", "gate"] = Field(description="artifact or gate.")
    verdict: Literal["Pass", "Fail", "Error", "Inconclusive"] = Field(
        description="Pass, Fail, Error (could not check) or Inconclusive (nothing to judge)."
    )
    reasons: list[str] = Field(
        default_factory=list, description="Why it did not pass: the file or rule, field, value."
    )
    results: list[PreflightGateResult] | None = Field(None, description="Each gate rule's verdict.")
    baseline: PreflightFigures | None = Field(None, description="The baseline's figures.")
    target: PreflightFigures | None = Field(None, description="The target's figures.")
    agreement: float | None = Field(None, description="The quality probe's mean agreement.")
    exact_match: float | None = Field(None, description="The probe's share of exact answers.")
    weights_bytes: int | None = Field(None, description="Artifact: bytes of weights in the shards.")
    estimate_bytes: int | None = Field(None, description="Artifact: the memory estimate's weights.")


class PreflightStatus(ApiModel):
    """What ran before the target got any request (spec.rollout.preflight), for one attempt of
    one rollout."""

    rollout_id: str = Field(description="The rollout it belongs to (status.rollout.id).")
    attempt: int = Field(0, description="The rollout's attempt (a retry runs preflight again).")
    phase: Literal["Running", "Passed", "Failed"] = Field(description="Running, Passed or Failed.")
    job: str | None = Field(None, description="The preflight Job, in the model's namespace.")
    started_at: str | None = Field(None, description="When the Job was created (RFC 3339).")
    finished_at: str | None = Field(
        None, description="When it ended (RFC 3339); no analysis window reaches back before it."
    )
    waiting: str | None = Field(
        None, description="While Running: why its pod is not running yet (scheduler, kubelet)."
    )
    reasons: list[str] = Field(default_factory=list, description="Why it failed, in words.")
    checks: list[PreflightCheckStatus] = Field(default_factory=list, description="Each check.")


class QuantizedModelStatus(ApiModel):
    """What the operator observed and decided."""

    observed_generation: int | None = Field(
        None, description="The metadata.generation this status was computed for."
    )
    phase: Phase | None = Field(
        None,
        description="Pending, Progressing, Paused, Succeeded, RolledBack or Failed (invalid spec).",
    )
    target_names: str | None = Field(
        None,
        description="The tiers being rolled out, comma-separated: spec.target's name, or each "
        "of spec.targets (kubectl get's TARGET column, for a mixed-precision model too).",
    )
    stage: str | None = Field(None, description="shadow, ab, gradual or full.")
    step: int | None = Field(None, description="Index of the current step among all stages' steps.")
    target_weight: int | None = Field(None, description="% of live traffic on the target now.")
    mirror_percent: int | None = Field(
        None, description="% of requests mirrored to the target now (shadow)."
    )
    stage_started_at: str | None = Field(
        None, description="When the current step began (RFC 3339)."
    )
    last_analysis: AnalysisStatus | None = Field(
        None, description="The latest evaluation of the rules."
    )
    rollback: RollbackStatus | None = Field(
        None, description="Why and when traffic went back to the baseline, if it did."
    )
    tiers: list[TierStatus] | None = Field(
        None, description="Each tier's Deployment, replicas, GPUs and readiness."
    )
    gpu_saving: GPUSaving | None = Field(
        None, alias="gpuSaving", description="What the target saves over the baseline."
    )
    traffic: TrafficStatus | None = Field(
        None, description="The split the router applies (the router watches this field)."
    )
    classes: list[ClassStatus] | None = Field(
        None, description="Mixed precision: the class table (each class's tier, share, verdict)."
    )
    policy: PolicyStatus | None = Field(
        None, description="Mixed precision: the rollout the class table belongs to."
    )
    rollout: RolloutBookkeeping | None = Field(
        None, description="The rollout's counters, so a restart resumes the same step."
    )
    preflight: PreflightStatus | None = Field(
        None, description="The checks run before the target got any request, and their figures."
    )
    conditions: list[Condition] | None = Field(
        None, description="kstatus conditions (Ready, Progressing, Degraded, Reconciling, Stalled)."
    )
