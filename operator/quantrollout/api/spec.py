"""`QuantizedModel.spec`: what a user (or Argo CD) declares.

Each model here is both the operator's parsed view of the spec and the source of the CRD schema
(`hack/gen-crd.py`). Rules the API server can check are attached as CEL (`x-kubernetes-validations`)
with a message naming the field; the few it cannot check live in `quantrollout.api.checks`.
Defaults that Kubernetes writes into the stored object are limited to scalar leaves, so the
object in Git and the object in the cluster differ as little as possible.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, WithJsonSchema, field_validator, model_validator

from quantrollout import defaults as d
from quantrollout.defaults import (
    DEFAULT_VLLM_IMAGE,
    RESERVED_ENV_NAMES,
    VLLM_CPU_REQUEST,
    VLLM_MEMORY_REQUEST,
    VLLM_NEWEST,
    VLLM_OLDEST,
)
from quantrollout.router.classify import CLASSES

from .base import ApiModel, cel, validations
from .durations import DURATION_PATTERN
from .preflight import Preflight
from .thresholds import THRESHOLD_PATTERN

BaselinePrecision = Literal["fp16", "bf16"]
Precision = Literal["fp16", "bf16", "fp8", "int8", "int4"]
QuantFormat = Literal["awq", "gptq", "fp8", "compressed-tensors", "bitsandbytes", "gguf"]
StageName = Literal["shadow", "ab", "gradual", "full"]
STAGE_ORDER: tuple[StageName, ...] = ("shadow", "ab", "gradual", "full")
PRECISION_BITS: dict[str, int] = {"fp16": 16, "bf16": 16, "fp8": 8, "int8": 8, "int4": 4}
_BITS_CEL = "{'fp16': 16, 'bf16': 16, 'fp8': 8, 'int8': 8, 'int4': 4}"


def _duration(description: str, default: str | None = None) -> object:
    return Field(
        default=default,
        max_length=32,
        description=f"{description} A duration like 30s, 5m, 1h30m, 250ms or 2d.",
        json_schema_extra=validations(
            cel(
                f"self.matches('{DURATION_PATTERN}')",
                "must be a duration like 30s, 5m, 1h30m, 250ms or 2d",
            )
        ),
    )


Threshold = Annotated[
    float | str,
    WithJsonSchema(
        {
            "description": "An integer (3), a percentage (1%, 60%), a latency (250ms, 1.5s) or a quoted decimal ('0.6').",
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": THRESHOLD_PATTERN,  # applies to the string form only
            "maxLength": 16,
        }
    ),
]


def _stage_sequences() -> list[list[StageName]]:
    """Every allowed sequence of stage names: a subsequence of STAGE_ORDER that ends with full."""
    optional = STAGE_ORDER[:-1]
    sequences: list[list[StageName]] = []
    for mask in range(2 ** len(optional)):
        chosen: list[StageName] = [name for i, name in enumerate(optional) if mask >> i & 1]
        sequences.append([*chosen, "full"])
    return sequences


ARTIFACT_PATTERN = r"^(s3|gs|hf|pvc)://[^\s]+$"


class SecretKeyRef(ApiModel):
    name: str = Field(
        min_length=1, max_length=253, description="Name of a Secret in the model's namespace."
    )
    key: str = Field(min_length=1, max_length=253, description="Key in that Secret.")


class GPU(ApiModel):
    count: int = Field(1, ge=1, le=64, description="GPUs per replica (nvidia.com/gpu).")
    product: str | None = Field(
        None,
        max_length=128,
        description="Value of the nvidia.com/gpu.product node label to schedule on, e.g. NVIDIA-H100-80GB-HBM3.",
    )
    memory_gi_b: int = Field(
        80,
        alias="memoryGiB",
        ge=1,
        le=1024,
        description="Memory of one GPU in GiB, for the pre-flight check.",
    )


QUANTITY_PATTERN = r"^[0-9]+(\\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$"


class SecretKeySelector(ApiModel):
    name: str = Field(min_length=1, max_length=253, description="Secret in the model's namespace.")
    key: str = Field(min_length=1, max_length=253, description="Key in that Secret.")
    optional: bool | None = Field(None, description="Start even if the Secret or key is missing.")


class EnvVarSource(ApiModel):
    secret_key_ref: SecretKeySelector = Field(
        description="Only Secrets: the value never appears in the spec, status, Events or logs."
    )


class EnvVar(ApiModel):
    """One environment variable of the vLLM container, from a Secret key (HF_TOKEN,
    AWS_ACCESS_KEY_ID, ...). Plain values are refused: put them in a Secret."""

    name: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        max_length=128,
        description="Variable name.",
        json_schema_extra=validations(
            cel(
                f"!(self in {sorted(RESERVED_ENV_NAMES)})",
                "env name is set by the operator (user name and cache directories); choose another",
            )
        ),
    )
    value_from: EnvVarSource = Field(description="Where the value comes from: a Secret key.")

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name in RESERVED_ENV_NAMES:
            raise ValueError(
                "env name is set by the operator (user name and cache directories); choose another"
            )
        return name


class SecretEnvSource(ApiModel):
    name: str = Field(min_length=1, max_length=253, description="Secret in the model's namespace.")
    optional: bool | None = Field(None, description="Start even if the Secret is missing.")


class EnvFromSource(ApiModel):
    """Every key of a Secret as an environment variable (e.g. AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL for an S3-compatible store)."""

    secret_ref: SecretEnvSource = Field(description="The Secret whose keys become variables.")
    prefix: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        max_length=64,
        description="Prefix for each name.",
    )


class Autoscaling(ApiModel):
    """A HorizontalPodAutoscaler (autoscaling/v2) the operator creates for the tier. The bounds
    are for the tier carrying all of the model's traffic; the operator scales both with the
    tier's share of traffic (and keeps none while the tier is scaled to zero)."""

    min_replicas: int = Field(
        1, ge=1, le=1000, description="Fewest replicas at 100% of the traffic (default 1)."
    )
    max_replicas: int = Field(ge=1, le=1000, description="Most replicas at 100% of the traffic.")
    metric: str | None = Field(
        None,
        min_length=1,
        max_length=253,
        pattern=r"^[^/%]+$",
        description=(
            "A per-pod metric served by the custom metrics API (e.g. prometheus-adapter) that the "
            f"HPA follows (default {d.AUTOSCALING_METRIC}, vLLM's queue of waiting requests)."
        ),
    )
    target_per_replica: int | None = Field(
        None,
        ge=1,
        le=100000,
        description=(
            "Average value of the metric per replica the HPA aims at "
            f"(default {d.AUTOSCALING_TARGET_PER_REPLICA})."
        ),
    )


