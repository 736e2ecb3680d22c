"""The router's HTTP/1.1 client leg (`router/http1.py`, with `pool` and `upstream` on top), against
scripted servers on loopback that write exactly the bytes each test needs: framing, keep-alive,
streams read as they arrive (merged only when they arrived together), backpressure, and every
way a tier can fail."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from quantrollout.router import http1
from quantrollout.router.http1 import (
    HIGH_WATER,
    ConnectError,
    Connection,
    Origin,
    UpstreamError,
    encode_request,
)
from quantrollout.router.pool import Slots, Upstreams
from quantrollout.router.settings import RouterSettings
from quantrollout.router.upstream import Failed, Opened

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """The request line, headers (lower-case names) and body a client sent."""
    head = await reader.readuntil(b"\r\n\r\n")
    line, *lines = head[:-4].split(b"\r\n")
    headers = dict(h.split(b": ", 1) for h in lines)
    headers = {k.lower(): v for k, v in headers.items()}
    body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return line, headers, body


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[Origin]:
    """A loopback server running `handler` for each connection."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield Origin.parse(f"http://127.0.0.1:{port}")
    finally:
        server.close()


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)


async def request(connection: Connection, origin: Origin, body: bytes = b"{}") -> int:
    status, _ = await connection.send(encode_request(origin, "/v1/completions", body, []))
    return status


# -- the request


def test_a_request_is_one_piece_with_host_length_and_the_base_path() -> None:
    origin = Origin.parse("http://tier.llm.svc:8000/prefix/")
    data = encode_request(origin, "/v1/chat/completions?x=1", b'{"a":1}', [(b"x-user-id", b"u")])
    assert data == (
        b"POST /prefix/v1/chat/completions?x=1 HTTP/1.1\r\nhost: tier.llm.svc:8000\r\n"
        b'content-length: 7\r\nx-user-id: u\r\n\r\n{"a":1}'
    )


def test_origins() -> None:
    assert Origin.parse("https://h").port == 443
    assert Origin.parse("https://h").host_header == b"h"
    assert Origin.parse("http://h:80").host_header == b"h"
    assert Origin.parse("http://[::1]:81").host_header == b"[::1]:81"
    with pytest.raises(ValueError, match="origin"):
        Origin.parse("ftp://h")


def test_a_path_with_spaces_is_escaped_not_sent_raw() -> None:
    data = encode_request(Origin.parse("http://h"), "/v1/x y", b"", [])
    assert data.startswith(b"POST /v1/x%20y HTTP/1.1\r\n")


async def request_and_read(connection: Connection, origin: Origin) -> bytes:
    await request(connection, origin)
    return await connection.read_all()


# -- answers and keep-alive


async def test_answers_are_read_whole_and_the_connection_is_kept() -> None:
    seen: list[bytes] = []
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        for n in range(2):
            line, headers, body = await read_request(reader)
            seen.append(line + b" " + headers[b"host"] + b" " + body)
            writer.write(ok(b"answer %d" % n, b"content-type: application/json\r\n"))
            await writer.drain()

    async with serving(handler) as origin:
        connection = await Connection.open(origin, None, 5, 5)
        for n in range(2):
            status, headers = await connection.send(
                encode_request(origin, "/v1/completions", b"q%d" % n, [])
            )
            assert (status, headers.get("Content-Type")) == (200, "application/json")
            assert await connection.read_all() == b"answer %d" % n
            assert connection.reusable
        connection.close()
    assert connections == 1
    assert seen[1] == b"POST /v1/completions HTTP/1.1 " + origin.host_header + b" q1"


async def test_connection_close_and_a_body_until_eof_are_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it")
        writer.close()

    async with serving(handler) as origin:
        connection = await Connection.open(origin, None, 5, 5)
        assert await request(connection, origin) == 200
        assert await connection.read_all() == b"all of it"
        assert not connection.reusable

    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok(b"bye", b"connection: close\r\n"))
        await writer.drain()

    async with serving(closing) as origin:
        connection = await Connection.open(origin, None, 5, 5)
        assert await request(connection, origin) == 200
        assert await connection.read_all() == b"bye"
        assert not connection.reusable


async def test_an_interim_100_answer_is_skipped() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"x"))
        await writer.drain()
        await reader.read()

    async with serving(handler) as origin:
        connection = await Connection.open(origin, None, 5, 5)
        assert await request(connection, origin) == 200
        assert await connection.read_all() == b"x"
        connection.close()


