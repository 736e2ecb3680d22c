"""Capacity follows traffic, through one pass on fakes: replicas come up (and are Ready) before
weight moves onto them, go down only after weight moved off; the baseline goes to its standby
replicas after full and the bake, the target to 0 after a rollback and its delay; a tier no
longer in the spec is deleted once no traffic reaches it; a scale-up the scheduler cannot place
holds the step, with the scheduler's reason."""

from __future__ import annotations

import copy
from typing import Any

from quantrollout.pass_.plan import ACTION_ANNOTATION

from .test_pass import SPEC, Model, at_weight

TARGET, BASELINE = "llama3-8b-int4-awq", "llama3-8b-fp16"


def slow_gradual() -> dict[str, Any]:
    """Gradual steps of 20 minutes: a step's next weights get their replicas 10 minutes early."""
    spec = copy.deepcopy(SPEC)
    spec["rollout"]["stages"][2]["stepDuration"] = "20m"
    return spec


def replicas(m: Model, deployment: str) -> int:
    return int(m.kube.children[("Deployment", deployment)]["spec"]["replicas"])


def tier(m: Model, name: str) -> dict[str, Any]:
    return next(t for t in m.status["tiers"] if t["name"] == name)


def index(writes: list[tuple[Any, ...]], match: Any) -> int:
    return next(i for i, w in enumerate(writes) if match(w))


def test_replicas_come_up_and_are_ready_before_weight_moves_onto_them() -> None:
    m = Model(slow_gradual())
    m.until(at_weight(25))
    m.run()
    # 25% of 2 replicas with 20% headroom: 1 (the shadow's second went once the mirror was off)
    assert replicas(m, TARGET) == 1
    assert tier(m, "int4-awq")["capacityReason"] == "FollowingTraffic"
    m.kube.ready_on_apply = False
    m.kube.writes()
    m.run(11 * 60)  # within 10 minutes of the step's end: up for the next step's 50%
    assert ("apply", "Deployment", TARGET, 2) in m.kube.writes()
    assert tier(m, "int4-awq")["capacityReason"] == "ScalingUpForNextStep"
    for _ in range(3):
        m.run(5 * 60)  # past the step's 20 minutes, every verdict a Pass
    assert m.live() == ("Progressing", 25, 25)  # not Ready: the weight waits
    progressing = next(c for c in m.status["conditions"] if c["type"] == "Progressing")
    assert (
        "waiting: 50% of live traffic waits for int4-awq: 1/2 replicas Ready"
        in progressing["message"]
    )
    m.kube.make_ready(TARGET)
    m.memory.stale = True  # the Deployment's event
    m.until(at_weight(50), passes=3)


def test_the_baseline_goes_to_its_standby_replicas_after_full_and_the_bake() -> None:
    spec = copy.deepcopy(SPEC)
    spec["baseline"]["standbyReplicas"] = 1
    m = Model(spec)
    m.until(lambda m: m.status.get("phase") == "Succeeded")
    assert replicas(m, BASELINE) == 2
    assert tier(m, "fp16")["capacityReason"] == "Baking"
    m.kube.writes()
    m.until(lambda m: replicas(m, BASELINE) == 1, passes=6)  # the 3s bake
    writes = m.kube.writes()
    assert ("apply", "Deployment", BASELINE, 1) in writes
    m.run()
    assert (tier(m, "fp16")["wantedReplicas"], tier(m, "fp16")["capacityReason"]) == (1, "Standby")
    saving = m.status["gpuSaving"]
    assert (saving["gpusInUse"], saving["baselineFleetGpus"], saving["gpusSaved"]) == (3, 2, -1)


def test_after_a_rollback_the_target_goes_to_zero_once_its_delay_is_over() -> None:
    m = Model()
    m.until(at_weight(10))
    m.metrics.verdicts = ["Fail"]
    m.until(lambda m: m.status.get("phase") == "RolledBack")
    writes = m.kube.writes()
    rolled = index(writes, lambda w: w[0] == "status" and w[1].get("phase") == "RolledBack")
    assert not [w for w in writes[rolled:] if w[:3] == ("apply", "Deployment", TARGET)]
    m.run()  # the weight is off it: it is kept for a retry, not for traffic
    assert tier(m, "int4-awq")["capacityReason"] == "KeptForRetry"
    m.until(lambda m: replicas(m, TARGET) == 0, passes=6)  # the 4s delay
    assert ("apply", "Deployment", TARGET, 0) in m.kube.writes()
    m.run()
    assert tier(m, "int4-awq")["capacityReason"] == "ScaledDownAfterRollback"
    assert m.status["traffic"]["targetWeight"] == 0