class ServingOverrides(ApiModel):
    """vLLM serving settings; every field is optional, and a tier's own settings win over spec.serving."""

    image: str | None = Field(
        None,
        min_length=1,
        max_length=512,
        description=f"vLLM image (default {DEFAULT_VLLM_IMAGE}).",
    )
    gpu: GPU | None = Field(
        None, description="GPUs of each replica: how many, which product, how much memory."
    )
    max_model_len: int | None = Field(
        None, ge=128, le=1048576, description="--max-model-len (default 4096)."
    )
    gpu_memory_utilization: float | None = Field(
        None, gt=0, le=1, description="--gpu-memory-utilization, within (0, 1] (default 0.90)."
    )
    tensor_parallel_size: int | None = Field(
        None, ge=1, le=64, description="--tensor-parallel-size (default 1)."
    )
    replicas: int | None = Field(
        None,
        ge=0,
        le=1000,
        description=(
            "Replicas of the tier when it carries all of the model's traffic (default 1). "
            "While it carries a share, it runs that share of them plus headroomPercent."
        ),
    )
    headroom_percent: int | None = Field(
        None,
        ge=0,
        le=400,
        description=(
            "Extra replicas, in % of a tier's traffic share, kept over what the share needs "
            f"(default {d.HEADROOM_PERCENT}): each point is GPUs held for bursts; 0 sizes "
            "a tier exactly to its share. Never above `replicas`."
        ),
    )
    autoscaling: Autoscaling | None = Field(
        None,
        description=(
            "If set, the operator creates a HorizontalPodAutoscaler (autoscaling/v2) for the tier "
            "whose bounds follow the tier's traffic share, instead of setting its replicas."
        ),
    )
    readiness_deadline: str | None = _duration(  # type: ignore[assignment]
        "How long a tier may take to become ready before it is reported Degraded (default 15m)."
    )
    extra_args: list[Annotated[str, Field(max_length=256)]] | None = Field(
        None, max_length=32, description="Extra vLLM command-line arguments, appended as they are."
    )
    cpu: str | None = Field(
        None,
        pattern=QUANTITY_PATTERN,
        max_length=32,
        description=f"CPU request of a replica (default {VLLM_CPU_REQUEST}); no limit, so the tokenizer and scheduler are never throttled.",
    )
    memory: str | None = Field(
        None,
        pattern=QUANTITY_PATTERN,
        max_length=32,
        description=f"Memory request and limit of a replica (default {VLLM_MEMORY_REQUEST}); loading weights passes through host memory.",
    )
    service_account_name: str | None = Field(
        None,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        max_length=253,
        description="ServiceAccount the tier's pods run as, e.g. one bound to a cloud role (IRSA, GKE Workload Identity) that may read the weights.",
    )
    env: list[EnvVar] | None = Field(
        None,
        max_length=64,
        description="Environment of the vLLM container, each from a Secret key (HF_TOKEN for gated repositories). A tier's list replaces spec.serving's.",
    )
    env_from: list[EnvFromSource] | None = Field(
        None,
        max_length=16,
        description="Secrets whose every key becomes an environment variable. A tier's list replaces spec.serving's.",
    )


