"""One rollout tick for one model: read the model, measure (when an evaluation is due), decide
with the pure state machine, then act: traffic first, status second, Events last.

With the built-in router the traffic *is* `status.traffic`, so a rollback changes traffic and
records it in one write; with Gateway API the HTTPRoute is written before the status, so an
operator dying in between leaves traffic already safe and the restart finishes the record.

The status write is conditional on the resourceVersion the tick read: if anything changed the
model in between (a user, another operator replica, a spec edit), the API answers 409, nothing
is recorded, and the tick reads the model again and decides afresh (keeping a measurement that
the fresh status has not recorded yet), so a decision is never made on stale state nor applied
twice.
"""

from __future__ import annotations

import asyncio
import datetime
import os
from dataclasses import dataclass, field
from typing import Any, cast

import kopf
from kubernetes.client.exceptions import ApiException

from quantrollout import metrics, notify
from quantrollout.analysis import batch
from quantrollout.analysis.batch import Series
from quantrollout.analysis.coalesce import Coalescer
from quantrollout.analysis.judge import Measurement, judge
from quantrollout.analysis.prometheus import PrometheusProvider
from quantrollout.analysis.rules import Scope, default_window, queries, window_for
from quantrollout.api.durations import parse_duration
from quantrollout.api.resolve import tiers
from quantrollout.api.spec import Analysis, QuantizedModelSpec
from quantrollout.defaults import ACTION_ANNOTATION as ACTION_ANNOTATION  # handlers read it here
from quantrollout.defaults import PROMETHEUS_URL
from quantrollout.kube import Kube
from quantrollout.manifests.plan import Problem, parse_spec
from quantrollout.manifests.plan import plan as make_plan
from quantrollout.rollout.actions import ONE_SHOT, refusal
from quantrollout.rollout.codec import (
    rfc3339,
    state_from_status,
    status_from_state,
    target_down,
    tiers_ready,
)
from quantrollout.rollout.machine import (
    Action,
    AnalysisSettings,
    Evaluation,
    Inputs,
    RolloutState,
    decide,
)
from quantrollout.rollout.schedule import evaluation_due, next_evaluation_at, phase_s, round_start
from quantrollout.rollout.steps import rollout_id, stages_hash, steps_for
from quantrollout.traffic.desired import builtin_config, http_route_rules

_notifications: set[asyncio.Task[int]] = set()  # keeps fire-and-forget webhook calls alive
# Models whose HTTPRoute was written by a decision whose status write then lost a race (409):
# the next tick writes both again from the fresh state, even if that decides nothing new.
_routes_ahead: set[tuple[str, str]] = set()
# Why each model's traffic could not be written, while it cannot: the Warning Event is sent when
# the reason appears or changes, not on every retry (an on-call reading Events sees it once).
_traffic_refused: dict[tuple[str, str], str] = {}
_TRAFFIC_RETRY_S = 30.0  # the longest a tick that could not write traffic waits to try again


def forget(namespace: str, name: str) -> None:
    """Drops what the ticks remember of a deleted model."""
    _routes_ahead.discard((namespace, name))
    _traffic_refused.pop((namespace, name), None)


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


def requested_action(qm: dict[str, Any]) -> tuple[str, str] | None:
    """The value of the action annotation, whatever it is, and who set it (its field manager)."""
    value = (qm["metadata"].get("annotations") or {}).get(ACTION_ANNOTATION)
    if value is None:
        return None
    by = "an annotation"
    for entry in qm["metadata"].get("managedFields") or []:
        annotations = (entry.get("fieldsV1") or {}).get("f:metadata", {}).get("f:annotations", {})
        if f"f:{ACTION_ANNOTATION}" in annotations:
            by = f"{entry.get('manager', 'someone')} (annotation {ACTION_ANNOTATION}={value})"
    return str(value), by


def action_of(qm: dict[str, Any]) -> Action | None:
    """The one-shot action asked for by annotation, and who asked (the field manager that set it)."""
    requested = requested_action(qm)
    kind = next((k for k in ONE_SHOT if requested and k == requested[0]), None)
    if requested is None or kind is None:
        return None
    return Action(kind, requested[1])


