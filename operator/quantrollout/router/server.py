"""Serving the router with uvicorn: the one place that knows about the HTTP server.

uvicorn picks its fastest installed pieces: `httptools` for HTTP/1.1 parsing and `uvloop` for
the event loop, both dependencies of the package (without them it falls back to the pure-Python
h11 and asyncio, which cost the router several times the CPU per streamed chunk). Access logs
are off: at thousands of requests per second they cost more than the proxying, and the metrics
say more. The application served is `RouterApp` behind `Admission` (overload refused early),
and completions are served inline by uvicorn's protocol as `inline.RouterProtocol` extends it.
One such server runs in each worker process (`worker`, `workers`).
"""

from __future__ import annotations

import asyncio
import gc
import socket
from typing import cast

import uvicorn

from .admission import Admission
from .app import RouterApp
from .inline import RouterProtocol


def build_server(
    app: RouterApp,
    host: str = "0.0.0.0",
    port: int = 8080,
    access_log: bool = False,
    log_level: str = "info",
) -> uvicorn.Server:
    config = uvicorn.Config(
        Admission(app),
        host=host,
        port=port,
        lifespan="on",
        http=RouterProtocol,  # uvicorn's httptools protocol, completions served inline
        access_log=access_log,
        server_header=False,
        # The router reads neither the client's address nor the scheme: no X-Forwarded-* to
        # apply, and one layer less between each request and the router.
        proxy_headers=False,
        log_level=log_level,
        # Streams can be long; let in-flight answers finish on shutdown (SIGTERM), up to a bound.
        timeout_graceful_shutdown=30,
        backlog=4096,
    )
    return uvicorn.Server(config)


class RunningRouter:
    """A router served on a loopback socket inside the current event loop (tests, benchmarks).

    `async with RunningRouter(app) as router: ... router.url ...`"""

    def __init__(self, app: RouterApp, host: str = "127.0.0.1") -> None:
        self.app = app
        # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say they are TCP;
        # without it small writes wait ~40 ms for the peer's delayed ACK.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, 0))
        self.host, self.port = self._socket.getsockname()[:2]
        self.url = f"http://{self.host}:{self.port}"
        self.server = build_server(app, self.host, self.port, log_level="warning")
        self.admission = cast(Admission, self.server.config.app)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RunningRouter:
        self._task = asyncio.create_task(self.server.serve(sockets=[self._socket]))
        while not self.server.started:
            if self._task.done():
                await self._task  # raises what stopped it
                raise RuntimeError("the router stopped during startup")
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        if self._task is not None:
            await self._task
        self._socket.close()


def quiet_collector() -> None:
    """For a process that serves the router until it ends: everything imported so far lives as
    long as the process; keep it out of the collector's way (gc.freeze), and collect the young
    generation less often. Each stream chunk allocates a few short-lived objects, and with the
    defaults the collections alone took ~5% of the CPU and pauses of up to 35 ms at 200 open
    streams."""
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
