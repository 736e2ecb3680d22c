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


# --- capacity: replicas follow traffic ----------------------------------------------------------


# --- preflight and mixed precision ---------------------------------------------------------------


# --- the router ------------------------------------------------------------------------------------
