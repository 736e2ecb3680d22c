"""The chart's whole life with the real helm against the local stack: install, upgrade to a
chart whose CRD changed, rollback, uninstall. What is decided (docs/gitops.md): the CRD stays in
crds/, which Helm installs once and never upgrades nor deletes; the chart's NOTES say, from the
CRD's schema-hash annotation, when the cluster's CRD is not the chart's, and the documented
`kubectl apply --server-side --force-conflicts -f crds/` upgrades it. Uninstall removes the
chart's objects and leaves the CRD, the models and their tier Deployments and Services."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client import ApiClient

from localstack.controlplane import REPO, tool_path
from localstack.crds import apply_crds
from localstack.stack import Stack
from quantrollout.api.crd import SCHEMA_HASH_ANNOTATION, build_crd, schema_hash

from .kubectl import kubectl
from .support import Models, example, wait_for

CHART = REPO / "charts" / "quantrollout"
CRD_FILE = "crds/quantrollout.io_quantizedmodels.yaml"
CRD_NAME = "quantizedmodels.quantrollout.io"
RELEASE = "qrlife"  # not the other chart tests' release: its cluster-scoped names differ


def helm(stack: Stack, *args: str) -> str:
    proc = subprocess.run(
        [tool_path("helm", "HELM"), f"--kubeconfig={stack.controlplane.kubeconfig}", *args],
        capture_output=True, text=True, check=False, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, f"helm {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def next_chart(tmp: Path) -> Path:
    """The chart's next version: a new optional spec field in its CRD (with the CRD's schema
    hash recomputed, as hack/gen-crd.py would) and a changed value, to see which release runs."""
    chart = tmp / "v2" / "quantrollout"
    shutil.copytree(CHART, chart)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    meta["version"] = "0.2.0"
    (chart / "Chart.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    crd = build_crd()
    spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec_schema["properties"]["owner"] = {"type": "string", "description": "Team that owns it."}
    crd["metadata"]["annotations"][SCHEMA_HASH_ANNOTATION] = schema_hash(crd["spec"])
    (chart / CRD_FILE).write_text(yaml.safe_dump(crd, sort_keys=False))
    return chart


def live_crd(kube: ApiClient) -> dict[str, Any]:
    crd = client.ApiextensionsV1Api(kube).read_custom_resource_definition(CRD_NAME).to_dict()
    return dict(crd)


def has_owner_field(kube: ApiClient) -> bool:
    version = live_crd(kube)["spec"]["versions"][0]
    return "owner" in version["schema"]["open_apiv3_schema"]["properties"]["spec"]["properties"]


def restore_crd(kube: ApiClient) -> None:
    """The session's CRD again, whole (a replace drops the field the upgrade added)."""
    ext = client.ApiextensionsV1Api(kube)
    body = build_crd()
    body["metadata"]["resourceVersion"] = ext.read_custom_resource_definition(
        CRD_NAME
    ).metadata.resource_version
    ext.replace_custom_resource_definition(CRD_NAME, body)
    apply_crds(kube, [build_crd()])


def deployments(kube: ApiClient, namespace: str) -> dict[str, Any]:
    items = client.AppsV1Api(kube).list_namespaced_deployment(namespace).items
    return {d.metadata.name: d for d in items}


def test_install_upgrade_with_a_crd_change_rollback_uninstall(
    stack: Stack, kube: ApiClient, crd: str, namespace: str, operator: Any, tmp_path: Path
) -> None:
    release_ns = f"{namespace}-qr"
    v2 = next_chart(tmp_path)
    try:
        out = helm(stack, "install", RELEASE, str(CHART), "-n", release_ns, "--create-namespace",
                   "--set", "operator.replicas=1")  # fmt: skip
        assert "WARNING" not in out  # the cluster's CRD is this chart's
        assert f"{RELEASE}-operator" in deployments(kube, release_ns)
        models = Models(kube, namespace)
        models.create(example())
        tiers = wait_for(
            "the tier Deployments",
            lambda: {"llama3-8b-fp16", "llama3-8b-int4-awq"} <= set(deployments(kube, namespace)),
        )
        assert tiers

        # Upgrade: Helm applies the templates, not crds/; the NOTES say so.
        out = helm(stack, "upgrade", RELEASE, str(v2), "-n", release_ns, "--set",
                   "operator.replicas=2")  # fmt: skip
        assert "WARNING: the QuantizedModel CRD in this cluster is not the one of this chart" in out
        assert not has_owner_field(kube)
        assert deployments(kube, release_ns)[f"{RELEASE}-operator"].spec.replicas == 2
        # The documented step upgrades the CRD; then a model may use the new field.
        kubectl(stack, "apply", "--server-side", "--force-conflicts", "-f", str(v2 / "crds"))
        assert has_owner_field(kube)
        wait_for("the new field to be served", lambda: kubectl(
            stack, "-n", namespace, "apply", "--dry-run=server", "-f", "-", check=False,
            stdin=yaml.safe_dump({**example(), "spec": {**example()["spec"], "owner": "llm"}}),
        ).returncode == 0)  # fmt: skip
        out = helm(stack, "upgrade", RELEASE, str(v2), "-n", release_ns, "--reuse-values")
        assert "WARNING" not in out

        # Rollback to the first release: its templates come back, the CRD stays as it is.
        helm(stack, "rollback", RELEASE, "1", "-n", release_ns, "--wait=false")
        assert deployments(kube, release_ns)[f"{RELEASE}-operator"].spec.replicas == 1
        assert has_owner_field(kube)
        history = yaml.safe_load(helm(stack, "history", RELEASE, "-n", release_ns, "-o", "yaml"))
        assert [h["revision"] for h in history] == [1, 2, 3, 4]

        # Uninstall: the chart's objects go; the CRD, the models and their tiers stay.
        helm(stack, "uninstall", RELEASE, "-n", release_ns, "--wait")
        assert f"{RELEASE}-operator" not in deployments(kube, release_ns)
        roles = client.RbacAuthorizationV1Api(kube).list_cluster_role().items
        assert not [r.metadata.name for r in roles if r.metadata.name.startswith(f"{RELEASE}-")]
        assert live_crd(kube)["metadata"]["name"] == CRD_NAME
        assert models.get("llama3-8b") is not None
        assert {"llama3-8b-fp16", "llama3-8b-int4-awq"} <= set(deployments(kube, namespace))
        services = {
            s.metadata.name for s in client.CoreV1Api(kube).list_namespaced_service(namespace).items
        }
        assert {"llama3-8b-fp16", "llama3-8b-int4-awq"} <= services
    finally:
        subprocess.run(
            [tool_path("helm", "HELM"), f"--kubeconfig={stack.controlplane.kubeconfig}",
             "uninstall", RELEASE, "-n", release_ns, "--ignore-not-found"],
            capture_output=True, check=False,
        )  # fmt: skip
        restore_crd(kube)
        client.CoreV1Api(kube).delete_namespace(release_ns)


def test_the_chart_notes_compare_the_crd_hash() -> None:
    """The chart's copy of the CRD carries the hash its NOTES compare, computed from its spec."""
    crd = yaml.safe_load((CHART / CRD_FILE).read_text())
    assert crd["metadata"]["annotations"][SCHEMA_HASH_ANNOTATION] == schema_hash(crd["spec"])
    assert SCHEMA_HASH_ANNOTATION in (CHART / "templates" / "NOTES.txt").read_text()
