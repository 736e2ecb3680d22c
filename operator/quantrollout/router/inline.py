"""Completions served inline: from the socket callbacks in which their bytes arrive, with no
task woken on the way to the first token.

Served as an ASGI task, a completion waits for the event loop twice before its first token: once
for its task's first step after the request arrived, once for the task to resume after the
tier's first bytes arrived. Each wait is a turn behind every other callback ready at that moment,
and at a few hundred streams those are many. On a 2-core machine at 200 streams, the router
served that way added +0.59 ms to the time to first token at p50, where a proxy doing everything
in its socket callbacks on the same stack added +0.10 ms (hack/bench/router.py, its `floor`).

So a completion (a path of `endpoints.GENERATES`, POST) is served inline when, at the moment its
body is complete, it came alone on its connection (not pipelined), without `Expect:
100-continue`, its body is within uvicorn's buffer and the router's limit, the client's side is
not backed up, admission lets it in, and it parses and routes (`RouterApp.plan`). Then, from the
callback in which its body completed, the copies are mirrored and, if the pool has an idle
kept-alive connection to its tier (`Upstreams.take_idle`), the request is written to the tier;
the answer's head and first bytes go to the client from the callback in which they arrive, the
rest as they come (`http1.Connection.pass_on`, paced and flow-controlled as `relay` does), and
the end is counted from the callback that read it (`proxy.stream_ended`, as the task counts it).

Everything else goes on as the ASGI task it always was, with what was done so far and the same
answers: a request that cannot be served inline from the start (it is then refused or routed by
the task, `RouterApp`), and one whose tier does not begin a stream well (no idle connection, a
failure or a timeout before the first byte, hence a fallback; a status other than 200; an
answer that is not a stream): the task reads it from where the inline part stopped
(`Proxy.answer`).

`RouterProtocol` is uvicorn's httptools protocol (uvicorn pinned) with those few methods
extended; a server whose application is not `Admission` serves everything as tasks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Coroutine
from functools import partial
from typing import Any, cast

from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from .admission import Admission
from .asgi import Message, Receive, Scope, Send
from .call import Route
from .endpoints import FORWARDED, GENERATES
from .http1 import Connection, Origin, ResponseHeaders, UpstreamError, encode_request
from .inspect_answer import AnswerReader
from .proxy import Proxy, settle, sse_error, stream_ended, stream_reader
from .relay import HeldWrites, chunk_sink
from .upstream import Failed, Opened, failure, read_answer, response_headers

log = logging.getLogger(__name__)


class RouterProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol, serving completions inline when they can be (module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._admission = self.app if isinstance(self.app, Admission) else None
        self._opening = False  # in on_headers_complete: a request's task is about to start
        self._deferred: RequestResponseCycle | None = None  # a completion's, until its body is in
        self.inline: InlineCall | None = None  # the completion being served inline

    def on_headers_complete(self) -> None:
        self._opening = True
        try:
            super().on_headers_complete()
        finally:
            self._opening = False

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        if self._opening and app is self.app and self._admission is not None and _may(cycle):
            self._deferred = cycle  # started when its body is complete: inline, or as a task
            return
        super()._start_asgi_task(cycle, app)

    def start_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        """Serves `cycle` with the ASGI application `app`, as a task the server waits for."""
        super()._start_asgi_task(cycle, app)

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        cycle = self._deferred
        if cycle is not None and len(cycle.body) > HIGH_WATER_LIMIT:
            self._deferred = None  # more than uvicorn buffers: the task reads it
            self.start_task(cycle, self.app)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        cycle, self._deferred = self._deferred, None
        if cycle is not None and not self._serve_inline(cycle):
            self.start_task(cycle, self.app)

    def connection_lost(self, exc: Exception | None) -> None:
        self._deferred = None  # the client left before its request was whole
        super().connection_lost(exc)
        if self.inline is not None:
            self.inline.client_gone()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.inline is not None:
            self.inline.drained()

    def _serve_inline(self, cycle: RequestResponseCycle) -> bool:
        admission = self._admission
        assert admission is not None
        app = admission.app
        if (
            cycle.disconnected
            or self.flow.write_paused
            or len(cycle.body) > app.settings.max_body_bytes
            or admission.admit() is not None  # refused: the task refuses it, and counts it
        ):
            return False
        try:
            scope = cast(Scope, cycle.scope)
            route = app.plan(scope, bytes(cycle.body), FORWARDED[scope["path"]])
        except Exception:  # a fault of the router's own: the task meets it too, and says 500
            log.exception("planning a completion failed")
            route = None
        if not isinstance(route, Route):  # refusing had no side effect: the task says why
            admission.leave()
            return False
        cycle.body = bytearray()  # read: `receive` now waits for the client to leave
        cycle.message_event.clear()
        try:
            call = InlineCall(self, cycle, app.proxy, route, admission)
        except Exception:  # a fault of the router's own, before anything was sent
            log.exception("starting a completion inline failed")
            admission.leave()
            return False
        call.start()
        return True


def _may(cycle: RequestResponseCycle) -> bool:
    """Whether a request may be served inline, as far as its head says."""
    scope = cycle.scope
    return (
        scope["method"] == "POST"
        and scope["path"] in GENERATES
        and not cycle.waiting_for_100_continue
    )


class InlineCall:
    """One completion served inline, from its request written to the end of its answer, or
    to the moment it goes on as a task (`_hand_over`)."""

    def __init__(
        self,
        protocol: RouterProtocol,
        cycle: RequestResponseCycle,
        proxy: Proxy,
        route: Route,
        admission: Admission,
    ) -> None:
        self._protocol = protocol
        self._cycle = cycle
        self._proxy = proxy
        self._route = route
        self._admission = admission
        self._origin = Origin.parse(route.live.base_url)
        self._baseline = proxy.mirror(route)
        self._connection: Connection | None = None  # held, with its pool slot
        self._started = 0.0
        self._opened: Opened | None = None  # once the stream is being passed on
        self._reader: AnswerReader | None = None
        self._draining = False  # waiting for the client's side to drain
        self._finished = False  # done, or handed over to a task

    def start(self) -> None:
        """Writes the request on an idle pooled connection, or hands it over without one."""
        connection = self._proxy.upstreams.take_idle(self._origin)
        if connection is None:
            self._hand_over(None)  # the task connects (or waits for a slot)
            return
        self._connection = connection
        self._protocol.inline = self
        call = self._route.call
        self._started = time.perf_counter()
        try:
            connection.start(
                encode_request(self._origin, call.path, call.body, call.headers, call.method)
            )
            connection.listen(self._on_answer)
        except Exception:
            self._crash()

    # -- until the first bytes

    def _on_answer(self, error: UpstreamError | None) -> None:
        if self._finished:
            return
        try:
            self._answer_arrived(error)
        except Exception:
            self._crash()

    def _answer_arrived(self, error: UpstreamError | None) -> None:
        connection = self._connection
        assert connection is not None
        if error is not None:  # silent for the read timeout
            self._drop_connection()
            self._hand_over(_known(failure(error)))
            return
        head = connection.head()
        failed = connection.failure()
        if head is None:
            if failed is None:
                connection.listen(self._on_answer)
                return
            # A kept-alive connection the tier closed as the request went out: once more, on a
            # new connection (as `pool` does for a task).
            again = failed.unanswered and connection.requests > 1
            self._drop_connection()
            self._hand_over(None if again else _known(failure(failed)))
            return
        status, headers = head
        stream = status == 200 and self._route.call.streamed
        if stream and connection.buffered:
            first = connection.take()
            assert first
            self._relay(status, headers, first)
        elif stream and not connection.ended and not failed:
            connection.listen(self._on_answer)  # the head came without the first bytes
        else:  # not a stream that begins well: the task reads it from here
            self._connection = None
            self._hand_over(self._after_head(connection, status, headers))

    async def _after_head(
        self, connection: Connection, status: int, headers: ResponseHeaders
    ) -> Opened | Failed:
        upstreams, held = self._proxy.upstreams, False
        try:
            result, held = await read_answer(
                connection, status, headers, self._route.call.streamed, self._started
            )
            if held:
                assert isinstance(result, Opened)
                result.on_close = partial(upstreams.give_back, self._origin, connection)
            return result
        finally:
            if not held:
                upstreams.give_back(self._origin, connection)

    def _hand_over(self, first: Awaitable[Opened | Failed] | None) -> None:
        """Goes on as the ASGI task (`Proxy.answer`), from `first`: the live tier's answer as
        far as it came (None: the tier is yet to be asked)."""
        self._finish_inline()
        proxy, route, baseline, admission = (
            self._proxy,
            self._route,
            self._baseline,
            self._admission,
        )

        async def rest(scope: Scope, receive: Receive, send: Send) -> None:
            try:
                await proxy.answer(receive, send, route, baseline, first)
            finally:
                admission.leave()

        self._protocol.start_task(self._cycle, rest)

    # -- passing the stream on

    def _relay(self, status: int, headers: ResponseHeaders, first: bytes) -> None:
        connection, cycle = self._connection, self._cycle
        assert connection is not None
        tier = self._route.live
        opened = self._opened = Opened(
            status, headers, first, self._started, time.perf_counter(), connection
        )
        reader = self._reader = stream_reader(self._route.call, opened, self._proxy.max_inspect)
        start = {
            "type": "http.response.start",
            "status": status,
            "headers": response_headers(headers, tier.name),
        }
        head = _written(cycle, start)
        if cycle.disconnected:
            self.client_gone()
            return
        assert cycle.chunked_encoding is True  # no length: the answer's is a hop's header
        if not cycle.transport.is_closing():
            cycle.transport.write(b"%b%x\r\n%b\r\n" % (head, len(first), first))
        reader.feed(first)
        self._admission.served_inline += 1
        connection.pass_on(chunk_sink(cycle.transport, cycle.flow, reader))
        self._on_stream(None)

    def _on_stream(self, error: UpstreamError | None) -> None:
        if self._finished:
            return
        try:
            self._stream_moved(error)
        except Exception:
            self._crash()

    def _stream_moved(self, error: UpstreamError | None) -> None:
        connection, opened = self._connection, self._opened
        assert connection is not None
        assert opened is not None
        if error is None and connection.take() is not None:  # b"": the end, all passed on
            opened.ended = True
            self._end(broken=False)
            return
        if error is None and connection.held_back and self._cycle.flow.write_paused:
            self._draining = True  # `drained` goes on
            return
        connection.resume()
        failed = error or connection.failure()
        if failed is not None:
            log.info("tier %s failed mid-stream: %s", self._route.live.name, failed)
            self._end(broken=True)
            return
        connection.listen(self._on_stream)

    def drained(self) -> None:
        """The client's side took what was written: the tier's bytes may flow again."""
        if self._draining and not self._finished:
            self._draining = False
            self._on_stream(None)

    def _end(self, broken: bool) -> None:
        opened, reader = self._opened, self._reader
        assert opened is not None
        assert reader is not None
        self._drop_connection()
        last = sse_error(f"tier {self._route.live.name} failed mid-answer", 502) if broken else b""
        end = {"type": "http.response.body", "body": last, "more_body": False}
        if self._cycle.flow.write_paused:  # the client is backed up: the task waits for it
            self._protocol.start_task(self._cycle, _sender(end))
        else:
            _now(self._cycle.send(end))  # type: ignore[arg-type]
        settle(self._baseline, stream_ended(self._route.live, opened, reader, broken))
        self._finish_inline()
        self._admission.leave()

    # -- leaving

    def client_gone(self) -> None:
        """The client left before its answer was complete."""
        if self._finished:
            return
        self._drop_connection()
        self._route.live.metrics.request(499)
        settle(self._baseline, None)
        self._finish_inline()
        self._admission.leave()

    def _crash(self) -> None:
        """A fault of the router's own: said in the log, and the client's connection closed
        (as uvicorn closes one whose application failed)."""
        log.exception("a completion served inline failed")
        if self._finished:
            return
        self._drop_connection()
        cycle = self._cycle
        if not cycle.response_started and not cycle.flow.write_paused:
            _now(cycle.send_500_response())
        cycle.transport.close()
        settle(self._baseline, None)
        self._finish_inline()
        self._admission.leave()

    def _drop_connection(self) -> None:
        """Gives the tier's connection and its slot back to the pool (the connection is kept
        only if its answer was read to the end)."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._opened is None or not self._opened.ended:
            connection.close()
        self._proxy.upstreams.give_back(self._origin, connection)

    def _finish_inline(self) -> None:
        self._finished = True
        if self._protocol.inline is self:
            self._protocol.inline = None


async def _known(result: Failed) -> Failed:
    return result


def _sender(message: Message) -> Any:
    async def send_last(scope: Scope, receive: Receive, send: Send) -> None:
        await send(message)

    return send_last


def _written(cycle: RequestResponseCycle, message: Message) -> bytes:
    """What uvicorn's `send` writes for `message`, kept instead of written (to go out in one
    write with what follows it)."""
    held = HeldWrites(cycle)
    cycle.transport = held  # type: ignore[assignment]
    try:
        _now(cycle.send(message))  # type: ignore[arg-type]
    finally:
        cycle.transport = held.transport
    return held.written


def _now(coroutine: Coroutine[Any, Any, None]) -> None:
    """Runs uvicorn's `send` where it does not wait: it waits only while the client's side is
    backed up, which the callers checked it is not."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    coroutine.close()
    raise RuntimeError("uvicorn's send waited: the client's side was backed up")
