"""`spec.rollout.preflight` (not yet referenced by QuantizedModelSpec): parsing, defaults, and a
structural schema with its CEL rules, ready to be wired into the CRD."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from quantrollout import defaults
from quantrollout.api.crd import structural
from quantrollout.api.preflight import Preflight
from quantrollout.api.spec import QuantizedModelSpec
from quantrollout.preflight import gate


def test_part_of_the_api_and_on_by_default() -> None:
    from quantrollout.rollout.preflight_step import settings_of

    assert "preflight" in json.dumps(QuantizedModelSpec.model_json_schema())
    spec = QuantizedModelSpec.model_validate(
        {"model": "m", "baseline": {"artifact": "s3://b/fp16", "precision": "fp16"},
         "target": {"name": "t", "artifact": "s3://b/awq", "precision": "int4", "format": "awq"}}
    )  # fmt: skip
    on = settings_of(spec)
    assert on is not None
    assert (on.artifact, on.benchmark, on.probe) == (True, True, False)
    assert (
        settings_of(
            QuantizedModelSpec.model_validate(
                {**spec.to_wire(), "rollout": {"preflight": {"enabled": False}}}
            )
        )
        is None
    )


def test_the_documented_example_parses() -> None:
    p = Preflight.model_validate(
        {
            "artifact": {"groupSize": 128, "digest": "sha256:" + "ab" * 32},
            "benchmark": {"concurrency": 8, "requests": 64, "warmupRequests": 8},
            "qualityProbe": {"promptsConfigMapRef": {"name": "probe-prompts"}},
            "gate": {
                "rules": [
                    {"name": "throughput-ratio", "min": 1.2},
                    {"name": "ttft-p99-ratio", "max": 1.1},
                    {"name": "quality-agreement", "min": 0.9},
                ]
            },
            "timeout": "30m",
        }
    )
    assert p.gate_rules() == [
        ("throughput-ratio", "min", 1.2),
        ("ttft-p99-ratio", "max", 1.1),
        ("quality-agreement", "min", 0.9),
    ]
    assert p.artifact is not None
    assert p.artifact.size_tolerance == defaults.PREFLIGHT_SIZE_TOLERANCE


def test_defaults() -> None:
    p = Preflight()
    assert p.gate_rules() == list(defaults.PREFLIGHT_GATE_RULES)
    assert p.timeout == defaults.PREFLIGHT_TIMEOUT
    assert p.quality_probe is None
    # every default rule is one the gate knows
    assert {name for name, _, _ in p.gate_rules()} <= set(gate.RULE_NAMES)


def test_every_gate_rule_name_is_one_the_gate_evaluates() -> None:
    schema = Preflight.model_json_schema()
    names = schema["$defs"]["GateRule"]["properties"]["name"]["enum"]
    assert sorted(names) == sorted(gate.RULE_NAMES)


@pytest.mark.parametrize(
    ("spec", "where"),
    [
        ({"artifact": {"digest": "md5:abc"}}, "artifact.digest"),
        ({"benchmark": {"concurrency": 0}}, "benchmark.concurrency"),
        ({"gate": {"rules": [{"name": "speed", "min": 1}]}}, "gate.rules.0.name"),
        ({"qualityProbe": {}}, "qualityProbe.promptsConfigMapRef"),
        ({"benchmark": {"unknown": 1}}, "benchmark.unknown"),
    ],
)
def test_bad_fields_are_named(spec: dict[str, object], where: str) -> None:
    with pytest.raises(ValidationError) as err:
        Preflight.model_validate(spec)
    assert where in {".".join(map(str, e["loc"])) for e in err.value.errors()}


def test_structural_schema_with_cel() -> None:
    schema = structural(Preflight.model_json_schema())
    assert schema["type"] == "object"
    rules = [v["message"] for v in schema["x-kubernetes-validations"]]
    assert rules == [
        "quality-agreement and exact-match need spec.rollout.preflight.qualityProbe",
        "benchmark rules need spec.rollout.preflight.benchmark enabled",
    ]
    rule_schema = schema["properties"]["gate"]["properties"]["rules"]["items"]
    assert rule_schema["x-kubernetes-validations"][0]["rule"] == "has(self.min) != has(self.max)"
    assert "$ref" not in json.dumps(schema)
