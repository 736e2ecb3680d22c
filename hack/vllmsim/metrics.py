"""vLLM's Prometheus series, exactly as the pinned release's contract lists them.

The simulator exports every series vLLM's engine stat logger registers unconditionally
(hack/contracts/vllm-<version>.json, module vllm.v1.metrics.loggers, not `conditional`): the same
names, types, label names (`model_name`, `engine`, ...) and histogram buckets, with children for
`model_name` x `engine="0"` (and every `finished_reason` of vllm:request_success), as a
single-engine vLLM shows them. It feeds those a simulator can mean (latency, TTFT, successes,
tokens, running and waiting requests); the others stay at zero, as on an idle engine.

Each simulator has its own CollectorRegistry, so several can run in one process. A request is
`waiting` until its first token (the configured latency stands for queueing and prefill), then
`running` until its last; only answered requests count as successes and count tokens.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from quantrollout import signals
from quantrollout.defaults import VLLM_NEWEST
from vllmcontract import load
from vllmcontract.extract import expand_buckets

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # what Prometheus 2.x scrapes
STAT_LOGGER = "vllm.v1.metrics.loggers"
ENGINE = "0"  # one engine core, as `vllm serve` without data parallelism runs


def exported_series(contract: dict[str, Any]) -> list[dict[str, Any]]:
    """The contract's series a plain `vllm serve` of a text model registers."""
    return [
        m
        for m in contract["metrics"]
        if m["module"] == STAT_LOGGER and not m["conditional"] and isinstance(m["labels"], list)
    ]


def _counter_name(name: str) -> str:
    """prometheus-client appends `_total` to a counter's name itself."""
    return name.removesuffix("_total")


class VllmMetrics:
    def __init__(self, model: str, max_model_len: int = 4096, version: str = VLLM_NEWEST) -> None:
        self.registry = CollectorRegistry()
        contract = load(version)
        base = {"model_name": model, "engine": ENGINE}
        children: dict[str, Any] = {}
        self.success: dict[str, Any] = {}
        for m in exported_series(contract):
            name, labels = m["name"], m["labels"]
            doc = f"{name} (vLLM {version})"
            metric: Any
            if m["type"] == "counter":
                metric = Counter(name, doc, labels, registry=self.registry)
            elif m["type"] == "gauge":
                metric = Gauge(name, doc, labels, registry=self.registry)
            else:
                buckets = expand_buckets(m["buckets"], max_model_len)
                metric = Histogram(name, doc, labels, buckets=buckets, registry=self.registry)
            extra = set(labels) - set(base)
            if not extra:
                children[name] = metric.labels(**{k: base[k] for k in labels})
            elif extra == {"finished_reason"}:
                for reason in contract["finish_reasons"]:
                    self.success[reason] = metric.labels(**base, finished_reason=reason)
        self.e2e = children[signals.VLLM_E2E_LATENCY]
        self.ttft = children[signals.VLLM_TTFT]
        self.generation_tokens = children[_counter_name(signals.VLLM_GENERATION_TOKENS)]
        self.prompt_tokens = children[_counter_name(signals.VLLM_PROMPT_TOKENS)]
        self.running = children[signals.VLLM_RUNNING]
        self.waiting = children[signals.VLLM_WAITING]
        self.request_prompt_tokens = children["vllm:request_prompt_tokens"]
        self.request_generation_tokens = children["vllm:request_generation_tokens"]

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
        self._m.request_prompt_tokens.observe(prompt_tokens)
        self._m.request_generation_tokens.observe(completion_tokens)
        self.close()

    def close(self) -> None:
        """Leaves the gauges; idempotent, so it can sit in a `finally`."""
        if self._state == "waiting":
            self._m.waiting.dec()
        elif self._state == "running":
            self._m.running.dec()
        self._state = "closed"
