"""Refusing completions early when a router process is overloaded, rather than letting every
stream's tail grow: the ASGI application the server runs, in front of `RouterApp`.

A completion is refused with 503, Retry-After and OpenAI's error shape (clients and SDKs retry
on it), and counted in `quantrollout_router_shed_requests_total{reason}`, when
- `inflight`: the process already serves `max_inflight` completions, or
- `loop_lag`: its event loop runs more than `max_loop_lag` seconds late: a new stream would wait
  at least that long for its first token, and every running one would stall as long.

A request is refused before its body is read, so refusing costs next to nothing; one that was
admitted is never dropped: it is answered, whatever comes in after it. Other endpoints
(`/health`, `/metrics`, `/v1/models`) are always served: a probe must see the process alive.
The lag is measured by a timer that should fire every `TICK` seconds: how late it fires,
smoothed over its last few turns.
"""

from __future__ import annotations

import asyncio

from .app import RouterApp
from .asgi import Receive, Scope, Send, send_error
from .endpoints import GENERATES

TICK = 0.02  # seconds between two looks at the event loop's lateness
# Each look weighs this much in the lag: one stall (the machine's other work, a CPU quota's
# throttling) is not an overload and refusing would not help it; a loop late turn after turn is.
SMOOTHING = 0.2


class Admission:
    """`RouterApp` behind the overload bounds of its settings (see the module doc)."""

    def __init__(self, app: RouterApp) -> None:
        self.app = app
        settings = app.settings
        self.max_inflight = settings.max_inflight
        self.max_lag = settings.max_loop_lag
        self._retry_after = str(settings.retry_after_seconds).encode()
        self._shed = app.metrics.shed
        self.inflight = 0  # completions admitted and not yet answered
        self.served_inline = 0  # streams whose first bytes went out inline (`inline`)
        self._lag = 0.0  # how late the ticks fire, smoothed
        self._due = 0.0  # loop.time() at which the next tick should fire; 0: not started
        self._loop: asyncio.AbstractEventLoop | None = None

    def lag(self) -> float:
        """Seconds the event loop runs late, smoothed over its last few turns."""
        return self._lag

    def _tick(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        self._lag += (max(0.0, now - self._due) - self._lag) * SMOOTHING
        self._due = now + TICK
        self._loop.call_at(self._due, self._tick)

    def start(self) -> None:
        """Starts watching the running event loop's lateness (done by the first completion)."""
        self._loop = asyncio.get_running_loop()
        self._due = self._loop.time() + TICK
        self._loop.call_at(self._due, self._tick)

    def admit(self) -> str | None:
        """Admits a completion (in flight until `leave`), or says why it is refused."""
        if self._loop is None:
            self.start()
        reason = self.refusal()
        if reason is None:
            self.inflight += 1
        return reason

    def leave(self) -> None:
        """An admitted completion was answered (or its client left)."""
        self.inflight -= 1

    def refusal(self) -> str | None:
        """Why a new completion would be refused now, or None."""
        if self.inflight >= self.max_inflight:
            return "inflight"
        if self.lag() > self.max_lag:
            return "loop_lag"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in GENERATES:
            await self.app(scope, receive, send)
            return
        reason = self.admit()
        if reason is not None:
            self._shed.labels(reason).inc()
            what = (
                f"{self.inflight} completions in flight"
                if reason == "inflight"
                else f"its event loop is {self.lag() * 1000:.0f} ms late"
            )
            await send_error(
                send, 503, f"the router is overloaded ({what}); retry later",
                "service_unavailable", "overloaded", headers=[(b"retry-after", self._retry_after)],
            )  # fmt: skip
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.leave()
