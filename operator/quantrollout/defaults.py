"""Every default of the product in one place: the API's field descriptions, the docs generator and
the code read them from here, so none of them can drift from another.

Pure values only (no I/O, no imports from the rest of the package but the API's value types)."""

from __future__ import annotations

# --- serving and the vLLM image -------------------------------------------------------------



# --- rollout stages, analysis and actions -----------------------------------------------------



# --- capacity: replicas follow traffic ----------------------------------------------------------



# --- preflight and mixed precision ---------------------------------------------------------------



# --- the router ------------------------------------------------------------------------------------
