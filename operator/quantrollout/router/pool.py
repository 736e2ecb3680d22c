"""The keep-alive connections to the tiers (`http1.Connection`), per tier origin, reused most
recently used first.

Taking and returning a connection is a list pop and append. At most `max_connections` requests
are in flight to the tiers at once; more wait up to `connect_timeout` for a free slot, then fail
as a timeout (504, or a fallback to the baseline). A caller that cannot wait (a request served
inline, from a socket's callback) takes an idle connection and its slot at once or not at all
(`take_idle`), and gives both back with `give_back`. A connection is kept for the next request
only when its answer was read to the end and neither side asked to close it; one that idled
longer than `KEEPALIVE` seconds, or that the tier closed meanwhile, is dropped when met.

A tier may close an idle connection just as a request goes out on it. When a reused connection
ends before a single byte of the answer, the request is sent once more, on a new connection
(whose failure then stands): counting it as the tier's error would feed a false error rate to
the analysis. The one case where this repeats work is a tier that read the request and died
before answering, and a completion has no side effect to repeat. `KEEPALIVE` is kept under
vLLM's own idle limit (its HTTP server closes connections idle for 5 s), so that the race is
rare in the first place.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque

from .http1 import ConnectError, Connection, Origin, encode_request
from .settings import RouterSettings
from .upstream import Failed, Headers, Opened, failure, open_answer

KEEPALIVE = 4.0  # seconds; vLLM's server (uvicorn) closes connections idle for 5 s


class Slots:
    """At most `n` holders at once: a slot is taken at once (`take_now`) or waited for (`take`);
    a slot given back goes to the longest waiter first."""

    def __init__(self, n: int) -> None:
        self._free = n
        self._waiting: deque[asyncio.Future[None]] = deque()

    def take_now(self) -> bool:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return True
        return False

    async def take(self, within: float) -> bool:
        """Takes a slot, waiting up to `within` seconds for one; False if none came."""
        if self.take_now():
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            async with asyncio.timeout(within):
                await waiter
            return True
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                self.give()  # handed over just as the time ran out
            return False
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.give()
            raise

    def give(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1


class Upstreams:
    """Every call to every tier goes through here (see the module doc)."""

    def __init__(self, settings: RouterSettings) -> None:
        self._settings = settings
        self._tls: ssl.SSLContext | None = None  # made on first use: ~30 ms
        self._slots = Slots(settings.max_connections)
        self._idle: dict[Origin, list[Connection]] = {}

    def _reuse(self, origin: Origin) -> Connection | None:
        """An idle kept-alive connection to `origin`, if one is left; the stale ones met on the
        way are closed."""
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if connection.reusable and now - connection.idle_since < KEEPALIVE:
                return connection
            connection.close()
        return None

    def take_idle(self, origin: Origin) -> Connection | None:
        """An idle kept-alive connection to `origin` with a slot for it, at once; None when
        there is no free slot or no idle connection (`open` would wait or connect)."""
        if not self._idle.get(origin) or not self._slots.take_now():
            return None
        connection = self._reuse(origin)
        if connection is None:
            self._slots.give()
        return connection

    async def _take(self, origin: Origin, fresh: bool = False) -> Connection:
        """An idle kept-alive connection to `origin` (unless `fresh`), else a new one
        (ConnectError if none can be made)."""
        if not fresh and (connection := self._reuse(origin)) is not None:
            return connection
        if origin.scheme == "https" and self._tls is None:
            self._tls = ssl.create_default_context()
        s = self._settings
        return await Connection.open(origin, self._tls, s.connect_timeout, s.read_timeout)

    def give_back(self, origin: Origin, connection: Connection) -> None:
        """Ends a request's hold on `connection` and its slot (the connection is kept for the
        next request if it can be reused)."""
        if connection.reusable:
            self._idle.setdefault(origin, []).append(connection)
        self._slots.give()

    async def open(
        self,
        base_url: str,
        path: str,
        body: bytes,
        headers: Headers,
        streamed: bool,
        method: bytes = b"POST",
    ) -> Opened | Failed:
        """Sends one request to a tier (`base_url` + `path`) and reads as far as the first byte
        of its answer; an Opened stream holds its connection until it is closed."""
        origin = Origin.parse(base_url)
        if not await self._slots.take(self._settings.connect_timeout):
            return Failed(504, "timed out waiting for a free connection to the tiers")
        request = encode_request(origin, path, body, headers, method)
        fresh = False
        while True:
            try:
                connection = await self._take(origin, fresh)
            except ConnectError as err:
                self._slots.give()
                return failure(err, unreachable=True)
            except BaseException:
                self._slots.give()
                raise
            try:
                result, held = await open_answer(connection, request, streamed)
            except BaseException:  # cancelled: open_answer closed the connection; free the slot
                self.give_back(origin, connection)
                raise
            if isinstance(result, Failed) and result.unanswered and connection.requests > 1:
                connection.close()  # the tier closed it as the request went out: once more,
                fresh = True  # on a new connection (its first request: never a third time)
                continue
            break
        if held:
            assert isinstance(result, Opened)
            result.on_close = lambda: self.give_back(origin, connection)
        else:
            self.give_back(origin, connection)
        return result

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