# -- streams


async def test_a_stream_is_read_as_it_arrives_and_what_arrived_together_in_one_piece() -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(STREAM_HEAD + chunk(b"data: 1\n\n"))
        await writer.drain()
        await release.wait()
        writer.write(chunk(b"data: 2\n\n") + chunk(b"data: 3\n\n") + chunk(b"data: 4\n\n"))
        await writer.drain()
        await release.wait()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with serving(handler) as origin:
        connection = await Connection.open(origin, None, 5, 5)
        assert await request(connection, origin) == 200
        assert await connection.read() == b"data: 1\n\n"  # before the rest was even written
        release.set()
        got = await connection.read()
        while got.count(b"data:") < 3:  # TCP may split what was written at once; never merge less
            got += await connection.read()
        assert got == b"data: 2\n\ndata: 3\n\ndata: 4\n\n"
        assert await connection.read() == b""
        assert connection.reusable
        connection.close()


class StallingTier:
    """A tier that streams 4 KiB chunks until its socket takes no more for a second (the reader
    stopped reading), with a bound far past every buffer for a reader that never stops; then it
    ends the stream. `written` counts the bytes of data it sent."""

    def __init__(self) -> None:
        self.written = 0
        self.stuck, self.done_writing = asyncio.Event(), asyncio.Event()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(STREAM_HEAD)
        data = b"x" * 4096
        piece = chunk(data)
        try:
            while not self.stuck.is_set() and self.written < 1024 * HIGH_WATER:
                writer.write(piece)
                self.written += len(data)
                try:
                    await asyncio.wait_for(writer.drain(), 1)
                except TimeoutError:
                    self.stuck.set()
            self.done_writing.set()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except ConnectionError:
            pass


async def test_a_reader_that_does_not_read_stops_the_socket() -> None:
    tier = StallingTier()
    async with serving(tier) as origin:
        connection = await Connection.open(origin, None, 5, 60)
        assert await request(connection, origin) == 200
        await asyncio.wait_for(tier.done_writing.wait(), 120)
        assert tier.stuck.is_set()  # else the whole stream went into the router's memory
        # What waits here is about HIGH_WATER (plus what one socket read brought at most).
        assert connection.buffered <= HIGH_WATER + (256 << 10)
        total = 0
        while data := await connection.read():
            total += len(data)
        assert total == tier.written
        connection.close()


async def until_end(connection: Connection) -> None:
    """What a relay does once it passed the stream on: wait for the end (or the failure)."""
    while connection.take() is None:
        await connection.arrival()


