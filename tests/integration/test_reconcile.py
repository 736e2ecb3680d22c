"""The operator, as a real process, reconciles QuantizedModels into per-tier vLLM Deployments and
Services on the local control plane's fake GPU nodes, and reports what it cannot do."""

from __future__ import annotations

import time
from typing import Any

from kubernetes import client
from kubernetes.client import ApiClient

from quantrollout.defaults import DEFAULT_VLLM_IMAGE

from .support import Models, example, wait_for

TIERS = ("fp16", "int4-awq")


def deployment(kube: ApiClient, namespace: str, name: str) -> client.V1Deployment | None:
    items = (
        client.AppsV1Api(kube)
        .list_namespaced_deployment(namespace, field_selector=f"metadata.name={name}")
        .items
    )
    return items[0] if items else None


def available(kube: ApiClient, namespace: str, name: str, replicas: int) -> bool:
    dep = deployment(kube, namespace, name)
    if dep is None or not dep.status:
        return False
    conds = {c.type: c.status for c in dep.status.conditions or []}
    return (
        conds.get("Available") == "True"
        and dep.status.ready_replicas == replicas
        and dep.status.updated_replicas == replicas
        and dep.status.observed_generation == dep.metadata.generation
    )


def versions(kube: ApiClient, namespace: str) -> dict[str, str]:
    apps, core = client.AppsV1Api(kube), client.CoreV1Api(kube)
    found = {
        f"deploy/{d.metadata.name}": d.metadata.resource_version
        for d in apps.list_namespaced_deployment(namespace).items
    }
    found |= {
        f"svc/{s.metadata.name}": s.metadata.resource_version
        for s in core.list_namespaced_service(namespace).items
    }
    qms = client.CustomObjectsApi(kube).list_namespaced_custom_object(
        "quantrollout.io", "v1alpha1", namespace, "quantizedmodels"
    )
    found |= {f"qm/{q['metadata']['name']}": q["metadata"]["resourceVersion"] for q in qms["items"]}
    return found


def events(kube: ApiClient, namespace: str, name: str) -> list[tuple[str, str]]:
    items = (
        client.CoreV1Api(kube)
        .list_namespaced_event(
            namespace,
            field_selector=f"involvedObject.kind=QuantizedModel,involvedObject.name={name}",
        )
        .items
    )
    return [(e.type, e.reason) for e in items]


def test_example_becomes_two_available_tiers_and_a_ready_model(
    kube: ApiClient, namespace: str, operator: Any
) -> None:
    models = Models(kube, namespace)
    qm = models.create(example())
    for tier in TIERS:
        wait_for(
            f"llama3-8b-{tier} Available",
            lambda t=tier: available(kube, namespace, f"llama3-8b-{t}", 2),
        )
    ready = models.wait_condition("llama3-8b", "Ready", "True", "TiersReady")
    assert ready["message"] == "fp16 2/2 ready, int4-awq 2/2 ready"

    status = (models.get("llama3-8b") or {})["status"]
    assert status["observedGeneration"] == 1
    assert [(t["name"], t["role"], t["readyReplicas"], t["gpus"]) for t in status["tiers"]] == [
        ("fp16", "baseline", 2, 2), ("int4-awq", "target", 2, 2),
    ]  # fmt: skip
    assert (
        status["tiers"][1]["estimatedWeightMemoryGiB"]
        < status["tiers"][0]["estimatedWeightMemoryGiB"]
    )
    assert status["gpuSaving"]["weightMemoryPercent"] > 60

    target = deployment(kube, namespace, "llama3-8b-int4-awq")
    assert target is not None
    container = target.spec.template.spec.containers[0]
    args = container.args
    assert container.command == ["vllm", "serve"]
    assert args[0] == "s3://models/llama3-8b-awq"  # the model, positional
    assert "--quantization" not in args  # AWQ: vLLM reads the checkpoint and picks Marlin
    assert args[args.index("--served-model-name") + 1] == "meta-llama/Meta-Llama-3-8B-Instruct"
    owner = target.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.uid, owner.controller) == (
        "QuantizedModel",
        "llama3-8b",
        qm["metadata"]["uid"],
        True,
    )
    assert target.metadata.labels["quantrollout.io/tier"] == "int4-awq"
    assert target.spec.template.spec.node_selector == {
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"
    }
    pods = (
        client.CoreV1Api(kube)
        .list_namespaced_pod(namespace, label_selector="quantrollout.io/tier=int4-awq")
        .items
    )
    assert all(p.spec.node_name.startswith("gpu-node-") for p in pods)

    assert ("Normal", "ReadyTrue") in wait_for(
        "a ReadyTrue Event", lambda: events(kube, namespace, "llama3-8b")
    )


def test_scale_and_image_changes_roll_out(kube: ApiClient, namespace: str, operator: Any) -> None:
    models = Models(kube, namespace)
    models.create(example())
    wait_for("target Available", lambda: available(kube, namespace, "llama3-8b-int4-awq", 2))

    models.patch_spec("llama3-8b", {"serving": {"replicas": 3}})
    for tier in TIERS:
        wait_for(
            f"{tier} scaled to 3", lambda t=tier: available(kube, namespace, f"llama3-8b-{t}", 3)
        )

    models.patch_spec("llama3-8b", {"target": {"serving": {"image": "vllm/vllm-openai:v0.33.0"}}})
    wait_for(
        "the target's new image rolled out",
        lambda: (
            available(kube, namespace, "llama3-8b-int4-awq", 3)
            and (d := deployment(kube, namespace, "llama3-8b-int4-awq")) is not None
            and d.spec.template.spec.containers[0].image == "vllm/vllm-openai:v0.33.0"
        ),
    )
    baseline = deployment(kube, namespace, "llama3-8b-fp16")
    assert baseline is not None
    assert baseline.spec.template.spec.containers[0].image == DEFAULT_VLLM_IMAGE
    models.wait_condition("llama3-8b", "Ready", "True", "TiersReady")
    assert (models.get("llama3-8b") or {})["status"]["observedGeneration"] == 3


