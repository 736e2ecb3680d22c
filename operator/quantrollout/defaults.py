"""Every default of the product in one place: the API's field descriptions, the docs generator and
the code read them from here, so none of them can drift from another.

Pure values only (no I/O, no imports from the rest of the package but the API's value types)."""

from __future__ import annotations

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


# --- rollout stages, analysis and actions -----------------------------------------------------



# --- capacity: replicas follow traffic ----------------------------------------------------------



# --- preflight and mixed precision ---------------------------------------------------------------



# --- the router ------------------------------------------------------------------------------------
