"""Invalid QuantizedModels are refused by the real API server at admission (schema + CEL), each
with a message that names the field. A table: one valid spec, one mutation per row."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.rest import ApiException

from quantrollout.api.crd import GROUP, PLURAL, VERSION

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "llama3-8b-awq.yaml"
Mutation = Callable[[dict[str, Any]], None]


def setter(path: str, value: Any) -> Mutation:
    """Sets (or, with value DELETE, removes) a dotted path like spec.target.format or a.b[0].c."""

    def mutate(obj: dict[str, Any]) -> None:
        *parents, last = path.replace("]", "").replace("[", ".").split(".")
        node: Any = obj
        for key in parents:
            node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
        if value is DELETE:
            del node[last]
        elif last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


DELETE = object()
RULES = "spec.rollout.analysis.rules"
STAGES = "spec.rollout.stages"

CASES: list[tuple[str, Mutation, str]] = [
    (
        "gguf",
        setter("spec.target.format", "gguf"),
        'spec.target.format: Invalid value: "object": spec.target.format: gguf is served by llama.cpp, not vLLM',
    ),
    (
        "unknown format",
        setter("spec.target.format", "exl2"),
        'spec.target.format: Unsupported value: "exl2"',
    ),
    (
        "target precision fp16",
        setter("spec.target.precision", "fp16"),
        "spec.target.precision must be lower than spec.baseline.precision",
    ),
    (
        "target precision bf16 over bf16",
        lambda o: (
            setter("spec.baseline.precision", "bf16")(o),
            setter("spec.target.precision", "bf16")(o),
            setter("spec.target.format", "compressed-tensors")(o),
        ),
        "spec.target.precision must be lower than spec.baseline.precision",
    ),
    (
        "baseline precision int8",
        setter("spec.baseline.precision", "int8"),
        'spec.baseline.precision: Unsupported value: "int8"',
    ),
    (
        "awq int8",
        setter("spec.target.precision", "int8"),
        "spec.target.format awq requires precision int4",
    ),
    (
        "gptq fp8",
        lambda o: (
            setter("spec.target.format", "gptq")(o),
            setter("spec.target.precision", "fp8")(o),
        ),
        "spec.target.format gptq requires precision int4 or int8",
    ),
    (
        "fp8 format int8",
        lambda o: (
            setter("spec.target.format", "fp8")(o),
            setter("spec.target.precision", "int8")(o),
        ),
        "spec.target.format fp8 requires precision fp8",
    ),
    (
        "bitsandbytes",
        lambda o: (
            setter("spec.target.format", "bitsandbytes")(o),
            setter("spec.target.artifact", "hf://org/name")(o),
        ),
        "spec.target.format: bitsandbytes is gone from vLLM",
    ),
    (
        "env with a plain value",
        setter("spec.serving.env", [{"name": "HF_TOKEN", "value": "hf_x"}]),
        'unknown field "spec.serving.env[0].value"',  # a value, not a reference: refused
    ),
    (
        "env overriding a cache dir",
        setter(
            "spec.target.serving",
            {"env": [{"name": "HOME", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
        ),
        "env name is set by the operator",
    ),
    (
        "serviceAccountName not a name",
        setter("spec.target.serving", {"serviceAccountName": "Model Reader"}),
        'spec.target.serving.serviceAccountName: Invalid value: "Model Reader"',
    ),
    (
        "target named like baseline",
        setter("spec.target.name", "fp16"),
        "spec.target.name must differ from the baseline's tier name",
    ),
    (
        "target name not a DNS label",
        setter("spec.target.name", "INT4_AWQ"),
        'spec.target.name: Invalid value: "INT4_AWQ"',
    ),
    (
        "artifact scheme",
        setter("spec.target.artifact", "ftp://models/x"),
        'spec.target.artifact: Invalid value: "ftp://models/x"',
    ),
    ("missing model", setter("spec.model", DELETE), "spec.model: Required value"),
    (
        "missing target",
        setter("spec.target", DELETE),
        "spec.target and spec.targets: set exactly one",
    ),
    (
        "gradual weights decreasing",
        setter(f"{STAGES}[2].weights", [50, 25, 75]),
        f'{STAGES}[2].weights: Invalid value: "object": weights must be strictly increasing',
    ),
    (
        "gradual weights repeated",
        setter(f"{STAGES}[2].weights", [25, 25, 50]),
        f'{STAGES}[2].weights: Invalid value: "object": weights must be strictly increasing',
    ),
    (
        "gradual weight 100",
        setter(f"{STAGES}[2].weights", [50, 100]),
        f"{STAGES}[2].weights[1]: Invalid value: 100",
    ),
    (
        "gradual weight 0",
        setter(f"{STAGES}[2].weights", [0, 50]),
        f"{STAGES}[2].weights[0]: Invalid value: 0",
    ),
    (
        "ab weight 100",
        setter(f"{STAGES}[1].weight", 100),
        f"{STAGES}[1].weight: Invalid value: 100",
    ),
    (
        "weight on gradual",
        setter(f"{STAGES}[2].weight", 30),
        f'{STAGES}[2].weight: Invalid value: "object": weight is only for the ab stage',
    ),
    (
        "mirrorPercent on ab",
        setter(f"{STAGES}[1].mirrorPercent", 30),
        f'{STAGES}[1].mirrorPercent: Invalid value: "object": mirrorPercent is only for the shadow stage',
    ),
    (
        "stages out of order",
        setter(STAGES, [{"name": "ab"}, {"name": "shadow"}, {"name": "full"}]),
        f'{STAGES}: Invalid value: "array": stages must be taken from shadow, ab, gradual, full, in that order, and end with full',
    ),
    (
        "stages not ending in full",
        setter(STAGES, [{"name": "shadow"}, {"name": "ab"}]),
        "and end with full",
    ),
    (
        "duplicate stage",
        setter(STAGES, [{"name": "ab"}, {"name": "ab"}, {"name": "full"}]),
        f"{STAGES}[1]: Duplicate value",
    ),
    (
        "unknown stage",
        setter(STAGES, [{"name": "canary"}, {"name": "full"}]),
        f'{STAGES}[0].name: Unsupported value: "canary"',
    ),
    (
        "stickyBy not a header",
        setter(f"{STAGES}[1].stickyBy", "cookie"),
        f'{STAGES}[1].stickyBy: Invalid value: "cookie"',
    ),
    (
        "unparsable duration",
        setter(f"{STAGES}[0].duration", "half an hour"),
        f'{STAGES}[0].duration: Invalid value: "string": must be a duration like 30s',
    ),
    (
        "unparsable interval",
        setter("spec.rollout.analysis.interval", "5 minutes"),
        'spec.rollout.analysis.interval: Invalid value: "string": must be a duration like 30s',
    ),
    (
        "unparsable step duration",
        setter(f"{STAGES}[2].stepDuration", "1 hour"),
        f'{STAGES}[2].stepDuration: Invalid value: "string": must be a duration',
    ),
    (
        "gpu count below tensor parallel",
        setter("spec.serving.tensorParallelSize", 2),
        'spec.serving.gpu.count: Invalid value: "object": gpu.count must be at least tensorParallelSize',
    ),
    (
        "tier gpu count below tensor parallel",
        setter("spec.target.serving", {"gpu": {"count": 1}, "tensorParallelSize": 4}),
        'spec.target.serving.gpu.count: Invalid value: "object": gpu.count must be at least tensorParallelSize',
    ),
    (
        "gpu memory utilization 0",
        setter("spec.serving.gpuMemoryUtilization", 0),
        "spec.serving.gpuMemoryUtilization: Invalid value: 0",
    ),
    (
        "gpu memory utilization above 1",
        setter("spec.serving.gpuMemoryUtilization", 1.2),
        "spec.serving.gpuMemoryUtilization: Invalid value: 1.2",
    ),
    (
        "gpu count 0",
        setter("spec.serving.gpu.count", 0),
        "spec.serving.gpu.count: Invalid value: 0",
    ),
    (
        "negative replicas",
        setter("spec.serving.replicas", -1),
        "spec.serving.replicas: Invalid value: -1",
    ),
    (
        "autoscaling min above max",
        setter("spec.serving.autoscaling", {"minReplicas": 4, "maxReplicas": 2}),
        'spec.serving.autoscaling: Invalid value: "object": autoscaling.minReplicas must not exceed autoscaling.maxReplicas',
    ),
    (
        "negative standby replicas",
        setter("spec.baseline.standbyReplicas", -1),
        "spec.baseline.standbyReplicas: Invalid value: -1",
    ),
    (
        "standby above the baseline's replicas",
        setter("spec.baseline.standbyReplicas", 3),
        'spec.baseline.standbyReplicas: Invalid value: "object": spec.baseline.standbyReplicas must not exceed the baseline\'s replicas',
    ),
    (
        "standby above the baseline's own replicas",
        lambda o: (
            setter("spec.baseline.serving", {"replicas": 1})(o),
            setter("spec.baseline.standbyReplicas", 2)(o),
        ),
        "spec.baseline.standbyReplicas must not exceed the baseline's replicas",
    ),
    (
        "headroom above 400%",
        setter("spec.serving.headroomPercent", 401),
        "spec.serving.headroomPercent: Invalid value: 401",
    ),
    (
        "negative tier headroom",
        setter("spec.target.serving", {"headroomPercent": -5}),
        "spec.target.serving.headroomPercent: Invalid value: -5",
    ),
    (
        "rollback reserve above 100%",
        setter("spec.rollout.rollbackReservePercent", 101),
        "spec.rollout.rollbackReservePercent: Invalid value: 101",
    ),
    (
        "unparsable bake duration",
        setter("spec.rollout.bakeDuration", "an hour"),
        'spec.rollout.bakeDuration: Invalid value: "string": must be a duration like 30s',
    ),
    (
        "unparsable abort scale-down delay",
        setter("spec.rollout.abortScaleDownDelay", "10 minutes"),
        'spec.rollout.abortScaleDownDelay: Invalid value: "string": must be a duration like 30s',
    ),
    (
        "unknown afterBake",
        setter("spec.rollout.afterBake", "ignore"),
        'spec.rollout.afterBake: Unsupported value: "ignore"',
    ),
    (
        "unparsable afterBakeInterval",
        setter("spec.rollout.afterBakeInterval", "hourly"),
        'spec.rollout.afterBakeInterval: Invalid value: "string": must be a duration like 30s',
    ),
    (
        "autoscaling metric with a slash",
        setter("spec.serving.autoscaling", {"maxReplicas": 4, "metric": "vllm/queue"}),
        'spec.serving.autoscaling.metric: Invalid value: "vllm/queue"',
    ),
    (
        "autoscaling target 0",
        setter("spec.serving.autoscaling", {"maxReplicas": 4, "targetPerReplica": 0}),
        "spec.serving.autoscaling.targetPerReplica: Invalid value: 0",
    ),
    (
        "unknown rule",
        setter(RULES, [{"name": "bleu-score", "min": "30%"}]),
        f'{RULES}[0].name: Unsupported value: "bleu-score"',
    ),
    (
        "custom rule without query",
        setter(RULES, [{"name": "custom", "max": "0.2"}]),
        f'{RULES}[0].query: Invalid value: "object": a custom rule needs query (PromQL)',
    ),
    (
        "query on a built-in rule",
        setter(RULES, [{"name": "error-rate", "max": "1%", "query": "up"}]),
        f'{RULES}[0].query: Invalid value: "object": query is only for custom rules',
    ),
    (
        "rule without threshold",
        setter(RULES, [{"name": "error-rate"}]),
        f'{RULES}[0].max: Invalid value: "object": a rule needs max or min',
    ),
    (
        "threshold not a number",
        setter(RULES, [{"name": "latency-p99", "max": "fast"}]),
        f'{RULES}[0].max: Invalid value: "fast"',
    ),
    (
        "unquoted decimal threshold",
        setter(RULES, [{"name": "output-length-ratio", "min": 0.6}]),
        f'{RULES}[0].min: Invalid value: "number"',
    ),
    (
        "failureLimit 0",
        setter("spec.rollout.analysis.failureLimit", 0),
        "spec.rollout.analysis.failureLimit: Invalid value: 0",
    ),
    (
        "unknown metrics policy",
        setter("spec.rollout.analysis.onMetricsUnavailable", "promote"),
        'spec.rollout.analysis.onMetricsUnavailable: Unsupported value: "promote"',
    ),
    (
        "gateway-api without route",
        setter("spec.traffic", {"router": "gateway-api"}),
        'spec.traffic.httpRoute: Invalid value: "object": spec.traffic.httpRoute is required when router is gateway-api',
    ),
    (
        "unknown router",
        setter("spec.traffic.router", "nginx"),
        'spec.traffic.router: Unsupported value: "nginx"',
    ),
    (
        "prometheus url",
        setter("spec.prometheus", {"url": "prometheus:9090"}),
        'spec.prometheus.url: Invalid value: "prometheus:9090"',
    ),
    ("unknown field", setter("spec.serving.gpus", 2), 'unknown field "spec.serving.gpus"'),
    (
        "name too long for its tiers",
        setter("metadata.name", "a" * 55),
        "metadata.name must be a DNS label starting with a letter",
    ),
    (
        "name starting with a digit",
        setter("metadata.name", "8b-llama"),
        "metadata.name must be a DNS label starting with a letter",
    ),
]


@pytest.fixture(scope="module")
def valid() -> dict[str, Any]:
    return dict(yaml.safe_load(EXAMPLE.read_text()))


def create(kube: ApiClient, namespace: str, obj: dict[str, Any]) -> None:
    client.CustomObjectsApi(kube).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, obj, dry_run="All", field_validation="Strict"
    )


def test_the_example_is_admitted(
    kube: ApiClient, crd: str, namespace: str, valid: dict[str, Any]
) -> None:
    create(kube, namespace, valid)


def test_the_capacity_settings_are_admitted(
    kube: ApiClient, crd: str, namespace: str, valid: dict[str, Any]
) -> None:
    obj = copy.deepcopy(valid)
    obj["spec"]["baseline"]["standbyReplicas"] = 2  # the example's replicas
    obj["spec"]["serving"]["headroomPercent"] = 0
    obj["spec"]["target"]["serving"] = {
        "headroomPercent": 400,
        "autoscaling": {"minReplicas": 1, "maxReplicas": 8, "metric": "vllm:num_requests_waiting", "targetPerReplica": 4},
    }  # fmt: skip
    obj["spec"]["rollout"].update(
        bakeDuration="2h", abortScaleDownDelay="0s", afterBake="alert",
        afterBakeInterval="10m", rollbackReservePercent=0,
    )  # fmt: skip
    create(kube, namespace, obj)
    # An autoscaled baseline is sized by its autoscaler: standby is not held to `replicas`.
    obj["spec"]["baseline"]["standbyReplicas"] = 5
    obj["spec"]["baseline"]["serving"] = {"autoscaling": {"maxReplicas": 8}}
    create(kube, namespace, obj)


@pytest.mark.parametrize(
    ("mutate", "message"), [pytest.param(m, msg, id=name) for name, m, msg in CASES]
)
def test_invalid_spec_is_refused_naming_the_field(
    kube: ApiClient, crd: str, namespace: str, valid: dict[str, Any], mutate: Mutation, message: str
) -> None:
    obj = copy.deepcopy(valid)
    mutate(obj)
    with pytest.raises(ApiException) as refused:
        create(kube, namespace, obj)
    assert refused.value.status in (400, 422)
    body = json.loads(refused.value.body)
    assert message in body["message"], body["message"]


def test_there_are_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30
