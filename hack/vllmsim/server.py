"""`Simulator`: one vLLM simulator served by uvicorn, in a background thread (tests, benchmarks)
or in the foreground until SIGTERM/SIGINT (`python -m vllmsim`)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import uvicorn

from quantrollout.defaults import VLLM_NEWEST
from vllmcontract import load
from vllmcontract.argparser import parse
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
        *,
        max_model_len: int = 4096,
        vllm_version: str = VLLM_NEWEST,
    ) -> None:
        self.model, self.host, self.tier = model, host, tier
        self.vllm_version = vllm_version
        self.state = SimState(
            model, tier, config, max_model_len=max_model_len, vllm_version=vllm_version
        )
        self._port = port
        self._log_level = log_level
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_vllm_args(
        cls,
        argv: Sequence[str],
        *,
        tier: str | None = None,
        config: SimConfig | None = None,
        vllm_version: str = VLLM_NEWEST,
        host: str | None = None,
        port: int | None = None,
        log_level: str = "warning",
    ) -> Simulator:
        """A simulator started the way a vLLM pod is: `vllm serve` arguments, parsed by the
        release's contract, so a flag that vLLM would refuse is refused here too (raises
        vllmcontract.argparser.ContractError). `host`/`port` override the arguments' (tests bind
        loopback and a free port where the pod binds 0.0.0.0:8000)."""
        args = parse(load(vllm_version), argv)
        model = (args.served_model_name or [None])[0] or args.model_tag or args.model
        max_model_len = (
            args.max_model_len if args.max_model_len and args.max_model_len > 0 else 4096
        )
        return cls(
            model,
            args.port if port is None else port,
            host or args.host or "127.0.0.1",
            tier=tier,
            config=config,
            log_level=log_level,
            max_model_len=max_model_len,
            vllm_version=vllm_version,
        )

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
