"""The API models: durations and thresholds, the example spec, tier resolution, and the CRD's
schema being structural (what the API server demands)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from quantrollout.api.crd import build_crd, openapi_schema
from quantrollout.api.durations import format_duration, parse_duration
from quantrollout.api.resolve import tiers
from quantrollout.api.spec import QuantizedModelSpec, Stage
from quantrollout.api.thresholds import parse_threshold

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = yaml.safe_load((REPO / "examples" / "llama3-8b-awq.yaml").read_text())


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("30s", 30),
        ("5m", 300),
        ("1h30m", 5400),
        ("24h", 86400),
        ("2d", 172800),
        ("1.5s", 1.5),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "5 minutes", "1h 30m", "-5m", "m", "1w"])
def test_unparsable_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


@given(st.integers(min_value=1, max_value=10 * 86400))
def test_format_then_parse_round_trips(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("250ms", 0.25),
        ("1.5s", 1.5),
        ("1%", 0.01),
        ("60%", 0.6),
        ("0.6", 0.6),
        (3, 3.0),
        (0.2, 0.2),
    ],
)
def test_parse_threshold(value: float | str, parsed: float) -> None:
    assert parse_threshold(value) == pytest.approx(parsed)


@pytest.mark.parametrize("value", ["fast", "-1", "1 %", "", True])
def test_bad_thresholds_are_refused(value: Any) -> None:
    with pytest.raises(ValueError, match="threshold"):
        parse_threshold(value)


def test_the_example_parses_and_resolves_two_tiers() -> None:
    spec = QuantizedModelSpec.model_validate(EXAMPLE["spec"])
    baseline, target = tiers(spec)
    assert (baseline.name, baseline.role, baseline.format) == ("fp16", "baseline", None)
    assert (target.name, target.role, target.format, target.precision) == (
        "int4-awq",
        "target",
        "awq",
        "int4",
    )
    assert target.serving.replicas == 2
    assert target.serving.gpu.product == "NVIDIA-H100-80GB-HBM3"
    assert target.serving.readiness_deadline_s == 900


def test_tier_serving_overrides_win_field_by_field() -> None:
    raw = {
        **EXAMPLE["spec"],
        "serving": {"gpu": {"count": 2, "memoryGiB": 80}, "tensorParallelSize": 2, "replicas": 3},
        "target": {
            **EXAMPLE["spec"]["target"],
            "serving": {"gpu": {"count": 1}, "tensorParallelSize": 1},
        },
    }
    baseline, target = tiers(QuantizedModelSpec.model_validate(raw))
    assert (baseline.serving.gpu.count, baseline.serving.tensor_parallel_size) == (2, 2)
    assert (target.serving.gpu.count, target.serving.tensor_parallel_size) == (1, 1)
    assert target.serving.gpu.memory_gi_b == 80  # kept from spec.serving
    assert target.serving.replicas == 3
    assert target.serving.max_model_len == 4096  # built-in default


def test_python_models_refuse_what_the_schema_refuses() -> None:
    with pytest.raises(ValidationError, match="gpuMemoryUtilization"):
        QuantizedModelSpec.model_validate(
            {**EXAMPLE["spec"], "serving": {"gpuMemoryUtilization": 1.5}}
        )
    with pytest.raises(ValidationError, match="weights"):
        Stage.model_validate({"name": "gradual", "weights": [0, 50]})
    with pytest.raises(ValidationError, match="Extra inputs"):
        QuantizedModelSpec.model_validate({**EXAMPLE["spec"], "surprise": 1})


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, sub in node.get("properties", {}).items():
            found += _walk(sub, f"{path}.{key}")
        if "items" in node:
            found += _walk(node["items"], f"{path}[]")
    return found


def test_crd_schema_is_structural() -> None:
    for path, node in _walk(openapi_schema()):
        assert "$ref" not in node, path
        assert "title" not in node, path
        # a map (spec.rollout.policy.classes) has its values' schema; never pydantic's `false`
        assert isinstance(node.get("additionalProperties", {}), dict), path
        if "anyOf" not in node:
            assert "type" in node or node.get("x-kubernetes-int-or-string"), path
        else:
            assert node.get("x-kubernetes-int-or-string"), path
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True, path
        for rule in node.get("x-kubernetes-validations", []):
            assert rule["message"], path


def test_crd_defaults_only_scalar_leaves() -> None:
    for path, node in _walk(openapi_schema()):
        if "default" in node:
            assert isinstance(node["default"], str | int | float | bool), path


def test_crd_names_and_columns() -> None:
    crd = build_crd()
    assert crd["metadata"]["name"] == "quantizedmodels.quantrollout.io"
    assert crd["spec"]["names"]["shortNames"] == ["qm"]
    version = crd["spec"]["versions"][0]
    columns = version["additionalPrinterColumns"]
    assert [c["name"] for c in columns if not c.get("priority")] == [
        "Model", "Target", "Stage", "Weight", "Phase", "Age",
    ]  # fmt: skip
    # One value per column: a mixed model's several targets come joined, from status.
    assert columns[1]["jsonPath"] == ".status.targetNames"
    assert [c["name"] for c in columns if c.get("priority") == 1] == [
        "Baseline", "Mirror", "Analysis", "Ready", "Reason",
    ]  # -o wide only  # fmt: skip
    assert version["subresources"] == {"status": {}}
    kopf = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["kopf"]
    assert kopf["x-kubernetes-preserve-unknown-fields"] is True
