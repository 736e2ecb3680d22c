"""What one pass needs of Prometheus: an evaluation of a model's rules and, for a mixed-precision
model, its per-(class, tier) observation (`Metrics`, a Protocol), and the real implementation (`Providers`): one metric provider and coalescer per Prometheus
endpoint and credentials, shared across models, so models that share one share its batched
answers. Synchronous: the observer calls it through `asyncio.to_thread`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException

from quantrollout.analysis import batch, class_stats
from quantrollout.analysis.batch import Series
from quantrollout.analysis.class_stats import ClassObservation
from quantrollout.analysis.coalesce import Coalescer
from quantrollout.analysis.judge import Measurement, judge
from quantrollout.analysis.prometheus import PrometheusProvider
from quantrollout.analysis.rules import Scope, default_window, queries, window_for
from quantrollout.api.spec import QuantizedModelSpec
from quantrollout.defaults import PROMETHEUS_URL
from quantrollout.rollout.machine import Evaluation
from quantrollout.rollout.settings import analysis_of
from quantrollout.router.classify import CLASSES

from .kube import KubeIO


class Metrics(Protocol):
    def evaluate(
        self,
        kube: KubeIO,
        spec: QuantizedModelSpec,
        scope: Scope,
        stage: str,
        since: float,
    ) -> tuple[Evaluation, list[dict[str, Any]]]:
        """The verdict on the model's rules now, and each rule's result (status.lastAnalysis)."""
        ...

    def classes(
        self,
        kube: KubeIO,
        spec: QuantizedModelSpec,
        namespace: str,
        name: str,
        tiers: Sequence[str],
        baseline: str,
        window: str,
    ) -> ClassObservation:
        """Mixed precision: per (class, quantized tier in `tiers`) over `window`, the shadow
        samples, the calibrated agreement and the class's rules verdict, and the class mix
        (analysis/class_stats.py). Prometheus failing: `unavailable` says why, no stats."""
        ...


@dataclass(frozen=True)
class Unavailable:
    """A provider that cannot query at all (say, its token Secret is missing): every measurement
    is unavailable, with the reason."""

    reason: str

    def measure(self, expr: str) -> Measurement:
        return Measurement(unavailable=self.reason)

    def series(self, expr: str) -> list[Series]:
        raise LookupError(self.reason)

    def describe(self, err: Exception) -> str:
        return self.reason


@dataclass
class Providers:
    """The real `Metrics`: Prometheus through one coalescer per endpoint and credentials."""

    cache: dict[tuple[str, str | None, bool], Coalescer] = field(default_factory=dict)

    def for_model(self, kube: KubeIO, namespace: str, spec: QuantizedModelSpec) -> Coalescer:
        prom = spec.prometheus
        url = prom.url if prom else os.environ.get("QR_PROMETHEUS_URL", PROMETHEUS_URL)
        token = None
        if prom and prom.token_secret_ref:
            ref = prom.token_secret_ref
            try:
                token = kube.secret_value(namespace, ref.name, ref.key)
            except (ApiException, KeyError) as err:
                # No token, no query: metrics unavailable (onMetricsUnavailable decides), with
                # a reason the user can act on. Raising here killed the model's rollout loop.
                why = (
                    f"HTTP {err.status} {err.reason}"
                    if isinstance(err, ApiException)
                    else "no such key"
                )
                return Coalescer(
                    Unavailable(
                        f"cannot read the Prometheus token from Secret {namespace}/{ref.name} "
                        f"key {ref.key}: {why}"
                    )
                )
        verify = not (prom and prom.insecure_skip_verify)
        key = (url, token, verify)
        if key not in self.cache:
            self.cache[key] = Coalescer(PrometheusProvider(url, token=token, verify_tls=verify))
        return self.cache[key]

    def evaluate(
        self,
        kube: KubeIO,
        spec: QuantizedModelSpec,
        scope: Scope,
        stage: str,
        since: float,
    ) -> tuple[Evaluation, list[dict[str, Any]]]:
        """Built-in rules are measured through one batched query per rule shared by every model
        of the round that began at `since` (see analysis.batch and analysis.coalesce); custom
        rules with their own query, per model."""
        coalescer = self.for_model(kube, scope.namespace, spec)
        analysis = analysis_of(spec)
        who = batch.Who(scope.namespace, scope.model, scope.baseline, scope.target)
        rules = queries(analysis, scope, stage)
        samples = _measure_batched(coalescer, batch.SAMPLES, default_window(analysis), who, since)
        measured: list[Measurement] = []
        for rule in rules:
            f = batch.formula(rule.source) if rule.source else None
            if f is None or rule.source is None:
                measured.append(coalescer.provider.measure(rule.expr))
            else:
                w = window_for(rule.source, analysis)
                measured.append(_measure_batched(coalescer, f, w, who, since))
        evaluation, results = judge(rules, measured, samples, analysis.min_samples)
        return evaluation, [r.to_wire() for r in results]

    def classes(
        self,
        kube: KubeIO,
        spec: QuantizedModelSpec,
        namespace: str,
        name: str,
        tiers: Sequence[str],
        baseline: str,
        window: str,
    ) -> ClassObservation:
        """One query per signal for the model (class_stats.class_queries), asked now; any of
        them failing makes the whole observation unavailable (half an answer could promote a
        class on the signals that happened to arrive)."""
        provider = self.for_model(kube, namespace, spec).provider
        analysis = analysis_of(spec)
        answers: dict[str, list[Series]] = {}
        for signal, query in class_stats.class_queries(namespace, name, window).items():
            try:
                answers[signal] = provider.series(query)
            except Exception as err:  # every way a query can fail means "no data", never a value
                return ClassObservation(unavailable=provider.describe(err))
        return class_stats.parse(
            answers,
            tiers,
            baseline,
            class_stats.class_rules(analysis),
            analysis.min_samples,
            CLASSES,
        )


def _measure_batched(
    coalescer: Coalescer, f: batch.Formula, w: str, who: batch.Who, since: float
) -> Measurement:
    answer = coalescer.answer(batch.batched_query(f, w), since)
    if answer.index is None:
        return Measurement(unavailable=answer.error)
    return batch.split(f, answer.index, who)
