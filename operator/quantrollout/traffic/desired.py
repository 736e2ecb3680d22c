"""The traffic a rollout wants, in the shapes routers consume. Pure."""

from __future__ import annotations

from typing import Any

from quantrollout.api.resolve import Tier
from quantrollout.api.status import TrafficBackend, TrafficStatus
from quantrollout.manifests.vllm import VLLM_PORT, resource_name


def builtin_config(
    *, name: str, served_model: str, rollout_id: str, attempt: int, baseline: Tier | str,
    target: Tier | str, target_weight: int, mirror_percent: int, sticky_header: str | None,
) -> dict[str, Any]:  # fmt: skip
    """`status.traffic`, which the built-in router watches. `target` is the tier beside the
    baseline that traffic is on: the rollout's target, or a tier leaving the spec."""
    base_name = baseline if isinstance(baseline, str) else baseline.name
    target_name = target if isinstance(target, str) else target.name
    return TrafficStatus(
        rollout_id=f"{rollout_id}-{attempt}",
        served_model=served_model,
        target_weight=target_weight,
        mirror_percent=mirror_percent,
        sticky_header=sticky_header,
        baseline=TrafficBackend(
            tier=base_name, service=resource_name(name, base_name), port=VLLM_PORT
        ),
        target=TrafficBackend(
            tier=target_name, service=resource_name(name, target_name), port=VLLM_PORT
        ),
    ).to_wire()


def http_route_rules(traffic: dict[str, Any]) -> dict[str, Any]:
    """The `spec.rules` the operator owns in the user's HTTPRoute (Gateway API >= v1.3: weighted
    backendRefs, and a RequestMirror filter with a percentage while shadowing), for the traffic
    `builtin_config` describes: one description of the traffic, two shapes."""
    target_weight, mirror_percent = traffic["targetWeight"], traffic["mirrorPercent"]
    base, target = traffic["baseline"], traffic["target"]
    base_ref = {"kind": "Service", "name": base["service"], "port": base["port"]}
    target_ref = {"kind": "Service", "name": target["service"], "port": target["port"]}
    rule: dict[str, Any] = {
        "backendRefs": [
            {**base_ref, "weight": 100 - target_weight},
            {**target_ref, "weight": target_weight},
        ],
    }
    if mirror_percent > 0:
        rule["filters"] = [
            {
                "type": "RequestMirror",
                "requestMirror": {"backendRef": target_ref, "percent": mirror_percent},
            }
        ]
    return {"rules": [rule]}
