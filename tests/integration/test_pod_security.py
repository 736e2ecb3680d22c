"""Pod security: every container the chart renders, and every vLLM tier the operator builds, runs
as non-root with a read-only root filesystem, no privilege escalation, no capabilities and the
RuntimeDefault seccomp profile (the Kubernetes "restricted" Pod Security Standard, plus a
read-only root). Needs only `helm` (no cluster); it lives here because the chart tests do."""

from __future__ import annotations

from typing import Any

import pytest

from quantrollout.manifests.plan import plan as make_plan

from .support import example
from .test_chart import EVERYTHING, render

POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod"}


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for doc in docs:
        if doc["kind"] not in POD_KINDS:
            continue
        spec = doc["spec"]
        if doc["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        pod = spec if doc["kind"] == "Pod" else spec["template"]["spec"]
        found.append((f"{doc['kind']}/{doc['metadata']['name']}", pod))
    return found


def violations(where: str, pod: dict[str, Any]) -> list[str]:
    """What in `pod` breaks the policy, in words (empty: nothing)."""
    pod_ctx = pod.get("securityContext") or {}
    problems = []
    if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
        problems.append(f"{where}: shares a host namespace")
    for c in [*pod.get("initContainers", []), *pod["containers"]]:
        ctx = c.get("securityContext") or {}
        name = f"{where} container {c['name']}"

        def effective(key: str) -> Any:
            # A container's own setting wins over the pod's (as the kubelet applies them).
            return ctx[key] if key in ctx else pod_ctx.get(key)  # noqa: B023

        if effective("runAsNonRoot") is not True:
            problems.append(f"{name}: runAsNonRoot is not true")
        if effective("runAsUser") == 0:
            problems.append(f"{name}: runAsUser is 0")
        if ctx.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: readOnlyRootFilesystem is not true")
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if ctx.get("privileged"):
            problems.append(f"{name}: privileged")
        caps = ctx.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problems.append(f"{name}: does not drop ALL capabilities")
        if caps.get("add"):
            problems.append(f"{name}: adds capabilities {caps['add']}")
        if (effective("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.append(f"{name}: seccomp profile is not RuntimeDefault")
        # A read-only root needs somewhere to write: every mount must name a declared volume.
        declared = {v["name"] for v in pod.get("volumes", [])}
        for mount in c.get("volumeMounts", []):
            if mount["name"] not in declared:
                problems.append(f"{name}: mounts undeclared volume {mount['name']}")
    return problems


@pytest.fixture(scope="module")
def helm() -> str:
    from localstack.controlplane import tool_path

    return tool_path("helm", "HELM")


@pytest.mark.parametrize(
    "values",
    [
        [],
        EVERYTHING,
        ["--set", "operator.clusterWide=false,operator.namespaces={llm}"],
        ["--set", "operator.webhookSecretRef.name=hook,operator.webhookSecretRef.key=url"],
    ],
    ids=["defaults", "everything", "namespaced", "webhook"],
)
def test_every_chart_container_is_locked_down(helm: str, values: list[str]) -> None:
    pods = pod_specs(render(helm, *values))
    assert {where for where, _ in pods} == {"Deployment/qr-operator", "Deployment/qr-router"}
    problems = [p for where, pod in pods for p in violations(where, pod)]
    assert problems == []
    for _, pod in pods:  # a read-only root still needs a writable /tmp
        for c in pod["containers"]:
            assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}


@pytest.mark.parametrize(
    "artifact",
    ["s3://models/llama3-8b-awq", "hf://org/llama", "pvc://weights/llama3/awq"],
)
def test_every_vllm_tier_is_locked_down(artifact: str) -> None:
    spec = example()["spec"]
    spec["target"]["artifact"] = artifact
    spec["target"]["serving"] = {"tensorParallelSize": 2, "gpu": {"count": 2}}
    plan = make_plan("llama3-8b", "llm", spec)
    deployments = [o for t in plan.tiers for o in t.objects if o["kind"] == "Deployment"]
    assert len(deployments) == 2
    for dep in deployments:
        (where, pod), *_ = pod_specs([dep])
        assert violations(where, pod) == []
        # vLLM writes its caches under HOME and scratch under /tmp: both are emptyDirs.
        (vllm,) = pod["containers"]
        env = {e["name"]: e.get("value") for e in vllm["env"]}
        writable = {
            m["mountPath"]
            for m in vllm["volumeMounts"]
            if not m.get("readOnly")
            and any(v["name"] == m["name"] and "emptyDir" in v for v in pod["volumes"])
        }
        assert {env["HOME"], "/tmp", "/dev/shm"} <= writable
        assert env["HF_HOME"].startswith(env["HOME"] + "/")


def test_the_check_catches_a_bad_pod() -> None:
    """The policy check itself fails on each thing it is meant to catch."""
    bad = {
        "securityContext": {"runAsUser": 0},
        "containers": [
            {
                "name": "c",
                "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}, "privileged": True},
                "volumeMounts": [{"name": "nowhere", "mountPath": "/x"}],
            }
        ],
    }
    found = " | ".join(violations("Pod/bad", bad))
    for words in (
        "runAsNonRoot",
        "runAsUser is 0",
        "readOnlyRootFilesystem",
        "allowPrivilegeEscalation",
        "privileged",
        "drop ALL",
        "adds capabilities",
        "seccomp",
        "undeclared volume nowhere",
    ):
        assert words in found
