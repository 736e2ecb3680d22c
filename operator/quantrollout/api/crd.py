"""The QuantizedModel CustomResourceDefinition, built from the pydantic models.

Pydantic emits JSON Schema (2020-12); Kubernetes wants a *structural* OpenAPI v3.0 schema: no
`$ref`, no `anyOf` except for int-or-string, `exclusiveMinimum` as a boolean, no
`additionalProperties: false`. `structural()` does that translation; `build_crd()` wraps it with
names, printer columns and the status subresource. `hack/gen-crd.py` writes the result to `crds/`.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from .base import cel
from .spec import QuantizedModelSpec
from .status import QuantizedModelStatus

GROUP = "quantrollout.io"
VERSION = "v1alpha1"
KIND = "QuantizedModel"
PLURAL = "quantizedmodels"
SINGULAR = "quantizedmodel"
SHORT_NAMES = ["qm"]

_KEEP = {
    "type", "description", "properties", "required", "items", "enum", "default", "pattern",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength",
    "minItems", "maxItems", "format", "nullable", "maxProperties",
}  # fmt: skip


def structural(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Translates one pydantic JSON Schema node (and its children) into a structural schema."""
    defs = schema.get("$defs", {}) if defs is None else defs
    node = copy.deepcopy(schema)
    if "$ref" in node:
        target = defs[node.pop("$ref").split("/")[-1]]
        node = {**copy.deepcopy(target), **node}  # the field's own description/default win
    if node.get("x-kubernetes-int-or-string"):
        node.pop("anyOf", None)
    elif "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"not structural: anyOf {options}")
        inner = structural(options[0], defs)
        rules = inner.get("x-kubernetes-validations", []) + node.get("x-kubernetes-validations", [])
        merged = {**inner, **node}  # the field's own keys (description, list type) win
        if rules:
            merged["x-kubernetes-validations"] = rules
        return _finish(merged, defs)
    return _finish(node, defs)


def _finish(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-"):
            out[key] = value
        elif key == "properties":
            out[key] = {name: structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = structural(value, defs)
        elif key == "additionalProperties" and isinstance(value, dict):
            out[key] = structural(value, defs)  # a map (spec.rollout.policy.classes)
        elif key == "exclusiveMinimum" and not isinstance(value, bool):
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum" and not isinstance(value, bool):
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "default":
            if value is not None and not isinstance(value, dict | list):
                out[key] = value  # only scalar leaves are defaulted by the API server
        elif key == "const":
            out["enum"] = [value]
        elif key in _KEEP:
            out[key] = value
    if "properties" in out:
        out.setdefault("type", "object")
    return out


def _model_schema(model: type[Any]) -> dict[str, Any]:
    return structural(model.model_json_schema(by_alias=True, mode="validation"))


def openapi_schema() -> dict[str, Any]:
    status = _model_schema(QuantizedModelStatus)
    status["properties"]["kopf"] = {
        "type": "object",
        "description": "Kopf's bookkeeping (kept in status so the object in Git never drifts).",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    return {
        "type": "object",
        "description": "A model rolled out from its FP16/BF16 baseline to a quantized tier, judged by Prometheus rules.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "quantrollout.io/v1alpha1"},
            "kind": {"type": "string", "description": "QuantizedModel"},
            "metadata": {"type": "object"},  # the API server allows nothing more here
            "spec": _model_schema(QuantizedModelSpec),
            "status": status,
        },
        "x-kubernetes-validations": [
            cel(
                "(!has(self.spec.target) || size(self.metadata.name) + 1 + size(self.spec.target.name) <= 63)"
                " && (!has(self.spec.targets) || self.spec.targets.all(t, size(self.metadata.name) + 1 + size(t.name) <= 63))"
                " && !['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'].exists(d, self.metadata.name.startsWith(d))",
                "metadata.name must be a DNS label starting with a letter, and metadata.name-spec.target.name "
                "(and each metadata.name-spec.targets[].name: the tiers' Deployments and Services) at most 63 characters",
            ),
        ],
    }


PRINTER_COLUMNS = [
    {"name": "Model", "type": "string", "jsonPath": ".spec.model"},
    # From status: a printer column shows one value of its path, and a mixed-precision model has
    # several targets (spec.targets), which the operator writes there joined.
    {"name": "Target", "type": "string", "jsonPath": ".status.targetNames"},
    {"name": "Stage", "type": "string", "jsonPath": ".status.stage"},
    {
        "name": "Weight",
        "type": "integer",
        "jsonPath": ".status.targetWeight",
        "description": "% of live traffic on the target",
    },
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    # -o wide only (priority 1): what on-call asks next.
    {
        "name": "Baseline",
        "type": "string",
        "jsonPath": ".spec.baseline.precision",
        "priority": 1,
        "description": "the baseline tier (its precision)",
    },
    {
        "name": "Mirror",
        "type": "integer",
        "jsonPath": ".status.mirrorPercent",
        "priority": 1,
        "description": "% of requests mirrored to the target (shadow)",
    },
    {
        "name": "Analysis",
        "type": "string",
        "jsonPath": ".status.lastAnalysis.verdict",
        "priority": 1,
        "description": "the latest evaluation: Pass, Fail or Inconclusive",
    },
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        "priority": 1,
        "description": "every tier ready",
    },
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Degraded")].reason',
        "priority": 1,
        "description": "the Degraded condition's reason (RolledBack, Unschedulable, ...)",
    },
]


# The CRD carries a hash of its own spec, so the chart can tell (with Helm's `lookup`) that the
# CRD in the cluster is not the one it ships: Helm never upgrades a chart's crds/ (docs/gitops.md).
SCHEMA_HASH_ANNOTATION = "quantrollout.io/schema-hash"


def schema_hash(crd_spec: dict[str, Any]) -> str:
    """A short hash of a CRD's spec (names, versions, schemas, columns)."""
    text = json.dumps(crd_spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_crd() -> dict[str, Any]:
    spec = _crd_spec()
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "annotations": {SCHEMA_HASH_ANNOTATION: schema_hash(spec)},
        },
        "spec": spec,
    }


def _crd_spec() -> dict[str, Any]:
    return {
        "group": GROUP,
        "names": {
            "kind": KIND,
            "listKind": f"{KIND}List",
            "plural": PLURAL,
            "singular": SINGULAR,
            "shortNames": SHORT_NAMES,
            "categories": ["quantrollout"],
        },
        "scope": "Namespaced",
        "versions": [
            {
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": PRINTER_COLUMNS,
                "schema": {"openAPIV3Schema": openapi_schema()},
            }
        ],
    }
