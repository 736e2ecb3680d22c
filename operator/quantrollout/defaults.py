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


# --- the router ------------------------------------------------------------------------------------
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
