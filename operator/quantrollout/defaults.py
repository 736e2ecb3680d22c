"""Every default of the product in one place: the API's field descriptions, the docs generator and
the code read them from here, so none of them can drift from another.

Pure values only (no I/O, no imports from the rest of the package but the API's value types)."""

from __future__ import annotations

from typing import Literal

# --- serving and the vLLM image -------------------------------------------------------------

# The vLLM releases the operator renders valid arguments for, and the wheel each one's contract
# (hack/contracts/vllm-<version>.json) is extracted from: the newest release, and the newest one
# at least a year older than it (0.11.0, 2025-10-04; 0.34.0, 2026-11-16). Bumping: change a pin,
# run `hack/vllm-contract.py`, fix what the tests then refuse.
VLLM_WHEELS: dict[str, tuple[str, str]] = {
    "0.11.0": (
        "vllm-0.11.0-cp38-abi3-manylinux1_x86_64.whl",
        "3861c75ff2b12e24f6d179ff5c084d791b42ded8675d76c8706697c79f68cd62",
    ),
    "0.34.0": (
        "vllm-0.34.0-cp38-abi3-manylinux_2_28_x86_64.whl",
        "79ca4b3cd74aec08c4bf476bdf0cb15735b605ae5368526a2faae1e30f044ca2",
    ),
}
VLLM_OLDEST = "0.11.0"
VLLM_NEWEST = "0.34.0"
# The image every tier runs unless told otherwise: the newest supported release.
DEFAULT_VLLM_IMAGE = f"vllm/vllm-openai:v{VLLM_NEWEST}"
# A replica's CPU request (no limit) and memory request (= limit): vLLM's API server, tokenizer
# and scheduler are CPU-bound, and weights pass through host memory as they load.
VLLM_CPU_REQUEST = "4"
VLLM_MEMORY_REQUEST = "32Gi"
# The pod runs as uid 1000, which has no passwd entry in vLLM's image: torch's and Triton's
# cache-dir defaults call getpass.getuser(), which raises for such a uid unless USER/LOGNAME are
# set. Every cache vLLM, torch inductor, Triton and the Hugging Face hub write goes under HOME.
VLLM_HOME = "/home/vllm"
VLLM_ENV: dict[str, str] = {
    "HOME": VLLM_HOME,
    "USER": "vllm",
    "LOGNAME": "vllm",
    "XDG_CACHE_HOME": f"{VLLM_HOME}/.cache",
    "XDG_CONFIG_HOME": f"{VLLM_HOME}/.config",
    "HF_HOME": f"{VLLM_HOME}/.cache/huggingface",
    "VLLM_CACHE_ROOT": f"{VLLM_HOME}/.cache/vllm",
    "VLLM_CONFIG_ROOT": f"{VLLM_HOME}/.config/vllm",
    "TORCHINDUCTOR_CACHE_DIR": f"{VLLM_HOME}/.cache/torchinductor",
    "TRITON_HOME": VLLM_HOME,
    "TRITON_CACHE_DIR": f"{VLLM_HOME}/.cache/triton",
    "OUTLINES_CACHE_DIR": f"{VLLM_HOME}/.cache/outlines",
    "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
}
RESERVED_ENV_NAMES = frozenset(VLLM_ENV)
# vLLM refuses --dtype float16 for these model types (vllm/config/model.py
# _FLOAT16_NOT_SUPPORTED_MODELS, checked against the contract); matched against the served
# model name with everything but letters and digits removed.
FLOAT16_REFUSED_MODELS = ("gemma2", "gemma3", "glm4", "plamo2")
# gs:// streams through the Run:ai streamer's GCS client, which the vllm/vllm-openai images up to
# this release do not install (they ship runai-model-streamer[s3]); the default image has it.
GCS_STREAMING_AFTER = (0, 11, 0)

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
# Each default below is the value a field takes when the spec leaves it out; the field's
# description (api/spec.py) says what it costs.
STANDBY_REPLICAS = 0  # spec.baseline.standbyReplicas: baseline replicas kept once the bake is over
BAKE_DURATION = (
    "1h"  # spec.rollout.bakeDuration: after full, the baseline keeps its reserve this long
)
ABORT_SCALE_DOWN_DELAY = "10m"  # spec.rollout.abortScaleDownDelay: target kept after a rollback
AFTER_BAKE = "rollback"  # spec.rollout.afterBake: what a breach after the bake does
AFTER_BAKE_INTERVAL = "5m"  # spec.rollout.afterBakeInterval: analysis rate once the bake is over
HEADROOM_PERCENT = 20  # spec.serving.headroomPercent: extra replicas over a tier's traffic share
ROLLBACK_RESERVE_PERCENT = 100  # spec.rollout.rollbackReservePercent: baseline kept while active
# A step's next weights get their replicas this long before the step's time is up, so the
# promotion does not wait minutes for GPUs to load (not an API field: a tuning of the planner).
SCALE_UP_LEAD = "10m"
# serving.autoscaling: the per-pod metric the HorizontalPodAutoscaler follows (vLLM's queue
# length, served to the HPA by the custom metrics API, e.g. prometheus-adapter) and its target.
AUTOSCALING_METRIC = "vllm:num_requests_waiting"
AUTOSCALING_TARGET_PER_REPLICA = 4  # waiting requests per replica before the HPA adds one

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
# The preflight Job runs the operator's own image: this repository, tagged with the operator's
# version, unless the operator is told its image (QR_OPERATOR_IMAGE, the chart sets it).
PREFLIGHT_IMAGE_REPOSITORY = "ghcr.io/quantrollout/quantrollout"
PREFLIGHT_IMAGE_ENV = "QR_OPERATOR_IMAGE"
# A finished preflight Job is kept this long (its result is in status once read; the Job and its
# pod's logs stay for a human to look at).
PREFLIGHT_JOB_TTL_SECONDS = 3600