_SERVING_RULES = validations(
    cel(
        "!has(self.gpu) || !has(self.tensorParallelSize) || self.gpu.count >= self.tensorParallelSize",
        "gpu.count must be at least tensorParallelSize",
        field_path=".gpu.count",
    ),
    cel(
        "!has(self.autoscaling) || self.autoscaling.minReplicas <= self.autoscaling.maxReplicas",
        "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
        field_path=".autoscaling",
    ),
)


class Serving(ServingOverrides):
    model_config = {"json_schema_extra": _SERVING_RULES}


class TierServing(ServingOverrides):
    model_config = {"json_schema_extra": _SERVING_RULES}


class Baseline(ApiModel):
    artifact: str = Field(
        pattern=ARTIFACT_PATTERN,
        max_length=1024,
        description="s3://, gs:// (streamed), hf://org/name or pvc://claim/path location of the weights.",
    )
    precision: BaselinePrecision = Field(
        "fp16", description="The baseline's precision, and the name of its tier."
    )
    standby_replicas: int | None = Field(
        None,
        ge=0,
        le=1000,
        description=(
            f"Baseline replicas kept once the rollout reached full and baked (default "
            f"{d.STANDBY_REPLICAS}). With 0 the baseline holds no GPU, and a rollback after "
            "the bake first waits for baseline replicas to be scheduled and load their weights "
            "(minutes), moving traffic back as each becomes Ready; each standby replica holds "
            "its GPUs but takes its share of traffic back at once."
        ),
    )
    serving: TierServing | None = Field(
        None, description="vLLM settings for the baseline tier only; they win over spec.serving."
    )


