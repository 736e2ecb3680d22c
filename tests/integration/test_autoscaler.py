"""The HPA the capacity plan asks for, on the real local control plane: the API server admits it
(autoscaling/v2, strict field validation) at every traffic share, and the real
HorizontalPodAutoscaler controller moves the tier's Deployment into the bounds as the weights
change (an HPA acts on out-of-range replicas at once, whether or not its metric is served)."""

from __future__ import annotations

import datetime
from typing import Any

from kubernetes import client
from kubernetes.client import ApiClient

from quantrollout.api.resolve import Tier, tiers
from quantrollout.api.spec import QuantizedModelSpec
from quantrollout.manifests.autoscaler import build_hpa
from quantrollout.manifests.vllm import build_deployment
from quantrollout.rollout.capacity import Inputs, plan, step_traffic, tier_input

from .support import wait_for

T0 = datetime.datetime(2026, 11, 23, 10, 0, tzinfo=datetime.UTC)
NAME = "hpa-model"


def _tiers() -> tuple[Tier, Tier]:
    spec = QuantizedModelSpec.model_validate(
        {
            "model": "m",
            "baseline": {"artifact": "s3://b"},
            "target": {
                "name": "int4-awq", "artifact": "s3://t", "precision": "int4", "format": "awq",
                "serving": {"autoscaling": {"minReplicas": 2, "maxReplicas": 6}},
            },
            "serving": {"replicas": 2, "gpu": {"count": 1, "product": "NVIDIA-H100-80GB-HBM3"}},
        }
    )  # fmt: skip
    return tiers(spec)


def _hpa_at(weight: int, namespace: str) -> dict[str, Any]:
    baseline, target = _tiers()
    traffic = step_traffic(baseline.name, target.name, weight, 0)
    p = plan(
        Inputs((tier_input(baseline), tier_input(target)), traffic, traffic, "Progressing", T0)
    )
    t = p.tier(target.name)
    assert t.max_replicas is not None
    return build_hpa(
        name=NAME, namespace=namespace, tier=target, min_replicas=t.replicas,
        max_replicas=t.max_replicas,
    )  # fmt: skip


def test_the_api_server_admits_the_hpa_at_every_share(kube: ApiClient, namespace: str) -> None:
    api = client.AutoscalingV2Api(kube)
    for weight in range(5, 101, 5):
        hpa = _hpa_at(weight, namespace)
        created = api.create_namespaced_horizontal_pod_autoscaler(
            namespace, hpa, dry_run="All", field_validation="Strict"
        )
        assert (created.spec.min_replicas, created.spec.max_replicas) == (
            hpa["spec"]["minReplicas"],
            hpa["spec"]["maxReplicas"],
        )
        assert created.spec.metrics[0].pods.metric.name == "vllm:num_requests_waiting"


def test_the_hpa_controller_keeps_the_tier_within_bounds_that_follow_the_weights(
    kube: ApiClient, namespace: str
) -> None:
    apps, hpas = client.AppsV1Api(kube), client.AutoscalingV2Api(kube)
    _, target = _tiers()
    deployment = build_deployment(
        name=NAME, namespace=namespace, served_model="m", tier=target, baseline_precision="fp16"
    )
    # An autoscaled Deployment is built without replicas (the HPA owns them): it starts at 1.
    apps.create_namespaced_deployment(namespace, deployment)
    half = _hpa_at(50, namespace)
    assert (half["spec"]["minReplicas"], half["spec"]["maxReplicas"]) == (2, 4)
    hpas.create_namespaced_horizontal_pod_autoscaler(namespace, half, field_validation="Strict")

    def replicas() -> int:
        return int(
            apps.read_namespaced_deployment(f"{NAME}-{target.name}", namespace).spec.replicas
        )

    wait_for("the HPA controller to raise the tier to its minimum (2)", lambda: replicas() == 2, 90)
    tenth = _hpa_at(10, namespace)
    assert (tenth["spec"]["minReplicas"], tenth["spec"]["maxReplicas"]) == (1, 1)
    hpas.patch_namespaced_horizontal_pod_autoscaler(f"{NAME}-{target.name}", namespace, tenth)
    wait_for(
        "the HPA controller to lower the tier to its new maximum (1)", lambda: replicas() == 1, 90
    )