def test_hand_edits_are_put_back_and_deleted_children_recreated(
    kube: ApiClient, namespace: str, operator: Any
) -> None:
    models = Models(kube, namespace)
    models.create(example())
    wait_for("target Available", lambda: available(kube, namespace, "llama3-8b-int4-awq", 2))
    apps = client.AppsV1Api(kube)

    apps.patch_namespaced_deployment("llama3-8b-int4-awq", namespace, {"spec": {"replicas": 5}})
    wait_for(
        "replicas put back to 2",
        lambda: (
            (d := deployment(kube, namespace, "llama3-8b-int4-awq")) is not None
            and d.spec.replicas == 2
        ),
    )

    client.CoreV1Api(kube).delete_namespaced_service("llama3-8b-fp16", namespace)
    apps.delete_namespaced_deployment("llama3-8b-fp16", namespace)
    wait_for("the baseline recreated", lambda: available(kube, namespace, "llama3-8b-fp16", 2))
    # The Service comes back with the next reconcile of the model (the Deployment's events trigger it).
    wait_for(
        "the baseline Service recreated", lambda: "svc/llama3-8b-fp16" in versions(kube, namespace)
    )


def test_a_tier_that_cannot_fit_gpu_memory_is_reported_and_not_deployed(
    kube: ApiClient, namespace: str, operator: Any
) -> None:
    models = Models(kube, namespace)
    qm = example()
    qm["spec"]["modelShape"] = {"parametersB": 140, "layers": 80, "kvHeads": 8, "headDim": 128}
    qm["spec"]["baseline"]["serving"] = {
        "gpu": {"count": 8},
        "tensorParallelSize": 8,
        "replicas": 1,
    }
    models.create(qm)

    degraded = models.wait_condition("llama3-8b", "Degraded", "True", "InsufficientGPUMemory")
    assert degraded["message"].startswith("tier int4-awq needs ")
    assert "GiB per GPU (weights " in degraded["message"]
    assert "which does not fit in the 72.0 GiB vLLM may use per GPU" in degraded["message"]
    assert models.condition("llama3-8b", "Ready")["status"] == "False"  # type: ignore[index]
    wait_for("the baseline Available", lambda: available(kube, namespace, "llama3-8b-fp16", 1))
    time.sleep(1)
    assert deployment(kube, namespace, "llama3-8b-int4-awq") is None
    assert ("Warning", "DegradedTrue") in wait_for(
        "a DegradedTrue Event", lambda: events(kube, namespace, "llama3-8b")
    )


def test_a_tier_wanting_more_gpus_than_any_node_has_is_reported(
    kube: ApiClient, namespace: str, operator: Any
) -> None:
    models = Models(kube, namespace)
    qm = example()
    qm["spec"]["target"]["serving"] = {"gpu": {"count": 16}, "tensorParallelSize": 16}
    models.create(qm)

    degraded = models.wait_condition("llama3-8b", "Degraded", "True", "Unschedulable")
    assert degraded["message"].startswith(
        "tier int4-awq cannot be scheduled: 0/4 nodes are available"
    )
    assert "Insufficient nvidia.com/gpu" in degraded["message"]
    wait_for("the baseline Available", lambda: available(kube, namespace, "llama3-8b-fp16", 2))


def test_what_cel_cannot_see_is_refused_by_the_operator_and_nothing_is_created(
    kube: ApiClient, namespace: str, operator: Any
) -> None:
    models = Models(kube, namespace)
    qm = example()
    # Each layer passes CEL on its own; merged, the target has 1 GPU for tensor parallelism 2.
    qm["spec"]["target"]["serving"] = {"tensorParallelSize": 2}
    models.create(qm)

    ready = models.wait_condition("llama3-8b", "Ready", "False", "InvalidSpec")
    assert ready["message"] == (
        "spec.target.serving: gpu.count 1 (after merging spec.serving) is less than tensorParallelSize 2"
    )
    assert (models.get("llama3-8b") or {})["status"]["phase"] == "Failed"
    assert versions(kube, namespace).keys() == {"qm/llama3-8b"}


def test_restart_changes_nothing_and_steady_state_writes_nothing(
    kube: ApiClient, namespace: str, operator: Any
) -> None:
    models = Models(kube, namespace)
    models.create(example())
    models.wait_condition("llama3-8b", "Ready", "True", "TiersReady")
    time.sleep(1)  # let the last Deployment status events settle
    before = versions(kube, namespace)

    time.sleep(3)
    assert versions(kube, namespace) == before, "a steady model was written to"

    operator.restart()
    time.sleep(5)  # the restarted operator resumes every model
    assert versions(kube, namespace) == before, "the restart changed something"

    # Nothing outside status: no annotations or finalizers for Argo CD to see as drift.
    meta = (models.get("llama3-8b") or {})["metadata"]
    assert not meta.get("annotations")
    assert not meta.get("finalizers")


def test_deleting_the_model_removes_its_tiers(
    kube: ApiClient, namespace: str, operator: Any
) -> None:
    models = Models(kube, namespace)
    models.create(example())
    wait_for("target Available", lambda: available(kube, namespace, "llama3-8b-int4-awq", 2))
    models.delete("llama3-8b")
    wait_for("children garbage-collected", lambda: versions(kube, namespace) == {})
