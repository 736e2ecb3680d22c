"""kubectl (from the control plane's own Kubernetes module) on the QuantizedModel CRD: `kubectl
explain` has a description for every field, from the schema the API server itself publishes
(what `explain` renders), and `--recursive` lists exactly the CRD's fields. The live behaviour
(`wait`, `get -o wide`, `describe`) is in test_gitops_walk.py."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from localstack.stack import Stack
from quantrollout.api.crd import GROUP, VERSION, build_crd

from .kubectl import kubectl
from .support import wait_for


def fields(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, sub in (node.get("properties") or {}).items():
        yield f"{path}.{name}", sub
        yield from fields(sub, f"{path}.{name}")
    if "items" in node:
        yield from fields(node["items"], path)


@pytest.fixture(scope="module")
def openapi(stack: Stack, crd: str) -> dict[str, Any]:
    """The CRD's schema as the API server publishes it (OpenAPI v3), once it does: the
    aggregator publishes a new CRD's group a moment after it is Established."""
    path = f"/openapi/v3/apis/{GROUP}/{VERSION}"
    wait_for(
        "the CRD in the published OpenAPI",
        lambda: kubectl(stack, "get", "--raw", path, check=False).returncode == 0,
        timeout=60,
    )
    doc = json.loads(kubectl(stack, "get", "--raw", path).stdout)
    (name,) = [k for k in doc["components"]["schemas"] if k.endswith(".QuantizedModel")]
    return dict(doc["components"]["schemas"][name])


def test_kubectl_is_the_control_planes_release(stack: Stack) -> None:
    version = json.loads(kubectl(stack, "version", "-o", "json").stdout)
    assert version["clientVersion"]["gitVersion"] == version["serverVersion"]["gitVersion"]


def test_every_field_has_a_description_in_what_explain_reads(openapi: dict[str, Any]) -> None:
    """The OpenAPI v3 the API server publishes for the CRD (what `kubectl explain` renders): no
    field without a description."""
    root = openapi
    walked = [
        (path, sub)
        for path, sub in fields(root, "qm")
        if path not in ("qm.metadata",) and not path.startswith("qm.metadata.")
    ]
    missing = [path for path, sub in walked if not sub.get("description", "").strip()]
    assert missing == [], f"no description: {missing}"
    assert len(walked) > 100


def test_explain_names_the_fields_that_had_none(stack: Stack, openapi: dict[str, Any]) -> None:
    """`kubectl explain` shows the description of spec.target and spec.serving (empty before)."""
    spec = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for field in ("target", "serving", "rollout.analysis", "serving.gpu"):
        out = kubectl(stack, "explain", f"qm.spec.{field}").stdout
        node = spec
        for part in field.split("."):
            node = node["properties"][part]
        description = out.split("DESCRIPTION:", 1)[1].split("FIELDS:", 1)[0]
        assert " ".join(description.split()) == node["description"], (field, out)


def test_explain_recursive_lists_every_field_of_the_crd(
    stack: Stack, openapi: dict[str, Any]
) -> None:
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    expected = {p.split(".")[-1] for p, _ in fields(schema["properties"]["spec"], "spec")}
    out = kubectl(stack, "explain", "qm.spec", "--recursive").stdout
    listed = set(re.findall(r"^\s+(\w+)\s+<", out.split("FIELDS:", 1)[1], flags=re.M))
    assert listed == expected