class Target(ApiModel):
    model_config = {
        "json_schema_extra": validations(
            cel(
                "self.format != 'gguf'",
                "spec.target.format: gguf is served by llama.cpp, not vLLM; use awq, gptq, fp8 or compressed-tensors",
                field_path=".format",
            ),
            cel(
                "self.format != 'awq' || self.precision == 'int4'",
                "spec.target.format awq requires precision int4",
                field_path=".precision",
            ),
            cel(
                "self.format != 'gptq' || self.precision in ['int4', 'int8']",
                "spec.target.format gptq requires precision int4 or int8",
                field_path=".precision",
            ),
            cel(
                "self.format != 'fp8' || self.precision == 'fp8'",
                "spec.target.format fp8 requires precision fp8",
                field_path=".precision",
            ),
            cel(
                "self.format != 'bitsandbytes'",
                f"spec.target.format: bitsandbytes is gone from vLLM {VLLM_NEWEST}, the newest supported release (and in {VLLM_OLDEST} it cannot stream s3:// or gs:// and runs int8 without CUDA graphs); use awq, gptq, fp8 or compressed-tensors",
                field_path=".format",
            ),
        )
    }

    name: str = Field(
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=30,
        description="Name of the target tier, e.g. int4-awq (a DNS label).",
    )
    artifact: str = Field(
        pattern=ARTIFACT_PATTERN, max_length=1024, description="Location of the quantized weights."
    )
    precision: Precision = Field(description="fp8, int8 or int4: lower than the baseline's.")
    format: QuantFormat = Field(
        description=(
            "Quantization format of the pre-quantized checkpoint. awq, gptq and fp8: vLLM reads "
            "the checkpoint's quantization_config (no --quantization is passed), which gets the "
            "Marlin kernels for AWQ and GPTQ; fp8 takes vLLM's fp8 format and llm-compressor's "
            "FP8 output alike. compressed-tensors: llm-compressor's output (W8A8, W4A16, FP8). "
            "bitsandbytes and gguf are refused: the supported vLLM releases cannot serve them."
        )
    )
    serving: TierServing | None = Field(
        None, description="vLLM settings for the target tier only; they win over spec.serving."
    )


class Stage(ApiModel):
    model_config = {
        "json_schema_extra": validations(
            cel(
                "self.name == 'shadow' || !has(self.mirrorPercent)",
                "mirrorPercent is only for the shadow stage",
                field_path=".mirrorPercent",
            ),
            cel(
                "self.name == 'ab' || !has(self.weight)",
                "weight is only for the ab stage (gradual takes weights)",
                field_path=".weight",
            ),
            cel(
                "self.name == 'ab' || !has(self.stickyBy)",
                "stickyBy is only for the ab stage",
                field_path=".stickyBy",
            ),
            cel(
                "self.name == 'gradual' || !has(self.weights)",
                "weights is only for the gradual stage",
                field_path=".weights",
            ),
            cel(
                "self.name == 'gradual' || !has(self.stepDuration)",
                "stepDuration is only for the gradual stage",
                field_path=".stepDuration",
            ),
            cel(
                "self.name in ['shadow', 'ab'] || !has(self.duration)",
                "duration is only for the shadow and ab stages (gradual takes stepDuration)",
                field_path=".duration",
            ),
            cel(
                "!has(self.weights) || (self.weights.isSorted() && self.weights.all(w, self.weights.indexOf(w) == self.weights.lastIndexOf(w)))",
                "weights must be strictly increasing, each within (0, 100)",
                field_path=".weights",
            ),
        )
    }

    name: StageName = Field(
        description="shadow, ab, gradual or full; in that order, each at most once, ending with full.",
        json_schema_extra={"maxLength": 8},
    )
    mirror_percent: int | None = Field(
        None,
        ge=1,
        le=100,
        description=f"shadow: % of requests mirrored to the target (default {d.SHADOW_MIRROR_PERCENT}).",
    )
    weight: int | None = Field(
        None,
        ge=1,
        le=99,
        description=f"ab: % of live traffic on the target (default {d.AB_WEIGHT}).",
    )
    sticky_by: str | None = Field(
        None,
        pattern=r"^header:[A-Za-z0-9-]{1,64}$",
        description=f"ab: keep each user on one tier, keyed by this request header (default {d.AB_STICKY_BY}).",
    )
    weights: list[Annotated[int, Field(ge=1, le=99)]] | None = Field(
        None,
        min_length=1,
        max_length=20,
        description=f"gradual: the weights, strictly increasing within (0, 100) (default {list(d.GRADUAL_WEIGHTS)}).",
    )
    step_duration: str | None = _duration(
        f"gradual: time at each weight (default {d.GRADUAL_STEP_DURATION})."
    )  # type: ignore[assignment]
    duration: str | None = _duration(
        f"shadow/ab: time in the stage (defaults {d.SHADOW_DURATION} and {d.AB_DURATION})."
    )  # type: ignore[assignment]


