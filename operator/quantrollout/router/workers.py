"""Several router processes per pod, so the router uses every core it is given: a supervisor
that holds the listening socket, the route table and the record of what is applied, and N
worker processes (`worker`) that serve requests.

- One socket, inherited: the supervisor binds and listens; each worker accepts on the same
  socket (not SO_REUSEPORT: with one socket per process, the connections queued on a process
  that dies are reset with it; here they wait in the one queue for another worker).
- One watch: the supervisor runs the config source (the API watch) and sends each new route
  table to every worker on its stdin, one JSON line with a generation number; a worker applies
  it and acknowledges the generation. A change counts as applied, and is logged and counted in
  `config_reloads_total`, only once every live worker acknowledged it. A worker starts with the
  current table and serves nothing before it has one.
- A worker that dies is started again (after a backoff that grows while it keeps dying young);
  the others and their streams are untouched. On SIGTERM the supervisor passes it on and waits
  for the workers, which finish their in-flight answers first (uvicorn's graceful shutdown).
  A worker whose stdin ends shuts down the same way; one whose supervisor was killed outright
  dies with it (PR_SET_PDEATHSIG), as the processes of a killed container do.
- Metrics: every process writes its series to files in one directory (prometheus_client's
  multiprocess mode); `/metrics`, from any worker, reads them all (see `metrics`).

Sticky hashing needs nothing shared: `split` hashes with blake2b, the same in every process
and every replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantrollout import defaults
from quantrollout.api.status import TrafficStatus

from . import metric_files
from .class_split import describe
from .metrics import RouterMetrics, shared_metrics
from .routes import EMPTY, ModelTraffic, RouteTable, changed
from .settings import RouterSettings
from .source import ConfigSource

log = logging.getLogger(__name__)

PARENT_ENV = "QUANTROLLOUT_ROUTER_SUPERVISOR"  # the supervisor's pid, for its workers
STABLE_AFTER = 60.0  # seconds: a worker that lived this long and died restarts at once


# -- the messages between the supervisor and a worker (one JSON object per line)


def encode_settings(settings: RouterSettings) -> dict[str, Any]:
    raw = dataclasses.asdict(settings)
    raw["upstreams"] = [[ns, svc, url] for (ns, svc), url in settings.upstreams.items()]
    return raw


def decode_settings(raw: dict[str, Any]) -> RouterSettings:
    upstreams = {(ns, svc): url for ns, svc, url in raw.pop("upstreams")}
    return RouterSettings(upstreams=upstreams, **raw)


def encode_table(generation: int, models: Iterable[ModelTraffic]) -> bytes:
    items = [
        {
            "namespace": m.namespace,
            "name": m.name,
            "created": m.created,
            "traffic": m.traffic.model_dump(mode="json", by_alias=True),
        }
        for m in models
    ]
    return json.dumps({"generation": generation, "models": items}).encode() + b"\n"


def decode_table(line: bytes) -> tuple[int, list[ModelTraffic]]:
    raw = json.loads(line)
    models = [
        ModelTraffic(
            m["namespace"], m["name"], m["created"], TrafficStatus.model_validate(m["traffic"])
        )
        for m in raw["models"]
    ]
    return int(raw["generation"]), models


def listen(host: str, port: int, backlog: int = 4096) -> socket.socket:
    """The pod's listening socket, inheritable by the workers."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say they are TCP.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


@dataclass
class Worker:
    """One worker process, as the supervisor sees it."""

    index: int
    process: asyncio.subprocess.Process
    started: float
    applied: int = 0  # the last generation it acknowledged; 0: none yet (not serving)
    reader: asyncio.Task[None] | None = None  # reads its acknowledgements

    @property
    def pid(self) -> int:
        return self.process.pid


