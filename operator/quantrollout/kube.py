"""The operator's Kubernetes I/O: reads return plain camelCase dicts (as the API sends them),
writes are server-side apply with one field manager. Synchronous (the official client); the
handlers call it through `asyncio.to_thread` so the event loop never blocks.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from quantrollout.api.crd import GROUP, PLURAL, VERSION

FIELD_MANAGER = "quantrollout"
APPLY = "application/apply-patch+yaml"


# Blocking API calls in flight at once (threads, and as many pooled connections): with the
# defaults (cpu + 4 threads, 5 x cpu connections) a 2-core node served 1,000 models' reconciles
# through 6 threads, each mostly waiting on the API server.
API_CONCURRENCY = 32


def new_api_client() -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig (KUBECONFIG or ~/.kube)."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    configuration.connection_pool_maxsize = API_CONCURRENCY
    return client.ApiClient(configuration)


def going_away(err: ApiException) -> bool:
    """The API refused because what we write to is being deleted: the object is gone (404), or
    its namespace is terminating (403 with the NamespaceTerminating cause, not an RBAC denial)."""
    if err.status == 404:
        return True
    return err.status == 403 and '"NamespaceTerminating"' in str(err.body or "")


def _json(response: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(response.data)
    return data


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.autoscaling = client.AutoscalingV2Api(api)
        self.batch = client.BatchV1Api(api)

    def get_quantizedmodel(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return _json(
                self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name, _preload_content=False
                )
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        read = {
            "Deployment": self.apps.read_namespaced_deployment,
            "Service": self.core.read_namespaced_service,
            "HorizontalPodAutoscaler": self.autoscaling.read_namespaced_horizontal_pod_autoscaler,
            "Job": self.batch.read_namespaced_job,
        }[kind]
        try:
            return _json(read(name, namespace, _preload_content=False))
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def list_deployments(self, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        """The namespace's Deployments with all of `selector`'s labels."""
        label_selector = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        listed = _json(
            self.apps.list_namespaced_deployment(
                namespace, label_selector=label_selector, _preload_content=False
            )
        )
        # A list's items come without their kind: put it back, as a GET returns it.
        return [
            {"apiVersion": "apps/v1", "kind": "Deployment", **d} for d in listed.get("items", [])
        ]

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply, forcing ownership of the fields we set (we are their only manager)."""
        patch = {
            "Deployment": self.apps.patch_namespaced_deployment,
            "Service": self.core.patch_namespaced_service,
            "HorizontalPodAutoscaler": self.autoscaling.patch_namespaced_horizontal_pod_autoscaler,
            "Job": self.batch.patch_namespaced_job,
        }[obj["kind"]]
        meta = obj["metadata"]
        return _json(
            patch(
                meta["name"], meta["namespace"], obj,
                field_manager=FIELD_MANAGER, force=True, _content_type=APPLY, _preload_content=False,
            )
        )  # fmt: skip

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        delete = {
            "Deployment": self.apps.delete_namespaced_deployment,
            "Service": self.core.delete_namespaced_service,
            "HorizontalPodAutoscaler": self.autoscaling.delete_namespaced_horizontal_pod_autoscaler,
            "Job": self.batch.delete_namespaced_job,
        }[kind]
        try:
            # Background: a Job's pods go with it (the API's default for Jobs orphans them).
            delete(name, namespace, propagation_policy="Background")
        except ApiException as err:
            if err.status == 404:
                return False
            raise
        return True

    def unschedulable_message(self, namespace: str, selector: dict[str, str]) -> str | None:
        """The scheduler's message for the first pod of `selector` it could not place, if any."""
        label_selector = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        pods = _json(
            self.core.list_namespaced_pod(
                namespace, label_selector=label_selector, field_selector="status.phase=Pending",
                _preload_content=False,
            )
        )  # fmt: skip
        for pod in pods.get("items", []):
            for cond in pod.get("status", {}).get("conditions") or []:
                if cond.get("type") == "PodScheduled" and cond.get("reason") == "Unschedulable":
                    return str(cond.get("message", "unschedulable"))
        return None

    def job_pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        """The pods of a Job (the Job controller labels them with its name)."""
        pods = _json(
            self.core.list_namespaced_pod(
                namespace, label_selector=f"batch.kubernetes.io/job-name={job}",
                _preload_content=False,
            )
        )  # fmt: skip
        return list(pods.get("items", []))

    def patch_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> None:
        """A merge patch of `status`; with `resource_version`, only if the model is still at that
        version (else ApiException 409: someone changed it since we read it)."""
        body: dict[str, Any] = {"status": status}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, body
        )

    def remove_annotation(self, namespace: str, name: str, key: str) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, {"metadata": {"annotations": {key: None}}}
        )

    def secret_value(self, namespace: str, name: str, key: str) -> str:
        """The decoded value of `key`; KeyError when the Secret has no such key."""
        secret = _json(self.core.read_namespaced_secret(name, namespace, _preload_content=False))
        return base64.b64decode((secret.get("data") or {})[key]).decode()

    def write_http_route_rules(self, namespace: str, name: str, spec: dict[str, Any]) -> None:
        """Replaces the rules of the user's HTTPRoute, which must exist: a JSON patch of an
        object that is not there is a 404, where a server-side apply would create a route with
        no parentRefs, attached to no Gateway, and the rollout would count it as traffic set."""
        ops = [
            {"op": "test", "path": "/metadata/name", "value": name},
            *({"op": "add", "path": f"/spec/{key}", "value": value} for key, value in spec.items()),
        ]
        self.custom.patch_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", namespace, "httproutes", name, ops,
            field_manager=FIELD_MANAGER, _content_type="application/json-patch+json",
        )  # fmt: skip
