"""The metric provider seam and its Prometheus implementation (prometheus-api-client, bearer
token, TLS verification on by default). Every failure becomes a Measurement with the reason:
unreachable, timing out or answering with an error is 'unavailable', never a value."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from quantrollout import defaults

from .batch import Series
from .judge import Measurement


class MetricProvider(Protocol):
    def measure(self, expr: str) -> Measurement: ...

    def series(self, expr: str) -> list[Series]:
        """Every series of an instant query, with its labels; raises on any failure."""
        ...

    def describe(self, err: Exception) -> str:
        """A failed query in words (where it went and what happened)."""
        ...


@dataclass
class PrometheusProvider:
    url: str
    token: str | None = field(default=None, repr=False)  # a secret: never in a log line
    verify_tls: bool = True
    timeout_s: float = defaults.PROMETHEUS_TIMEOUT_S

    def __post_init__(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        # No retries inside a query: the next evaluation is the retry, and a slow Prometheus must
        # cost one timeout, not four, before the verdict says Inconclusive.
        self._client = PrometheusConnect(
            url=self.url, headers=headers, disable_ssl=not self.verify_tls, retry=Retry(total=0)
        )
        self.queries = 0

    def measure(self, expr: str) -> Measurement:
        try:
            result = self.series(expr)
        except Exception as err:  # every way a query can fail means "no data", never a value
            return Measurement(unavailable=self.describe(err))
        return Measurement.of([one.value for one in result])

    def series(self, expr: str) -> list[Series]:
        self.queries += 1
        result = self._client.custom_query(expr, timeout=self.timeout_s)
        return [Series(one["metric"], float(one["value"][1])) for one in result]

    def describe(self, err: Exception) -> str:
        text = str(err)
        if "timed out" in text.lower():  # requests wraps a read timeout in a ConnectionError
            why = f"no answer within the {self.timeout_s:g}s timeout"
        else:
            why = f"{type(err).__name__}: {text[:200]}"
        return f"prometheus at {self.url}: {why}"
