"""The keep-alive connections to the tiers: a pool of httpx transports of one connection each,
per tier origin, reused most recently used first.

Why not one transport with a big pool: httpcore's pool looks at every connection it holds each
time a request starts or ends (for an idle one through several layers and a poll() system
call, and then at all of them again), so with 200 streams open a single pool costs
milliseconds of CPU per request. Here taking and returning a connection is a list pop and
append. At most `max_connections` requests are in flight to the tiers at once; more wait up to
`connect_timeout` for a free slot, then fail as a timeout (504, or a fallback to the baseline).
"""

from __future__ import annotations

import asyncio
import importlib.util
import ssl
import sys
from functools import lru_cache

import httpx

from .settings import RouterSettings
from .upstream import Failed, Headers, Opened, open_answer, timeout_extension


def _cache_missing_sniffio() -> None:
    # httpcore runs `import sniffio` for every lock it sets up (several per request). Without
    # sniffio installed that import fails, and Python does not remember failed imports: each
    # one searches sys.path again (~0.1 ms, a third of the router's CPU per request here). A
    # None entry in sys.modules makes the import fail at once, which leaves httpcore on its
    # asyncio default exactly as before. With sniffio installed this does nothing.
    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None  # type: ignore[assignment]


@lru_cache(maxsize=4096)
def _url(url: str) -> httpx.URL:
    # Parsing a URL is a noticeable part of a request's cost, and tiers x paths are few.
    return httpx.URL(url)


class Upstreams:
    """Every call to every tier goes through here (see the module doc)."""

    def __init__(self, settings: RouterSettings) -> None:
        _cache_missing_sniffio()
        self._settings = settings
        self._timeout = timeout_extension(settings.connect_timeout, settings.read_timeout)
        self._tls = ssl.create_default_context()  # shared: one per transport costs ~30 ms each
        self._slots = asyncio.Semaphore(settings.max_connections)
        self._idle: dict[str, list[httpx.AsyncHTTPTransport]] = {}
        self._all: set[httpx.AsyncHTTPTransport] = set()

    def _new(self) -> httpx.AsyncHTTPTransport:
        transport = httpx.AsyncHTTPTransport(
            verify=self._tls,
            limits=httpx.Limits(
                max_connections=1, max_keepalive_connections=1, keepalive_expiry=30
            ),
            trust_env=False,  # a proxy from the environment must never sit in front of the tiers
        )
        self._all.add(transport)
        return transport

    async def _take(self, origin: str) -> httpx.AsyncHTTPTransport:
        if self._slots.locked():
            await asyncio.wait_for(self._slots.acquire(), self._settings.connect_timeout)
        else:
            await self._slots.acquire()  # a slot is free: returns at once
        idle = self._idle.get(origin)
        if idle:
            return idle.pop()
        if len(self._all) >= self._settings.max_connections:
            # Every slot has its connection and one of them idles towards another tier: retire it.
            spare = next(transports for transports in self._idle.values() if transports).pop()
            self._all.discard(spare)
            asyncio.get_running_loop().create_task(spare.aclose())
        return self._new()

    def _give_back(self, origin: str, transport: httpx.AsyncHTTPTransport) -> None:
        self._idle.setdefault(origin, []).append(transport)
        self._slots.release()

    async def open(
        self, origin: str, path: str, body: bytes, headers: Headers, streamed: bool
    ) -> Opened | Failed:
        """Sends one request to a tier (`origin` + `path`) and reads as far as the first byte of
        its answer; an Opened stream holds its connection until it is closed."""
        try:
            transport = await self._take(origin)
        except TimeoutError:
            return Failed(504, "timed out waiting for a free connection to the tiers")
        try:
            result = await open_answer(
                transport, _url(origin + path), body, headers, streamed, self._timeout
            )
        except BaseException:  # cancelled: open_answer closed the response; free the slot
            self._give_back(origin, transport)
            raise
        if isinstance(result, Opened) and result.response is not None:
            result.on_close = lambda: self._give_back(origin, transport)
        else:
            self._give_back(origin, transport)
        return result

    async def aclose(self) -> None:
        for transport in self._all:
            await transport.aclose()
        self._all.clear()
        self._idle.clear()