BuiltinRule = Literal[
    "latency-p99",
    "latency-p95",
    "ttft-p99",
    "latency-p99-ratio",
    "error-rate",
    "repetition-rate",
    "refusal-rate-increase",
    "output-length-ratio",
    "shadow-agreement",
    "custom",
]


class Rule(ApiModel):
    model_config = {
        "json_schema_extra": validations(
            cel(
                "self.name != 'custom' || has(self.query)",
                "a custom rule needs query (PromQL)",
                field_path=".query",
            ),
            cel(
                "self.name == 'custom' || !has(self.query)",
                "query is only for custom rules",
                field_path=".query",
            ),
            cel("has(self.max) || has(self.min)", "a rule needs max or min", field_path=".max"),
        )
    }

    name: BuiltinRule = Field(
        description="A built-in rule, or custom with a PromQL query.",
        json_schema_extra={"maxLength": 32},
    )
    max: Threshold | None = Field(None, description="Fail when the value is above this.")
    min: Threshold | None = Field(None, description="Fail when the value is below this.")
    query: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="custom: a PromQL query returning one value.",
    )
    window: str | None = _duration(
        f"Range the rule looks back over (default {d.WINDOW_INTERVALS} analysis intervals,"
        f" at least {d.WINDOW_MIN_S}s)."
    )  # type: ignore[assignment]


class Analysis(ApiModel):
    interval: str = _duration("Time between evaluations.", d.ANALYSIS_INTERVAL)  # type: ignore[assignment]
    failure_limit: int = Field(
        d.FAILURE_LIMIT, ge=1, le=100, description="Consecutive failed evaluations before rollback."
    )
    min_samples: int = Field(
        d.MIN_SAMPLES,
        ge=0,
        le=10_000_000,
        description="Fewer requests than this in a window is inconclusive, never a pass.",
    )
    on_metrics_unavailable: Literal["pause", "rollback"] = Field(
        d.ON_METRICS_UNAVAILABLE,
        description="What to do when metrics are missing: hold (pause) or roll back. Never promote.",
    )
    metrics_unavailable_grace: str = _duration(
        "How long metrics may be missing before onMetricsUnavailable applies.",
        d.METRICS_UNAVAILABLE_GRACE,
    )  # type: ignore[assignment]
    rules: list[Rule] | None = Field(
        None,
        max_length=32,
        description="Rules judging every step (default: "
        + ", ".join(f"{name} {cmp} {value}" for name, cmp, value in d.RULES)
        + ").",
    )


class LearnPolicy(ApiModel):
    """Learn the policy from shadow: each class goes to the cheapest tier that passed for it."""

    min_samples: int = Field(
        d.MIXED_MIN_SAMPLES,
        ge=1,
        le=10_000_000,
        description="Shadow comparisons of a class on a tier before that tier may take the class.",
    )
    min_agreement: float = Field(
        d.MIXED_MIN_AGREEMENT,
        ge=0,
        le=1,
        description="Least mean agreement with the baseline (calibrated) on a class for a tier to take it.",
    )


_CLASS_LIST = "[" + ", ".join(f"'{c}'" for c in CLASSES) + "]"


