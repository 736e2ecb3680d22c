"""The router as several processes (`router/workers.py`): real worker processes sharing one
socket on loopback, in front of two real vLLM simulators. A weight change counts as applied only
once every worker has it; a worker that dies is replaced while the others' streams go on; the
metrics of all workers add up; the sticky choice is the same whichever worker answers; an
overloaded process refuses early, with 503 and Retry-After, and never drops an admitted stream."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from quantrollout import signals
from quantrollout.router.admission import Admission
from quantrollout.router.app import RouterApp
from quantrollout.router.server import RunningRouter
from quantrollout.router.settings import RouterSettings
from quantrollout.router.source import StaticConfigSource
from quantrollout.router.workers import Supervisor

from .test_router_proxy import (
    BASE,
    BASE_SVC,
    NS,
    TARGET,
    TARGET_SVC,
    Sim,
    chat,
    free_port,
    routed,
    traffic,
)

TIER_HEADER = "x-vllmsim-tier"


@pytest.fixture(scope="module")
def started_tiers() -> Iterator[tuple[Sim, Sim]]:
    pair = Sim(BASE), Sim(TARGET)
    try:
        yield pair
    finally:
        for sim in pair:
            sim.stop()


@pytest.fixture
def tiers(started_tiers: tuple[Sim, Sim]) -> tuple[Sim, Sim]:
    """The baseline's and the target's simulators, healthy and instant."""
    return started_tiers[0].reset(), started_tiers[1].reset()


def settings(base: Sim, target: Sim, **knobs: object) -> RouterSettings:
    upstreams = {(NS, BASE_SVC): base.url, (NS, TARGET_SVC): target.url}
    return RouterSettings(upstreams=upstreams, **knobs)  # type: ignore[arg-type]


@asynccontextmanager
async def supervised(
    source: StaticConfigSource, count: int, base: Sim, target: Sim
) -> AsyncIterator[Supervisor]:
    supervisor = Supervisor(source, count, "127.0.0.1", 0, settings(base, target), "warning")
    task = asyncio.create_task(supervisor.run())
    try:
        async with asyncio.timeout(60):
            while not supervisor.started.is_set():
                if task.done():
                    await task
                await asyncio.sleep(0.05)
        yield supervisor
    finally:
        supervisor.stop()
        async with asyncio.timeout(60):
            await task


async def until(check: Callable[[], bool], limit: float = 30) -> None:
    async with asyncio.timeout(limit):
        while True:
            if check():
                return
            await asyncio.sleep(0.02)


async def health(url: str) -> dict[str, object]:
    """/health on a connection of its own: the kernel gives it to any of the workers."""
    async with httpx.AsyncClient(base_url=url) as http:
        answer: dict[str, object] = (await http.get("/health")).json()
        return answer


async def each_worker(supervisor: Supervisor, url: str) -> dict[int, dict[str, object]]:
    """/health of every worker, by pid (new connections until each one answered)."""
    pids = {w.pid for w in supervisor.workers.values()}
    seen: dict[int, dict[str, object]] = {}
    for _ in range(400):
        answer = await health(url)
        seen[int(str(answer["pid"]))] = answer
        if pids <= seen.keys():
            return seen
    raise AssertionError(f"workers {pids - seen.keys()} never answered; saw {sorted(seen)}")


def series(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


async def test_a_weight_change_counts_as_applied_once_every_worker_has_it(
    tiers: tuple[Sim, Sim],
) -> None:
    base, target = tiers
    source = StaticConfigSource([routed(traffic(weight=0))])
    async with supervised(source, 3, base, target) as supervisor:
        url = f"http://127.0.0.1:{supervisor.port}"
        assert {a["generation"] for a in (await each_worker(supervisor, url)).values()} == {1}
        # One worker is stopped (SIGSTOP): it cannot take the change, so the change is not
        # applied, and not counted, however long the others have had it.
        stopped = supervisor.workers[0].process
        stopped.send_signal(signal.SIGSTOP)
        try:
            source.set([routed(traffic(weight=100))])
            assert supervisor.generation == 2
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(1.0):
                    await supervisor.wait_applied(2)
            assert supervisor.applied == 1
        finally:
            stopped.send_signal(signal.SIGCONT)
        async with asyncio.timeout(10):
            await supervisor.wait_applied(2)
        assert {a["generation"] for a in (await each_worker(supervisor, url)).values()} == {2}
        async with httpx.AsyncClient(base_url=url) as http:
            metrics = (await http.get("/metrics")).text
        # Counted once (the first table, then the change), by the supervisor, not per worker.
        reloads = signals.ROUTER_CONFIG_RELOADS
        assert series(metrics, reloads, tier=TARGET) == 2
        # Every request now goes to the target, whichever worker takes it; and the requests
        # counted by all the workers add up in /metrics.
        for n in range(30):
            async with httpx.AsyncClient(base_url=url) as http:
                answer = await http.post(
                    "/v1/chat/completions", json=chat(), headers={"x-user-id": f"u{n}"}
                )
                assert answer.status_code == 200
                assert answer.headers[TIER_HEADER] == TARGET
        async with httpx.AsyncClient(base_url=url) as http:
            metrics = (await http.get("/metrics")).text
        assert series(metrics, signals.ROUTER_REQUESTS, tier=TARGET, code="200") == 30


async def test_the_sticky_choice_is_the_same_in_every_worker(
    tiers: tuple[Sim, Sim],
) -> None:
    base, target = tiers
    source = StaticConfigSource([routed(traffic(weight=50))])
    async with supervised(source, 3, base, target) as supervisor:
        url = f"http://127.0.0.1:{supervisor.port}"
        chosen: dict[str, set[str]] = {}
        workers: dict[str, set[int]] = {}
        for _ in range(6):
            for n in range(20):
                user = f"user-{n}"
                async with httpx.AsyncClient(base_url=url) as http:  # a new connection each
                    pid = int(str((await http.get("/health")).json()["pid"]))
                    answer = await http.post(
                        "/v1/chat/completions", json=chat(), headers={"x-user-id": user}
                    )
                chosen.setdefault(user, set()).add(answer.headers[TIER_HEADER])
                workers.setdefault(user, set()).add(pid)
        assert all(len(tiers) == 1 for tiers in chosen.values()), chosen
        assert {t for tiers in chosen.values() for t in tiers} == {BASE, TARGET}
        # The same user was answered by several workers, with the same choice.
        assert any(len(pids) > 1 for pids in workers.values())


async def stream(http: httpx.AsyncClient) -> tuple[int, str]:
    """One streamed completion read to its end: (status, the body)."""
    body = []
    async with http.stream("POST", "/v1/chat/completions", json=chat(stream=True)) as answer:
        async for piece in answer.aiter_text():
            body.append(piece)
        return answer.status_code, "".join(body)


async def test_a_killed_worker_is_replaced_and_the_others_streams_complete(
    tiers: tuple[Sim, Sim],
) -> None:
    base, target = tiers
    base.configure(token_delay_ms=40.0)  # streams of ~1-2 s
    source = StaticConfigSource([routed(traffic(weight=0))])
    async with supervised(source, 2, base, target) as supervisor:
        url = f"http://127.0.0.1:{supervisor.port}"
        victim = supervisor.workers[0]
        survivor_pid = supervisor.workers[1].pid
        # Streams on connections the survivor took (known by /health on the same connection).
        clients: list[httpx.AsyncClient] = []
        while len(clients) < 4:
            http = httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=1))
            if (await http.get("/health")).json()["pid"] == survivor_pid:
                clients.append(http)
            else:
                await http.aclose()
        try:
            streams = [asyncio.create_task(stream(http)) for http in clients]
            await asyncio.sleep(0.3)  # under way
            os.kill(victim.pid, signal.SIGKILL)
            results = await asyncio.gather(*streams)
        finally:
            for http in clients:
                await http.aclose()
        for status, body in results:
            assert status == 200
            assert body.rstrip().endswith("data: [DONE]")
        await until(lambda: 0 in supervisor.workers and supervisor.workers[0].applied > 0)
        assert supervisor.restarts == 1
        assert supervisor.workers[0].pid != victim.pid
        assert set(await each_worker(supervisor, url)) == {
            supervisor.workers[0].pid,
            survivor_pid,
        }


async def test_a_worker_whose_pipe_ends_finishes_its_streams_and_exits(
    tiers: tuple[Sim, Sim],
) -> None:
    base, target = tiers
    base.configure(token_delay_ms=30.0)
    source = StaticConfigSource([routed(traffic(weight=0))])
    async with supervised(source, 1, base, target) as supervisor:
        url = f"http://127.0.0.1:{supervisor.port}"
        worker = supervisor.workers[0].process
        async with httpx.AsyncClient(base_url=url) as http:
            pending = asyncio.create_task(stream(http))
            await asyncio.sleep(0.3)
            assert worker.stdin is not None
            worker.stdin.close()  # the supervisor lets go of it
            status, body = await pending
        assert status == 200
        assert body.rstrip().endswith("data: [DONE]")
        async with asyncio.timeout(30):
            await worker.wait()


async def test_overload_is_refused_early_and_admitted_streams_complete(
    tiers: tuple[Sim, Sim],
) -> None:
    base, target = tiers
    base.configure(token_delay_ms=30.0)
    source = StaticConfigSource([routed(traffic(weight=0))])
    app = RouterApp(source, settings(base, target, max_inflight=3, retry_after_seconds=2))
    async with RunningRouter(app) as router:
        clients = [httpx.AsyncClient(base_url=router.url) for _ in range(3)]
        try:
            admitted = [asyncio.create_task(stream(http)) for http in clients]
            await until(lambda: router.admission.inflight == 3)
            async with httpx.AsyncClient(base_url=router.url) as http:
                refused = await http.post("/v1/chat/completions", json=chat(stream=True))
                assert refused.status_code == 503
                assert refused.headers["retry-after"] == "2"
                assert refused.json()["error"]["code"] == "overloaded"
                # Probes are never refused.
                assert (await http.get("/health")).status_code == 200
            results = await asyncio.gather(*admitted)
        finally:
            for http in clients:
                await http.aclose()
        for status, body in results:
            assert status == 200
            assert body.rstrip().endswith("data: [DONE]")
        assert app.metrics.shed.labels("inflight")._value.get() == 1
        # Room again: the next one is served.
        async with httpx.AsyncClient(base_url=router.url) as http:
            assert (await http.post("/v1/chat/completions", json=chat())).status_code == 200


def test_the_sticky_hash_is_the_same_in_every_process() -> None:
    """Router replicas are separate interpreters with their own hash salt (PYTHONHASHSEED)."""
    code = (
        "from quantrollout.router.split import sticky_bucket\n"
        "print([sticky_bucket('rollout-1', f'user-{n}') for n in range(500)])"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2", "random")
    }
    assert len(outputs) == 1


async def test_a_late_event_loop_refuses_new_completions() -> None:
    source = StaticConfigSource([routed(traffic(weight=0))])
    admission = Admission(RouterApp(source, RouterSettings(max_loop_lag=0.1)))
    admission.start()
    assert admission.refusal() is None
    time.sleep(0.3)  # noqa: ASYNC251 (one stall: not an overload)
    await asyncio.sleep(0)
    assert admission.refusal() is None
    for _ in range(15):  # the loop late turn after turn
        time.sleep(0.15)  # noqa: ASYNC251
        await asyncio.sleep(0)
    assert admission.refusal() == "loop_lag"
    await asyncio.sleep(0.6)  # the loop on time again
    assert admission.refusal() is None


def test_a_supervisor_killed_outright_takes_its_workers_with_it(tmp_path: Path) -> None:
    """As a killed container's processes go together; orphans would keep the port."""
    port = free_port()
    script = (
        "import sys\n"
        "from quantrollout.router.source import StaticConfigSource\n"
        "from quantrollout.router.workers import Supervisor, serve\n"
        f"serve(Supervisor(StaticConfigSource(), 2, '127.0.0.1', {port}, log_level='warning'))\n"
    )
    supervisor = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        workers: list[int] = []
        while len(workers) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
            out = subprocess.run(["pgrep", "-P", str(supervisor.pid)], capture_output=True,
                                 text=True, check=False).stdout  # fmt: skip
            workers = [int(p) for p in out.split()]
        assert len(workers) == 2
        supervisor.kill()
        supervisor.wait()
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in workers):
            assert time.monotonic() < deadline, "a worker outlived its supervisor"
            time.sleep(0.05)
        with socket.socket() as again:  # the port is free for the next router
            again.bind(("127.0.0.1", port))
    finally:
        supervisor.kill()
        supervisor.wait()


