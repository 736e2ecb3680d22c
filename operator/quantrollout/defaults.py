"""Every default of the product in one place: the API's field descriptions, the docs generator and
the code read them from here, so none of them can drift from another.

Pure values only (no I/O, no imports from the rest of the package but the API's value types)."""

from __future__ import annotations

from typing import Literal

# --- serving and the vLLM image -------------------------------------------------------------

# --- rollout stages, analysis and actions -----------------------------------------------------

# The stages a rollout walks when spec.rollout.stages is not given, and each stage's own defaults
# when a stage leaves a field out (rollout/steps.py turns them into steps).
SHADOW_MIRROR_PERCENT = 100
SHADOW_DURATION = "30m"
AB_WEIGHT = 10
AB_DURATION = "24h"
AB_STICKY_BY = "header:x-user-id"
GRADUAL_WEIGHTS: tuple[int, ...] = (25, 50, 75)
GRADUAL_STEP_DURATION = "1h"
STAGES: tuple[dict[str, object], ...] = (
    {"name": "shadow", "mirrorPercent": SHADOW_MIRROR_PERCENT, "duration": SHADOW_DURATION},
    {"name": "ab", "weight": AB_WEIGHT, "duration": AB_DURATION, "stickyBy": AB_STICKY_BY},
    {"name": "gradual", "weights": list(GRADUAL_WEIGHTS), "stepDuration": GRADUAL_STEP_DURATION},
    {"name": "full"},
)

# spec.rollout.analysis: Kubernetes writes these into the stored object (CRD defaults).
ANALYSIS_INTERVAL = "30s"
FAILURE_LIMIT = 2
MIN_SAMPLES = 50
ON_METRICS_UNAVAILABLE: Literal["pause", "rollback"] = "pause"
METRICS_UNAVAILABLE_GRACE = "5m"
# A rule without its own window looks back over this many analysis intervals, and at least
# WINDOW_MIN_S (a few 15 s scrapes): with the default interval, 2m.
WINDOW_INTERVALS = 4
WINDOW_MIN_S = 20
# The rules that judge every step when spec.rollout.analysis.rules is not given:
# (rule, "max" or "min", threshold). shadow-agreement applies in shadow only.
RULES: tuple[tuple[str, str, str], ...] = (
    ("error-rate", "max", "1%"),
    ("latency-p99-ratio", "max", "1.5"),
    ("repetition-rate", "max", "15%"),
    ("refusal-rate-increase", "max", "10%"),
    ("output-length-ratio", "min", "60%"),
    ("shadow-agreement", "min", "80%"),
)

# Prometheus, for a model whose spec.prometheus names none (the operator's QR_PROMETHEUS_URL, set
# by the chart's operator.prometheusURL, overrides it): the Prometheus Operator's own Service.
PROMETHEUS_URL = "http://prometheus-operated.monitoring.svc:9090"
# One query's timeout; no retries (a slow Prometheus costs one timeout, then Inconclusive).
PROMETHEUS_TIMEOUT_S = 5.0

# `kubectl annotate qm NAME quantrollout.io/action=ACTION`: the operator acts once, then removes
# the annotation.
ACTION_ANNOTATION = "quantrollout.io/action"
ACTIONS: tuple[str, ...] = ("promote", "abort", "retry")

# --- capacity: replicas follow traffic ----------------------------------------------------------


# --- preflight and mixed precision ---------------------------------------------------------------

# The artifact check: the weights in the shards may be 1/(1+t) to (1+t) times the weights term of
# the GPU memory estimate. Wide on purpose: embeddings and the LM head stay 16-bit, so a small
# model with a large vocabulary is well above its nominal bits; a checkpoint of the wrong
# precision is 1.8x (int8 for int4) to 3.5x (16-bit for int4) off.
PREFLIGHT_SIZE_TOLERANCE = 0.5
# Where the preflight Job mounts a pvc:// claim: <root>/<claim>, as the serving pods do.
PREFLIGHT_PVC_ROOT = "/models"
PREFLIGHT_READ_TIMEOUT_SECONDS = 60.0
# The benchmark: streamed requests in flight per tier, measured requests per tier, discarded
# warm-up requests per tier first, prompt length in words (about one token each) and answer
# length in tokens (ignore_eos: every answer is exactly this long).
PREFLIGHT_CONCURRENCY = 8
PREFLIGHT_REQUESTS = 64
PREFLIGHT_WARMUP_REQUESTS = 8
PREFLIGHT_PROMPT_TOKENS = 256
PREFLIGHT_MAX_TOKENS = 128
PREFLIGHT_REQUEST_TIMEOUT_SECONDS = 120.0
# The quality probe: answer length when a prompt sets none, and prompts asked at once per tier.
PREFLIGHT_PROBE_MAX_TOKENS = 128
PREFLIGHT_PROBE_CONCURRENCY = 4
# The gate when the spec names no rules: the quantized tier must be no slower than the baseline
# in throughput and first-token latency (a little noise allowed), and fail no request.
PREFLIGHT_GATE_RULES: tuple[tuple[str, str, float], ...] = (
    ("throughput-ratio", "min", 1.0),
    ("ttft-p99-ratio", "max", 1.2),
    ("error-rate", "max", 0.0),
)
# The whole preflight (artifact check, warm-up, benchmark, probe) must end within this.
PREFLIGHT_TIMEOUT = "30m"

# Mixed precision (rollout/policy.py): a quantized tier takes a request class only after this many
# shadow comparisons of that class (100 put the standard error of an agreement near 0.95 at 0.02).
MIXED_MIN_SAMPLES = 100
# ... and with at least this mean agreement with the baseline on that class (calibrated against
# the baseline's agreement with itself).
MIXED_MIN_AGREEMENT = 0.95


# --- the router ------------------------------------------------------------------------------------
