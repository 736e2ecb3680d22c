"""No drift for Argo CD: applying the same manifest again and again, while the operator works on
the model, finds nothing the operator changed outside `status` (server-side apply's managed
fields say who owns what)."""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client
from kubernetes.client import ApiClient

from quantrollout.api.crd import GROUP, PLURAL, VERSION

from .support import Models, example, wait_for

GITOPS = "argocd-controller"


def apply(kube: ApiClient, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
    response = client.CustomObjectsApi(kube).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, obj["metadata"]["name"], obj,
        field_manager=GITOPS, _content_type="application/apply-patch+yaml",  # no force: a conflict would fail
        _preload_content=False,
    )  # fmt: skip
    return dict(json.loads(response.data))


def test_the_operator_changes_nothing_outside_status(
    kube: ApiClient, namespace: str, operator: Any
) -> None:
    manifest = example()
    manifest["metadata"]["labels"] = {"argocd.argoproj.io/instance": "llm-models"}
    first = apply(kube, namespace, manifest)
    models = Models(kube, namespace)
    wait_for(
        "the rollout to start",
        lambda: (models.get("llama3-8b") or {}).get("status", {}).get("phase") == "Progressing",
    )
    models.wait_condition("llama3-8b", "Ready", "True")

    for _ in range(3):
        again = apply(kube, namespace, manifest)
        assert again["spec"] == first["spec"]
        assert again["metadata"].get("labels") == manifest["metadata"]["labels"]
        assert not again["metadata"].get("annotations")
        assert not again["metadata"].get("finalizers")
        assert again["metadata"]["generation"] == 1
    for entry in again["metadata"]["managedFields"]:
        if entry["manager"] == GITOPS:
            continue
        assert entry.get("subresource") == "status", entry["manager"]
        assert set(entry["fieldsV1"]) == {"f:status"}, entry["manager"]
    # The children never carry Argo CD's tracking label (Argo CD would prune them).
    for dep in client.AppsV1Api(kube).list_namespaced_deployment(namespace).items:
        assert "argocd.argoproj.io/instance" not in (dep.metadata.labels or {})
