"""What one pass needs of the Kubernetes API, as a Protocol (`quantrollout.kube.Kube` is the real
one; tests/unit/fakes.py has a fake that records the order of every write).

Reads return camelCase dicts as the API sends them, or None when the object does not exist.
`patch_status` with a resourceVersion raises an ApiException with status 409 when the model
changed since it was read; `write_http_route_rules` raises 403/404 when the route cannot be
written.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol


class KubeIO(Protocol):
    def get_quantizedmodel(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    def list_deployments(
        self, namespace: str, selector: dict[str, str]
    ) -> list[dict[str, Any]]: ...

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]: ...

    def delete(self, kind: str, namespace: str, name: str) -> bool: ...

    def job_pods(self, namespace: str, job: str) -> list[dict[str, Any]]: ...

    def unschedulable_message(self, namespace: str, selector: dict[str, str]) -> str | None: ...

    def patch_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> None: ...

    def remove_annotation(self, namespace: str, name: str, key: str) -> None: ...

    def secret_value(self, namespace: str, name: str, key: str) -> str: ...

    def write_http_route_rules(self, namespace: str, name: str, spec: dict[str, Any]) -> None: ...


class EventSink(Protocol):
    """Posts a Kubernetes Event about the model (`kopf.event` in the operator)."""

    def __call__(
        self,
        model: dict[str, Any],
        type: Literal["Normal", "Warning"],
        reason: str,
        message: str,
    ) -> None: ...
