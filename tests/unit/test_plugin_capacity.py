"""The kubectl plugin shows what the capacity plan decided: replicas wanted and why per tier,
GPUs in use per tier, and GPUs saved against the FP16-only fleet. The status is built from real
plans (rollout.capacity) and rendered by the plugin's pure renderer."""

from __future__ import annotations

import datetime
from typing import Any

from quantrollout.cli.plugin_render import render_model
from quantrollout.rollout.capacity import (
    Inputs,
    Settings,
    TierInput,
    Traffic,
    gpu_status,
    plan,
    tier_status,
)

NOW = datetime.datetime(2026, 11, 23, 12, 0, tzinfo=datetime.UTC)
SPEC: dict[str, Any] = {
    "model": "meta-llama/Meta-Llama-3-8B-Instruct",
    "baseline": {"artifact": "s3://models/fp16", "precision": "fp16"},
    "target": {
        "name": "int4-awq",
        "artifact": "s3://models/awq",
        "precision": "int4",
        "format": "awq",
    },
}


def obj(
    baseline: TierInput, target: TierInput, traffic: Traffic, phase: str, **kw: Any
) -> dict[str, Any]:
    """A QuantizedModel whose status the plan for these tiers wrote (after it was applied)."""
    p = plan(Inputs((baseline, target), traffic, traffic, phase, NOW, Settings(), **kw))  # type: ignore[arg-type]
    applied = []
    tiers = []
    for observed in (baseline, target):
        tp = p.tier(observed.name)
        now = TierInput(
            **{**observed.__dict__, "replicas": tp.replicas, "ready_replicas": tp.replicas}
        )
        applied.append(now)
        tiers.append(
            {
                "name": now.name, "role": now.role, "replicas": now.replicas,
                "readyReplicas": now.ready_replicas, "gpus": tp.gpus,
                "gpusPerReplica": now.gpus_per_replica, "ready": True, **tier_status(tp),
            }
        )  # fmt: skip
    status = {
        "phase": phase,
        "stage": "gradual" if phase == "Progressing" else "full",
        "step": 3 if phase == "Progressing" else 5,
        "targetWeight": traffic.live.get(target.name, 0),
        "mirrorPercent": 0,
        "tiers": tiers,
        "gpuSaving": {"gpusPerReplica": 1, **gpu_status(tuple(applied))},
    }
    return {"metadata": {"name": "llama", "namespace": "llm"}, "spec": SPEC, "status": status}


def section(text: str, head: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(head))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i]), len(lines))
    return lines[start:end]


FP16 = TierInput(
    "fp16", "baseline", full_replicas=4, gpus_per_replica=2, replicas=4, ready_replicas=4
)
INT4 = TierInput(
    "int4-awq", "target", full_replicas=4, gpus_per_replica=1, replicas=2, ready_replicas=2
)


def test_mid_rollout_shows_the_reserve_and_the_share_and_more_gpus_than_the_fleet() -> None:
    text = render_model(obj(FP16, INT4, Traffic({"fp16": 50, "int4-awq": 50}), "Progressing"), NOW)
    assert section(text, "Tiers:") == [
        "Tiers:",
        "  ROLE       TIER       READY   WANTED   GPUS   WEIGHTS   MEMORY/GPU   CAPACITY           STATUS",
        "  baseline   fp16       4/4     4        8      -         -            RollbackReserve    Ready",
        "  target     int4-awq   3/3     3        3      -         -            FollowingTraffic   Ready",
        "  fp16: 4 replicas: rollback reserve: 100% of 4 replicas",
        "  int4-awq: 3 replicas: following traffic: 50% of the load, 20% headroom, of 4 replicas",
    ]
    assert "GPUs:       11 in use; the FP16-only fleet uses 8: 3 more while both tiers run" in text


def test_after_the_bake_the_baseline_is_on_standby_and_gpus_are_saved() -> None:
    baked = NOW - datetime.timedelta(hours=2)
    text = render_model(
        obj(FP16, INT4, Traffic({"int4-awq": 100}), "Succeeded", full_at=baked), NOW
    )
    assert section(text, "Tiers:") == [
        "Tiers:",
        "  ROLE       TIER       READY   WANTED   GPUS   WEIGHTS   MEMORY/GPU   CAPACITY           STATUS",
        "  baseline   fp16       0/0     0        0      -         -            Standby            Ready",
        "  target     int4-awq   4/4     4        4      -         -            FollowingTraffic   Ready",
        "  fp16: 0 replicas: standby after the bake (spec.baseline.standbyReplicas)",
        "  int4-awq: 4 replicas: following traffic: 100% of the load, 20% headroom, of 4 replicas",
    ]
    assert "GPUs:       4 in use; the FP16-only fleet uses 8: 4 saved" in text


def test_a_status_without_capacity_fields_renders_as_before() -> None:
    o = obj(FP16, INT4, Traffic({"fp16": 100}), "Progressing")
    for t in o["status"]["tiers"]:
        for key in ("wantedReplicas", "capacityReason", "capacityMessage"):
            del t[key]
    del o["status"]["gpuSaving"]
    text = render_model(o, NOW)
    assert "WANTED" not in text
    assert "GPUs:" not in text
