"""The HorizontalPodAutoscaler (autoscaling/v2) of a tier whose `serving.autoscaling` is set, as
a plain dict ready for server-side apply. Pure.

Its bounds are not the spec's: `rollout.capacity` scales `autoscaling.minReplicas` and
`maxReplicas` (the bounds at 100% of the model's traffic) with the tier's share of traffic and
passes them in, so an autoscaled tier follows traffic like a fixed one and the HPA only moves
within the share. A tier the plan wants at 0 replicas has no HPA (minReplicas 0 needs the
HPAScaleToZero feature gate): delete it and scale the Deployment to 0.

The HPA follows one per-pod metric from the custom metrics API (default vLLM's queue of waiting
requests, `vllm:num_requests_waiting`, which an adapter such as prometheus-adapter must serve),
averaged over the tier's pods.
"""

from __future__ import annotations

from typing import Any

from quantrollout import defaults
from quantrollout.api.resolve import Tier

from .vllm import labels, resource_name

# A replica given back takes minutes to come back (a node, the image, the weights): the HPA keeps
# one for ten minutes after the queue shrank, instead of the default five, before removing it.
SCALE_DOWN_STABILIZATION_S = 600


def build_hpa(
    *, name: str, namespace: str, tier: Tier, min_replicas: int, max_replicas: int
) -> dict[str, Any]:
    """The tier's HPA with the bounds the capacity plan gives (`TierPlan.replicas` and
    `TierPlan.max_replicas`). ValueError if the tier is not autoscaled or the bounds are not
    ones the API server accepts (1 <= min <= max)."""
    autoscaling = tier.serving.autoscaling
    if autoscaling is None:
        raise ValueError(f"tier {tier.name} has no serving.autoscaling")
    if not 1 <= min_replicas <= max_replicas:
        raise ValueError(
            f"tier {tier.name}: HPA bounds must satisfy 1 <= min <= max, not {min_replicas}..{max_replicas}"
        )
    metric = autoscaling.metric or defaults.AUTOSCALING_METRIC
    target = autoscaling.target_per_replica or defaults.AUTOSCALING_TARGET_PER_REPLICA
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": resource_name(name, tier),
            "namespace": namespace,
            "labels": labels(name, tier),
        },
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": resource_name(name, tier),
            },
            "minReplicas": min_replicas,
            "maxReplicas": max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": metric},
                        "target": {"type": "AverageValue", "averageValue": str(target)},
                    },
                }
            ],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": SCALE_DOWN_STABILIZATION_S}},
        },
    }
