"""The operator's metrics follow the rollout's decisions."""

from __future__ import annotations

import datetime

from prometheus_client import generate_latest

from quantrollout import metrics
from quantrollout.rollout.machine import RolloutState
from quantrollout.rollout.steps import Step

STEPS = (Step("shadow", 0, 100, 60), Step("ab", 10, 0, 600), Step("full", 100, 0, None))
T0 = datetime.datetime(2026, 11, 23, 10, 0, tzinfo=datetime.UTC)


def sample(metric: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(metric, labels)


def test_stage_weight_and_rollbacks_follow_decisions() -> None:
    ab = RolloutState(
        rollout_id="r", phase="Progressing", step=1, target_weight=10, step_started_at=T0
    )
    metrics.observe("ns", "m", RolloutState(), ab, STEPS)
    assert (
        sample(
            "quantrollout_rollout_stage_info",
            namespace="ns",
            name="m",
            stage="ab",
            phase="Progressing",
        )
        == 1
    )
    assert sample("quantrollout_rollout_target_weight_percent", namespace="ns", name="m") == 10
    assert sample("quantrollout_rollout_stage_duration_seconds", namespace="ns", name="m") == 600
    assert (
        sample("quantrollout_rollout_stage_started_timestamp_seconds", namespace="ns", name="m")
        == T0.timestamp()
    )
    assert sample("quantrollout_rollbacks_total", namespace="ns", name="m", reason="aborted") == 0

    rolled = RolloutState(
        rollout_id="r", phase="RolledBack", step=1, rollback_reasons=("repetition-rate 0.2 > 0.15",)
    )
    metrics.observe("ns", "m", ab, rolled, STEPS)
    metrics.observe("ns", "m", rolled, rolled, STEPS)  # the same decision again counts nothing
    assert (
        sample("quantrollout_rollbacks_total", namespace="ns", name="m", reason="analysis_failed")
        == 1
    )
    assert (
        sample(
            "quantrollout_rollout_stage_info",
            namespace="ns",
            name="m",
            stage="ab",
            phase="Progressing",
        )
        is None
    )
    assert sample("quantrollout_rollout_stage_duration_seconds", namespace="ns", name="m") is None

    metrics.forget("ns", "m")
    assert b'quantrollout_rollout_target_weight_percent{name="m"' not in generate_latest(
        metrics.REGISTRY
    )


def test_reason_codes() -> None:
    assert metrics.rollback_reason_code(("aborted by kubectl",)) == "aborted"
    assert (
        metrics.rollback_reason_code(("metrics unavailable for 5m (no series)",))
        == "metrics_unavailable"
    )
    assert (
        metrics.rollback_reason_code(("error-rate 0.2 > 0.01 for 2 consecutive evaluations",))
        == "analysis_failed"
    )
    assert (
        metrics.rollback_reason_code(("target tier int4-awq has no ready pod (0/2 ready)",))
        == "target_not_ready"
    )
