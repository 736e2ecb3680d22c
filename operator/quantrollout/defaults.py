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


# --- the router ------------------------------------------------------------------------------------
