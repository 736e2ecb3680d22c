"""quantrollout: a Kubernetes operator that rolls quantized LLM variants out beside their FP16
baseline on vLLM, judges every step with Prometheus rules, and rolls back to the baseline by itself.

The package's layers (see DESIGN.md): `api` (the resource), `manifests`, `analysis`, `rollout`
and `traffic` decide; `handlers` and the client adapters act.
"""

__version__ = "0.1.0"
