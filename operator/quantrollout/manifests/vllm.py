"""The vLLM Deployment and Service of one tier, as plain dicts ready for server-side apply.

Names are `<model>-<tier>`; labels are the `app.kubernetes.io/*` set plus `quantrollout.io/model`,
`quantrollout.io/tier` and `quantrollout.io/role`. Nothing is copied from the QuantizedModel's own
labels: that would copy Argo CD's tracking label, and Argo CD would then prune the children.
"""

from __future__ import annotations

import math
from typing import Any

from quantrollout.api.resolve import Tier
from quantrollout.defaults import VLLM_ENV, VLLM_HOME

MODEL_LABEL = "quantrollout.io/model"
TIER_LABEL = "quantrollout.io/tier"
ROLE_LABEL = "quantrollout.io/role"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
VLLM_PORT = 8000
MODELS_DIR = "/models"

# `vllm serve MODEL [options]`: the command is given, not left to the image's entrypoint, which
# changed over releases (python -m vllm.entrypoints.openai.api_server, later vllm serve).
COMMAND = ["vllm", "serve"]

# vLLM's --quantization value per format; None: not passed, so vLLM reads the checkpoint's
# quantization_config. The values must be right for every supported release (the contract test
# checks each against both ends of the range):
# - awq, gptq: only without the flag (or with the Marlin name, which fails on GPUs without
#   Marlin) does vLLM switch to its Marlin kernels on every release; 0.11 keeps the slow kernels
#   when told --quantization awq ("forcing awq").
# - fp8: a pre-quantized checkpoint, in vLLM's fp8 format or llm-compressor's compressed-tensors
#   one; vLLM reads which. --quantization fp8 fails on the latter ("does not match") and, from
#   0.2x on, no longer quantizes a 16-bit checkpoint online (that is fp8_per_tensor there, a name
#   0.11 does not know), so no single flag value is valid across the range.
# - compressed-tensors: named, which also refuses a checkpoint that is not quantized at all.
# bitsandbytes is refused at admission: vLLM 0.34 no longer has it.
QUANTIZATION_ARG: dict[str, str | None] = {
    "awq": None,
    "gptq": None,
    "fp8": None,
    "compressed-tensors": "compressed-tensors",
}


def resource_name(model_name: str, tier: Tier | str) -> str:
    return f"{model_name}-{tier if isinstance(tier, str) else tier.name}"


def selector_labels(model_name: str, tier: Tier) -> dict[str, str]:
    return {MODEL_LABEL: model_name, TIER_LABEL: tier.name}


def labels(model_name: str, tier: Tier) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "vllm",
        "app.kubernetes.io/instance": resource_name(model_name, tier),
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/part-of": "quantrollout",
        "app.kubernetes.io/managed-by": "quantrollout",
        **selector_labels(model_name, tier),
        ROLE_LABEL: tier.role,
    }


def dtype(baseline_precision: str) -> str:
    """vLLM's --dtype, the baseline's for every tier: the Marlin kernels take float16 and
    bfloat16 alike (only the old AWQ/GPTQ kernels needed float16), some models (Gemma 2 and 3,
    GLM-4) refuse float16, and a target in another dtype than its baseline compares unlike things."""
    return {"fp16": "float16", "bf16": "bfloat16"}[baseline_precision]


def model_source(artifact: str) -> tuple[list[str], list[dict[str, Any]], list[dict[str, Any]]]:
    """vLLM args, volumes and mounts that load the weights at `artifact`.

    The first arg is the model, positional (`vllm serve MODEL`). s3:// and gs:// stream through
    vLLM's Run:ai model streamer; hf://org/name is a Hugging Face repository id;
    pvc://claim/path mounts the claim read-only under /models/claim."""
    scheme, _, rest = artifact.partition("://")
    if scheme in ("s3", "gs"):
        return [artifact, "--load-format", "runai_streamer"], [], []
    if scheme == "hf":
        return [rest], [], []
    if scheme == "pvc":
        claim, _, path = rest.partition("/")
        volume = {
            "name": "weights",
            "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
        }
        mount = {"name": "weights", "mountPath": f"{MODELS_DIR}/{claim}", "readOnly": True}
        return [f"{MODELS_DIR}/{claim}/{path}".rstrip("/")], [volume], [mount]
    raise ValueError(f"unsupported artifact scheme in {artifact!r}")


