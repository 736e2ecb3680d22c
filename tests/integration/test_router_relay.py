"""How the router passes a stream on (`router/relay.py`): straight onto the client's connection
under uvicorn, with a slow client slowing the tier down instead of filling the router's memory;
and through plain ASGI `send` under any other server, with the same bytes and signals."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest

from quantrollout import signals
from quantrollout.router.app import RouterApp
from quantrollout.router.server import RunningRouter
from quantrollout.router.settings import RouterSettings
from quantrollout.router.source import StaticConfigSource

from .test_router_proxy import (
    BASE,
    BASE_SVC,
    MODEL,
    NS,
    QM,
    TARGET_SVC,
    Sim,
    read_request,
    rig,
    routed,
    traffic,
)


def event(content: str) -> bytes:
    chunk = {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": content}}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def chunked(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def dechunk(body: bytes) -> bytes:
    out, rest = [], body
    while True:
        size_line, rest = rest.split(b"\r\n", 1)
        size = int(size_line, 16)
        if size == 0:
            return b"".join(out)
        out.append(rest[:size])
        rest = rest[size + 2 :]


async def test_a_client_that_stops_reading_stops_the_tier_and_then_gets_every_byte() -> None:
    piece = event("x" * 4000)
    written = 0
    stuck, done_writing = asyncio.Event(), asyncio.Event()

    async def tier(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal written
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        # Until the tier cannot write on (the router stopped reading it), with a bound far past
        # every buffer on the way for a router that would keep everything.
        while not stuck.is_set() and written < 256 << 20:
            writer.write(chunked(piece))
            written += len(piece)
            try:
                await asyncio.wait_for(writer.drain(), 1)
            except TimeoutError:
                stuck.set()
        done_writing.set()
        writer.write(chunked(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        await writer.drain()
        await reader.read()

    server = await asyncio.start_server(tier, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with rig(traffic(), url, url) as r:
            host, port = r.client.base_url.host, r.client.base_url.port
            reader, writer = await asyncio.open_connection(host, port)
            body = json.dumps({"model": MODEL, "messages": [], "stream": True}).encode()
            writer.write(
                b"POST /v1/chat/completions HTTP/1.1\r\nhost: router\r\n"
                b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%b"
                % (len(body), body)
            )
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            assert b"transfer-encoding: chunked" in head
            # The client reads nothing more: the tier must get stuck, not the router fill up.
            await asyncio.wait_for(done_writing.wait(), 120)
            assert stuck.is_set(), f"the router took all {written} bytes without a reader"
            received = b""
            while not received.endswith(b"0\r\n\r\n"):
                more = await asyncio.wait_for(reader.read(1 << 20), 30)
                assert more, "the router closed the stream early"
                received += more
            writer.close()
        data = dechunk(received)
        assert len(data) == written + len(b"data: [DONE]\n\n")
        assert data == piece * (written // len(piece)) + b"data: [DONE]\n\n"
    finally:
        server.close()


@pytest.fixture
def base() -> Iterator[Sim]:
    sim = Sim(BASE)
    try:
        yield sim
    finally:
        sim.stop()


async def test_under_another_asgi_server_a_stream_goes_through_send_alike(base: Sim) -> None:
    """httpx's in-process ASGI transport is not uvicorn: the relay takes the `send` way."""
    base.configure(token_delay_ms=1)
    source = StaticConfigSource([routed(traffic())])
    upstreams = {(NS, BASE_SVC): base.url, (NS, TARGET_SVC): base.url}
    app = RouterApp(source, RouterSettings(upstreams=upstreams))
    await app.startup()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:
            body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
            streamed = await client.post(
                "/v1/chat/completions", json={**body, "stream": True, "max_tokens": 12}
            )
        assert streamed.status_code == 200
        events = [e for e in streamed.text.split("\n\n") if e.startswith("data: {")]
        assert len(events) >= 12
        assert streamed.text.rstrip().endswith("data: [DONE]")
        labels = {"namespace": NS, "model": QM, "tier": BASE, "class": ""}
        registry = app.metrics.registry
        assert registry.get_sample_value(signals.ROUTER_RESPONSES, labels) == 1
        assert registry.get_sample_value(signals.ROUTER_OUTPUT_TOKENS, labels) == 12
    finally:
        await app.shutdown()


@pytest.mark.parametrize("stream", [False, True])
async def test_a_client_that_asks_to_close_gets_the_whole_answer_then_the_end(
    base: Sim, stream: bool
) -> None:
    """The head goes out with what follows it, in one write; the close uvicorn does for
    `connection: close` waits for that write."""
    base.configure(token_delay_ms=1)
    upstreams = {(NS, BASE_SVC): base.url, (NS, TARGET_SVC): base.url}
    app = RouterApp(StaticConfigSource([routed(traffic())]), RouterSettings(upstreams=upstreams))
    async with RunningRouter(app) as router:
        reader, writer = await asyncio.open_connection(router.host, router.port)
        body = json.dumps(
            {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": stream,
             "max_tokens": 8}
        ).encode()  # fmt: skip
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: router\r\nconnection: close\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body)
        )
        received = await asyncio.wait_for(reader.read(), 10)  # to the end: the router closed
        writer.close()
    head, _, payload = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"connection: close" in head.lower()
    if stream:
        assert b"transfer-encoding: chunked" in head.lower()
        assert dechunk(payload).rstrip().endswith(b"data: [DONE]")
    else:
        answer = json.loads(payload)
        assert answer["choices"][0]["message"]["content"]
