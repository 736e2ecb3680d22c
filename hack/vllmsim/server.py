"""`Simulator`: one vLLM simulator served by uvicorn, in a background thread (tests, benchmarks)
or in the foreground until SIGTERM/SIGINT (`python -m vllmsim`)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

from vllmsim.app import SimState, build_app
from vllmsim.config import SimConfig

GRACEFUL_SHUTDOWN_S = 10  # open streams get this long to finish when the server stops
START_TIMEOUT_S = 10


class Simulator:
    """A vLLM simulator serving `model` on host:port (port 0: a free one, known after start)."""

    def __init__(
        self,
        model: str,
        port: int = 0,
        host: str = "127.0.0.1",
        tier: str | None = None,
        config: SimConfig | None = None,
        log_level: str = "warning",
    ) -> None:
        self.model, self.host, self.tier = model, host, tier
        self.state = SimState(model, tier, config)
        self._port = port
        self._log_level = log_level
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port served on; the one the OS picked once started, if asked for port 0."""
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def config(self) -> SimConfig:
        return self.state.config

    def configure(self, **changes: Any) -> SimConfig:
        """Changes faults at run time, like POST /control; raises ValueError on a bad change."""
        return self.state.configure(changes)

    def _bind(self) -> tuple[uvicorn.Server, socket.socket]:
        # proto=IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on sockets that
        # say they are TCP, and without it every response with a body waits ~40 ms for an ACK.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._port))
        self._socket = sock
        self._port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            build_app(self.state),
            log_level=self._log_level,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        )
        self._server = uvicorn.Server(config)
        return self._server, sock

    def serve_forever(self) -> None:
        """Serves in this (main) thread until SIGTERM or SIGINT, then shuts down gracefully."""
        server, sock = self._bind()
        tier = f" (tier {self.tier})" if self.tier else ""
        logging.getLogger("uvicorn.error").info(
            "vllmsim serving %s%s on %s", self.model, tier, self.url
        )
        server.run(sockets=[sock])

    def start(self) -> Simulator:
        """Serves in a background thread; returns once the server accepts connections."""
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        server, sock = self._bind()
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"vllmsim-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"vllmsim on {self.url} did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Stops accepting, lets open requests finish (up to GRACEFUL_SHUTDOWN_S), joins."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(GRACEFUL_SHUTDOWN_S + 5)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
