"""The preflight Job: `quantrollout preflight artifact` (an init container), then
`quantrollout preflight benchmark` (the container), in the operator's own image, with the target
tier's credentials. Pure: values in, a dict out.

- Credentials are the target tier's as its Deployment has them: `serviceAccountName`, the
  `env` entries the user gave (each from a Secret) and `envFrom`, and a `pvc://` claim mounted
  read-only where the serving pods mount it; the checks read the artifact as vLLM would.
- `restartPolicy: Never`, `backoffLimit: 0` (a failed check is an answer, not a flake to retry),
  `activeDeadlineSeconds` from `spec.rollout.preflight.timeout`, and a TTL long enough for the
  operator to read the result (it records it in status, then needs the Job no more).
- Each check writes its JSON result to /dev/termination-log, which the kubelet copies into the
  pod's status (`terminationMessagePolicy: File`, at most 4096 bytes): the operator reads it there.
- The benchmark reaches each tier through its Service, never through the router, so none of its
  requests is in the router's series.
"""

from __future__ import annotations

from typing import Any

from quantrollout import defaults
from quantrollout.api.resolve import Tier, tiers
from quantrollout.api.spec import QuantizedModelSpec
from quantrollout.rollout.preflight_step import PreflightSettings

from .vllm import MODEL_LABEL, VLLM_PORT, model_source, resource_name

COMPONENT_LABEL = "app.kubernetes.io/component"
PREFLIGHT_LABEL = "quantrollout.io/preflight"  # the rollout id and attempt: "<id>-<attempt>"
TERMINATION_LOG = "/dev/termination-log"
PROMPTS_DIR = "/probe"


def _artifact_args(spec: QuantizedModelSpec, settings: PreflightSettings) -> list[str]:
    t = spec.quantized()[0]  # one target: preflight does not run for mixed precision yet
    art = settings.spec.artifact
    args = ["preflight", "artifact", "--target", t.artifact, "--baseline", spec.baseline.artifact,
            "--format", str(t.format), "--precision", t.precision]  # fmt: skip
    shape = spec.model_shape
    if shape is not None and shape.parameters_b is not None:
        args += ["--parameters-b", f"{shape.parameters_b:g}"]
    else:
        args += ["--model", spec.model]
    if art is not None and art.group_size is not None:
        args += ["--group-size", str(art.group_size)]
    if art is not None and art.digest:
        args += ["--digest", art.digest]
    tolerance = art.size_tolerance if art is not None else defaults.PREFLIGHT_SIZE_TOLERANCE
    args += ["--tolerance", f"{tolerance:g}", "--termination-log", TERMINATION_LOG]
    return args


def _benchmark_args(
    spec: QuantizedModelSpec, settings: PreflightSettings, name: str, namespace: str
) -> list[str]:
    baseline, target = tiers(spec)
    pre = settings.spec

    def url(tier: Tier) -> str:
        return f"http://{resource_name(name, tier)}.{namespace}.svc:{VLLM_PORT}"

    args = ["preflight", "benchmark", "--baseline-url", url(baseline), "--target-url", url(target),
            "--model", spec.model]  # fmt: skip
    if settings.benchmark:
        b = pre.benchmark
        if b is not None:
            args += ["--concurrency", str(b.concurrency), "--requests", str(b.requests),
                     "--warmup-requests", str(b.warmup_requests),
                     "--prompt-tokens", str(b.prompt_tokens), "--max-tokens", str(b.max_tokens)]  # fmt: skip
    else:
        args.append("--no-load")
    if pre.quality_probe is not None:
        args += ["--prompts-dir", PROMPTS_DIR,
                 "--probe-max-tokens", str(pre.quality_probe.max_tokens)]  # fmt: skip
    for rule, bound, value in pre.gate_rules():
        if settings.benchmark or rule in ("quality-agreement", "exact-match"):
            args += ["--rule", f"{rule}:{bound}={value:g}"]
    return [*args, "--termination-log", TERMINATION_LOG]


def build_preflight_job(
    *,
    spec: QuantizedModelSpec,
    settings: PreflightSettings,
    name: str,
    namespace: str,
    job_name: str,
    run_id: str,
    image: str,
    owner: dict[str, Any],
) -> dict[str, Any]:
    """The Job for one attempt of one rollout. `run_id`: "<rollout id>-<attempt>"."""
    _, target = tiers(spec)
    s = target.serving
    labels = {
        MODEL_LABEL: name,
        COMPONENT_LABEL: "preflight",
        "app.kubernetes.io/managed-by": "quantrollout",
        PREFLIGHT_LABEL: run_id,
    }
    env = [e.to_wire() for e in s.env]
    _, volumes, mounts = model_source(target.artifact)
    base: dict[str, Any] = {
        "image": image,
        "command": ["quantrollout"],
        "env": env,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "File",
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if s.env_from:
        base["envFrom"] = [e.to_wire() for e in s.env_from]
    containers = []
    if settings.artifact:
        containers.append({**base, "name": "artifact", "args": _artifact_args(spec, settings),
                           "volumeMounts": mounts})  # fmt: skip
    if settings.benchmark or settings.probe:
        probe_mounts = []
        if settings.spec.quality_probe is not None:
            ref = settings.spec.quality_probe.prompts_config_map_ref.name
            volumes = [*volumes, {"name": "prompts", "configMap": {"name": ref}}]
            probe_mounts = [{"name": "prompts", "mountPath": PROMPTS_DIR, "readOnly": True}]
        containers.append(
            {
                **base,
                "name": "benchmark",
                "args": _benchmark_args(spec, settings, name, namespace),
                "volumeMounts": probe_mounts,
            }
        )
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # The artifact check first: a broken checkpoint is reported without loading anything.
        "initContainers": containers[:-1],
        "containers": containers[-1:],
        "volumes": volumes,
    }
    if not pod_spec["initContainers"]:
        del pod_spec["initContainers"]
    if not volumes:
        del pod_spec["volumes"]
    if s.service_account_name:
        pod_spec["serviceAccountName"] = s.service_account_name
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name,
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [owner],
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": max(1, int(settings.timeout_s)),
            "ttlSecondsAfterFinished": defaults.PREFLIGHT_JOB_TTL_SECONDS,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
