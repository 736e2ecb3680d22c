"""`spec.rollout.preflight`'s schema and CEL rules judged by the real API server: a throwaway CRD
carries the same structural schema as the QuantizedModel CRD has at spec.rollout.preflight, so the
rules compile (the server refuses a CRD whose CEL does not) and refuse bad input with messages
naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.rest import ApiException

from localstack.crds import apply_crds
from quantrollout.api.crd import structural
from quantrollout.api.preflight import Preflight

GROUP, VERSION, KIND, PLURAL = (
    "preflight-test.quantrollout.io",
    "v1",
    "PreflightSpec",
    "preflightspecs",
)


@pytest.fixture(scope="module")
def preflight_crd(kube: ApiClient) -> str:
    body = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {"kind": KIND, "plural": PLURAL, "singular": "preflightspec"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"spec": structural(Preflight.model_json_schema())},
                        }
                    },
                }
            ],
        },
    }
    apply_crds(kube, [body])
    return PLURAL


def create(kube: ApiClient, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"generateName": "p-"},
        "spec": spec,
    }
    result: dict[str, Any] = client.CustomObjectsApi(kube).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body
    )
    return result


PROBE = {"qualityProbe": {"promptsConfigMapRef": {"name": "probe-prompts"}}}


def test_a_valid_spec_is_stored_with_its_defaults(
    kube: ApiClient, namespace: str, preflight_crd: str
) -> None:
    stored = create(
        kube, namespace, {**PROBE, "gate": {"rules": [{"name": "quality-agreement", "min": 0.9}]}}
    )
    assert stored["spec"]["timeout"] == "30m"
    assert stored["spec"]["qualityProbe"]["maxTokens"] == 128


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"gate": {"rules": [{"name": "quality-agreement", "min": 0.9}]}},
            "quality-agreement and exact-match need spec.rollout.preflight.qualityProbe",
        ),
        (
            {
                "benchmark": {"enabled": False},
                "gate": {"rules": [{"name": "throughput-ratio", "min": 1.2}]},
            },
            "benchmark rules need spec.rollout.preflight.benchmark enabled",
        ),
        (
            {"gate": {"rules": [{"name": "throughput-ratio", "min": 1.2, "max": 2}]}},
            "a gate rule needs min or max, not both",
        ),
        (
            {"gate": {"rules": [{"name": "speed", "min": 1}]}},
            'spec.gate.rules[0].name: Unsupported value: "speed"',
        ),
        ({"artifact": {"digest": "md5:x"}}, "spec.artifact.digest: Invalid value"),
        ({"timeout": "soon"}, "must be a duration like 30s, 5m or 1h"),
    ],
)
def test_bad_specs_are_refused_naming_the_field(
    kube: ApiClient, namespace: str, preflight_crd: str, spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(ApiException) as refused:
        create(kube, namespace, spec)
    assert refused.value.status == 422
    assert message in json.loads(refused.value.body)["message"]
