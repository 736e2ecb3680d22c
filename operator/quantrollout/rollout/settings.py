"""A spec's analysis settings as the state machine and the shared clock use them. Pure."""

from __future__ import annotations

from quantrollout.api.durations import parse_duration
from quantrollout.api.spec import Analysis, QuantizedModelSpec

from .machine import AnalysisSettings
from .schedule import phase_s


def analysis_of(spec: QuantizedModelSpec) -> Analysis:
    return spec.rollout.analysis if spec.rollout and spec.rollout.analysis else Analysis()


def settings_of(analysis: Analysis, namespace: str = "", name: str = "") -> AnalysisSettings:
    """The machine's analysis settings; the model's namespace and name place its evaluations on
    the shared clock (`rollout.schedule`), and do not change any decision."""
    interval_s = parse_duration(analysis.interval)
    return AnalysisSettings(
        interval_s=interval_s,
        failure_limit=analysis.failure_limit,
        on_metrics_unavailable=analysis.on_metrics_unavailable,
        metrics_unavailable_grace_s=parse_duration(analysis.metrics_unavailable_grace),
        phase_s=phase_s(namespace, name, interval_s),
    )
