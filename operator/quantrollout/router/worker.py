"""One router worker process, started by `workers.Supervisor` (`python -m
quantrollout.router.worker`): serves the router on the socket it inherited, with the route
table the supervisor sends on stdin, acknowledging each table it applied.

stdin: a first line with the socket's fd and the settings, then route tables (`workers`).
The acknowledgements go out on the stdout the worker was started with; everything the process
prints (uvicorn's logs included) goes to stderr, so nothing else can land in that channel. A
worker dies with its supervisor (`die_with_parent`).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable

from prometheus_client import values

from .app import RouterApp
from .metrics import MULTIPROCESS_ENV
from .routes import ModelTraffic
from .server import build_server, quiet_collector
from .source import TablePublisher
from .workers import PARENT_ENV, decode_settings, decode_table

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # prctl(2)


class PipeConfigSource(TablePublisher):
    """The route table as the supervisor sends it: the first one read before serving (a worker
    serves nothing without it), later ones as they come; each acknowledged once published."""

    def __init__(
        self,
        generation: int,
        models: list[ModelTraffic],
        acks: int,
        on_end: Callable[[], None],
        unread: bytes = b"",
    ) -> None:
        super().__init__()
        self.generation = generation
        self._acks = acks
        self._unread = unread  # read from stdin with the first table, not yet applied
        self._on_end = on_end
        self.publish(models)

    @property
    def synced(self) -> bool:
        return True

    def _ack(self) -> None:
        os.write(self._acks, json.dumps({"applied": self.generation}).encode() + b"\n")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 30)
        reader.feed_data(self._unread)
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(0, "rb", buffering=0)
        )
        self._ack()
        while line := await reader.readline():
            self.generation, models = decode_table(line)
            self.publish(models)
            self._ack()
        log.info("the supervisor closed the pipe; finishing the answers in flight")
        self._on_end()


def read_lines(fd: int, count: int) -> tuple[list[bytes], bytes]:
    """The first `count` lines from `fd` (unbuffered: what follows them is returned, not lost
    in a file object's buffer), and the bytes read past them."""
    data = b""
    while data.count(b"\n") < count:
        piece = os.read(fd, 1 << 16)
        if not piece:
            raise SystemExit("the supervisor closed stdin before sending the route table")
        data += piece
    *lines, rest = data.split(b"\n", count)
    return lines, rest


def die_with_parent(parent: int) -> None:
    """A supervisor killed outright (SIGKILL, OOM) takes its workers with it, as a container's
    processes go together: otherwise they would keep serving, unsupervised, on a socket the
    supervisor's successor then cannot bind. (A supervisor that merely closes the pipe lets
    them finish their streams; see `PipeConfigSource.run`.)"""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the line above
        raise SystemExit("the supervisor is gone")


def main() -> int:
    die_with_parent(int(os.environ.get(PARENT_ENV, os.getppid())))
    acks = os.dup(1)
    os.dup2(2, 1)  # prints and logs to stderr; stdout's pipe carries the acknowledgements only
    (first, second), unread = read_lines(0, 2)
    hello = json.loads(first)
    generation, models = decode_table(second)
    settings = decode_settings(hello["settings"])
    if os.environ.get(MULTIPROCESS_ENV):
        # prometheus_client asks the kernel for the process id at each count, to notice a
        # fork (a system call per series per request); a worker never forks.
        pid = os.getpid()
        values.ValueClass = values.MultiProcessValue(lambda: pid)  # type: ignore[no-untyped-call]
    logging.basicConfig(
        level=hello["log_level"].upper(),
        format=f"%(asctime)s %(levelname)s %(name)s[worker {hello['index']}]: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    sock = socket.socket(fileno=hello["fd"])
    holder: list[Callable[[], None]] = []
    source = PipeConfigSource(generation, models, acks, lambda: holder[0](), unread)
    app = RouterApp(source, settings, announce_reloads=False)
    server = build_server(app, access_log=hello["access_log"], log_level=hello["log_level"])

    def end() -> None:
        server.should_exit = True

    holder.append(end)
    quiet_collector()
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
