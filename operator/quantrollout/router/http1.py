"""A small HTTP/1.1 client connection for the calls to the tiers: an asyncio Protocol with the
llhttp parser (`httptools`, the one uvicorn uses for the client side of the router).

Why not httpx: per streamed chunk, httpx/httpcore go through h11 (pure Python), anyio cancel
scopes for the read timeout and several layers of async iterators: ~100 us of CPU per chunk.
At 200 streams of 25 tokens/s that kept the router's one event loop so busy that new streams
waited tens of milliseconds for their first byte. Here a chunk costs one parser callback and
an append; the reader is woken once for everything that arrived together, and takes it in one
piece (so chunks that came in one read leave in one write). A stream can also be passed on
(`pass_on`): its pieces then go to a sink from the socket's callback, with no reader woken.
A caller that is itself a callback (a request served inline, `inline`) writes its request with
`start` and is called back instead of awaiting (`listen`, `head`, `failure`).

One `Connection` carries one request at a time (no pipelining) and is reused by `pool` when the
previous answer was read to its end and both sides keep the connection alive. Bytes that are not
read wait up to `HIGH_WATER` (a sink says when its side is backed up); past that the connection
stops reading from its socket, so a slow client slows the tier down instead of filling the
router's memory.

A stream passed on is paced: its pieces go on at most once per `PACE` seconds. A piece that
comes sooner after the last one waits, with the socket left unread, until then, and goes on
with all that came meanwhile (an end read with a piece goes on at once; one that comes while a
piece waits, with it). Tokens that come slower than that (vLLM's usual tens per second) go on
as they come; a stream faster than that goes on in fewer, larger writes, none held longer than
`PACE`. Each piece passed on costs a read and a write (two system calls) and a
turn of the event loop whatever its size, so that a few fast streams would otherwise take turn
after turn of the one event loop that must also open new streams: at saturation, their first
token waited behind everyone else's.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import cast
from urllib.parse import quote, urlsplit

import httptools

from quantrollout import defaults

HIGH_WATER = 64 << 10
PACE = defaults.ROUTER_RELAY_PACE_S


class UpstreamError(Exception):
    """The tier broke the connection or the HTTP framing; `timed_out` when it went silent,
    `unanswered` when the connection ended before a single byte of the answer came."""

    def __init__(self, reason: str, timed_out: bool = False, unanswered: bool = False) -> None:
        super().__init__(reason)
        self.timed_out = timed_out
        self.unanswered = unanswered


class ConnectError(UpstreamError):
    """No connection could be made to the tier."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a tier listens: a base URL `http(s)://host[:port][/prefix]`, parsed once."""

    scheme: str
    host: str
    port: int
    host_header: bytes  # `host` or `host:port` when the port is not the scheme's default
    prefix: str  # the base URL's path (no trailing slash), put before each request's path

    @staticmethod
    @lru_cache(maxsize=1024)
    def parse(url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) origin: {url!r}")
        default = 443 if parts.scheme == "https" else 80
        port = parts.port or default
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        header = shown if port == default else f"{shown}:{port}"
        return Origin(parts.scheme, host, port, header.encode("ascii"), parts.path.rstrip("/"))