class MixedPolicy(ApiModel):
    """Mixed precision (spec.targets): which tier answers each request class."""

    model_config = {
        "json_schema_extra": validations(
            cel(
                "!(has(self.learn) && has(self.classes))",
                "spec.rollout.policy: set learn or classes, not both",
            ),
        )
    }

    learn: LearnPolicy | None = Field(
        None,
        description="Compile the policy at the end of shadow from each class's agreement and "
        "rules per tier (the default with spec.targets).",
    )
    classes: dict[str, str] | None = Field(
        None,
        description=f"A hand-written policy: request class ({', '.join(CLASSES)}) -> tier name "
        "(a target's name or the baseline's precision). A class left out stays on the baseline.",
        json_schema_extra={
            "maxProperties": len(CLASSES),
            "additionalProperties": {"type": "string", "maxLength": 30},
            **validations(
                cel(
                    f"self.all(k, k in {_CLASS_LIST})",
                    f"spec.rollout.policy.classes: unknown request class (classes: {', '.join(CLASSES)})",
                )
            ),
        },
    )


class Rollout(ApiModel):
    stages: list[Stage] | None = Field(
        None,
        min_length=1,
        max_length=4,
        description=(
            f"Stages in order (default shadow {d.SHADOW_DURATION}, ab {d.AB_WEIGHT}% {d.AB_DURATION},"
            f" gradual {'/'.join(map(str, d.GRADUAL_WEIGHTS))} {d.GRADUAL_STEP_DURATION} each, full)."
        ),
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            **validations(
                cel(
                    f"self.map(s, s.name) in {_stage_sequences()}",
                    "stages must be taken from shadow, ab, gradual, full, in that order, and end with full",
                )
            ),
        },
    )
    analysis: Analysis | None = Field(
        None,
        description="How every step is judged: rules, evaluation interval, failure limit, missing data.",
    )
    paused: bool = Field(False, description="Hold the rollout where it is (GitOps-friendly pause).")
    policy: MixedPolicy | None = Field(
        None,
        description="Mixed precision (spec.targets only): learn the class -> tier policy from "
        "shadow (default) or take a hand-written one.",
    )
    bake_duration: str | None = _duration(  # type: ignore[assignment]
        f"After full, how long analysis keeps judging while the baseline keeps its rollback "
        f"reserve, so a rollback stays instant (default {d.BAKE_DURATION}). Longer costs "
        "the reserve's GPUs for longer."
    )
    abort_scale_down_delay: str | None = _duration(  # type: ignore[assignment]
        f"After a rollback, how long the target keeps its replicas so a retry starts at once "
        f"(default {d.ABORT_SCALE_DOWN_DELAY}); then it is scaled to 0. Longer costs the "
        "target's GPUs for longer."
    )
    after_bake: Literal["rollback", "alert"] | None = Field(
        None,
        description=(
            f"What a breach found after the bake does (default {d.AFTER_BAKE}): rollback "
            "scales the baseline up and moves traffic back as its replicas become Ready; alert "
            "only reports it (Degraded, Event) and leaves traffic on the target."
        ),
    )
    after_bake_interval: str | None = _duration(  # type: ignore[assignment]
        f"Time between evaluations once the bake is over (default {d.AFTER_BAKE_INTERVAL})."
    )
    rollback_reserve_percent: int | None = Field(
        None,
        ge=0,
        le=100,
        description=(
            "While a rollout is active (and during the bake), the baseline keeps this % of its "
            f"full replicas however little traffic it carries (default "
            f"{d.ROLLBACK_RESERVE_PERCENT}: a rollback is instant and never overloads it). "
            "Lower saves those GPUs; a rollback then moves traffic back only as fast as baseline "
            "replicas become Ready (minutes), and the status says so."
        ),
    )
    preflight: Preflight | None = Field(
        None,
        description="What runs before the target gets any request, mirrored or live: the "
        "artifact check, a warm-up, a benchmark against the baseline and an optional quality "
        "probe, judged by a gate (on by default; enabled: false skips it all).",
    )


