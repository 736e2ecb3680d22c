"""Every default of the product in one place: the API's field descriptions, the docs generator and
the code read them from here, so none of them can drift from another.

Pure values only (no I/O, no imports from the rest of the package but the API's value types)."""

from __future__ import annotations

# --- serving and the vLLM image -------------------------------------------------------------


# --- rollout stages, analysis and actions -----------------------------------------------------


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


# --- the router ------------------------------------------------------------------------------------
