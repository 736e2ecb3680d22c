"""The HPA builder, and its bounds following the tier's traffic share through the capacity plan
(the API server accepting it, and its controller honouring the bounds: test_autoscaler in
tests/integration)."""

from __future__ import annotations

import datetime

import pytest

from quantrollout.api.resolve import tiers
from quantrollout.api.spec import QuantizedModelSpec
from quantrollout.manifests.autoscaler import build_hpa
from quantrollout.rollout.capacity import Inputs, plan, step_traffic, tier_input

T0 = datetime.datetime(2026, 11, 23, 10, 0, tzinfo=datetime.UTC)


def spec(autoscaling: dict[str, object] | None) -> QuantizedModelSpec:
    serving: dict[str, object] = {"replicas": 4}
    if autoscaling is not None:
        serving["autoscaling"] = autoscaling
    return QuantizedModelSpec.model_validate(
        {
            "model": "m",
            "baseline": {"artifact": "s3://b"},
            "target": {
                "name": "int4-awq",
                "artifact": "s3://t",
                "precision": "int4",
                "format": "awq",
            },
            "serving": serving,
        }
    )


def test_the_hpa_targets_the_tiers_deployment_with_the_given_bounds() -> None:
    _, target = tiers(spec({"minReplicas": 2, "maxReplicas": 8}))
    hpa = build_hpa(name="llama", namespace="llm", tier=target, min_replicas=2, max_replicas=5)
    assert hpa == {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": "llama-int4-awq",
            "namespace": "llm",
            "labels": {
                "app.kubernetes.io/name": "vllm",
                "app.kubernetes.io/instance": "llama-int4-awq",
                "app.kubernetes.io/component": "model-server",
                "app.kubernetes.io/part-of": "quantrollout",
                "app.kubernetes.io/managed-by": "quantrollout",
                "quantrollout.io/model": "llama",
                "quantrollout.io/tier": "int4-awq",
                "quantrollout.io/role": "target",
            },
        },
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": "llama-int4-awq",
            },
            "minReplicas": 2,
            "maxReplicas": 5,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": "vllm:num_requests_waiting"},
                        "target": {"type": "AverageValue", "averageValue": "4"},
                    },
                }
            ],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 600}},
        },
    }


def test_metric_and_target_come_from_the_spec() -> None:
    _, target = tiers(spec({"maxReplicas": 3, "metric": "queue_depth", "targetPerReplica": 10}))
    hpa = build_hpa(name="m", namespace="n", tier=target, min_replicas=1, max_replicas=3)
    pods = hpa["spec"]["metrics"][0]["pods"]
    assert pods == {
        "metric": {"name": "queue_depth"},
        "target": {"type": "AverageValue", "averageValue": "10"},
    }


@pytest.mark.parametrize(("low", "high"), [(0, 1), (3, 2)])
def test_bounds_the_api_server_would_refuse_are_an_error(low: int, high: int) -> None:
    _, target = tiers(spec({"maxReplicas": 3}))
    with pytest.raises(ValueError, match="1 <= min <= max"):
        build_hpa(name="m", namespace="n", tier=target, min_replicas=low, max_replicas=high)


def test_a_tier_without_autoscaling_has_no_hpa() -> None:
    _, target = tiers(spec(None))
    with pytest.raises(ValueError, match=r"no serving\.autoscaling"):
        build_hpa(name="m", namespace="n", tier=target, min_replicas=1, max_replicas=1)


def test_the_bounds_follow_the_weights() -> None:
    baseline, target = tiers(spec({"minReplicas": 2, "maxReplicas": 10}))
    bounds = []
    for weight in (0, 10, 25, 50, 75, 100):
        traffic = step_traffic(baseline.name, target.name, weight, 0)
        p = plan(
            Inputs((tier_input(baseline), tier_input(target)), traffic, traffic, "Progressing", T0)
        )
        t = p.tier(target.name)
        bounds.append((t.replicas, t.max_replicas))
        if t.replicas:
            hpa = build_hpa(
                name="m", namespace="n", tier=target, min_replicas=t.replicas,
                max_replicas=t.max_replicas or 0,
            )  # fmt: skip
            assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == bounds[-1]
    assert bounds == [(0, 0), (1, 2), (1, 3), (2, 6), (2, 9), (2, 10)]
