"""Installing CustomResourceDefinitions on the local control plane: server-side apply, then wait
until the API server serves them (Established)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from .controlplane import tool_path
from .procs import StackError


def apply_crds(api: client.ApiClient, bodies: list[dict[str, Any]], timeout: float = 30) -> None:
    ext = client.ApiextensionsV1Api(api)
    for body in bodies:
        ext.patch_custom_resource_definition(
            body["metadata"]["name"], body, field_manager="quantrollout-localstack", force=True,
            _content_type="application/apply-patch+yaml",
        )  # fmt: skip
    deadline = time.monotonic() + timeout
    for body in bodies:
        while True:
            got = ext.read_custom_resource_definition(body["metadata"]["name"])
            if any(
                c.type == "Established" and c.status == "True"
                for c in (got.status.conditions if got.status else None) or []
            ):
                break
            if time.monotonic() > deadline:
                raise StackError(
                    f"CRD {body['metadata']['name']} not Established within {timeout:.0f}s"
                )
            time.sleep(0.1)


def gateway_api_crds(*kinds: str) -> list[dict[str, Any]]:
    """Gateway API's standard-channel CRDs (from the Go module proxy), e.g. "httproutes"."""
    folder = Path(tool_path("gateway-crds", "GATEWAY_CRDS"))
    return [
        yaml.safe_load((folder / f"gateway.networking.k8s.io_{kind}.yaml").read_text())
        for kind in kinds
    ]
