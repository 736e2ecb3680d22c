"""The operator's own Prometheus metrics (served by `quantrollout run --metrics-port`), which the
chart's alerts and dashboard read. Names carry their units; labels are the model's namespace and
name. The series of a deleted model are removed."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from quantrollout.rollout.machine import RolloutState
from quantrollout.rollout.steps import Step

REGISTRY = CollectorRegistry(auto_describe=True)
MODEL = ("namespace", "name")

STAGE = Gauge(
    "quantrollout_rollout_stage_info", "1 for the current stage and phase of each model.",
    [*MODEL, "stage", "phase"], registry=REGISTRY,
)  # fmt: skip
TARGET_WEIGHT = Gauge(
    "quantrollout_rollout_target_weight_percent", "Live traffic on the target tier, in percent.",
    MODEL, registry=REGISTRY,
)  # fmt: skip
STAGE_DURATION = Gauge(
    "quantrollout_rollout_stage_duration_seconds", "The current step's configured duration.",
    MODEL, registry=REGISTRY,
)  # fmt: skip
STAGE_STARTED = Gauge(
    "quantrollout_rollout_stage_started_timestamp_seconds", "When the current step started (unix time).",
    MODEL, registry=REGISTRY,
)  # fmt: skip
ROLLBACKS = Counter(
    "quantrollout_rollbacks", "Rollbacks, by reason (analysis_failed, metrics_unavailable, target_not_ready, aborted).",
    [*MODEL, "reason"], registry=REGISTRY,
)  # fmt: skip
EVALUATIONS = Counter(
    "quantrollout_analysis_evaluations", "Analysis evaluations, by verdict.",
    [*MODEL, "verdict"], registry=REGISTRY,
)  # fmt: skip
LEADER = Gauge(
    "quantrollout_operator_leader", "1 on the replica that holds the leader Lease (or runs alone), else 0.",
    registry=REGISTRY,
)  # fmt: skip
RECONCILE = Histogram(
    "quantrollout_reconcile_duration_seconds", "Time of one reconcile of a model's tiers.", registry=REGISTRY,
)  # fmt: skip

_stage_labels: dict[tuple[str, str], tuple[str, str]] = {}
ROLLBACK_REASONS = ("analysis_failed", "metrics_unavailable", "target_not_ready", "aborted")


def rollback_reason_code(reasons: tuple[str, ...]) -> str:
    first = reasons[0] if reasons else ""
    if first.startswith("aborted by "):
        return "aborted"
    if first.startswith("metrics unavailable"):
        return "metrics_unavailable"
    if first.startswith("target tier "):
        return "target_not_ready"
    return "analysis_failed"


def observe(
    namespace: str, name: str, before: RolloutState, after: RolloutState, steps: tuple[Step, ...]
) -> None:
    """Records a decision: the current stage, weight and step timing, and a rollback if one happened."""
    key = (namespace, name)
    step = steps[min(after.step, len(steps) - 1)]
    stage_labels = (step.stage if after.phase != "Pending" else "none", after.phase)
    old = _stage_labels.get(key)
    if old is None:
        # Counters exist from 0, so increase() sees a model's first rollback.
        for code in ROLLBACK_REASONS:
            ROLLBACKS.labels(namespace, name, code)
    if old and old != stage_labels:
        STAGE.remove(namespace, name, *old)
    STAGE.labels(namespace, name, *stage_labels).set(1)
    _stage_labels[key] = stage_labels
    TARGET_WEIGHT.labels(namespace, name).set(after.target_weight)
    if step.duration_s is not None and after.phase in ("Progressing", "Paused"):
        STAGE_DURATION.labels(namespace, name).set(step.duration_s)
    else:
        _remove(STAGE_DURATION, namespace, name)
    if after.step_started_at is not None:
        STAGE_STARTED.labels(namespace, name).set(after.step_started_at.timestamp())
    if after.phase == "RolledBack" and before.phase != "RolledBack":
        ROLLBACKS.labels(namespace, name, rollback_reason_code(after.rollback_reasons)).inc()


def evaluated(namespace: str, name: str, verdict: str) -> None:
    EVALUATIONS.labels(namespace, name, verdict).inc()


def forget(namespace: str, name: str) -> None:
    """Drops a deleted model's gauges (counters stay until restart, as Prometheus expects)."""
    old = _stage_labels.pop((namespace, name), None)
    if old:
        STAGE.remove(namespace, name, *old)
    for gauge in (TARGET_WEIGHT, STAGE_DURATION, STAGE_STARTED):
        _remove(gauge, namespace, name)


def _remove(gauge: Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        gauge.remove(*labels)