async def test_a_passed_on_stream_goes_to_the_sink_as_it_arrives_with_no_waiter_woken() -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(STREAM_HEAD + chunk(b"data: 1\n\n"))
        await writer.drain()
        await release.wait()
        writer.write(chunk(b"data: 2\n\n"))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(chunk(b"data: 3\n\n") + b"0\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with serving(handler) as origin:
        connection = await Connection.open(origin, None, 5, 5)
        assert await request(connection, origin) == 200
        first = await connection.read()
        got: list[bytes] = []
        arrived = asyncio.Event()

        def sink(data: bytes) -> bool:
            got.append(data)
            arrived.set()
            return True

        connection.pass_on(sink)
        waiter = connection.arrival()
        release.set()
        await arrived.wait()
        assert got == [b"data: 2\n\n"]  # handed over by the socket's callback ...
        assert not waiter.done()  # ... and nobody woken for it
        await waiter  # woken once: at the end
        assert connection.take() == b""
        assert [first, *got] == [b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"]
        assert connection.reusable
        connection.close()


@pytest.mark.parametrize("framing", ["chunked", "until-close"])
async def test_pieces_sooner_than_the_pace_go_on_together_and_the_end_waits_for_nothing(
    monkeypatch: pytest.MonkeyPatch, framing: str
) -> None:
    monkeypatch.setattr(http1, "PACE", 0.3)  # far longer than the test's own steps
    passed = asyncio.Event()
    until_close = framing == "until-close"

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n"
        frame = (lambda data: data) if until_close else chunk
        writer.write((head if until_close else STREAM_HEAD) + frame(b"data: 0\n\n"))
        await writer.drain()
        await passed.wait()  # passed on: piece 1 goes at once, 2 and 3 come within the pace
        for n in (1, 2, 3):  # 2 and 3 apart: without pacing, two writes
            writer.write(frame(b"data: %d\n\n" % n))
            await writer.drain()
            if n == 1:
                passed.clear()
                await passed.wait()
            await asyncio.sleep(0.01)
        if until_close:
            writer.close()  # the end of the body: the held piece goes on at once
        else:
            writer.write(b"0\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with serving(handler) as origin:
        connection = await Connection.open(origin, None, 5, 5)
        assert await request(connection, origin) == 200
        got = [await connection.read()]

        def sink(data: bytes) -> bool:
            got.append(data)
            passed.set()
            return True

        connection.pass_on(sink)
        passed.set()
        await until_end(connection)
        assert b"".join(got) == b"data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\n"
        assert got[1:] == [b"data: 1\n\n", b"data: 2\n\ndata: 3\n\n"]  # 2 and 3: one write
        connection.close()


async def test_a_sink_that_is_backed_up_stops_the_socket_until_resumed() -> None:
    tier = StallingTier()
    async with serving(tier) as origin:
        connection = await Connection.open(origin, None, 5, 60)
        assert await request(connection, origin) == 200
        received = len(await connection.read())
        backed_up = True

        def sink(data: bytes) -> bool:
            nonlocal received
            received += len(data)
            return not backed_up

        connection.pass_on(sink)
        await connection.arrival()  # woken: the sink said it is backed up
        assert connection.held_back
        await asyncio.wait_for(tier.done_writing.wait(), 120)
        assert tier.stuck.is_set()  # the tier could not write on: nothing piled up in the router
        assert received <= HIGH_WATER + (256 << 10)
        backed_up = False
        connection.resume()
        await until_end(connection)
        assert received == tier.written
        connection.close()


async def test_a_passed_on_stream_times_out_only_when_the_tier_goes_silent() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(STREAM_HEAD)
        for _ in range(8):  # 0.8 s of answer, a piece every 0.1 s: never 0.3 s without one
            writer.write(chunk(b"data: x\n\n"))
            await writer.drain()
            await asyncio.sleep(0.1)
        await reader.read()  # then silence

    async with serving(handler) as origin:
        connection = await Connection.open(origin, None, 5, read_timeout=0.3)
        assert await request(connection, origin) == 200
        pieces = [await connection.read()]
        connection.pass_on(lambda data: pieces.append(data) is None)
        with pytest.raises(UpstreamError) as failed:
            await until_end(connection)
        assert failed.value.timed_out
        assert b"".join(pieces) == b"data: x\n\n" * 8
        connection.close()


async def ask(upstreams: Upstreams, origin: Origin, streamed: bool = False) -> Opened | Failed:
    """One request to `origin` through the pool."""
    return await upstreams.open(
        f"http://127.0.0.1:{origin.port}", "/v1/completions", b"{}", [], streamed
    )


# -- failures


async def serve_once(script: bytes, close: bool = True) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(script)
        await writer.drain()
        if close:
            writer.close()
        else:
            await reader.read()

    return handler


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        (b"", "closed before an answer"),  # closed without a word
        (b"HTTP/1.1 200 OK\r\ncontent-le", "closed before an answer"),  # closed mid-headers
        (STREAM_HEAD + chunk(b"data: 1\n\n"), "closed mid-answer"),
        (ok(b"0123456789")[:-4], "closed mid-answer"),  # closed before the declared length
        (b"HTTP/1.1 200 OK\r\ncontent-length: nope\r\n\r\n", "malformed answer"),
        (b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: x\r\n\r\n..",
         "switched protocols"),
    ],
)  # fmt: skip
async def test_a_broken_answer_raises(script: bytes, reason: str) -> None:
    async with serving(await serve_once(script)) as origin:
        connection = await Connection.open(origin, None, 5, 5)
        with pytest.raises(UpstreamError, match=reason) as failed:
            await request_and_read(connection, origin)
        assert not failed.value.timed_out
        assert not connection.reusable


async def test_a_silent_tier_times_out() -> None:
    async with serving(await serve_once(STREAM_HEAD, close=False)) as origin:
        connection = await Connection.open(origin, None, 5, 0.2)
        assert await request(connection, origin) == 200
        with pytest.raises(UpstreamError) as failed:
            await connection.read()
        assert failed.value.timed_out
        connection.close()


async def test_nobody_listening_is_a_connect_error() -> None:
    async with serving(await serve_once(b"")) as origin:
        pass  # closed: the port is free again
    with pytest.raises(ConnectError):
        await Connection.open(origin, None, 5, 5)


# -- the pool


async def test_the_pool_reuses_connections_and_drops_those_the_tier_closed() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(ok(b"one"))
        await writer.drain()
        await read_request(reader)
        writer.write(ok(b"two"))
        await writer.drain()
        writer.close()  # as a tier closes a connection that idled past its keep-alive

    async with serving(handler) as origin:
        upstreams = Upstreams(RouterSettings())
        answers = []
        for _ in range(3):
            opened = await ask(upstreams, origin)
            assert isinstance(opened, Opened)
            answers.append(opened.first)
            await asyncio.sleep(0.05)  # lets the close reach the client
        await upstreams.aclose()
    assert answers == [b"one", b"two", b"one"]
    assert connections == 2


async def test_a_request_the_tier_closed_the_kept_connection_on_goes_once_more_on_a_new_one() -> (
    None
):
    connections: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections) + 1)
        first = len(connections) == 1
        await read_request(reader)
        writer.write(ok(b"one" if first else b"again"))
        await writer.drain()
        if first:
            # The next request arrives just as this tier gives up on the idle connection:
            # closed, and not a byte of an answer.
            await read_request(reader)
            writer.close()
        else:
            await reader.read()

    async with serving(handler) as origin:
        upstreams = Upstreams(RouterSettings())
        first = await ask(upstreams, origin)
        assert isinstance(first, Opened)
        second = await ask(upstreams, origin)
        assert isinstance(second, Opened), second
        assert (first.first, second.first) == (b"one", b"again")
        assert connections == [1, 2]
        await upstreams.aclose()


