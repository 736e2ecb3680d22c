"""Every field of the QuantizedModel CRD has a description, so `kubectl explain` never shows an
empty one (tests/integration/test_kubectl.py checks `kubectl explain --recursive` itself)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from quantrollout.api.crd import build_crd


def fields(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each field (a property, at any depth, through lists) with its dotted path."""
    for name, sub in (node.get("properties") or {}).items():
        yield f"{path}.{name}", sub
        yield from fields(sub, f"{path}.{name}")
    if "items" in node:
        yield from fields(node["items"], f"{path}[]")


def test_every_field_has_a_description() -> None:
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    # metadata is ObjectMeta: the API server forbids anything but its type here and publishes
    # Kubernetes' own descriptions for it.
    walked = [(p, sub) for p, sub in fields(schema, "qm") if p != "qm.metadata"]
    missing = [path for path, sub in walked if not str(sub.get("description", "")).strip()]
    assert missing == [], f"fields without a description: {missing}"
    assert len(walked) > 100  # the walk reached the whole schema
    assert "qm.spec.target.serving.gpu.count" in dict(walked)
