"""One call to one tier: send the request, and hand back either an answer ready to pass on or a
failure the caller may retry elsewhere. With `pool`, the only modules that speak HTTP to tiers.

The request goes straight to an httpx transport (one pooled keep-alive connection, see `pool`),
not through an `httpx.AsyncClient`: a client keeps a cookie jar, and a proxy must never store
one user's cookies and send them with another user's request; it would also follow redirects
and spend more CPU per request than the proxying itself.

An `Opened` answer has its status and headers and, for a stream, its first body chunk already
read: a tier that accepts a request and then fails before its first byte still counts as a
failure that can fall back to the baseline, because nothing has reached the client yet.
A non-streamed answer is read whole (it is one JSON document, and it is inspected anyway).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import httpx

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


def response_headers(headers: httpx.Headers, tier: str) -> list[tuple[bytes, bytes]]:
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
    headers: httpx.Headers
    first: bytes  # the body if not streamed, else its first chunk (b"" for an empty body)
    started: float  # time.perf_counter() when the request was sent
    first_byte: float  # when `first` arrived
    response: httpx.Response | None = None  # still open for a stream; None once read whole
    chunks: AsyncIterator[bytes] | None = None  # the open stream's body, after `first`
    on_close: Callable[[], None] | None = None  # called once, when the stream is closed

    async def rest(self) -> AsyncIterator[bytes]:
        """The stream's remaining chunks, as they arrive; closes the response at the end."""
        if self.chunks is None:
            return
        try:
            async for chunk in self.chunks:
                if chunk:
                    yield chunk
        finally:
            await self.close()

    async def close(self) -> None:
        if self.response is not None:
            response, self.response = self.response, None
            try:
                await response.aclose()
            finally:
                if self.on_close is not None:
                    self.on_close()


@dataclass(frozen=True, slots=True)
class Failed:
    """A tier failed: a 5xx answer (with its body) or no usable answer at all."""

    code: int  # the tier's 5xx status, or 502 (unreachable/reset) or 504 (timed out)
    reason: str
    unreachable: bool = False  # True when no connection could be made at all
    headers: httpx.Headers | None = None
    body: bytes = b""


def timeout_extension(connect: float, read: float) -> dict[str, float]:
    """The per-request timeouts, as httpx transports read them from the request's extensions."""
    return {"connect": connect, "read": read, "write": read, "pool": connect}


async def open_answer(
    transport: httpx.AsyncBaseTransport,
    url: httpx.URL,
    body: bytes,
    headers: Headers,
    streamed: bool,
    timeouts: dict[str, float],
) -> Opened | Failed:
    """Sends one request to a tier and reads as far as the first byte of its answer."""
    started = time.perf_counter()
    request = httpx.Request(
        "POST", url, content=body, headers=list(headers), extensions={"timeout": timeouts}
    )
    response: httpx.Response | None = None
    try:
        response = await transport.handle_async_request(request)
        response.request = request
        if response.status_code >= 500:
            return await _failed_answer(response)
        if not streamed:
            content = await response.aread()
            return Opened(
                response.status_code, response.headers, content, started, time.perf_counter()
            )
        chunks = response.aiter_raw()
        first = b""
        async for chunk in chunks:
            if chunk:
                first = chunk
                break
        opened = Opened(
            response.status_code, response.headers, first, started, time.perf_counter(),
            response, chunks,
        )  # fmt: skip
        response = None  # handed over: the caller closes it
        return opened
    except httpx.TimeoutException as err:
        return Failed(504, f"timed out ({type(err).__name__})")
    except httpx.ConnectError as err:
        return Failed(502, f"unreachable: {err or type(err).__name__}", unreachable=True)
    except httpx.TransportError as err:
        return Failed(502, f"connection failed: {err or type(err).__name__}")
    finally:
        if response is not None:
            await response.aclose()


async def _failed_answer(response: httpx.Response) -> Failed:
    body = b""
    try:
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) >= _MAX_ERROR_BODY:
                break
    except httpx.HTTPError:
        pass  # the status already says it failed; the body is only a courtesy
    return Failed(
        response.status_code, f"answered {response.status_code}", False, response.headers, body
    )
