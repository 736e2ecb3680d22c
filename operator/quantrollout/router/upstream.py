"""One call to one tier: send the request, and hand back either an answer ready to pass on or a
failure the caller may retry elsewhere. With `pool` and `http1`, the only modules that speak
HTTP to tiers.

The request is written straight onto a pooled keep-alive connection (`http1.Connection`), with
no HTTP client library around it: a client such as httpx keeps a cookie jar (a proxy must never
store one user's cookies and send them with another user's request), follows redirects, and
spends more CPU per streamed chunk than the proxying itself.

An `Opened` answer has its status and headers and, for a stream, its first body bytes already
read: a tier that accepts a request and then fails before its first byte still counts as a
failure that can fall back to the baseline, because nothing has reached the client yet.
A non-streamed answer is read whole (it is one JSON document, and it is inspected anyway).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from .http1 import Connection, ResponseHeaders, UpstreamError

Headers = Sequence[tuple[bytes, bytes]]

# Hop-by-hop headers (RFC 9110 7.6.1) and those the proxy sets itself on each leg.
_HOP_BY_HOP = frozenset(
    {
        b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
        b"trailer", b"transfer-encoding", b"upgrade", b"host", b"content-length",
        b"accept-encoding", b"proxy-connection",
    }
)  # fmt: skip
# Answers are inspected, so ask tiers for them uncompressed.
_IDENTITY = (b"accept-encoding", b"identity")
_MAX_ERROR_BODY = 64 << 10


def request_headers(headers: Headers) -> list[tuple[bytes, bytes]]:
    """The client's headers as sent on to a tier."""
    kept = [(k, v) for k, v in headers if k.lower() not in _HOP_BY_HOP]
    kept.append(_IDENTITY)
    return kept


def response_headers(headers: ResponseHeaders, tier: str) -> list[tuple[bytes, bytes]]:
    """A tier's response headers as passed to the client, plus the tier that answered."""
    kept = [
        (k, v)
        for k, v in headers.raw
        if k.lower() not in _HOP_BY_HOP and k.lower() not in (b"date", b"server")
    ]
    kept.append((b"x-quantrollout-tier", tier.encode()))
    return kept


@dataclass(slots=True)
class Opened:
    """A tier's answer, ready to pass on (status < 500)."""

    status: int
    headers: ResponseHeaders
    first: bytes  # the body if not streamed, else its first bytes (b"" for an empty body)
    started: float  # time.perf_counter() when the request was sent
    first_byte: float  # when `first` arrived
    connection: Connection | None = None  # still reading a stream; None once read whole
    on_close: Callable[[], None] | None = None  # called once, when the stream is closed
    ended: bool = field(default=False, init=False)  # the stream was read to its end

    async def read(self) -> bytes:
        """The stream's next bytes: all that arrived since the last read, in one piece (waiting
        for some if none did); b"" at its end, when the stream is closed. Raises UpstreamError
        when the tier fails mid-answer (the caller still closes the stream)."""
        if self.connection is None:
            return b""
        data = await self.connection.read()
        if not data:
            self.ended = True
            await self.close()
        return data

    async def rest(self) -> AsyncIterator[bytes]:
        """The stream's remaining bytes as they arrive; closes the stream at the end."""
        try:
            while data := await self.read():
                yield data
        finally:
            await self.close()

    async def close(self) -> None:
        if self.connection is not None:
            connection, self.connection = self.connection, None
            if not self.ended:
                connection.close()  # unread bytes of an answer: the connection cannot be reused
            if self.on_close is not None:
                self.on_close()


@dataclass(frozen=True, slots=True)
class Failed:
    """A tier failed: a 5xx answer (with its body) or no usable answer at all."""

    code: int  # the tier's 5xx status, or 502 (unreachable/reset) or 504 (timed out)
    reason: str
    unreachable: bool = False  # True when no connection could be made at all
    headers: ResponseHeaders | None = None
    body: bytes = b""
    unanswered: bool = False  # the connection ended before any byte of an answer


def failure(err: UpstreamError, unreachable: bool = False) -> Failed:
    """What a broken call to a tier tells the caller."""
    if err.timed_out:
        return Failed(504, str(err))
    if unreachable:
        return Failed(502, f"unreachable: {err}", unreachable=True)
    return Failed(502, f"connection failed: {err}", unanswered=err.unanswered)


async def open_answer(
    connection: Connection, request: bytes, streamed: bool
) -> tuple[Opened | Failed, bool]:
    """Sends one encoded request (`http1.encode_request`) and reads as far as the first byte of
    its answer. The flag says whether the connection is still held by an open stream; if not,
    the caller gives it back (the pool keeps it only if it is reusable)."""
    started = time.perf_counter()
    try:
        status, headers = await connection.send(request)
    except UpstreamError as err:
        connection.close()
        return failure(err), False
    except BaseException:  # cancelled: the answer will not be read
        connection.close()
        raise
    return await read_answer(connection, status, headers, streamed, started)


async def read_answer(
    connection: Connection,
    status: int,
    headers: ResponseHeaders,
    streamed: bool,
    started: float,
) -> tuple[Opened | Failed, bool]:
    """`open_answer` from the answer's head on (status and headers arrived on `connection`):
    a request served inline (`inline`) goes on here, in a task, when its answer is not a
    stream that begins well."""
    held = False
    try:
        if status >= 500:
            body = await connection.read_all(_MAX_ERROR_BODY)
            return Failed(status, f"answered {status}", False, headers, body), False
        if not streamed:
            content = await connection.read_all()
            return Opened(status, headers, content, started, time.perf_counter()), False
        first = await connection.read()
        held = bool(first)  # else the body was empty, and read to its end
        opened = Opened(
            status, headers, first, started, time.perf_counter(), connection if held else None
        )
        return opened, held
    except UpstreamError as err:
        return failure(err), False
    finally:
        if not held and not connection.reusable:
            connection.close()