class ResponseHeaders:
    """A response's header lines as received (names lower-cased), with a case-insensitive get."""

    __slots__ = ("raw",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.raw = raw

    def get(self, name: str, default: str = "") -> str:
        key = name.lower().encode("latin-1")
        for k, v in self.raw:
            if k == key:
                return v.decode("latin-1")
        return default


def encode_request(
    origin: Origin,
    path: str,
    body: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    method: bytes = b"POST",
) -> bytes:
    """A request (POST unless told), head and body in one piece (one write: never a small write
    that waits for the peer's delayed ACK). `headers` must not hold Host or Content-Length."""
    path = origin.prefix + path
    if not path.startswith("/") or any(c <= " " or c == "\x7f" for c in path):
        path = quote(path if path.startswith("/") else "/" + path, safe="/?&=%:@!$'()*+,;~-._")
    lines = [method + b" " + path.encode("latin-1") + b" HTTP/1.1", b"host: " + origin.host_header]
    if body or method != b"GET":  # a GET without a body says nothing of one (RFC 9110 8.6)
        lines.append(b"content-length: " + str(len(body)).encode())
    lines.extend(k + b": " + v for k, v in headers)
    lines.append(b"")
    lines.append(body)
    return b"\r\n".join(lines)


class Connection(asyncio.Protocol):
    """One keep-alive connection to one tier (see the module doc)."""

    def __init__(self, read_timeout: float) -> None:
        self._read_timeout = read_timeout
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._lost = False
        self._busy = False  # a request was sent and its answer is not fully read
        self._waiter: asyncio.Future[None] | None = None
        self._listener: Callable[[UpstreamError | None], None] | None = None  # see `listen`
        self._timer: asyncio.TimerHandle | None = None  # the read deadline's, while one may run
        self._deadline = 0.0  # loop.time() by which the awaited bytes must have come
        self._error: UpstreamError | None = None
        self._sink: Callable[[bytes], bool] | None = None  # see `pass_on`
        self._pace_timer: asyncio.TimerHandle | None = None  # a paced piece waits for it
        self._reading = True  # the transport reads (not paused by flow control nor pacing)
        self.requests = 0  # sent on this connection so far
        self.idle_since = time.monotonic()
        self._reset_response()

    def _reset_response(self) -> None:
        self._sink = None
        self._stop_pacing()
        self._next_pass = 0.0  # loop.time() before which a stream's next piece waits (`PACE`)
        self._answered = False  # some byte of the answer came
        self._headers: list[tuple[bytes, bytes]] = []
        self._headers_done = False
        self._complete = False
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._until_close = True  # no Content-Length or chunked framing: the body ends at EOF
        self._keep_alive = False  # both sides keep the connection for the next request

    # -- opening and reuse

    @classmethod
    async def open(
        cls, origin: Origin, tls: ssl.SSLContext | None, connect_timeout: float, read_timeout: float
    ) -> Connection:
        loop = asyncio.get_running_loop()
        connection = cls(read_timeout)
        secure = tls if origin.scheme == "https" else None
        try:
            async with asyncio.timeout(connect_timeout):
                await loop.create_connection(
                    lambda: connection, origin.host, origin.port, ssl=secure,
                    server_hostname=origin.host if secure else None,
                )  # fmt: skip
        except TimeoutError:
            raise ConnectError("timed out connecting", timed_out=True) from None
        except (OSError, ssl.SSLError) as err:
            raise ConnectError(f"{err or type(err).__name__}") from None
        return connection

    @property
    def reusable(self) -> bool:
        """Open, idle, and kept alive by both sides."""
        return not self._lost and not self._busy and self._transport is not None

    @property
    def buffered(self) -> int:
        """Bytes of the body received and not read yet."""
        return self._buffered

    def close(self) -> None:
        """Drops the connection (an answer left unread cannot be skipped on a kept-alive one)."""
        self._lost = True
        self._stop_timer()
        self._stop_pacing()
        if self._transport is not None:
            self._transport.close()

    # -- one request

    async def send(self, request: bytes) -> tuple[int, ResponseHeaders]:
        """Writes a request; returns the answer's status and headers once they arrived."""
        self.start(request)
        while (head := self.head()) is None:
            await self.arrival()
        return head

    def start(self, request: bytes) -> None:
        """Writes a request, without waiting for anything (`send` without the wait)."""
        assert self._transport is not None, "not connected"
        assert not self._busy, "the connection is not idle"
        self._busy = True
        self.requests += 1
        self._reset_response()
        self._update_reading()
        self._transport.write(request)

    def head(self) -> tuple[int, ResponseHeaders] | None:
        """The answer's status and headers, once they arrived (else None)."""
        if not self._headers_done:
            return None
        return self._parser.get_status_code(), ResponseHeaders(self._headers)

    @property
    def ended(self) -> bool:
        """The whole body arrived (some of it may not be taken yet)."""
        return self._complete

    async def read(self) -> bytes:
        """Everything of the body that arrived since the last read (waiting for some if none
        did); b"" at the end of the body, which frees the connection for the next request."""
        while (data := self.take()) is None:
            await self.arrival()
        return data

    def take(self) -> bytes | None:
        """What `read` would return, without waiting: None when nothing arrived yet (then await
        `arrival()` and take again). A relay that awaits the arrival itself is woken straight
        from the socket's callback, not through a stack of coroutines."""
        if not self._chunks:
            if self._complete:
                self._finish()
                return b""
            return None
        data = self._arrived()
        self.resume()  # room again for what the tier sends next
        return data

    def pass_on(self, sink: Callable[[bytes], bool]) -> None:
        """From now on the body's bytes go to `sink` as they arrive, straight from the socket's
        callback: no task is woken for each piece. `take` then returns only None (more to come)
        or b"" (the end), and `arrival` is done at the end, on a failure, or when `sink` said
        its side is backed up (returned False): reading then stays paused until `resume`."""
        self._sink = sink
        self._flush()

    @property
    def held_back(self) -> bool:
        """Reading is paused because the sink's side is backed up."""
        return self._paused and self._sink is not None

    def _pause(self) -> None:
        """Stops reading from the socket until `resume` (what waits is enough for now)."""
        self._paused = True
        self._update_reading()

    def resume(self) -> None:
        """Reads on from the socket if reading was paused (a reader took what waited, or a
        sink's side drained)."""
        if self._paused:
            self._paused = False
            self._update_reading()

    def _update_reading(self) -> None:
        """Reads from the socket unless flow control or pacing says to wait."""
        wanted = not self._paused and self._pace_timer is None
        if wanted != self._reading and self._transport is not None and not self._lost:
            self._reading = wanted
            if wanted:
                self._transport.resume_reading()
            else:
                self._transport.pause_reading()

    def _flush(self) -> None:
        assert self._sink is not None
        if not self._chunks:
            return
        self._next_pass = self._loop.time() + PACE
        if not self._sink(self._arrived()):
            self._pause()

    def _hold(self) -> None:
        """Keeps what arrived, and the socket unread, until the stream's next turn (`PACE`)."""
        if self._pace_timer is None:
            self._pace_timer = self._loop.call_at(self._next_pass, self._paced)
            self._update_reading()

    def _paced(self) -> None:
        """The stream's turn: read on, so that what the socket holds goes with what was held
        (`data_received`); whatever is still held a moment later (nothing more came) goes then.
        The moment is a timer's: the loop reads sockets before it runs the next timers (a
        callback `call_soon` would run before)."""
        self._pace_timer = None
        self._update_reading()
        self._loop.call_later(0.001, self._release, self.requests)

    def _release(self, request: int) -> None:
        if self._sink is None or self._lost or request != self.requests or self._pace_timer:
            return
        self._flush()
        if self._paused:
            self._wake()  # the relay waits for the client's side to drain

    def _stop_pacing(self) -> None:
        if self._pace_timer is not None:
            self._pace_timer.cancel()
            self._pace_timer = None

    def _arrived(self) -> bytes:
        """The body bytes received and not yet taken, in one piece, taken."""
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        return data

    async def read_all(self, limit: int | None = None) -> bytes:
        """The rest of the body (at most about `limit` bytes, the rest left unread)."""
        parts: list[bytes] = []
        size = 0
        while chunk := await self.read():
            parts.append(chunk)
            size += len(chunk)
            if limit is not None and size >= limit:
                break
        return b"".join(parts)

    def _finish(self) -> None:
        self._busy = False
        self.idle_since = time.monotonic()
        if not self._keep_alive:
            self.close()

    def failure(self) -> UpstreamError | None:
        """Why no more of the answer will come (the tier failed, or the connection ended before
        its end), or None."""
        if self._error is not None:
            return self._error
        if self._lost:
            return UpstreamError("connection closed", unanswered=not self._answered)
        return None

    def arrival(self) -> asyncio.Future[None]:
        """A future done when more of the answer arrives (or the connection ends); it raises
        UpstreamError when the tier fails or goes silent for the read timeout. Raises at once
        when the connection already failed."""
        if (failed := self.failure()) is not None:
            raise failed
        waiter = self._waiter = self._loop.create_future()
        self._arm_deadline()
        return waiter

    def listen(self, callback: Callable[[UpstreamError | None], None]) -> None:
        """`arrival` for a caller that runs in callbacks, not in a task: `callback(None)` is
        called once, straight from the socket's callback, when more of the answer arrived (or
        the connection ended: see `failure`), or `callback(error)` when the tier went silent
        for the read timeout. Raises at once when the connection already failed."""
        if (failed := self.failure()) is not None:
            raise failed
        self._listener = callback
        self._arm_deadline()

    def _arm_deadline(self) -> None:
        # One timer per connection, moved on lazily: arming and cancelling one for each wait
        # would cost more than the rest of passing a chunk on.
        self._deadline = self._loop.time() + self._read_timeout
        if self._timer is None:
            self._timer = self._loop.call_at(self._deadline, self._check_deadline)

    def _check_deadline(self) -> None:
        self._timer = None
        waiting = self._listener is not None or (
            self._waiter is not None and not self._waiter.done()
        )
        if not waiting or self._lost:
            return
        if self._loop.time() >= self._deadline:
            self._deliver(UpstreamError("timed out reading", timed_out=True))
        else:
            self._timer = self._loop.call_at(self._deadline, self._check_deadline)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _wake(self) -> None:
        self._deliver(None)

    def _deliver(self, error: UpstreamError | None) -> None:
        """Wakes whoever waits for the answer: the listener (`listen`), or the future
        (`arrival`), with `error` if there is one."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener(error)
            return
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, but have all of it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self._busy:  # nothing was asked: a tier talking out of turn is not to be trusted
            self._fail(UpstreamError("data received while idle"))
            return
        self._answered = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as err:
            self._fail(UpstreamError(f"malformed answer: {err}"))
            return
        except httptools.HttpParserUpgrade:  # never asked for: the tier speaks something else
            self._fail(UpstreamError("the tier switched protocols"))
            return
        if self._sink is not None:
            now = self._loop.time()
            self._deadline = now + self._read_timeout  # bytes came: not silent
            if now < self._next_pass and not self._complete:
                self._hold()
                return
            self._stop_pacing()
            self._flush()
            self._update_reading()
            if not self._complete and not self._paused:
                return  # nothing a waiter waits for
        elif self._buffered >= HIGH_WATER:
            self._pause()
        self._wake()

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._stop_timer()
        self._stop_pacing()
        if self._sink is not None:
            self._flush()  # what waited for its turn (`PACE`) goes on before the end or failure
        if self._headers_done and self._until_close and not self._complete:
            self._complete = True  # the body ran until the tier closed: that was its end
        elif self._busy and not self._complete and self._error is None:
            self._error = UpstreamError(
                f"connection closed mid-answer ({exc or 'EOF'})"
                if self._headers_done
                else f"connection closed before an answer ({exc or 'EOF'})",
                unanswered=not self._answered,
            )
        self._wake()

    def _fail(self, error: UpstreamError) -> None:
        self._error = error
        self.close()
        self._wake()

    # -- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.lower()
        if key == b"content-length" or (key == b"transfer-encoding" and b"chunked" in value):
            self._until_close = False
        self._headers.append((key, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (we never ask for one): wait for the real one
            self._headers = []
            return
        if status in (204, 304):
            self._until_close = False
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)

    def on_message_complete(self) -> None:
        if self._headers_done:
            self._complete = True
            self._keep_alive = self._parser.should_keep_alive() and not self._until_close
