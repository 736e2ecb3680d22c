"""Synthetic router series for many models at once: one loopback /metrics endpoint exporting the
series the analysis rules read (`quantrollout.signals`), for every (namespace, model, tier) it is
given, with counters growing at fixed per-tier rates. A stand-in, and named so: it lets
Prometheus hold the series of a thousand models without a thousand routers and simulators (the
scale benchmark), and lets a test compare batched and per-model queries on known data.

`omit` drops chosen series, so missing-data cases are real missing series in Prometheus.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from quantrollout import signals as s

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class TierRates:
    """Per second: requests, and what share of them errs, refuses, repeats; tokens per answer."""

    requests: float = 2.0
    errors: float = 0.0
    refusals: float = 0.05
    repetitions: float = 0.01
    tokens: float = 100.0
    agreement: float = 0.95
    self_agreement: float = 0.98  # of a second answer of this tier (as a baseline) with its first
    latency_shares: tuple[float, ...] = (0.2, 0.6, 0.9, 0.99, 1.0)  # cumulative, per bucket


@dataclass
class RouterSeries:
    tiers: dict[tuple[str, str, str], TierRates] = field(default_factory=dict)  # (ns, model, tier)
    omit: set[tuple[str, str, str, str]] = field(default_factory=set)  # (ns, model, tier, metric)
    started: float = field(default_factory=time.monotonic)
    frozen_at: float | None = None  # set: counters stop growing (the data stops changing)

    def exposition(self) -> str:
        elapsed = (self.frozen_at or time.monotonic()) - self.started
        lines: list[str] = []
        for (ns, model, tier), r in sorted(self.tiers.items()):
            add = self._adder(lines, ns, model, tier)

            n = r.requests * elapsed
            add(s.ROUTER_REQUESTS, n * (1 - r.errors), 'code="200"')
            add(s.ROUTER_ERRORS, n * r.errors)
            add(s.ROUTER_SHADOW_REQUESTS, n * 0.5, 'outcome="ok"')
            add(s.ROUTER_SHADOW_REQUESTS, n * 0.5 * r.errors, 'outcome="error"')
            add(s.ROUTER_SHADOW_REQUESTS, n * 0.1, 'outcome="dropped"')
            add(s.ROUTER_RESPONSES, n)
            add(s.ROUTER_REFUSALS, n * r.refusals)
            add(s.ROUTER_REPETITIONS, n * r.repetitions)
            add(s.ROUTER_OUTPUT_TOKENS, n * r.tokens)
            hist = s.ROUTER_LATENCY
            for le, share in zip(BUCKETS, r.latency_shares, strict=True):
                add(f"{hist}_bucket", n * share, f'le="{le}"', key=hist)
            add(f"{hist}_bucket", n, 'le="+Inf"', key=hist)
            add(f"{hist}_sum", n * 0.2, key=hist)
            add(f"{hist}_count", n, key=hist)
            agreement = s.ROUTER_SHADOW_AGREEMENT
            add(f"{agreement}_sum", n * 0.5 * r.agreement, key=agreement)
            add(f"{agreement}_count", n * 0.5, key=agreement)
            calibration = s.ROUTER_SHADOW_SELF_AGREEMENT
            add(f"{calibration}_sum", n * 0.05 * r.self_agreement, key=calibration)
            add(f"{calibration}_count", n * 0.05, key=calibration)
        return "\n".join(lines) + "\n"

    def _adder(self, lines: list[str], ns: str, model: str, tier: str) -> Callable[..., None]:
        base = f'namespace="{ns}",model="{model}",tier="{tier}"'

        def add(metric: str, value: float, extra: str = "", *, key: str = "") -> None:
            if (ns, model, tier, key or metric) in self.omit:
                return
            labels = base + (f",{extra}" if extra else "")
            lines.append(f"{metric}{{{labels}}} {value:.6f}")

        return add


class _Handler(BaseHTTPRequestHandler):
    series: RouterSeries

    def do_GET(self) -> None:
        body = self.series.exposition().encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


class RouterSeriesServer:
    """Serves `series` on 127.0.0.1 (a free port) until `stop`."""

    def __init__(self, series: RouterSeries) -> None:
        handler = type("Handler", (_Handler,), {"series": series})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
