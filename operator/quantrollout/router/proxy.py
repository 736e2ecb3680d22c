"""One live request on its way through the router: call the chosen tier, fall back to the
baseline when the target fails before answering, pass the answer on (a stream chunk by chunk,
as each arrives), then inspect it and count the tier's signals.

What the client sees when no tier answers: 503 with `Retry-After` when the tier cannot be
reached, 504 when it timed out, 502 when it broke the connection, and a tier's own 5xx answer
as it is. A stream that fails after its first byte cannot be retried (the client already has
part of an answer): it ends with an SSE `error` event, as vLLM ends its own failed streams.
A stream vLLM itself ended with such an event (a generation that failed after the 200 status
line) counts as the tier's error under the event's code, not as a success (answers.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable

from .answers import Answer
from .asgi import Receive, Send, send_error
from .call import Call, Route, Tier
from .http1 import UpstreamError
from .inspect_answer import AnswerReader, record
from .pool import Upstreams
from .relay import relay, send_whole
from .shadow import BaselineAnswer, Shadows
from .upstream import Failed, Opened, response_headers

log = logging.getLogger(__name__)


class DisconnectWatch:
    """Cancels the request's task when its client goes away before the response is complete,
    so the tier's connection is closed and vLLM stops generating for nobody."""

    def __init__(self, receive: Receive, loop: asyncio.AbstractEventLoop) -> None:
        self.finished = False  # set just before the last byte is sent
        self.gone = False
        # The loop given, not looked up: asyncio's lookup asks the kernel for the process id
        # each time (a system call, twice per request).
        task = asyncio.current_task(loop)
        assert task is not None  # called from a request handler
        self._request = task
        self._watch = loop.create_task(self._wait(receive))

    async def _wait(self, receive: Receive) -> None:
        # With the body read, receive() returns only once the client disconnects or the
        # response is complete (ASGI servers then report http.disconnect as well).
        message = await receive()
        if message["type"] == "http.disconnect" and not self.finished:
            self.gone = True
            self._request.cancel()

    def stop(self) -> None:
        # Once the response is complete, receive() says http.disconnect (ASGI) and the watch
        # ends by itself. Cancelling it anyway would leave, for every request, a CancelledError
        # whose traceback and frames form a reference cycle: garbage only the cycle collector
        # frees, in pauses of several milliseconds at a few hundred streams.
        if not self.finished:
            self._watch.cancel()