def test_a_tier_no_longer_in_the_spec_is_deleted_once_no_traffic_reaches_it() -> None:
    m = Model()
    m.until(at_weight(50))
    m.kube.writes()
    m.edit({"target": {"name": "int4-awq-v2", "artifact": "s3://models/llama3-8b-awq-v2"}})
    m.run()
    writes = m.kube.writes()
    traffic = next(w[1]["traffic"] for w in writes if w[0] == "status" and "traffic" in w[1])
    assert (traffic["targetWeight"], traffic["target"]["tier"]) == (0, "int4-awq-v2")
    assert ("Deployment", TARGET) in m.kube.children  # still there while traffic reached it
    assert ("apply", "Deployment", "llama3-8b-int4-awq-v2", 2) in writes
    assert "NewRollout" in m.events.reasons()
    result = m.run()  # the next pass: no traffic reaches the old tier any more
    writes = m.kube.writes()
    assert ("delete", "Deployment", TARGET) in writes
    assert ("delete", "Service", TARGET) in writes
    assert ("Deployment", TARGET) not in m.kube.children
    m.run()
    assert not [w for w in m.kube.writes() if w[0] == "delete"]  # deleted once
    assert result.wake_in_s is not None


def test_a_scale_up_the_scheduler_cannot_place_holds_the_step_with_its_reason() -> None:
    m = Model(slow_gradual())
    m.until(at_weight(25))
    m.run()
    m.kube.ready_on_apply = False
    why = "0/4 nodes are available: 4 Insufficient nvidia.com/gpu."
    m.unplaced["int4-awq"] = why
    for _ in range(6):
        m.run(5 * 60)
    assert m.live() == ("Progressing", 25, 25)
    assert replicas(m, TARGET) == 2
    degraded = next(c for c in m.status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "Unschedulable")
    assert degraded["message"] == f"tier int4-awq cannot be scheduled: {why}"
    m.unplaced.clear()
    m.kube.make_ready(TARGET)
    m.memory.stale = True
    m.until(at_weight(50), passes=3)


def test_a_promote_waits_for_the_next_steps_replicas_and_then_applies() -> None:
    m = Model(slow_gradual())
    m.until(at_weight(25))
    m.run()
    m.kube.ready_on_apply = False
    m.kube.annotate(ACTION_ANNOTATION, "promote")
    for _ in range(3):
        m.run()
    assert m.live() == ("Progressing", 25, 25)  # the analysis is skipped, the capacity is not
    assert ("apply", "Deployment", TARGET, 2) in m.kube.writes()
    assert ACTION_ANNOTATION in m.kube.model["metadata"]["annotations"]  # kept until it applies
    m.kube.make_ready(TARGET)
    m.memory.stale = True
    m.run()
    assert m.live() == ("Progressing", 50, 50)
    assert ACTION_ANNOTATION not in m.kube.model["metadata"]["annotations"]
    assert m.events.reasons().count("Promoted") >= 1


def test_a_renamed_target_hands_its_traffic_to_the_baseline_before_the_new_one_takes_any() -> None:
    """A first stage with live weight (no shadow), and the new tier Ready at once: the new
    rollout still waits until the old tier's traffic is on the baseline (routers carry two
    tiers), then the old tier goes."""
    spec = copy.deepcopy(SPEC)
    spec["rollout"]["stages"] = spec["rollout"]["stages"][1:]
    m = Model(spec)
    m.until(at_weight(10))
    m.edit({"target": {"name": "int4-awq-v2", "artifact": "s3://models/llama3-8b-awq-v2"}})
    seen = []
    for _ in range(3):
        m.run()
        traffic = m.status["traffic"]
        seen.append((m.status["phase"], traffic["target"]["tier"], traffic["targetWeight"]))
    # all on the baseline first, then the old tier goes, the new target's preflight runs, and
    # the new rollout takes its first stage
    assert seen == [("Pending", "int4-awq-v2", 0), ("Pending", "int4-awq-v2", 0),
                    ("Progressing", "int4-awq-v2", 10)]  # fmt: skip
    assert ("Deployment", TARGET) not in m.kube.children
