"""The router's Prometheus series, named in `quantrollout.signals`, in a registry per router.

Every series carries `namespace` and `model` (the QuantizedModel), `tier` and `class`. Extra
labels: `code` on requests, `outcome` on shadow requests. What each counts:

- `class`: the request class (`classify.CLASSES`, six values) when the model's traffic is
  mixed precision (`targets` or `classes` set), else the empty string. The router classifies
  only the requests of mixed models (a single-target model pays nothing for it), and Prometheus
  stores a label with an empty value as no label at all: a single-target model's series look
  exactly as before, and rules that `sum` over the series count every class together. Series
  that are not per request (`config_reloads_total`) have `class=""` too.

- `requests_total{code}`: live requests a tier was asked to answer, by the HTTP status it
  answered with; `502` when the tier could not be reached or reset the connection, `504` when it
  timed out, `499` when the client went away first (as nginx logs it). A request the target fails
  and the baseline then answers counts once on each tier.
- `request_errors_total`: the subset a tier failed (5xx, 502/504 above).
- `fallbacks_total`: target failures retried on the baseline (`tier` = the target that failed).
- `request_duration_seconds`: from sending the request to the tier to its last byte.
- `time_to_first_token_seconds`: from sending the request to the tier's first body byte of a
  streamed answer.
- `output_tokens_total`, `responses_total`, `repetition_loops_total`, `refusals_total`: over the
  answers inspected (`quality`, `answers`), live and shadowed alike: a shadowed answer is what
  the target tier says, and in the shadow stage it is the only one there is. The duration and
  first-token histograms include shadowed answers for the same reason; requests and errors count
  live requests only.
- `requests_total` and `request_errors_total` count a stream that ended with an error event
  (HTTP 200, then `data: {"error": ...}`, as vLLM ends a generation that failed) under the
  event's code (500 unless it names another status), not as a success.
- `shadow_requests_total{outcome}`: on the target (`tier` = the target), its shadow copies; on
  the baseline, its calibration copies (a second answer of the baseline to a mirrored request).
  `compared` (both answers in, scored), `error` (the copy failed, an error event included),
  `skipped` (nothing to compare with: the live answer failed or was not inspected), `dropped`
  (too many mirrored calls in flight, not sent).
- `shadow_agreement_ratio{sampling}` (`tier` = the target): each compared shadow answer's
  agreement with the baseline's live answer; `shadow_self_agreement_ratio{sampling}` (`tier` =
  the baseline): each calibration answer's agreement with the baseline's live answer. `sampling`
  is how the request samples: greedy, seeded or sampled (`agreement`).
- `config_reloads_total`: route-table changes applied for a model (`tier` = its target tier, or
  its baseline tier when it has none); with several router processes, counted once every
  process has the change (`workers`).
- `class_fallbacks_total{namespace, model, class, reason}` (no tier): requests of a mixed model
  answered by the baseline for want of a route for their class (`no-route`) or an upstream for
  the tier their class's route names (`tier-missing`); see `class_split`.
- `shed_requests_total{reason}` (no model labels: the request was refused before it was read):
  completions refused early with 503 + Retry-After because a router process had `inflight`
  completions at its bound or its event loop ran late (`loop_lag`); see `admission`.

With several router processes per pod (`workers`), each writes its series to files in a
directory shared by the pod's processes (prometheus_client's multiprocess mode) and `/metrics`,
whichever process answers it, reads them all: counters summed, histograms merged bucket by
bucket, and the counts of a process that died stay in the sum.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.multiprocess import MultiProcessCollector

from quantrollout import signals

from .agreement import SAMPLINGS

LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
)  # fmt: skip
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
AGREEMENT_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
LABELS = [*signals.ROUTER_LABELS, signals.CLASS]
UNCLASSIFIED = ""  # the `class` of a request to a model that is not mixed precision
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own setting


@contextmanager
def shared_metrics(directory: str) -> Iterator[None]:
    """While inside, this process, and the processes it starts, write their series to files in
    `directory`, read together by `RouterMetrics.exposition`. Series created before stay in
    memory (prometheus_client picks its value class when a series is created)."""
    before = os.environ.get(MULTIPROCESS_ENV), values.ValueClass
    os.environ[MULTIPROCESS_ENV] = directory
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        if before[0] is None:
            os.environ.pop(MULTIPROCESS_ENV, None)
        else:
            os.environ[MULTIPROCESS_ENV] = before[0]
        values.ValueClass = before[1]


def _counter(name: str, doc: str, registry: CollectorRegistry, *extra: str) -> Counter:
    # prometheus-client appends `_total` itself; given without it, the exported name is exact.
    return Counter(name.removesuffix("_total"), doc, [*LABELS, *extra], registry=registry)


class RouterMetrics:
    """All the router's series, registered in `self.registry` (one per router instance)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = _counter(
            signals.ROUTER_REQUESTS, "Live requests by tier and HTTP status.", r, "code"
        )
        self.errors = _counter(
            signals.ROUTER_ERRORS, "Live requests a tier failed (5xx, timeout, reset).", r
        )
        self.latency = Histogram(
            signals.ROUTER_LATENCY,
            "Request to last byte, per tier.",
            LABELS,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            signals.ROUTER_TTFT,
            "Request to first streamed byte, per tier.",
            LABELS,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.output_tokens = _counter(
            signals.ROUTER_OUTPUT_TOKENS, "Completion tokens answered.", r
        )
        self.responses = _counter(
            signals.ROUTER_RESPONSES, "Answers the quality checks inspected.", r
        )
        self.repetitions = _counter(
            signals.ROUTER_REPETITIONS, "Answers with a 4-gram repeated more than 4 times.", r
        )
        self.refusals = _counter(
            signals.ROUTER_REFUSALS, "Answers opening with a refusal phrase.", r
        )
        self.agreement = Histogram(
            signals.ROUTER_SHADOW_AGREEMENT,
            "Agreement of the target's shadowed answer with the baseline's (0..1).",
            [*LABELS, signals.SAMPLING],
            buckets=AGREEMENT_BUCKETS,
            registry=r,
        )
        self.self_agreement = Histogram(
            signals.ROUTER_SHADOW_SELF_AGREEMENT,
            "Agreement of the baseline's second answer to a mirrored request with its first (0..1).",
            [*LABELS, signals.SAMPLING],
            buckets=AGREEMENT_BUCKETS,
            registry=r,
        )
        self.shadow_requests = _counter(
            signals.ROUTER_SHADOW_REQUESTS, "Mirrored requests by outcome.", r, "outcome"
        )
        self.fallbacks = _counter(
            signals.ROUTER_FALLBACKS, "Target failures retried on the baseline.", r
        )
        self.reloads = _counter(
            signals.ROUTER_CONFIG_RELOADS, "Route-table changes applied, per model.", r
        )
        self.class_fallbacks = Counter(
            signals.ROUTER_CLASS_FALLBACKS.removesuffix("_total"),
            "Requests of a class answered by the baseline for want of a route or a tier.",
            [signals.NAMESPACE, signals.MODEL, signals.CLASS, "reason"],
            registry=r,
        )
        self.shed = Counter(
            signals.ROUTER_SHED.removesuffix("_total"),
            "Completions refused early (503 + Retry-After) by an overloaded router process.",
            ["reason"],
            registry=r,
        )
        self._tiers: dict[tuple[str, str, str, str], TierMetrics] = {}
        self._class_fallbacks: dict[tuple[str, str, str, str], Counter] = {}

    def exposition(self) -> CollectorRegistry:
        """What `/metrics` shows: this registry, or with several processes, all of theirs."""
        directory = os.environ.get(MULTIPROCESS_ENV)
        if not directory:
            return self.registry
        merged = CollectorRegistry()
        MultiProcessCollector(merged, directory)  # type: ignore[no-untyped-call]
        return merged

    def tier(self, namespace: str, model: str, tier: str, cls: str = UNCLASSIFIED) -> TierMetrics:
        """The series of one tier for one request class, bound once (`labels()` is too slow to
        call per chunk). `cls` is a `classify.CLASSES` value, or `UNCLASSIFIED`."""
        key = (namespace, model, tier, cls)
        bound = self._tiers.get(key)
        if bound is None:
            bound = self._tiers[key] = TierMetrics(self, key)
        return bound

    def class_fallback(self, namespace: str, model: str, cls: str, reason: str) -> None:
        """Counts one request of class `cls` answered by the baseline for `reason`
        (`class_split.FALLBACKS`)."""
        key = (namespace, model, cls, reason)
        child = self._class_fallbacks.get(key)
        if child is None:
            child = self._class_fallbacks[key] = self.class_fallbacks.labels(*key)
        child.inc()


@dataclass
class TierMetrics:
    """One tier's bound series."""

    parent: RouterMetrics
    key: tuple[str, str, str, str]  # namespace, model, tier, class
    _codes: dict[str, Counter] = field(default_factory=dict)

    def __post_init__(self) -> None:
        p, k = self.parent, self.key
        self.errors = p.errors.labels(*k)
        self.latency = p.latency.labels(*k)
        self.ttft = p.ttft.labels(*k)
        self.output_tokens = p.output_tokens.labels(*k)
        self.responses = p.responses.labels(*k)
        self.repetitions = p.repetitions.labels(*k)
        self.refusals = p.refusals.labels(*k)
        self.agreement = {m: p.agreement.labels(*k, m) for m in SAMPLINGS}
        self.self_agreement = {m: p.self_agreement.labels(*k, m) for m in SAMPLINGS}
        self.fallbacks = p.fallbacks.labels(*k)
        self.reloads = p.reloads.labels(*k)

    def request(self, code: int) -> None:
        """Counts one live request answered with `code`, and an error when it is 5xx."""
        text = str(code)
        child = self._codes.get(text)
        if child is None:
            child = self._codes[text] = self.parent.requests.labels(*self.key, text)
        child.inc()
        if code >= 500:
            self.errors.inc()

    def shadow(self, outcome: str) -> None:
        self.parent.shadow_requests.labels(*self.key, outcome).inc()