@pytest.mark.parametrize(
    ("kept", "last_words"),
    [
        (True, b"HTTP/1.1 200 OK\r\ncontent-le"),  # on a kept connection, it began to answer
        (False, b""),  # on a new connection, it said nothing
    ],
)
async def test_a_request_the_tier_took_and_died_on_is_not_sent_again(
    kept: bool, last_words: bytes
) -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        if kept:
            await read_request(reader)
            writer.write(ok(b"one"))
            await writer.drain()
        await read_request(reader)
        writer.write(last_words)  # then died: sending the request again is not safe
        await writer.drain()
        writer.close()

    async with serving(handler) as origin:
        upstreams = Upstreams(RouterSettings())
        if kept:
            assert isinstance(await ask(upstreams, origin), Opened)
        failed = await ask(upstreams, origin)
        assert isinstance(failed, Failed)
        assert failed.code == 502
        assert connections == 1
        await upstreams.aclose()


async def test_a_stream_closed_early_gives_its_slot_back_but_not_its_connection() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(STREAM_HEAD + chunk(b"data: 1\n\n"))
        await writer.drain()
        await reader.read()

    async with serving(handler) as origin:
        upstreams = Upstreams(RouterSettings(max_connections=1, connect_timeout=0.5))
        first = await ask(upstreams, origin, streamed=True)
        assert isinstance(first, Opened)
        assert first.first == b"data: 1\n\n"
        busy = await ask(upstreams, origin, streamed=True)
        assert isinstance(busy, Failed)
        assert busy.code == 504  # the only slot is held by the open stream
        await first.close()
        again = await ask(upstreams, origin, streamed=True)
        assert isinstance(again, Opened)
        await again.close()
        await upstreams.aclose()
    assert connections == 2  # the half-read answer's connection was not reused


async def test_the_pool_turns_failures_into_answers_for_the_caller() -> None:
    async with serving(await serve_once(b"")) as origin:
        pass
    upstreams = Upstreams(RouterSettings())
    gone = await upstreams.open(f"http://127.0.0.1:{origin.port}", "/", b"", [], False)
    assert isinstance(gone, Failed)
    assert (gone.code, gone.unreachable) == (502, True)

    error = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy"
    async with serving(await serve_once(error, close=False)) as origin:
        failed = await upstreams.open(f"http://127.0.0.1:{origin.port}", "/", b"", [], True)
    assert isinstance(failed, Failed)
    assert (failed.code, failed.body, failed.unreachable) == (503, b"busy", False)
    await upstreams.aclose()


# -- callers that are callbacks (a request served inline)


