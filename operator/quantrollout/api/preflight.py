"""`spec.rollout.preflight`: what runs before a target tier gets its first user request.

On by default: a spec that says nothing runs the artifact check, the warm-up and the benchmark
with the default gate (`rollout.preflight_step` decides, a Job carries it out); `enabled: false`
skips preflight altogether, and each part can be switched off on its own.

    rollout:
      preflight:
        enabled: true                                         # false: no preflight at all
        artifact: {groupSize: 128, digest: "sha256:…"}     # on by default; enabled: false skips it
        benchmark: {concurrency: 8, requests: 64, warmupRequests: 8, promptTokens: 256, maxTokens: 128}
        qualityProbe: {promptsConfigMapRef: {name: probe-prompts}}   # off unless given
        gate:
          rules:
            - {name: throughput-ratio, min: 1.2}
            - {name: ttft-p99-ratio, max: 1.1}
            - {name: quality-agreement, min: 0.9}
        timeout: 30m
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from quantrollout import defaults

from .base import ApiModel, cel, validations
from .durations import DURATION_PATTERN

GateRuleName = Literal[
    "throughput-ratio",
    "ttft-p50-ratio",
    "ttft-p99-ratio",
    "itl-p50-ratio",
    "itl-p99-ratio",
    "error-rate",
    "quality-agreement",
    "exact-match",
]
BENCHMARK_RULES = (
    "throughput-ratio", "ttft-p50-ratio", "ttft-p99-ratio", "itl-p50-ratio", "itl-p99-ratio",
    "error-rate",
)  # fmt: skip
PROBE_RULES = ("quality-agreement", "exact-match")
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"


class ArtifactCheck(ApiModel):
    enabled: bool = Field(True, description="Check the target checkpoint before it is served.")
    group_size: int | None = Field(
        None,
        ge=-1,
        le=65536,
        description="Quantization group size the checkpoint must declare (-1: per channel).",
    )
    digest: str | None = Field(
        None,
        pattern=DIGEST_PATTERN,
        description="sha256:<hex> of `sha256sum FILES | LC_ALL=C sort -k2 | sha256sum` over "
        "config.json, the tokenizer files, the index and every shard. Reads every file once.",
    )
    size_tolerance: float = Field(
        defaults.PREFLIGHT_SIZE_TOLERANCE,
        gt=0,
        le=10,
        description="The weights may be 1/(1+t) to (1+t) times the memory estimate's weights "
        f"(default {defaults.PREFLIGHT_SIZE_TOLERANCE}).",
    )


class Benchmark(ApiModel):
    enabled: bool = Field(True, description="Warm both tiers up, then load them alike and compare.")
    concurrency: int = Field(
        defaults.PREFLIGHT_CONCURRENCY, ge=1, le=1024, description="Requests in flight per tier."
    )
    requests: int = Field(
        defaults.PREFLIGHT_REQUESTS, ge=1, le=100000, description="Measured requests per tier."
    )
    warmup_requests: int = Field(
        defaults.PREFLIGHT_WARMUP_REQUESTS,
        ge=0,
        le=10000,
        description="Requests per tier before measuring, whose results are discarded.",
    )
    prompt_tokens: int = Field(
        defaults.PREFLIGHT_PROMPT_TOKENS,
        ge=1,
        le=131072,
        description="Prompt length, in words (about one token each).",
    )
    max_tokens: int = Field(
        defaults.PREFLIGHT_MAX_TOKENS,
        ge=1,
        le=32768,
        description="Answer length in tokens; every answer is this long (ignore_eos).",
    )


class ConfigMapRef(ApiModel):
    name: str = Field(
        min_length=1, max_length=253, description="A ConfigMap in the model's namespace."
    )


class QualityProbe(ApiModel):
    prompts_config_map_ref: ConfigMapRef = Field(
        description="Prompts: every data key ending in .jsonl, one JSON object per line, "
        '{"prompt": "...", "id": "optional", "maxTokens": optional}.'
    )
    max_tokens: int = Field(
        defaults.PREFLIGHT_PROBE_MAX_TOKENS,
        ge=1,
        le=4096,
        description="Answer length for prompts that set no maxTokens.",
    )


class GateRule(ApiModel):
    model_config = {
        "json_schema_extra": validations(
            cel(
                "has(self.min) != has(self.max)",
                "spec.rollout.preflight.gate.rules: a gate rule needs min or max, not both",
            )
        )
    }

    name: GateRuleName = Field(
        description="throughput-ratio, ttft-p50-ratio, ttft-p99-ratio, itl-p50-ratio, "
        "itl-p99-ratio (target / baseline), error-rate (the target's), quality-agreement or "
        "exact-match (the probe's).",
        json_schema_extra={"maxLength": 32},
    )
    min: float | None = Field(None, ge=0, description="Fail when the value is below this.")
    max: float | None = Field(None, ge=0, description="Fail when the value is above this.")


class Gate(ApiModel):
    rules: list[GateRule] | None = Field(
        None,
        max_length=16,
        description="Rules the target must pass before any request reaches it (default: "
        + ", ".join(f"{n} {b} {v:g}" for n, b, v in defaults.PREFLIGHT_GATE_RULES)
        + ").",
    )


class Preflight(ApiModel):
    model_config = {
        "json_schema_extra": validations(
            cel(
                "!has(self.gate) || !has(self.gate.rules) || !self.gate.rules.exists(r, r.name in "
                f"{list(PROBE_RULES)}) || has(self.qualityProbe)",
                "quality-agreement and exact-match need spec.rollout.preflight.qualityProbe",
                field_path=".gate.rules",
            ),
            cel(
                "!has(self.gate) || !has(self.gate.rules) || !self.gate.rules.exists(r, r.name in "
                f"{list(BENCHMARK_RULES)}) || !has(self.benchmark) || self.benchmark.enabled",
                "benchmark rules need spec.rollout.preflight.benchmark enabled",
                field_path=".gate.rules",
            ),
        )
    }

    enabled: bool = Field(
        True, description="Run preflight before the target gets any request (false: skip it)."
    )
    artifact: ArtifactCheck | None = Field(
        None, description="Check the target's checkpoint against the spec and the baseline."
    )
    benchmark: Benchmark | None = Field(
        None, description="Warm both tiers up, then load them alike and compare (on by default)."
    )
    quality_probe: QualityProbe | None = Field(
        None, description="Compare greedy answers of both tiers; off unless given."
    )
    gate: Gate | None = Field(None, description="The rules the benchmark and probe must pass.")
    timeout: str = Field(
        defaults.PREFLIGHT_TIMEOUT,
        max_length=32,
        description="The whole preflight must end within this (a duration like 30m).",
        json_schema_extra=validations(
            cel(
                f"self.matches('{DURATION_PATTERN}')",
                "spec.rollout.preflight.timeout must be a duration like 30s, 5m or 1h",
            )
        ),
    )

    def gate_rules(self) -> list[tuple[str, str, float]]:
        """(name, bound, threshold) of every rule in force, the defaults when none are given."""
        if self.gate is None or self.gate.rules is None:
            return list(defaults.PREFLIGHT_GATE_RULES)
        out: list[tuple[str, str, float]] = []
        for rule in self.gate.rules:
            bound, value = ("min", rule.min) if rule.min is not None else ("max", rule.max)
            assert value is not None
            out.append((rule.name, bound, value))
        return out
