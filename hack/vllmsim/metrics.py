"""vLLM's Prometheus series, under vLLM's names (from quantrollout.signals), label `model_name`.

Each simulator has its own CollectorRegistry, so several can run in one process. A request is
`waiting` until its first token (the configured latency stands for queueing and prefill), then
`running` until its last; only answered requests count as successes and count tokens.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from quantrollout import signals

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # what Prometheus 2.x scrapes

# vLLM's buckets, with finer ones below 0.3 s added to the e2e latency (a simulator is fast,
# and the latency rules judge p99 against thresholds like 250 ms).
E2E_BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25),
    *(0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0),
)
TTFT_BUCKETS = (
    *(0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75),
    *(1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0),
)
FINISHED_REASONS = ("stop", "length")
LABEL = "model_name"


def _counter_name(name: str) -> str:
    """prometheus-client appends `_total` to a counter's name itself."""
    return name.removesuffix("_total")


class VllmMetrics:
    def __init__(self, model: str) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self.e2e = Histogram(
            signals.VLLM_E2E_LATENCY, "Histogram of end to end request latency in seconds.",
            [LABEL], buckets=E2E_BUCKETS, registry=reg,
        ).labels(model)  # fmt: skip
        self.ttft = Histogram(
            signals.VLLM_TTFT, "Histogram of time to first token in seconds.",
            [LABEL], buckets=TTFT_BUCKETS, registry=reg,
        ).labels(model)  # fmt: skip
        success = Counter(
            _counter_name(signals.VLLM_REQUEST_SUCCESS), "Count of successfully processed requests.",
            [LABEL, "finished_reason"], registry=reg,
        )  # fmt: skip
        self.success = {reason: success.labels(model, reason) for reason in FINISHED_REASONS}
        self.generation_tokens = Counter(
            _counter_name(signals.VLLM_GENERATION_TOKENS), "Number of generation tokens processed.",
            [LABEL], registry=reg,
        ).labels(model)  # fmt: skip
        self.prompt_tokens = Counter(
            _counter_name(signals.VLLM_PROMPT_TOKENS), "Number of prefill tokens processed.",
            [LABEL], registry=reg,
        ).labels(model)  # fmt: skip
        self.running = Gauge(
            signals.VLLM_RUNNING, "Number of requests currently running on GPU.",
            [LABEL], registry=reg,
        ).labels(model)  # fmt: skip
        self.waiting = Gauge(
            signals.VLLM_WAITING, "Number of requests waiting to be processed.",
            [LABEL], registry=reg,
        ).labels(model)  # fmt: skip

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def track(self) -> RequestTrack:
        return RequestTrack(self)


class RequestTrack:
    """One request's life in the metrics: waiting -> running -> finished (or abandoned)."""

    def __init__(self, metrics: VllmMetrics) -> None:
        self._m = metrics
        self._start = time.monotonic()
        self._state = "waiting"
        metrics.waiting.inc()

    def first_token(self) -> None:
        if self._state == "waiting":
            self._m.waiting.dec()
            self._m.running.inc()
            self._m.ttft.observe(time.monotonic() - self._start)
            self._state = "running"

    def finish(self, reason: str, prompt_tokens: int, completion_tokens: int) -> None:
        self.first_token()
        self._m.e2e.observe(time.monotonic() - self._start)
        self._m.success[reason].inc()
        self._m.prompt_tokens.inc(prompt_tokens)
        self._m.generation_tokens.inc(completion_tokens)
        self.close()

    def close(self) -> None:
        """Leaves the gauges; idempotent, so it can sit in a `finally`."""
        if self._state == "waiting":
            self._m.waiting.dec()
        elif self._state == "running":
            self._m.running.dec()
        self._state = "closed"
