"""Completions served inline (router/inline.py): once the pool holds an idle connection to a
tier, a stream is written to the tier and passed on from socket callbacks, and every way the
tier can go wrong before the first byte goes on as the task it would have been, with the same
answer. The tier here is a real HTTP server on loopback that keeps its connections alive and
answers each request as its script says, so the second request of a test is the inline one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from quantrollout import signals

from .test_router_proxy import (
    BASE,
    MODEL,
    TARGET,
    Rig,
    Sim,
    chat,
    read_request,
    rig,
    sse_text,
    stops_generating,
    tier_of,
    traffic,
)

WORDS = ["Hel", "lo ", "from ", "the ", "scripted ", "tier", "."]


def event(content: str) -> bytes:
    delta = {"choices": [{"index": 0, "delta": {"content": content}}]}
    return b"data: " + json.dumps(delta).encode() + b"\n\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
ANSWER = b"".join(event(w) for w in WORDS) + b"data: [DONE]\n\n"


def dechunk(raw: bytes) -> tuple[bytes, bytes]:
    """The body of one chunked HTTP/1.1 message at the start of `raw`, and what follows it."""
    data, rest = bytearray(), raw
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return bytes(data), rest.removeprefix(b"\r\n")
        data += rest[:size]
        rest = rest[size + 2 :]


def post(body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: router\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n%b\r\n%b" % (len(body), extra, body)
    )


async def read_responses(reader: asyncio.StreamReader, count: int) -> list[tuple[bytes, bytes]]:
    """`count` chunked responses read off one connection: (head, body) each."""
    raw = b""
    while raw.count(b"\r\n0\r\n\r\n") < count:
        more = await asyncio.wait_for(reader.read(1 << 16), 10)
        assert more, "the router closed the connection early"
        raw += more
    out = []
    for _ in range(count):
        head, _, rest = raw.partition(b"\r\n\r\n")
        body, raw = dechunk(rest)
        out.append((head, body))
    return out


STREAM = json.dumps({"model": MODEL, "messages": [], "stream": True}).encode()


@asynccontextmanager
async def scripted_tier(*script: str) -> AsyncIterator[str]:
    """A tier that answers its requests, on kept-alive connections, as `script` says in turn
    (then "ok"): "ok" a stream of WORDS; "500" an error answer; "close" the connection closed
    as the request came; "head" the head, then the connection dropped; "cut" the head and the
    first event, then dropped; "stall" the head, then nothing."""
    steps = list(script)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await read_request(reader)
                step = steps.pop(0) if steps else "ok"
                if step == "close":
                    writer.transport.abort()
                    return
                if step == "500":
                    body = b'{"error": {"message": "out of memory", "code": 500}}'
                    writer.write(
                        b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json"
                        b"\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body)
                    )
                    continue
                writer.write(HEAD)
                await writer.drain()
                if step == "stall":
                    await asyncio.sleep(30)
                if step == "head":
                    writer.transport.abort()
                    return
                for n, word in enumerate(WORDS):
                    writer.write(chunk(event(word)))
                    await writer.drain()
                    if step == "cut":
                        writer.transport.abort()
                        return
                    await asyncio.sleep(0.005 if n else 0)
                writer.write(chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


async def answered(r: Rig) -> tuple[str, bytes]:
    """One stream through the router: the tier that answered, and the bytes."""
    resp, chunks = await r.stream(chat())
    assert resp.status_code == 200
    return tier_of(resp) if "x-vllmsim-tier" in resp.headers else "script", b"".join(chunks)


@pytest.fixture
def base(sims: tuple[Sim, Sim]) -> Sim:
    return sims[0].reset()


def asgi_tasks() -> list[str]:
    """From now on, the ASGI tasks the loop starts (uvicorn's `run_asgi`), by name."""
    started: list[str] = []
    loop = asyncio.get_running_loop()

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> asyncio.Task[Any]:
        name = getattr(coro, "__qualname__", "")
        if name.endswith("run_asgi"):
            started.append(name)
        return asyncio.Task(coro, loop=loop, **kw)

    loop.set_task_factory(factory)
    return started


async def test_a_warm_stream_is_served_inline_with_the_same_bytes_and_counts(base: Sim) -> None:
    async with scripted_tier() as url, rig(traffic(weight=100), base.url, url) as r:
        tasks = asgi_tasks()
        cold = await answered(r)
        assert r.admission.served_inline == 0  # no idle connection yet: the task connected
        assert len(tasks) == 1
        warm = await answered(r)
        assert r.admission.served_inline == 1
        assert len(tasks) == 1  # no task for the inline one
        asyncio.get_running_loop().set_task_factory(None)
        assert cold == warm == ("script", ANSWER)
        assert r.value(signals.ROUTER_REQUESTS, TARGET, code="200") == 2
        assert r.value(signals.ROUTER_RESPONSES, TARGET) == 2  # both inspected
        assert r.value(signals.ROUTER_TTFT + "_count", TARGET) == 2
        assert r.admission.inflight == 0


async def test_a_5xx_after_a_warm_start_falls_back_to_the_baseline(base: Sim) -> None:
    async with scripted_tier("ok", "500") as url, rig(traffic(weight=100), base.url, url) as r:
        await answered(r)
        tier, raw = await answered(r)
        assert tier == BASE
        assert sse_text([raw])[1]
        assert r.value(signals.ROUTER_REQUESTS, TARGET, code="500") == 1
        assert r.value(signals.ROUTER_FALLBACKS, TARGET) == 1
        assert r.admission.served_inline == 0  # the fallback went on as a task
        assert r.admission.inflight == 0


@pytest.mark.parametrize("step", ["head", "stall"])
async def test_no_first_byte_after_a_warm_start_falls_back(base: Sim, step: str) -> None:
    async with (
        scripted_tier("ok", step) as url,
        rig(traffic(weight=100), base.url, url, read_timeout=0.5) as r,
    ):
        await answered(r)
        tier, raw = await answered(r)
        assert tier == BASE
        assert sse_text([raw])[1]
        code = "504" if step == "stall" else "502"
        assert r.value(signals.ROUTER_REQUESTS, TARGET, code=code) == 1
        assert r.value(signals.ROUTER_FALLBACKS, TARGET) == 1


async def test_a_kept_alive_connection_closed_by_the_tier_is_tried_once_more(base: Sim) -> None:
    async with scripted_tier("ok", "close") as url, rig(traffic(weight=100), base.url, url) as r:
        await answered(r)
        assert await answered(r) == ("script", ANSWER)  # on a new connection, not the baseline
        assert r.value(signals.ROUTER_FALLBACKS, TARGET) == 0
        assert r.value(signals.ROUTER_REQUESTS, TARGET, code="200") == 2


async def test_a_tier_failing_mid_stream_inline_ends_it_with_an_error_event(base: Sim) -> None:
    async with scripted_tier("ok", "cut") as url, rig(traffic(weight=100), base.url, url) as r:
        await answered(r)
        tier, raw = await answered(r)
        assert tier == "script"
        assert r.admission.served_inline == 1
        assert raw.startswith(event(WORDS[0]))
        assert b'"error"' in raw
        assert raw.endswith(b"data: [DONE]\n\n")
        assert r.value(signals.ROUTER_REQUESTS, TARGET, code="502") == 1
        assert r.value(signals.ROUTER_FALLBACKS, TARGET) == 0  # too late: the client had bytes
        assert r.admission.inflight == 0


async def test_a_client_leaving_an_inline_stream_is_counted_and_the_tier_released(
    base: Sim,
) -> None:
    async with rig(traffic(), base.url, base.url) as r:
        await answered(r)  # warm
        base.configure(token_delay_ms=50)
        async with r.client.stream("POST", "/v1/chat/completions", json=chat(stream=True)) as s:
            async for _ in s.aiter_raw():
                break  # leave after the first chunk
        assert r.admission.served_inline == 1
        await r.eventually(signals.ROUTER_REQUESTS, BASE, 1, code="499")
        assert r.admission.inflight == 0
        await stops_generating(r.client, base)


async def test_a_mirrored_stream_is_served_inline_and_compared(base: Sim) -> None:
    async with rig(traffic(weight=0, mirror=100), base.url, base.url) as r:
        await answered(r)  # warm (and a first comparison)
        await r.eventually(signals.ROUTER_SHADOW_REQUESTS, TARGET, 1, outcome="compared")
        tier, raw = await answered(r)
        assert tier == BASE
        assert sse_text([raw])[1]
        assert r.admission.served_inline == 1
        await r.eventually(signals.ROUTER_SHADOW_REQUESTS, TARGET, 2, outcome="compared")


async def test_a_plain_answer_after_a_warm_start_is_read_by_the_task(base: Sim) -> None:
    async with rig(traffic(), base.url, base.url) as r:
        await answered(r)
        resp = await r.post(chat())
        assert resp.status_code == 200
        assert resp.json()["choices"][0]["message"]["content"]
        assert r.admission.served_inline == 0
        assert r.value(signals.ROUTER_REQUESTS, BASE, code="200") == 2


async def test_a_slow_client_of_an_inline_stream_gets_every_byte(base: Sim) -> None:
    """The client stops reading: the router stops reading the tier (flow control, not memory),
    then the client reads on and gets all of it."""
    piece = event("x" * 4000)
    big = piece * 4000  # 16 MB: past every buffer on the way

    async def tier(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for body in (ANSWER, big):
                await read_request(reader)
                writer.write(HEAD)
                for start in range(0, len(body), 1 << 16):
                    writer.write(chunk(body[start : start + (1 << 16)]))
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
                await writer.drain()
            await reader.read()
        except (asyncio.IncompleteReadError, ConnectionError):
            return

    server = await asyncio.start_server(tier, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with rig(traffic(), url, url) as r:
            await answered(r)
            host, port = r.client.base_url.host, r.client.base_url.port
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(post(STREAM))
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            await asyncio.sleep(1)  # reads nothing: the router must hold back, not drop
            assert r.admission.served_inline == 1
            received = bytearray()
            while not received.endswith(b"0\r\n\r\n"):
                more = await asyncio.wait_for(reader.read(1 << 20), 30)
                assert more, "the router closed the stream early"
                received += more
            writer.close()
        assert dechunk(bytes(received)) == (big, b"")
    finally:
        server.close()


async def test_pipelined_requests_are_answered_in_order_the_first_inline(base: Sim) -> None:
    async with scripted_tier() as url, rig(traffic(weight=100), base.url, url) as r:
        await answered(r)  # warm
        reader, writer = await asyncio.open_connection(
            r.client.base_url.host, r.client.base_url.port
        )
        writer.write(post(STREAM) + post(STREAM))  # the second before the first is answered
        answers = await read_responses(reader, 2)
        writer.close()
        assert [head.split(b"\r\n")[0] for head, _ in answers] == [b"HTTP/1.1 200 OK"] * 2
        assert [body for _, body in answers] == [ANSWER, ANSWER]
        assert r.admission.served_inline == 1  # the first; the second waited, as a task
        assert r.value(signals.ROUTER_REQUESTS, TARGET, code="200") == 3


@pytest.mark.parametrize("how", ["expect-100", "large-body"])
async def test_what_is_not_served_inline_is_served_as_a_task(base: Sim, how: str) -> None:
    async with scripted_tier() as url, rig(traffic(weight=100), base.url, url) as r:
        await answered(r)  # warm
        reader, writer = await asyncio.open_connection(
            r.client.base_url.host, r.client.base_url.port
        )
        if how == "expect-100":
            writer.write(post(STREAM, b"expect: 100-continue\r\n"))
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert interim.startswith(b"HTTP/1.1 100")
        else:  # past uvicorn's 64 KiB buffer: the task reads it
            big = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 100_000}]}
            writer.write(post(json.dumps({**big, "stream": True}).encode()))
        [(head, body)] = await read_responses(reader, 1)
        writer.close()
        assert head.startswith(b"HTTP/1.1 200")
        assert body == ANSWER
        assert r.admission.served_inline == 0


async def test_a_shutdown_lets_an_inline_stream_finish(base: Sim) -> None:
    async with scripted_tier() as url:
        running = rig(traffic(weight=100), base.url, url)
        r = await running.__aenter__()
        await answered(r)  # warm
        reader, writer = await asyncio.open_connection(
            r.client.base_url.host, r.client.base_url.port
        )
        writer.write(post(STREAM))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)  # under way
        assert r.admission.served_inline == 1
        stopping = asyncio.ensure_future(running.__aexit__(None, None, None))
        rest = await asyncio.wait_for(reader.read(), 10)  # to its end: then the router closes
        await asyncio.wait_for(stopping, 10)
        writer.close()
        assert head.startswith(b"HTTP/1.1 200")
        assert dechunk(rest) == (ANSWER, b"")
