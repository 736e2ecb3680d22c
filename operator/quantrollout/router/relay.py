"""Passing a stream on: what arrived together leaves together.

A tier's stream comes in HTTP chunks, and httpx hands them over one at a time even when a
single read brought many of them. Sending each on its own costs a write system call and an
HTTP framing each; under load that, not the network, is what limits a proxy. So a reader task
takes chunks from the tier as they come, and the writer sends everything that has arrived
since its last send in one write. Nothing waits to be batched: the writer sends as soon as it
runs, so an idle stream's chunk goes out at once, and only chunks that were already waiting
are merged. At most `high_water` bytes wait; past that the reader pauses (backpressure from a
slow client reaches the tier).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

HIGH_WATER = 64 << 10


async def relay(
    chunks: AsyncIterator[bytes],
    send: Callable[[bytes], Awaitable[None]],
    high_water: int = HIGH_WATER,
) -> None:
    """Sends every chunk of `chunks`, merging those that arrived while a send was under way.

    Raises what reading raised, after sending what was read before it."""
    waiting: list[bytes] = []
    size = 0
    arrived = asyncio.Event()
    room = asyncio.Event()
    room.set()
    finished = False
    failure: Exception | None = None

    async def read() -> None:
        nonlocal size, finished, failure
        try:
            async for chunk in chunks:
                waiting.append(chunk)
                size += len(chunk)
                arrived.set()
                if size >= high_water:
                    room.clear()
                    await room.wait()
        except Exception as err:  # handed to the writer, which raises it in order
            failure = err
        finally:
            finished = True
            arrived.set()

    reader = asyncio.create_task(read())
    try:
        while True:
            await arrived.wait()
            arrived.clear()
            if waiting:
                data = waiting[0] if len(waiting) == 1 else b"".join(waiting)
                waiting.clear()
                size = 0
                room.set()
                await send(data)
            if finished and not waiting:
                break
    finally:
        reader.cancel()  # only still running when the writer stopped early (client gone)
    if failure is not None:
        raise failure