async def _answer_action(
    kube: Kube, qm: dict[str, Any], phase: str | None, logger: kopf.Logger
) -> None:
    """Consumes the action annotation: an action that does nothing in `phase` (or an unknown
    one) is refused with a Warning Event saying why, instead of vanishing without a word."""
    requested = requested_action(qm)
    if requested is None:
        return
    value, by = requested
    why = refusal(value, phase)
    if why is not None:
        message = f"{value} refused: {why} (asked by {by})"
        body = kopf.Body(cast(kopf.RawBody, qm))
        kopf.event(body, type="Warning", reason="ActionRefused", message=message)
        logger.warning(message)
    meta = qm["metadata"]
    await asyncio.to_thread(
        kube.remove_annotation, meta["namespace"], meta["name"], ACTION_ANNOTATION
    )


@dataclass
class Providers:
    """One metric provider (and its coalescer) per Prometheus endpoint and credentials, shared
    across models: models that share one share its batched answers."""

    cache: dict[tuple[str, str | None, bool], Coalescer] = field(default_factory=dict)

    def for_model(self, kube: Kube, namespace: str, spec: QuantizedModelSpec) -> Coalescer:
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


@dataclass(frozen=True)
class Measured:
    """An evaluation made for one step of one rollout of one generation of the spec."""

    key: tuple[int, str | None, int]
    evaluation: Evaluation
    results: list[dict[str, Any]]


@dataclass(frozen=True)
class Conflict:
    """The status write lost a race (409): nothing was applied."""

    measured: Measured | None
    lost: str  # the decision that was not applied, for the log


CONFLICT_RETRIES = 5


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


@dataclass(frozen=True)
class TickResult:
    wake_in_s: float | None  # None: nothing scheduled until something changes
    state_changed: bool = False
    gone: bool = False  # the model no longer exists


def _measure_batched(
    coalescer: Coalescer, f: batch.Formula, w: str, who: batch.Who, since: float
) -> Measurement:
    answer = coalescer.answer(batch.batched_query(f, w), since)
    if answer.index is None:
        return Measurement(unavailable=answer.error)
    return batch.split(f, answer.index, who)


def _evaluate(
    coalescer: Coalescer, spec: QuantizedModelSpec, scope: Scope, stage: str, since: float
) -> tuple[Evaluation, list[dict[str, Any]]]:
    """Built-in rules are measured through one batched query per rule shared by every model
    of the round that began at `since` (see analysis.batch and analysis.coalesce); custom rules
    with their own query, per model."""
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


async def tick(
    kube: Kube, providers: Providers, namespace: str, name: str, logger: kopf.Logger
) -> TickResult:
    measured = None
    for _ in range(CONFLICT_RETRIES):
        result = await _tick_once(kube, providers, namespace, name, logger, measured)
        if isinstance(result, TickResult):
            return result
        measured = result.measured
        logger.info(
            f"{namespace}/{name} changed between our read and our write (409 Conflict): "
            f"not applied: {result.lost}; re-reading it"
        )
    return TickResult(wake_in_s=0.2)