class Proxy:
    """Live requests, through the pool of connections to the tiers."""

    def __init__(
        self, upstreams: Upstreams, shadows: Shadows, max_inspect_bytes: int, retry_after: int
    ) -> None:
        self._upstreams = upstreams
        self._shadows = shadows
        self._max_inspect = max_inspect_bytes
        self._retry_after = str(retry_after).encode()
        self._loop = asyncio.get_running_loop()

    @property
    def upstreams(self) -> Upstreams:
        return self._upstreams

    @property
    def max_inspect(self) -> int:
        return self._max_inspect

    async def forward(self, receive: Receive, send: Send, route: Route) -> None:
        """Answers a request as `route` says (see `mirror` and `answer`)."""
        baseline = self.mirror(route)
        await self.answer(receive, send, route, baseline)

    def mirror(self, route: Route) -> BaselineAnswer | None:
        """Starts the copies of `route.call` to each of `route.shadows` (the target, or every
        quantized tier of a mixed model) and, when there are shadows, to `route.calibration`
        (the baseline asked for a second answer, once however many shadows). Returns the
        future they compare with: the live answer, to be set once known (`settle`)."""
        baseline = None
        call = route.call
        for shadow in route.shadows:
            baseline = self._shadows.mirror(shadow, call, self._max_inspect, baseline)
        if route.calibration is not None and route.shadows:
            baseline = self._shadows.mirror(
                route.calibration, call, self._max_inspect, baseline, calibration=True
            )
        return baseline

    async def answer(
        self,
        receive: Receive,
        send: Send,
        route: Route,
        baseline: BaselineAnswer | None,
        first: Awaitable[Opened | Failed] | None = None,
    ) -> None:
        """Answers `route.call` from `route.live` (or its fallback), and gives the answer to
        the mirrored copies (`baseline`). `first`: the live tier's answer when it was already
        asked (a request that began inline)."""
        watch = DisconnectWatch(receive, self._loop)
        current = [route.live]  # the tier in flight, for counting a client that went away
        answer: Answer | None = None
        try:
            answer = await self._answer(send, route, current, watch, first)
        except asyncio.CancelledError:
            if not watch.gone:
                raise
            task = asyncio.current_task()
            assert task is not None
            task.uncancel()  # our own cancellation: the client left, nothing else is wrong
            current[0].metrics.request(499)
        finally:
            watch.stop()
            settle(baseline, answer)

    async def _answer(
        self,
        send: Send,
        route: Route,
        current: list[Tier],
        watch: DisconnectWatch,
        first: Awaitable[Opened | Failed] | None,
    ) -> Answer | None:
        call, tier, fallback = route.call, route.live, route.fallback
        opened = await (first if first is not None else self._open(tier, call))
        if isinstance(opened, Failed) and fallback is not None:
            tier.metrics.request(opened.code)
            tier.metrics.fallbacks.inc()
            log.debug(
                "tier %s failed (%s); retrying on %s", tier.name, opened.reason, fallback.name
            )
            tier = current[0] = fallback
            opened = await self._open(tier, call)
        if isinstance(opened, Failed):
            tier.metrics.request(opened.code)
            watch.finished = True
            await self._send_failure(send, tier, opened)
            return None
        if call.streamed:
            return await self._stream(send, tier, opened, watch, call)
        return await self._whole(send, tier, opened, watch, call)

    async def _open(self, tier: Tier, call: Call) -> Opened | Failed:
        return await self._upstreams.open(
            tier.base_url, call.path, call.body, call.headers, call.streamed, call.method
        )

    async def _whole(
        self, send: Send, tier: Tier, opened: Opened, watch: DisconnectWatch, call: Call
    ) -> Answer | None:
        headers = response_headers(opened.headers, tier.name)
        headers.append((b"content-length", str(len(opened.first)).encode()))
        watch.finished = True
        start = {"type": "http.response.start", "status": opened.status, "headers": headers}
        await send_whole(send, start, opened.first)
        tier.metrics.request(opened.status)
        tier.metrics.latency.observe(opened.first_byte - opened.started)
        if opened.status != 200 or not call.inspected:
            return None
        reader = AnswerReader(opened.headers.get("content-type", ""), self._max_inspect)
        reader.feed(opened.first)
        return _count(tier, reader.answer())

    async def _stream(
        self, send: Send, tier: Tier, opened: Opened, watch: DisconnectWatch, call: Call
    ) -> Answer | None:
        headers = response_headers(opened.headers, tier.name)
        start = {"type": "http.response.start", "status": opened.status, "headers": headers}
        reader = stream_reader(call, opened, self._max_inspect)
        last = b""
        try:
            await relay(send, start, opened, reader)
        except UpstreamError as err:
            log.info("tier %s failed mid-stream: %s", tier.name, err)
            last = sse_error(f"tier {tier.name} failed mid-answer", 502)
        finally:
            await opened.close()
        watch.finished = True
        await send({"type": "http.response.body", "body": last, "more_body": False})
        return stream_ended(tier, opened, reader, bool(last))

    async def _send_failure(self, send: Send, tier: Tier, failed: Failed) -> None:
        if failed.unreachable:
            await send_error(
                send, 503, f"tier {tier.name} cannot be reached ({failed.reason})",
                "service_unavailable", headers=[(b"retry-after", self._retry_after)],
            )  # fmt: skip
        elif failed.headers is not None:  # the tier's own 5xx answer, passed on as it is
            headers = response_headers(failed.headers, tier.name)
            headers.append((b"content-length", str(len(failed.body)).encode()))
            await send({"type": "http.response.start", "status": failed.code, "headers": headers})
            await send({"type": "http.response.body", "body": failed.body, "more_body": False})
        else:
            await send_error(
                send, failed.code, f"tier {tier.name} {failed.reason}", "upstream_error"
            )


def stream_reader(call: Call, opened: Opened, max_inspect: int) -> AnswerReader:
    """What reads a stream's answer as it passes (nothing, unless it is generated text)."""
    limit = max_inspect if call.inspected and opened.status == 200 else -1
    return AnswerReader(opened.headers.get("content-type", ""), limit)


def stream_ended(tier: Tier, opened: Opened, reader: AnswerReader, broken: bool) -> Answer | None:
    """Counts a stream passed on to its end (`broken`: the tier failed mid-answer, and the
    client's stream was ended with an error event); the answer, for a shadow to compare with."""
    answer = None if broken else reader.answer()
    failed = answer.error if answer is not None else None
    tier.metrics.request(502 if broken else failed or opened.status)
    tier.metrics.ttft.observe(opened.first_byte - opened.started)
    tier.metrics.latency.observe(time.perf_counter() - opened.started)
    if failed is not None:
        log.info("tier %s ended a stream with an error event (%d)", tier.name, failed)
        return None
    return _count(tier, answer)


def settle(baseline: BaselineAnswer | None, answer: Answer | None) -> None:
    """Gives the live answer to the copies that compare with it."""
    if baseline is not None and not baseline.done():
        baseline.set_result(answer)


def _count(tier: Tier, answer: Answer | None) -> Answer | None:
    """Records an inspected answer's signals; the answer, for a shadow to compare with."""
    if answer is None or answer.error is not None:
        return None
    record(tier.metrics, answer)
    return answer


def sse_error(message: str, code: int) -> bytes:
    error = {"error": {"message": message, "type": "upstream_error", "param": None, "code": code}}
    return b"data: " + json.dumps(error).encode() + b"\n\ndata: [DONE]\n\n"
