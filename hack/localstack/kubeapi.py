"""Typed doors into the kubernetes client for the hack/ scripts: its config loader is untyped and
its custom-object calls are typed as returning `object`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from kubernetes import client, config


def api_client(kubeconfig: Path) -> client.ApiClient:
    """A client for the kubeconfig's current context."""
    return cast(client.ApiClient, config.new_client_from_config(config_file=str(kubeconfig)))  # type: ignore[no-untyped-call]


def get_custom(
    custom: client.CustomObjectsApi,
    group: str,
    version: str,
    namespace: str,
    plural: str,
    name: str,
) -> dict[str, Any]:
    """One namespaced custom object, as the dict the API returned."""
    return cast(
        dict[str, Any],
        custom.get_namespaced_custom_object(group, version, namespace, plural, name),
    )