class HTTPRouteRef(ApiModel):
    name: str = Field(
        min_length=1,
        max_length=253,
        description="Name of the HTTPRoute the operator writes rules to.",
    )
    namespace: str | None = Field(
        None, max_length=63, description="Defaults to the model's namespace."
    )


class Traffic(ApiModel):
    model_config = {
        "json_schema_extra": validations(
            cel(
                "self.router != 'gateway-api' || has(self.httpRoute)",
                "spec.traffic.httpRoute is required when router is gateway-api",
                field_path=".httpRoute",
            ),
        )
    }

    router: Literal["builtin", "gateway-api"] = Field(
        "builtin", description="builtin (the quantrollout router) or gateway-api (an HTTPRoute)."
    )
    http_route: HTTPRouteRef | None = Field(
        None,
        alias="httpRoute",
        description="gateway-api: the existing HTTPRoute whose rules the operator owns (you own its parentRefs).",
    )


class PrometheusRef(ApiModel):
    url: str = Field(
        pattern=r"^https?://[^\s]+$",
        max_length=1024,
        description=f"Base URL of the Prometheus HTTP API (without spec.prometheus: the operator's QR_PROMETHEUS_URL, by default {d.PROMETHEUS_URL}).",
    )
    token_secret_ref: SecretKeyRef | None = Field(None, description="Bearer token for Prometheus.")
    insecure_skip_verify: bool = Field(
        False, description="Skip TLS verification (not recommended)."
    )


class ModelShape(ApiModel):
    """The model's shape, for the GPU memory pre-flight (presets cover common open models)."""

    parameters_b: float = Field(
        alias="parametersB", gt=0, le=10000, description="Parameters, in billions."
    )
    layers: int = Field(ge=1, le=1000, description="Transformer layers (for the KV cache size).")
    kv_heads: int = Field(ge=1, le=1024, description="Key/value heads (grouped-query attention).")
    head_dim: int = Field(ge=1, le=4096, description="Dimension of one attention head.")
    hidden_size: int | None = Field(
        None, ge=1, le=1_000_000, description="Hidden size (activations and the 16-bit embeddings)."
    )
    vocab_size: int | None = Field(
        None,
        ge=1,
        le=10_000_000,
        description="Vocabulary size (embeddings and LM head stay 16-bit in quantized checkpoints).",
    )
    tied_embeddings: bool = Field(
        False, description="The LM head shares the input embeddings' weights."
    )


MAX_TARGETS = 4  # tiers beside the baseline: each is a Deployment, a Service and its GPUs


