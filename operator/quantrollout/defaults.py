"""Every default of the product in one place: the API's field descriptions, the docs generator and
the code read them from here, so none of them can drift from another.

Pure values only (no I/O, no imports from the rest of the package but the API's value types)."""

from __future__ import annotations

# --- serving and the vLLM image -------------------------------------------------------------


# --- rollout stages, analysis and actions -----------------------------------------------------


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
