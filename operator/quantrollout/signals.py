"""The names of every Prometheus series the rollout is judged on, in one place: the router
exports them, the vLLM simulator exports vLLM's, and the analysis rules query them.

Labels: every series the router exports carries `namespace` and `model` (the QuantizedModel's
namespace and name) and `tier` (the tier name, e.g. fp16 or int4-awq); the per-tier ones also
`class`, the request class of a mixed-precision model (router/classify.py CLASSES, six values)
and the empty string for every other model (Prometheus stores an empty label as none, so their
series are as before and rules that `sum` over a tier's series count every class). vLLM's own series carry
`model_name` (the served model name, the same for every tier), so the scrape configuration adds
`namespace`, `model` and `tier` from the pod's labels (`quantrollout.io/model`, `quantrollout.io/tier`).
"""

from __future__ import annotations

# Labels
NAMESPACE = "namespace"
MODEL = "model"
TIER = "tier"
ROUTER_LABELS = (NAMESPACE, MODEL, TIER)
CLASS = "class"  # mixed precision: the request class (router/classify.py CLASSES, a bounded set)
SAMPLING = (
    "sampling"  # on the agreement histograms: greedy | seeded | sampled (router/agreement.py)
)

# vLLM (as vLLM >= 0.6 exports them; label model_name)
VLLM_E2E_LATENCY = "vllm:e2e_request_latency_seconds"  # histogram
VLLM_TTFT = "vllm:time_to_first_token_seconds"  # histogram
VLLM_REQUEST_SUCCESS = "vllm:request_success_total"  # counter, label finished_reason
VLLM_GENERATION_TOKENS = "vllm:generation_tokens_total"  # counter
VLLM_PROMPT_TOKENS = "vllm:prompt_tokens_total"  # counter
VLLM_RUNNING = "vllm:num_requests_running"  # gauge
VLLM_WAITING = "vllm:num_requests_waiting"  # gauge

# The quantrollout router (prefix quantrollout_router_; units in the names)
ROUTER_REQUESTS = (
    "quantrollout_router_requests_total"  # counter: live requests answered by a tier, label code
)
ROUTER_ERRORS = "quantrollout_router_request_errors_total"  # counter: live requests a tier failed (5xx, timeout, reset)
ROUTER_LATENCY = "quantrollout_router_request_duration_seconds"  # histogram: end-to-end, per tier
ROUTER_TTFT = "quantrollout_router_time_to_first_token_seconds"  # histogram: streaming only
ROUTER_OUTPUT_TOKENS = "quantrollout_router_output_tokens_total"  # counter: completion tokens
ROUTER_RESPONSES = (
    "quantrollout_router_responses_total"  # counter: answers the quality checks looked at
)
ROUTER_REPETITIONS = "quantrollout_router_repetition_loops_total"  # counter: answers with a 4-gram repeated > 4 times
ROUTER_REFUSALS = (
    "quantrollout_router_refusals_total"  # counter: answers matching the refusal patterns
)
ROUTER_SHADOW_AGREEMENT = (
    "quantrollout_router_shadow_agreement_ratio"  # histogram: 0..1, label tier = the target
)
ROUTER_SHADOW_SELF_AGREEMENT = "quantrollout_router_shadow_self_agreement_ratio"  # histogram: 0..1, label tier = the baseline (its second answer against its first)
ROUTER_SHADOW_REQUESTS = "quantrollout_router_shadow_requests_total"  # counter: mirrored copies (target: shadow, baseline: calibration), label outcome
ROUTER_FALLBACKS = (
    "quantrollout_router_fallbacks_total"  # counter: target failures retried on the baseline
)
ROUTER_CONFIG_RELOADS = "quantrollout_router_config_reloads_total"  # counter
ROUTER_SHED = "quantrollout_router_shed_requests_total"  # counter: refused early (503), by reason
ROUTER_CLASS_FALLBACKS = "quantrollout_router_class_fallbacks_total"  # counter: mixed precision, requests of a class sent to the baseline for want of a route or tier, labels class, reason
