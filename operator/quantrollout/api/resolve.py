"""From a parsed spec to the fully resolved values the rest of the operator works with: every
default filled in, each tier's serving settings merged (tier over spec.serving over built-ins).

Pure: values in, values out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

from quantrollout import defaults
from quantrollout.defaults import DEFAULT_VLLM_IMAGE, VLLM_CPU_REQUEST, VLLM_MEMORY_REQUEST

from .durations import parse_duration
from .spec import (
    GPU,
    Autoscaling,
    EnvFromSource,
    EnvVar,
    QuantizedModelSpec,
    ServingOverrides,
)

TierRole = Literal["baseline", "target"]


class ResolvedServing(BaseModel):
    """A tier's serving settings with every default applied."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    image: str
    gpu: GPU
    max_model_len: int
    gpu_memory_utilization: float
    tensor_parallel_size: int
    replicas: int
    headroom_percent: int
    autoscaling: Autoscaling | None = None
    readiness_deadline: str
    extra_args: tuple[str, ...]
    cpu: str
    memory: str
    service_account_name: str | None = None
    env: tuple[EnvVar, ...] = ()
    env_from: tuple[EnvFromSource, ...] = ()

    @property
    def readiness_deadline_s(self) -> float:
        return parse_duration(self.readiness_deadline)


@dataclass(frozen=True)
class Tier:
    """One precision tier: the baseline or the target, with everything needed to deploy it."""

    name: str
    role: TierRole
    artifact: str
    precision: str
    format: str | None  # quantization format; None for the baseline
    serving: ResolvedServing


BUILTIN_SERVING = ServingOverrides(
    image=DEFAULT_VLLM_IMAGE,
    gpu=GPU(),
    max_model_len=4096,
    gpu_memory_utilization=0.90,
    tensor_parallel_size=1,
    replicas=1,
    headroom_percent=defaults.HEADROOM_PERCENT,
    readiness_deadline="15m",
    extra_args=[],
    cpu=VLLM_CPU_REQUEST,
    memory=VLLM_MEMORY_REQUEST,
)


def _merge(*layers: ServingOverrides | None) -> ResolvedServing:
    """Later layers win, field by field (gpu too: a tier may set only gpu.count)."""
    values: dict[str, object] = {}
    gpu: dict[str, object] = {}
    for layer in layers:
        if layer is None:
            continue
        for name, value in layer:
            if value is None:
                continue
            if name == "gpu":
                gpu.update(value.model_dump(exclude_unset=True))
            else:
                values[name] = value
    return ResolvedServing.model_validate({**values, "gpu": GPU.model_validate(gpu)})


def _baseline(spec: QuantizedModelSpec) -> Tier:
    return Tier(
        name=spec.baseline.precision,
        role="baseline",
        artifact=spec.baseline.artifact,
        precision=spec.baseline.precision,
        format=None,
        serving=_merge(BUILTIN_SERVING, spec.serving, spec.baseline.serving),
    )


def all_tiers(spec: QuantizedModelSpec) -> tuple[Tier, ...]:
    """The baseline, then every quantized tier in the spec's order (one, or several with
    spec.targets)."""
    return (
        _baseline(spec),
        *(
            Tier(
                name=t.name,
                role="target",
                artifact=t.artifact,
                precision=t.precision,
                format=t.format,
                serving=_merge(BUILTIN_SERVING, spec.serving, t.serving),
            )
            for t in spec.quantized()
        ),
    )


def tier_paths(spec: QuantizedModelSpec) -> tuple[str, ...]:
    """The field each of `all_tiers` comes from, in the same order."""
    if spec.targets is not None:
        return ("spec.baseline", *(f"spec.targets[{i}]" for i in range(len(spec.targets))))
    return ("spec.baseline", "spec.target")


def tiers(spec: QuantizedModelSpec) -> tuple[Tier, Tier]:
    """The baseline tier and the (first) target tier, in that order: what a single-target
    rollout works with (mixed precision uses `all_tiers`)."""
    resolved = all_tiers(spec)
    return resolved[0], resolved[1]
