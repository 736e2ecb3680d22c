"""The router frees what a request used as soon as the request ends: no reference cycles.

An object in a cycle is freed only by the cycle collector, which runs when enough of them piled
up and then holds the event loop for as long as it takes to walk them all. One cycle per stream
(a parser holding a callback bound to its owner) piled up thousands of objects at 200 streams
and stopped every stream for 17 ms at a time: the time to first token p99 of whoever arrived
then. So each way through the router (plain, streamed (served inline), split between the tiers,
mirrored in shadow) is run here with the collector saving what it would free, and none of it may be the
router's.
"""

from __future__ import annotations

import gc
import inspect
from collections.abc import Iterator
from typing import Any

import pytest

from quantrollout import signals

from .test_router_proxy import TARGET, Rig, Sim, chat, rig, traffic


def _routers(objects: list[Any]) -> list[Any]:
    """The objects among `objects` that the router made, or that hold its frames or methods."""

    def mine(o: Any) -> bool:
        if type(o).__module__.startswith("quantrollout."):
            return True
        if inspect.ismethod(o):
            return type(o.__self__).__module__.startswith("quantrollout.")
        if inspect.isframe(o) or inspect.iscoroutine(o):
            code = o.f_code if inspect.isframe(o) else o.cr_code
            return "quantrollout" in code.co_filename
        return False

    return [o for o in objects if mine(o)]


@pytest.fixture
def saved_garbage() -> Iterator[list[Any]]:
    """Everything the cycle collector finds from now on, kept (`gc.DEBUG_SAVEALL`) to look at."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.collect()


async def requests(r: Rig) -> None:
    for n in range(8):
        resp = await r.post(chat(f"question {n}"), headers={"x-user-id": f"user-{n}"})
        assert resp.status_code == 200, resp.text
        resp, chunks = await r.stream(chat(f"question {n}"), headers={"x-user-id": f"user-{n}"})
        assert resp.status_code == 200
        assert b"[DONE]" in b"".join(chunks)


@pytest.mark.parametrize(
    ("weight", "mirror"), [(0, 0), (50, 0), (0, 100)], ids=["baseline", "split", "shadow"]
)
async def test_no_request_leaves_a_reference_cycle_behind(
    sims: tuple[Sim, Sim], weight: int, mirror: int, saved_garbage: list[Any]
) -> None:
    base, target = (sim.reset() for sim in sims)
    async with rig(traffic(weight=weight, mirror=mirror), base.url, target.url) as r:
        await requests(r)  # connections opened, first-use caches filled: not per request
        gc.collect()
        saved_garbage.clear()
        inline = r.admission.served_inline
        await requests(r)
        assert r.admission.served_inline - inline == 8  # the streams, served inline
        if mirror:
            await r.eventually(signals.ROUTER_SHADOW_REQUESTS, TARGET, 32, outcome="compared")
        gc.collect()
        left = _routers(saved_garbage)
    assert not left, f"{len(left)} objects in reference cycles, e.g. {left[:8]}"