def vllm_args(served_model: str, tier: Tier, baseline_precision: str) -> list[str]:
    s = tier.serving
    load, _, _ = model_source(tier.artifact)
    args = [
        *load,
        "--served-model-name",
        served_model,
        "--host",
        "0.0.0.0",
        "--port",
        str(VLLM_PORT),
    ]
    quantization = QUANTIZATION_ARG[tier.format] if tier.format is not None else None
    if quantization is not None:
        args += ["--quantization", quantization]
    args += [
        "--dtype", dtype(baseline_precision),
        "--max-model-len", str(s.max_model_len),
        "--gpu-memory-utilization", f"{s.gpu_memory_utilization:g}",
        "--tensor-parallel-size", str(s.tensor_parallel_size),
    ]  # fmt: skip
    return [*args, *s.extra_args]


def container_env(tier: Tier) -> list[dict[str, Any]]:
    """The operator's own variables (user name, cache dirs), then the tier's, each from a Secret:
    only names reach the Deployment, never a value."""
    s = tier.serving
    own = [{"name": k, "value": v} for k, v in VLLM_ENV.items()]
    return [*own, *(e.to_wire() for e in s.env)]


def build_deployment(
    *, name: str, namespace: str, served_model: str, tier: Tier, baseline_precision: str
) -> dict[str, Any]:
    """The tier's Deployment. `replicas` is left out when autoscaling owns it."""
    s = tier.serving
    _, volumes, mounts = model_source(tier.artifact)
    gpus = str(s.gpu.count)
    # /health asks the engine core; under a full batch it can take seconds to answer.
    probe = {"httpGet": {"path": "/health", "port": "http"}, "timeoutSeconds": 5}
    startup_period = 10
    container: dict[str, Any] = {
        "name": "vllm",
        "image": s.image,
        "command": COMMAND,
        "args": vllm_args(served_model, tier, baseline_precision),
        "ports": [{"name": "http", "containerPort": VLLM_PORT, "protocol": "TCP"}],
        "env": container_env(tier),
        "resources": {
            "requests": {"cpu": s.cpu, "memory": s.memory, GPU_RESOURCE: gpus},
            "limits": {"memory": s.memory, GPU_RESOURCE: gpus},
        },
        # Loading weights takes minutes: the startup probe allows the whole readiness deadline.
        "startupProbe": {
            **probe,
            "periodSeconds": startup_period,
            "failureThreshold": max(1, math.ceil(s.readiness_deadline_s / startup_period)),
        },
        "readinessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {
            **probe,
            "timeoutSeconds": 10,
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        # The root filesystem is read-only: everything vLLM writes goes to emptyDirs. HOME holds
        # the Hugging Face, vLLM (torch.compile), Triton and outlines caches (VLLM_ENV); /tmp the rest.
        "securityContext": {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "home", "mountPath": VLLM_HOME},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "dshm", "mountPath": "/dev/shm"},
            *mounts,
        ],
    }
    pod_spec: dict[str, Any] = {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "fsGroup": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "home", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {}},
            # Tensor parallelism shares tensors between workers through /dev/shm.
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}},
            *volumes,
        ],
        "terminationGracePeriodSeconds": 60,
    }
    if s.env_from:
        container["envFrom"] = [e.to_wire() for e in s.env_from]
    if s.service_account_name:
        pod_spec["serviceAccountName"] = s.service_account_name
    if s.gpu.product:
        pod_spec["nodeSelector"] = {GPU_PRODUCT_LABEL: s.gpu.product}
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(name, tier)},
        # GPUs are scarce: replace one pod at a time and never go below the serving count.
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        },
        "progressDeadlineSeconds": max(60, math.ceil(s.readiness_deadline_s)),
        "template": {"metadata": {"labels": labels(name, tier)}, "spec": pod_spec},
    }
    if s.autoscaling is None:
        spec = {"replicas": s.replicas, **spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": resource_name(name, tier),
            "namespace": namespace,
            "labels": labels(name, tier),
        },
        "spec": spec,
    }


def build_service(*, name: str, namespace: str, tier: Tier) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": resource_name(name, tier),
            "namespace": namespace,
            "labels": labels(name, tier),
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(name, tier),
            "ports": [{"name": "http", "port": VLLM_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }
