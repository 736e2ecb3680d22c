"""Helpers shared by the integration tests."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from quantrollout.api.crd import GROUP, PLURAL, VERSION

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T], timeout: float = 30.0) -> T:
    """Polls `check` until it returns something truthy, and returns that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def example(name: str = "llama3-8b-awq", *, preflight: bool = False) -> dict[str, Any]:
    """An example manifest. Preflight is switched off unless asked for: these tests are about
    what comes after it, and the local stack runs a preflight Job's pod only where a test starts
    `Lab.start_preflight` (test_preflight_rollout.py runs it, on by default, end to end)."""
    obj = copy.deepcopy(dict(yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())))
    if not preflight:
        obj["spec"].setdefault("rollout", {})["preflight"] = {"enabled": False}
    return obj


class Models:
    """QuantizedModels in one namespace, through the admin client."""

    def __init__(self, kube: ApiClient, namespace: str) -> None:
        self.api = client.CustomObjectsApi(kube)
        self.namespace = namespace

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        return dict(
            self.api.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, obj)
        )

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(
                self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        self.api.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, {"spec": spec}
        )

    def delete(self, name: str) -> None:
        self.api.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def condition(self, name: str, ctype: str) -> dict[str, Any] | None:
        obj = self.get(name) or {}
        for cond in obj.get("status", {}).get("conditions") or []:
            if cond["type"] == ctype:
                return dict(cond)
        return None

    def wait_condition(
        self, name: str, ctype: str, status: str, reason: str | None = None, timeout: float = 30
    ) -> dict[str, Any]:
        def matches() -> dict[str, Any] | None:
            cond = self.condition(name, ctype)
            if cond and cond["status"] == status and (reason is None or cond["reason"] == reason):
                return cond
            return None

        return wait_for(f"{name} {ctype}={status} {reason or ''}", matches, timeout)