async def test_a_mixed_model_is_split_by_class_in_every_worker(tiers: tuple[Sim, Sim]) -> None:
    """The class split reaches every worker with the table, and the per-class series of all
    workers add up in /metrics, class fallbacks included."""
    from quantrollout.api.status import ClassTraffic, TrafficBackend

    base, target = tiers
    chat_short = ClassTraffic.model_validate(
        {"class": "chat-short", "tier": TARGET, "weight": 100, "rest": BASE}
    )
    mixed = traffic().model_copy(
        update={"target": None, "targets": [TrafficBackend(tier=TARGET, service=TARGET_SVC)],
                "classes": [chat_short]}
    )  # fmt: skip
    async with supervised(StaticConfigSource([routed(mixed)]), 2, base, target) as supervisor:
        url = f"http://127.0.0.1:{supervisor.port}"
        code = chat("```python\nprint(1)\n```")
        for n in range(20):
            async with httpx.AsyncClient(base_url=url) as http:
                headers = {"x-user-id": f"u{n}"}
                short = await http.post("/v1/chat/completions", json=chat(), headers=headers)
                fenced = await http.post("/v1/chat/completions", json=code, headers=headers)
            assert short.headers[TIER_HEADER] == TARGET
            assert fenced.headers[TIER_HEADER] == BASE  # no route for code: the baseline
        async with httpx.AsyncClient(base_url=url) as http:
            metrics = (await http.get("/metrics")).text
    assert series(metrics, signals.ROUTER_REQUESTS, tier=TARGET, **{"class": "chat-short"}) == 20
    assert series(metrics, signals.ROUTER_REQUESTS, tier=BASE, **{"class": "code"}) == 20
    assert series(metrics, signals.ROUTER_CLASS_FALLBACKS, reason="no-route") == 20
