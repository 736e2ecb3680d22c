"""Passing a stream on, from the tier's connection to the client's, as each piece arrives.

Two ways, the same bytes. With uvicorn's httptools server (the router's), the pieces are written
onto the client's transport from the very callback in which the tier's socket delivered them:
no task is woken, no ASGI message built, for each piece. That was most of what a streamed chunk
cost in Python; at 200 streams it took the router's CPU by a fifth, and the time to first token
p99 with it. It reads four attributes of uvicorn's `RequestResponseCycle` (its transport, its
flow control, whether the response is chunked and whether the client left), with uvicorn
pinned; any other server, or a response that is not chunked, goes through ASGI `send`.

The response head goes out in one write with what follows it (the first piece of a stream, the
whole of a plain answer): each write to a socket is a system call that runs the peer's side of
loopback TCP too, about as costly as the rest of passing a small answer on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol, cast

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from .asgi import Message, Send
from .inspect_answer import AnswerReader
from .upstream import Opened


async def relay(send: Send, start: Message, opened: Opened, reader: AnswerReader) -> None:
    """Sends the response head `start` and passes a stream on from its first bytes
    (`opened.first`) to its end, feeding each piece to `reader` once it is on its way to the client: the work of
    reading an answer is spread over its pieces, not left in one block at the end that would
    hold up every other stream. Raises UpstreamError when the tier fails mid-answer."""
    held = HeldWrites.around(send)
    if held is None:
        await send(start)
    else:
        async with held:
            await send(start)
    client = _client_side(send)
    if client is not None:
        await _onto_transport(client, opened, reader, held.written if held else b"")
        return
    if held is not None:
        held.release()
    # In a task of its own: each piece wakes the relay's one frame, not the dozen of the
    # request's (server, app, routing, proxy) that its task would resume through.
    await asyncio.ensure_future(_through_send(send, opened, reader))


async def _through_send(send: Send, opened: Opened, reader: AnswerReader) -> None:
    """`relay` through ASGI `send`. Whatever arrived from the tier while a send was under way is
    taken, and sent, in one piece."""
    connection = opened.connection
    data = opened.first
    while data:
        await send({"type": "http.response.body", "body": data, "more_body": True})
        reader.feed(data)
        assert connection is not None  # held by the stream until its end
        while (taken := connection.take()) is None:
            await connection.arrival()
        data = taken
    opened.ended = True


class _ClientSide(Protocol):
    """What a stream relay needs of uvicorn's httptools connection (`RequestResponseCycle`)."""

    transport: asyncio.Transport
    flow: FlowControl
    chunked_encoding: bool | None
    disconnected: bool


def _client_side(send: Send) -> _ClientSide | None:
    """The client's connection behind `send` when the server is uvicorn's httptools one and the
    response is being sent chunked; None otherwise (the relay then goes through `send`)."""
    cycle = getattr(send, "__self__", None)
    if type(cycle) is not RequestResponseCycle:
        return None
    client = cast(_ClientSide, cycle)
    if client.chunked_encoding is not True or client.disconnected:
        return None
    return client


async def _onto_transport(
    client: _ClientSide, opened: Opened, reader: AnswerReader, head: bytes
) -> None:
    """`_through_send` without a task step per piece: the tier's bytes are written onto the
    client's connection (framed as HTTP/1.1 chunks, as uvicorn frames them) from the callback in
    which they arrive. This task only waits for the end, and for the client when it is backed
    up."""
    transport, flow = client.transport, client.flow
    sink = chunk_sink(transport, flow, reader)
    connection = opened.connection
    assert connection is not None  # held by the stream until its end
    if not transport.is_closing():
        transport.write(b"%b%x\r\n%b\r\n" % (head, len(opened.first), opened.first))
    reader.feed(opened.first)
    if flow.write_paused:
        await flow.drain()
    connection.pass_on(sink)
    while connection.take() is None:
        if connection.held_back:
            await flow.drain()
            connection.resume()
        else:
            await connection.arrival()
    opened.ended = True


def chunk_sink(
    transport: asyncio.Transport, flow: FlowControl, reader: AnswerReader
) -> Callable[[bytes], bool]:
    """A stream's sink (`http1.Connection.pass_on`) onto the client's transport: each piece
    written as an HTTP/1.1 chunk (unless the client left, and its request is being ended), then
    read; False while the client's side is backed up."""

    def sink(data: bytes) -> bool:
        if not transport.is_closing():
            transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        reader.feed(data)
        return not flow.write_paused

    return sink


async def send_whole(send: Send, start: Message, body: bytes) -> None:
    """Sends a response head `start` and its whole `body` (in one write with uvicorn's server)."""
    held = HeldWrites.around(send)
    message = {"type": "http.response.body", "body": body, "more_body": False}
    if held is None:
        await send(start)
        await send(message)
        return
    async with held:
        await send(start)
        await send(message)
    held.release()


class HeldWrites:
    """Stands in for the transport of uvicorn's `RequestResponseCycle` while ASGI messages are
    sent through it: what they write is kept (`written`), to go out in one write with what
    follows; closing waits for that write too (`release`)."""

    def __init__(self, cycle: Any) -> None:
        self._cycle = cycle
        self.transport: asyncio.Transport = cycle.transport
        self._parts: list[bytes] = []
        self._close = False

    @staticmethod
    def around(send: Send) -> HeldWrites | None:
        cycle = getattr(send, "__self__", None)
        return HeldWrites(cycle) if type(cycle) is RequestResponseCycle else None

    async def __aenter__(self) -> None:
        self._cycle.transport = self

    async def __aexit__(self, *exc: object) -> None:
        self._cycle.transport = self.transport

    @property
    def written(self) -> bytes:
        return b"".join(self._parts)

    def release(self) -> None:
        """Writes what was kept, and closes the connection if a message asked to."""
        if self._parts and not self.transport.is_closing():
            self.transport.write(self.written)
        if self._close:
            self.transport.close()

    # -- the transport's methods uvicorn's send uses

    def write(self, data: bytes) -> None:
        self._parts.append(data)

    def close(self) -> None:
        self._close = True

    def is_closing(self) -> bool:
        return self.transport.is_closing()
