"""Every default of the product in one place: the API's field descriptions, the docs generator and
the code read them from here, so none of them can drift from another.

Pure values only (no I/O, no imports from the rest of the package but the API's value types)."""

from __future__ import annotations

# --- serving and the vLLM image -------------------------------------------------------------


# --- rollout stages, analysis and actions -----------------------------------------------------


# --- capacity: replicas follow traffic ----------------------------------------------------------


# --- preflight and mixed precision ---------------------------------------------------------------


# --- the router ------------------------------------------------------------------------------------
# What a client may send and what the shadow comparison costs (issue 16, "Meet the real vLLM").
# Request bodies up to this size are routed; larger ones get 413. Chat requests carry images as
# base64 (4/3 of the file), and the audio endpoints take uploads OpenAI caps at 25 MB.
ROUTER_MAX_BODY_BYTES = 32 << 20
# Share (%) of mirrored requests the baseline answers a second time, to measure how far it agrees
# with itself: the yardstick of the shadow-agreement rule. Costs the baseline this share of the
# mirrored traffic again, during shadow only.
ROUTER_CALIBRATION_PERCENT = 10
