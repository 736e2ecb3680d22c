"""Status and conditions from plan + observations: pure tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from quantrollout.health import ObservedTier, compute, observe_deployment
from quantrollout.manifests.plan import plan

REPO = Path(__file__).resolve().parents[2]
SPEC = yaml.safe_load((REPO / "examples" / "llama3-8b-awq.yaml").read_text())["spec"]
READY = ObservedTier(True, 2, 2, 2, True, True)
STARTING = ObservedTier(True, 2, 0, 2, False, True)


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def run(
    observed: dict[str, ObservedTier],
    previous: list[dict[str, Any]] | None = None,
    spec: Any = None,
) -> Any:
    return compute(
        name="llama3-8b", generation=4, plan=plan("llama3-8b", "llm", spec or SPEC),
        observed=observed, previous=previous, now="2026-11-23T12:00:00Z",
    )  # fmt: skip


def test_both_tiers_ready() -> None:
    status, transitions = run({"fp16": READY, "int4-awq": READY})
    assert conditions(status) == {
        "Ready": ("True", "TiersReady"), "Progressing": ("False", "TiersReady"), "Degraded": ("False", "TiersHealthy"),
        "Reconciling": ("True", "RolloutPending"),  # kstatus: the rollout has yet to start
    }  # fmt: skip
    assert status["observedGeneration"] == 4
    assert "phase" not in status  # the rollout owns the phase
    assert [t["readyReplicas"] for t in status["tiers"]] == [2, 2]
    assert {(t.type, t.status, t.event_type) for t in transitions} == {
        ("Ready", "True", "Normal"), ("Progressing", "False", "Normal"), ("Degraded", "False", "Normal"),
    }  # fmt: skip


def test_rolling_out() -> None:
    status, _ = run({"fp16": READY, "int4-awq": STARTING})
    assert conditions(status)["Ready"] == ("False", "TiersNotReady")
    assert conditions(status)["Progressing"] == ("True", "TiersRollingOut")
    assert status["conditions"][0]["message"] == "fp16 2/2 ready, int4-awq 0/2 ready"


def test_unschedulable_tier_is_degraded_with_the_schedulers_words() -> None:
    stuck = ObservedTier(
        True,
        2,
        0,
        2,
        False,
        True,
        unschedulable="0/4 nodes are available: 4 Insufficient nvidia.com/gpu.",
    )
    status, transitions = run({"fp16": READY, "int4-awq": stuck})
    assert conditions(status)["Degraded"] == ("True", "Unschedulable")
    assert "tier int4-awq cannot be scheduled: 0/4 nodes" in status["conditions"][2]["message"]
    assert ("Degraded", "Warning") in {(t.type, t.event_type) for t in transitions}


def test_missed_readiness_deadline_is_degraded() -> None:
    late = ObservedTier(True, 2, 0, 2, False, True, progress_deadline_exceeded=True)
    status, _ = run({"fp16": READY, "int4-awq": late})
    assert conditions(status)["Degraded"] == ("True", "ReadinessDeadlineExceeded")
    assert "(15m)" in status["conditions"][2]["message"]


def test_invalid_spec_fails_the_model() -> None:
    bad = {**SPEC, "target": {**SPEC["target"], "serving": {"tensorParallelSize": 2}}}
    status, _ = run({}, spec=bad)
    assert status["phase"] == "Failed"
    assert conditions(status) == {
        "Ready": ("False", "InvalidSpec"), "Progressing": ("False", "InvalidSpec"), "Degraded": ("True", "InvalidSpec"),
        "Stalled": ("True", "InvalidSpec"),
    }  # fmt: skip
    assert status["tiers"] is None


def test_unchanged_conditions_keep_their_time_and_post_no_events() -> None:
    first, _ = run({"fp16": READY, "int4-awq": READY})
    later = compute(
        name="llama3-8b", generation=4, plan=plan("llama3-8b", "llm", SPEC),
        observed={"fp16": READY, "int4-awq": READY}, previous=first["conditions"], now="2026-11-23T13:00:00Z",
    )  # fmt: skip
    assert later[0] == first
    assert later[1] == []


def test_a_new_replica_count_changes_the_message_but_posts_no_event() -> None:
    first, _ = run({"fp16": READY, "int4-awq": ObservedTier(True, 2, 0, 2, False, True)})
    second, transitions = run(
        {"fp16": READY, "int4-awq": ObservedTier(True, 2, 1, 2, False, True)}, first["conditions"]
    )
    assert second["conditions"][0]["message"] == "fp16 2/2 ready, int4-awq 1/2 ready"
    assert transitions == []


def test_observe_deployment() -> None:
    dep = {
        "metadata": {"generation": 3},
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": 3, "readyReplicas": 2, "updatedReplicas": 2,
            "conditions": [{"type": "Available", "status": "True"}, {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}],
        },
    }  # fmt: skip
    assert observe_deployment(dep, None).ready
    assert not observe_deployment({**dep, "metadata": {"generation": 4}}, None).ready
    assert not observe_deployment(None, None).exists


def kstatus_pair(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {k: v for k, v in conditions(status).items() if k in ("Reconciling", "Stalled")}


def test_kstatus_conditions_follow_the_rollout() -> None:
    """Reconciling while anything moves, Stalled when it cannot get better by itself, neither
    when done (kstatus: InProgress, Failed, Current); present only while true, no own Events."""
    both = {"fp16": READY, "int4-awq": READY}

    def with_phase(phase: str, observed: dict[str, ObservedTier] = both, **extra: Any) -> Any:
        return compute(
            name="llama3-8b", generation=4, plan=plan("llama3-8b", "llm", SPEC), observed=observed,
            previous=None, now="2026-11-23T12:00:00Z", rollout={"phase": phase, **extra},
        )  # fmt: skip

    assert kstatus_pair(with_phase("Pending")[0]) == {"Reconciling": ("True", "RolloutPending")}
    assert kstatus_pair(with_phase("Progressing")[0]) == {
        "Reconciling": ("True", "RolloutProgressing")
    }
    assert kstatus_pair(with_phase("Paused")[0]) == {"Reconciling": ("True", "RolloutPaused")}
    assert kstatus_pair(with_phase("Succeeded")[0]) == {}
    assert kstatus_pair(with_phase("Succeeded", {"fp16": READY, "int4-awq": STARTING})[0]) == {
        "Reconciling": ("True", "TiersRollingOut")
    }
    rolled, transitions = with_phase("RolledBack", rollback={"reasons": ["breach"]})
    assert kstatus_pair(rolled) == {"Stalled": ("True", "RolledBack")}
    assert {t.type for t in transitions} == {"Ready", "Progressing", "Degraded"}