async def test_a_listener_is_called_from_the_socket_callback_with_the_head_then_the_end() -> None:
    answer = STREAM_HEAD + chunk(b"data: 1\n\n") + b"0\r\n\r\n"
    async with serving(await serve_once(answer, close=False)) as o:
        connection = await Connection.open(o, None, 5, 5)
        calls: list[tuple[UpstreamError | None, bool, int, bool]] = []
        arrived = asyncio.Event()

        def heard(error: UpstreamError | None) -> None:
            # No task runs this: it is the socket's callback, so no `await` and no loop turn.
            assert asyncio.current_task() is None
            calls.append((error, connection.head() is not None, connection.buffered,
                          connection.ended))  # fmt: skip
            if connection.ended or error is not None:
                arrived.set()
            else:
                connection.listen(heard)

        connection.start(encode_request(o, "/v1/completions", b"{}", []))
        assert connection.head() is None
        connection.listen(heard)
        await asyncio.wait_for(arrived.wait(), 5)
        assert calls[-1] == (None, True, len(b"data: 1\n\n"), True)
        assert all(error is None and head for error, head, _, _ in calls)
        status, headers = connection.head() or (0, None)
        assert status == 200
        assert headers is not None
        assert headers.get("content-type") == "text/event-stream"
        assert connection.take() == b"data: 1\n\n"
        assert connection.take() == b""  # the end: the connection is free again
        assert connection.reusable
        connection.close()


async def test_a_listener_hears_a_silent_tier_as_a_timeout_and_a_closed_one_as_a_failure() -> None:
    async with serving(await serve_once(STREAM_HEAD, close=False)) as origin:
        connection = await Connection.open(origin, None, 5, 0.2)
        heard: asyncio.Future[UpstreamError | None] = asyncio.get_running_loop().create_future()

        def listener(error: UpstreamError | None) -> None:
            if error is None:  # the head came; the first bytes never will
                connection.listen(listener)
            else:
                heard.set_result(error)

        connection.start(encode_request(origin, "/v1/completions", b"{}", []))
        connection.listen(listener)
        error = await asyncio.wait_for(heard, 5)
        assert error is not None
        assert error.timed_out
        connection.close()
    async with serving(await serve_once(b"")) as origin:
        connection = await Connection.open(origin, None, 5, 5)
        closed: asyncio.Future[UpstreamError | None] = asyncio.get_running_loop().create_future()
        connection.start(encode_request(origin, "/v1/completions", b"{}", []))
        connection.listen(closed.set_result)
        assert await asyncio.wait_for(closed, 5) is None  # woken: the answer will not come
        failed = connection.failure()
        assert failed is not None
        assert failed.unanswered
        with pytest.raises(UpstreamError):
            connection.listen(lambda e: None)  # already failed: raises at once, as `arrival`


async def test_an_idle_connection_is_taken_at_once_or_not_at_all() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(ok(b"{}"))
            await writer.drain()

    async with serving(handler) as origin:
        upstreams = Upstreams(RouterSettings(max_connections=2, connect_timeout=0.2))
        assert upstreams.take_idle(origin) is None  # nothing idle yet: `open` would connect
        assert isinstance(await ask(upstreams, origin), Opened)
        connection = upstreams.take_idle(origin)
        assert connection is not None
        assert upstreams.take_idle(origin) is None  # the one idle connection is taken
        # Its slot is held: one more request fits, the next waits and times out.
        held = await ask(upstreams, origin, streamed=True)
        assert isinstance(held, Opened)
        busy = await ask(upstreams, origin)
        assert isinstance(busy, Failed)
        assert busy.code == 504
        await held.close()
        upstreams.give_back(origin, connection)
        assert upstreams.take_idle(origin) is connection  # kept: it was reusable
        assert upstreams.take_idle(origin) is None
        upstreams.give_back(origin, connection)
        await upstreams.aclose()


async def test_slots_go_to_waiters_first_and_a_timed_out_or_cancelled_wait_holds_none() -> None:
    slots = Slots(1)
    assert slots.take_now()
    assert not slots.take_now()
    assert not await slots.take(0.05)  # timed out: holds nothing
    waiting = asyncio.ensure_future(slots.take(5))
    await asyncio.sleep(0)
    slots.give()
    assert not slots.take_now()  # the slot went to the waiter, not to whoever asks now
    assert await waiting
    cancelled = asyncio.ensure_future(slots.take(5))
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    slots.give()
    assert slots.take_now()  # the cancelled waiter did not keep it
    slots.give()
    assert slots.take_now()
    assert not slots.take_now()