class QuantizedModelSpec(ApiModel):
    """What to roll out (a quantized target beside its baseline), how, and how it is judged."""

    model_config = {
        "json_schema_extra": validations(
            cel(
                "has(self.target) != has(self.targets)",
                "spec.target and spec.targets: set exactly one (one target, or several tiers for mixed precision)",
            ),
            cel(
                f"!has(self.target) || {_BITS_CEL}[self.target.precision] < {_BITS_CEL}[self.baseline.precision]",
                "spec.target.precision must be lower than spec.baseline.precision",
                field_path=".target.precision",
            ),
            cel(
                f"!has(self.targets) || self.targets.all(t, {_BITS_CEL}[t.precision] < {_BITS_CEL}[self.baseline.precision])",
                "spec.targets: each precision must be lower than spec.baseline.precision",
                field_path=".targets",
            ),
            cel(
                "!has(self.targets) || self.targets.all(t, t.name != self.baseline.precision)",
                "spec.targets: a name must differ from the baseline's tier name (spec.baseline.precision)",
                field_path=".targets",
            ),
            cel(
                "!has(self.targets) || !has(self.traffic) || self.traffic.router != 'gateway-api'",
                "spec.traffic.router: gateway-api cannot split by request class; spec.targets needs the builtin router",
                field_path=".traffic.router",
            ),
            cel(
                "!has(self.rollout) || !has(self.rollout.policy) || has(self.targets)",
                "spec.rollout.policy is only for spec.targets (mixed precision)",
                field_path=".rollout.policy",
            ),
            cel(
                "!has(self.targets) || !has(self.rollout) || !has(self.rollout.policy) || "
                "!has(self.rollout.policy.classes) || self.rollout.policy.classes.all(k, "
                "self.rollout.policy.classes[k] == self.baseline.precision || "
                "self.targets.exists(t, t.name == self.rollout.policy.classes[k]))",
                "spec.rollout.policy.classes: every tier must be a target's name or the baseline's precision",
                field_path=".rollout.policy.classes",
            ),
            cel(
                "!has(self.baseline.standbyReplicas) || "
                "(has(self.baseline.serving) && has(self.baseline.serving.autoscaling)) || "
                "(has(self.serving) && has(self.serving.autoscaling)) || "
                "self.baseline.standbyReplicas <= "
                "(has(self.baseline.serving) && has(self.baseline.serving.replicas) ? self.baseline.serving.replicas : "
                "(has(self.serving) && has(self.serving.replicas) ? self.serving.replicas : 1))",
                "spec.baseline.standbyReplicas must not exceed the baseline's replicas "
                "(spec.baseline.serving.replicas, else spec.serving.replicas, default 1)",
                field_path=".baseline.standbyReplicas",
            ),
            cel(
                "!has(self.target) || self.target.name != self.baseline.precision",
                "spec.target.name must differ from the baseline's tier name (spec.baseline.precision)",
                field_path=".target.name",
            ),
        )
    }

    model: str = Field(
        min_length=1, max_length=256, description="Served model name clients ask for."
    )
    baseline: Baseline = Field(
        description="The FP16/BF16 tier serving today: the rollback target, never removed."
    )
    target: Target | None = Field(
        None,
        description="The quantized tier being rolled out; changing it starts a new rollout. "
        "Exactly one of target and targets.",
    )
    targets: list[Target] | None = Field(
        None,
        min_length=1,
        max_length=MAX_TARGETS,
        description="Mixed precision: several quantized tiers, each request class answered by "
        "the cheapest one good enough for it (spec.rollout.policy). Names unique; changing any "
        "starts a new rollout. Exactly one of target and targets.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    serving: Serving | None = Field(
        None, description="vLLM settings for every tier (image, GPUs, replicas, limits)."
    )
    model_shape: ModelShape | None = Field(
        None,
        description="The model's shape for the GPU memory pre-flight, when no preset matches spec.model.",
    )
    rollout: Rollout | None = Field(
        None, description="Stages, analysis and pause: how traffic moves to the target."
    )
    traffic: Traffic | None = Field(
        None, description="Where traffic is split: the built-in router or a Gateway API HTTPRoute."
    )
    prometheus: PrometheusRef | None = Field(
        None,
        description="The Prometheus the analysis queries (default: the operator's --prometheus-url).",
    )

    @model_validator(mode="after")
    def _one_target_form(self) -> QuantizedModelSpec:
        """What the CEL rules say, for a spec parsed outside the API server."""
        if (self.target is None) == (self.targets is None):
            raise ValueError(
                "spec.target and spec.targets: set exactly one (one target, or several tiers "
                "for mixed precision)"
            )
        names = [t.name for t in self.targets or []]
        if len(set(names)) != len(names):
            raise ValueError("spec.targets: names must be unique")
        return self

    @property
    def mixed(self) -> bool:
        """Mixed precision: several quantized tiers, each request class on its own tier."""
        return self.targets is not None

    def quantized(self) -> list[Target]:
        """The quantized tiers, in the spec's order: `target`, or every one of `targets`."""
        if self.targets is not None:
            return list(self.targets)
        assert self.target is not None  # the validator above
        return [self.target]
