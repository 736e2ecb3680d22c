"""Every default of the product in one place: the API's field descriptions, the docs generator and
the code read them from here, so none of them can drift from another.

Pure values only (no I/O, no imports from the rest of the package but the API's value types)."""

from __future__ import annotations

# --- serving and the vLLM image -------------------------------------------------------------


# --- rollout stages, analysis and actions -----------------------------------------------------


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


# --- the router ------------------------------------------------------------------------------------