# Mixed precision (rollout/policy.py): a quantized tier takes a request class only after this many
# shadow comparisons of that class (100 put the standard error of an agreement near 0.95 at 0.02).
MIXED_MIN_SAMPLES = 100
# ... and with at least this mean agreement with the baseline on that class (calibrated against
# the baseline's agreement with itself).
MIXED_MIN_AGREEMENT = 0.95
# Requests a replica serves relative to a baseline replica, by precision, to price tiers per
# request (GPUs per replica / this): decoding is memory-bound, so fewer bytes per weight serve
# more; the figures are the bench's service times (fp16 40 ms, fp8 30 ms, int4 25 ms).
MIXED_RELATIVE_THROUGHPUT: dict[str, float] = {
    "fp16": 1.0, "bf16": 1.0, "fp8": 4 / 3, "int8": 4 / 3, "int4": 1.6,
}  # fmt: skip

# --- the router ------------------------------------------------------------------------------------
# What a client may send and what the shadow comparison costs (issue 16, "Meet the real vLLM").
# Request bodies up to this size are routed; larger ones get 413. Chat requests carry images as
# base64 (4/3 of the file), and the audio endpoints take uploads OpenAI caps at 25 MB.
ROUTER_MAX_BODY_BYTES = 32 << 20
# Share (%) of mirrored requests the baseline answers a second time, to measure how far it agrees
# with itself: the yardstick of the shadow-agreement rule. Costs the baseline this share of the
# mirrored traffic again, during shadow only.
ROUTER_CALIBRATION_PERCENT = 10
# Router processes per pod: the chart sets one per core of the CPU limit; by hand, one.
ROUTER_WORKERS = 1
# Completions one router process serves at once; more are refused early (503 + Retry-After,
# quantrollout_router_shed_requests_total{reason="inflight"}) rather than queued. One process
# passes on ~20,000 streamed chunks/s: 1,024 streams at vLLM's ~25 tokens/s is about its limit.
ROUTER_MAX_INFLIGHT_PER_WORKER = 1024
# Seconds the process's event loop may run late before new completions are refused
# ({reason="loop_lag"}): past that, a new stream would wait that long for its first token.
ROUTER_MAX_LOOP_LAG_S = 0.25
# Seconds to wait before restarting a router process that died, doubling while it keeps dying
# within a minute of its start, up to the maximum.
ROUTER_RESTART_BACKOFF_S = 0.5
ROUTER_RESTART_BACKOFF_MAX_S = 10.0
# Seconds between two writes of one stream to its client (router/http1.py): tokens that come
# faster go on together (50 writes a second is still smooth to read). A stream under 50 tokens
# per second is never held; a faster one is, by at most this long, and its writes no longer
# crowd out new streams.
ROUTER_RELAY_PACE_S = 0.02