async def _tick_once(
    kube: Kube,
    providers: Providers,
    namespace: str,
    name: str,
    logger: kopf.Logger,
    measured: Measured | None,
) -> TickResult | Conflict:
    qm = await asyncio.to_thread(kube.get_quantizedmodel, namespace, name)
    if qm is None or qm["metadata"].get("deletionTimestamp"):
        return TickResult(None, gone=True)
    parsed = parse_spec(qm.get("spec", {}))
    plan = make_plan(name, namespace, qm.get("spec", {}))
    if isinstance(parsed, Problem) or plan.invalid or not plan.tiers[0].deployable:
        # An invalid model, or one whose baseline cannot run, has no rollout and nothing to
        # route to; the reconcile reports why.
        await _answer_action(kube, qm, (qm.get("status") or {}).get("phase"), logger)
        return TickResult(None)
    spec = parsed
    baseline, target = tiers(spec)
    steps = steps_for(spec)
    analysis = analysis_of(spec)
    settings = settings_of(analysis, namespace, name)
    status = qm.get("status") or {}
    state = state_from_status(status)
    now = datetime.datetime.now(datetime.UTC)
    action = action_of(qm)

    evaluation: Evaluation | None = None
    results: list[dict[str, Any]] | None = None
    key = (int(qm["metadata"].get("generation", 0)), state.rollout_id, state.step)
    due = state.rollout_id == rollout_id(spec) and evaluation_due(state, settings, now)
    if due and measured is not None and measured.key == key:
        evaluation, results = measured.evaluation, measured.results
    elif due:
        scope = Scope(namespace=namespace, model=name, baseline=baseline.name, target=target.name)
        coalescer = await asyncio.to_thread(providers.for_model, kube, namespace, spec)
        stage = steps[min(state.step, len(steps) - 1)].stage
        since = round_start(now, settings)
        fresh, results = await asyncio.to_thread(_evaluate, coalescer, spec, scope, stage, since)
        logger.info(f"analysis {fresh.verdict}: {'; '.join(fresh.reasons) or 'all rules pass'}")
        evaluation = fresh

    decision = decide(
        state,
        Inputs(
            rollout_id=rollout_id(spec), steps=steps, stages_hash=stages_hash(steps),
            analysis=settings, now=now, paused=bool(spec.rollout and spec.rollout.paused),
            tiers_ready=tiers_ready(status), target_down=target_down(status, target.name),
            evaluation=evaluation, action=action,
        ),
    )  # fmt: skip
    new = decision.state
    body = kopf.Body(cast(kopf.RawBody, qm))
    gateway = spec.traffic and spec.traffic.router == "gateway-api" and spec.traffic.http_route
    if new != state or evaluation is not None or (namespace, name) in _routes_ahead:
        patch = status_from_state(new, steps)
        sticky = next((s.sticky_header for s in steps if s.sticky_header), None)
        traffic = builtin_config(
            name=name, served_model=spec.model, rollout_id=new.rollout_id or "", attempt=new.attempt,
            baseline=baseline, target=target, target_weight=new.target_weight,
            mirror_percent=new.mirror_percent, sticky_header=sticky,
        )  # fmt: skip
        if gateway:
            route = f"{gateway.namespace or namespace}/{gateway.name}"
            rules = http_route_rules(
                name=name, baseline=baseline, target=target,
                target_weight=new.target_weight, mirror_percent=new.mirror_percent,
            )  # fmt: skip
            # Traffic first: the HTTPRoute before the status that records it.
            try:
                await asyncio.to_thread(
                    kube.write_http_route_rules, gateway.namespace or namespace, gateway.name, rules
                )
            except ApiException as err:
                if err.status not in (403, 404):
                    raise
                # No route (or no Gateway API at all, or no right to it): nothing is recorded,
                # so the rollout holds where it is until the route can be written.
                why = (
                    f"cannot write HTTPRoute {route}: HTTP {err.status} {err.reason}; "
                    "the rollout holds until it can"
                )
                if _traffic_refused.get((namespace, name)) != why:
                    _traffic_refused[(namespace, name)] = why
                    kopf.event(body, type="Warning", reason="TrafficNotApplied", message=why)
                    logger.warning(why)
                else:
                    logger.info(f"still {why}")
                return TickResult(max(1.0, min(_TRAFFIC_RETRY_S, settings.interval_s)))
            if _traffic_refused.pop((namespace, name), None) is not None:
                message = f"HTTPRoute {route} written again"
                kopf.event(body, type="Normal", reason="TrafficApplied", message=message)
                logger.info(message)
        patch["traffic"] = traffic
        if evaluation is not None:
            patch["lastAnalysis"] = {
                "at": rfc3339(now),
                "verdict": evaluation.verdict,
                "results": results,
            }
        try:
            await asyncio.to_thread(
                kube.patch_status, namespace, name, patch, qm["metadata"]["resourceVersion"]
            )
        except ApiException as err:
            if err.status != 409:
                raise
            if gateway:
                _routes_ahead.add((namespace, name))
            return Conflict(
                Measured(key, evaluation, results or []) if evaluation else None,
                f"{new.phase} at step {new.step} ({new.target_weight}% live)",
            )
        _routes_ahead.discard((namespace, name))
    metrics.observe(namespace, name, state, new, steps)  # once applied: a lost race counts nothing
    if evaluation is not None:
        metrics.evaluated(namespace, name, evaluation.verdict)
    for event in decision.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        logger.info(f"{event.reason}: {event.message}")
    if decision.events:
        # Not awaited by the tick: a slow webhook must not delay the next evaluation.
        task = asyncio.create_task(notify.send(namespace, name, decision.events))
        _notifications.add(task)
        task.add_done_callback(_notifications.discard)
    # The phase the action met: none if this pass starts a new rollout (decide ignores it then).
    acting = state.phase if state.rollout_id == rollout_id(spec) else None
    await _answer_action(kube, qm, acting, logger)
    return TickResult(_wake_in(new, settings, now), _phase_view(new) != _phase_view(state))


def _phase_view(state: RolloutState) -> tuple[str, tuple[str, ...]]:
    return state.phase, state.rollback_reasons


def _wake_in(
    state: RolloutState, analysis: AnalysisSettings, now: datetime.datetime
) -> float | None:
    due = next_evaluation_at(state, analysis)
    if due is None:
        return None
    return max(0.05, (due - now).total_seconds())
