"""What a QuantizedModel should have running: for each tier, whether it may be deployed (spec
checks CEL cannot do, the GPU memory pre-flight) and the objects to apply. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from quantrollout.api.resolve import Tier, all_tiers, tier_paths
from quantrollout.api.spec import QuantizedModelSpec
from quantrollout.api.status import GPUSaving
from quantrollout.defaults import DEFAULT_VLLM_IMAGE, FLOAT16_REFUSED_MODELS, GCS_STREAMING_AFTER

from .gpu_memory import MemoryEstimate, estimate, preset_for
from .vllm import QUANTIZATION_ARG, build_deployment, build_service


@dataclass(frozen=True)
class Problem:
    """Why something cannot go ahead: a condition reason and a message naming the field."""

    reason: str
    message: str


@dataclass(frozen=True)
class TierPlan:
    tier: Tier
    estimate: MemoryEstimate | None
    problem: Problem | None
    objects: tuple[dict[str, Any], ...] = ()

    @property
    def deployable(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class Plan:
    invalid: Problem | None = None
    tiers: tuple[TierPlan, ...] = ()
    notes: tuple[str, ...] = field(default=())
    gpu_saving: GPUSaving | None = None


def parse_spec(raw: dict[str, Any]) -> QuantizedModelSpec | Problem:
    try:
        return QuantizedModelSpec.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
        if not first["loc"]:  # a check across fields names its fields itself
            return Problem("InvalidSpec", f"{first['msg'].removeprefix('Value error, ')}{more}")
        where = "spec." + ".".join(str(p) for p in first["loc"])
        return Problem("InvalidSpec", f"{where}: {first['msg']}{more}")


_VLLM_TAG = re.compile(r"^(?:docker\.io/)?vllm/vllm-openai:v(\d+)\.(\d+)\.(\d+)")


def _tier_checks(tier: Tier, path: str) -> Problem | None:
    """Checks on the merged settings of a tier, which per-field CEL rules cannot see."""
    s = tier.serving
    release = _VLLM_TAG.match(s.image)
    if tier.artifact.startswith("gs://") and release:
        version = tuple(int(g) for g in release.groups())
        if version <= GCS_STREAMING_AFTER:
            where = path.removesuffix(".serving")
            return Problem(
                "InvalidSpec",
                f"{where}.artifact: gs:// streaming is not in the {s.image} image (its Run:ai "
                f"streamer has no GCS client); set {path}.image to a later release "
                f"(the default {DEFAULT_VLLM_IMAGE} has it) or use s3://, hf:// or pvc://",
            )
    if s.gpu.count < s.tensor_parallel_size:
        return Problem(
            "InvalidSpec",
            f"{path}: gpu.count {s.gpu.count} (after merging spec.serving) is less than "
            f"tensorParallelSize {s.tensor_parallel_size}",
        )
    if s.autoscaling and s.autoscaling.min_replicas > s.autoscaling.max_replicas:
        return Problem(
            "InvalidSpec",
            f"{path}: autoscaling.minReplicas exceeds maxReplicas after merging spec.serving",
        )
    return None


def _stage_checks(spec: QuantizedModelSpec) -> Problem | None:
    """Live weights must rise from stage to stage (CEL checks each stage, not the pair)."""
    stages = {s.name: s for s in (spec.rollout.stages or [])} if spec.rollout else {}
    ab, gradual = stages.get("ab"), stages.get("gradual")
    if ab and gradual:
        ab_weight, first = ab.weight or 10, (gradual.weights or [25])[0]
        if first <= ab_weight:
            return Problem(
                "InvalidSpec",
                f"spec.rollout.stages: the gradual weights must all exceed the ab weight ({ab_weight}%), "
                f"but the first is {first}%",
            )
    return None


def _serving_checks(spec: QuantizedModelSpec) -> Problem | None:
    """What admission refuses but an object stored before the CRD said so may still hold (a
    format the supported vLLM releases cannot serve), and what CEL cannot see: every tier runs in
    the baseline's dtype, and vLLM refuses float16 for some model types."""
    for target, path in zip(spec.quantized(), tier_paths(spec)[1:], strict=True):
        if target.format not in QUANTIZATION_ARG:
            return Problem(
                "InvalidSpec",
                f"{path}.format: {target.format} cannot be served by the supported vLLM "
                f"releases; use awq, gptq, fp8 or compressed-tensors",
            )
    key = re.sub(r"[^a-z0-9]", "", spec.model.lower())
    refused = next((m for m in FLOAT16_REFUSED_MODELS if m in key), None)
    if spec.baseline.precision == "fp16" and refused:
        return Problem(
            "InvalidSpec",
            f"spec.baseline.precision: vLLM refuses float16 for {refused} models "
            f"(numerical instability), and every tier runs in the baseline's dtype; use bf16",
        )
    return None


def plan(name: str, namespace: str, raw_spec: dict[str, Any]) -> Plan:
    parsed = parse_spec(raw_spec)
    if isinstance(parsed, Problem):
        return Plan(invalid=parsed)
    spec = parsed
    stage_problem = _stage_checks(spec) or _serving_checks(spec)
    if stage_problem:
        return Plan(invalid=stage_problem)
    resolved = all_tiers(spec)
    for tier, path in zip(resolved, tier_paths(spec), strict=True):
        problem = _tier_checks(tier, f"{path}.serving")
        if problem:
            return Plan(invalid=problem)

    shape = spec.model_shape or preset_for(spec.model)
    notes: list[str] = []
    if shape is None:
        notes.append(
            f"GPU memory pre-flight skipped: no preset matches model {spec.model!r}; set spec.modelShape"
        )
    baseline_precision = spec.baseline.precision
    plans = []
    for tier in resolved:
        est = estimate(tier, shape) if shape else None
        problem = None
        if est is not None and not est.fits:
            problem = Problem("InsufficientGPUMemory", est.explain())
        objects: tuple[dict[str, Any], ...] = ()
        if problem is None:
            objects = (
                build_deployment(
                    name=name, namespace=namespace, served_model=spec.model, tier=tier,
                    baseline_precision=baseline_precision,
                ),
                build_service(name=name, namespace=namespace, tier=tier),
            )  # fmt: skip
        plans.append(TierPlan(tier=tier, estimate=est, problem=problem, objects=objects))

    saving = None
    base_plan, target_plan = plans[0], plans[1]
    if base_plan.estimate and target_plan.estimate:
        base_w, target_w = base_plan.estimate.weights_gib, target_plan.estimate.weights_gib
        saving = GPUSaving(
            weight_memory_gi_b=round(base_w - target_w, 2),
            weight_memory_percent=round(100 * (base_w - target_w) / base_w, 1),
            gpus_per_replica=base_plan.tier.serving.gpu.count - target_plan.tier.serving.gpu.count,
        )
    return Plan(tiers=tuple(plans), notes=tuple(notes), gpu_saving=saving)