class Supervisor:
    """Runs `count` worker processes serving `source`'s route table on `host:port` (see the
    module doc). `await run()` until `stop()` (or SIGTERM/SIGINT through `serve`)."""

    def __init__(
        self,
        source: ConfigSource,
        count: int,
        host: str,
        port: int,
        settings: RouterSettings | None = None,
        log_level: str = "info",
        access_log: bool = False,
    ) -> None:
        if count < 1:
            raise ValueError(f"workers must be at least 1, got {count}")
        self.source = source
        self.count = count
        self.host, self.port = host, port
        self.settings = settings or RouterSettings()
        self.log_level, self.access_log = log_level, access_log
        self.workers: dict[int, Worker] = {}  # by index
        self.generation = 0  # the latest table sent to the workers
        self.restarts = 0
        self._table: RouteTable = source.table()
        self._pending: list[tuple[int, RouteTable, RouteTable]] = []  # (generation, old, new)
        self._changed = asyncio.Condition()
        self._stopping = False
        self._socket: socket.socket | None = None
        self._metrics_dir: str | None = None
        self.metrics: RouterMetrics | None = None
        self.started = asyncio.Event()  # every worker acknowledged its first table
        source.subscribe(self._reloaded)

    @property
    def applied(self) -> int:
        """The newest generation every serving worker has (0 before they all have one)."""
        serving = [w.applied for w in self.workers.values() if w.applied]
        return min(serving) if serving and len(serving) == len(self.workers) else 0

    async def wait_applied(self, generation: int) -> None:
        """Returns once every worker has `generation` (or a newer one)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.applied >= generation)

    def stop(self) -> None:
        self._stopping = True
        for worker in self.workers.values():
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)

    async def run(self) -> None:
        self._metrics_dir = metric_files.new_directory()
        with shared_metrics(self._metrics_dir):
            self.metrics = RouterMetrics()
            await self._run()

    async def _run(self) -> None:
        assert self._metrics_dir is not None
        self._socket = listen(self.host, self.port)
        self.port = self._socket.getsockname()[1]
        source_task = asyncio.create_task(self.source.run(), name="router-config-source")
        try:
            while not self.source.synced:  # the first list of the API: nothing to serve before
                if source_task.done():
                    await source_task
                await asyncio.sleep(0.05)
            self._table = self.source.table()
            self.generation = 1
            self._pending.append((1, EMPTY, self._table))  # the first table: applied like any
            tasks = [asyncio.create_task(self._keep(i)) for i in range(self.count)]
            await asyncio.gather(*tasks)
        finally:
            source_task.cancel()
            await asyncio.gather(source_task, return_exceptions=True)
            self._socket.close()
            shutil.rmtree(self._metrics_dir, ignore_errors=True)

    async def _keep(self, index: int) -> None:
        """Keeps worker `index` running until the supervisor stops."""
        backoff = defaults.ROUTER_RESTART_BACKOFF_S
        while not self._stopping:
            worker = await self._spawn(index)
            code = await worker.process.wait()
            self.workers.pop(index, None)
            await self._notify()  # the applied generation may move on without it
            if self._stopping:
                return
            self.restarts += 1
            lived = time.monotonic() - worker.started
            if lived > STABLE_AFTER:
                backoff = defaults.ROUTER_RESTART_BACKOFF_S
            log.error(
                "router worker %d (pid %d) exited with %s after %.1fs; starting another in %.1fs",
                index, worker.pid, code, lived, backoff,
            )  # fmt: skip
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, defaults.ROUTER_RESTART_BACKOFF_MAX_S)

    async def _spawn(self, index: int) -> Worker:
        assert self._socket is not None
        fd = self._socket.fileno()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "quantrollout.router.worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, pass_fds=(fd,),
            env={**os.environ, PARENT_ENV: str(os.getpid())},
        )  # fmt: skip
        worker = Worker(index, process, time.monotonic())
        self.workers[index] = worker
        hello = {
            "fd": fd, "index": index, "settings": encode_settings(self.settings),
            "log_level": self.log_level, "access_log": self.access_log,
        }  # fmt: skip
        assert process.stdin is not None
        process.stdin.write(json.dumps(hello).encode() + b"\n")
        process.stdin.write(encode_table(self.generation, self._table.values()))
        worker.reader = asyncio.create_task(self._acks(worker))
        return worker

    async def _acks(self, worker: Worker) -> None:
        assert worker.process.stdout is not None
        while line := await worker.process.stdout.readline():
            try:
                worker.applied = int(json.loads(line)["applied"])
            except (ValueError, KeyError, TypeError):
                log.warning("router worker %d said something unexpected: %r", worker.index, line)
                continue
            await self._notify()

    async def _notify(self) -> None:
        applied = self.applied
        while self._pending and self._pending[0][0] <= applied:
            _, old, new = self._pending.pop(0)
            self._record(old, new)
        if applied and not self.started.is_set() and len(self.workers) == self.count:
            self.started.set()
            log.info(
                "router serving on %s:%d with %d worker processes", self.host, self.port, self.count
            )
        async with self._changed:
            self._changed.notify_all()

    def _reloaded(self, old: RouteTable, new: RouteTable) -> None:
        """The source changed the table: send it to every worker."""
        self._table = new
        if self.generation == 0:  # not started yet: the workers will start with it
            return
        self.generation += 1
        self._pending.append((self.generation, old, new))
        line = encode_table(self.generation, new.values())
        for worker in self.workers.values():
            if worker.process.stdin is not None and worker.process.returncode is None:
                worker.process.stdin.write(line)

    def _record(self, old: RouteTable, new: RouteTable) -> None:
        assert self.metrics is not None
        for model in changed(old, new):
            t = model.traffic
            tier = t.target.tier if t.target else t.baseline.tier
            self.metrics.tier(model.namespace, model.name, tier).reloads.inc()
            log.info(
                "traffic of %s/%s (%s) applied by every worker: rollout %s, %s",
                model.namespace, model.name, t.served_model, t.rollout_id, describe(t),
            )  # fmt: skip
        for served in sorted(old.keys() - new.keys()):
            log.info("model %r is no longer served", served)


def serve(supervisor: Supervisor) -> None:
    """Runs `supervisor` until SIGTERM/SIGINT; the workers finish their in-flight answers."""
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, supervisor.stop)
        await supervisor.run()

    uvloop.run(main())


def cpu_limit() -> int | None:
    """The cores this process may use: the cgroup's CPU quota rounded up (cgroup v2, else v1),
    else the CPUs it may run on; None when neither can be read."""
    for quota_file, period_file in (
        ("/sys/fs/cgroup/cpu.max", None),
        ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us"),
    ):
        try:
            fields = Path(quota_file).read_text().split()
            quota = fields[0]
            period = Path(period_file).read_text().split()[0] if period_file else fields[1]
            if quota not in ("max", "-1"):
                return max(1, -(-int(quota) // int(period)))
        except (OSError, ValueError, IndexError):
            continue
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()
