"""Passing a stream on: merged only when chunks were already waiting, in order, errors last."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from quantrollout.router.relay import relay


async def paced(chunks: list[bytes], gap: float) -> AsyncIterator[bytes]:
    for chunk in chunks:
        await asyncio.sleep(gap)
        yield chunk


async def burst(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk  # no await: all of them are there at once, like one read of many chunks


async def test_chunks_apart_go_out_apart() -> None:
    sent: list[bytes] = []

    async def send(data: bytes) -> None:
        sent.append(data)

    await relay(paced([b"a", b"b", b"c"], 0.01), send)
    assert sent == [b"a", b"b", b"c"]


async def test_chunks_that_wait_go_out_together() -> None:
    sent: list[bytes] = []

    async def slow_send(data: bytes) -> None:
        sent.append(data)
        await asyncio.sleep(0.02)

    await relay(burst([b"1", b"2", b"3", b"4"]), slow_send)
    assert b"".join(sent) == b"1234"
    assert len(sent) < 4


async def test_the_first_chunk_is_not_held_back() -> None:
    times: list[float] = []
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def send(data: bytes) -> None:
        times.append(loop.time() - start)

    await relay(paced([b"x", b"y"], 0.05), send)
    assert times[0] < 0.09  # sent on arrival, not when the next one came


async def test_a_slow_client_pauses_the_reader() -> None:
    read = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal read
        for _ in range(1000):
            read += 1
            yield b"x" * 100

    sends = 0

    async def stuck_send(data: bytes) -> None:
        nonlocal sends
        sends += 1
        if sends == 2:
            raise ConnectionError("the test stops here")
        await asyncio.sleep(0.05)

    with pytest.raises(ConnectionError):
        await relay(endless(), stuck_send, high_water=1000)
    assert read <= 25  # ~high_water bytes read ahead, not the whole stream


async def test_an_error_comes_after_what_was_read_before_it() -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield b"part"
        raise OSError("reset")

    sent: list[bytes] = []

    async def send(data: bytes) -> None:
        sent.append(data)

    with pytest.raises(OSError, match="reset"):
        await relay(failing(), send)
    assert sent == [b"part"]
