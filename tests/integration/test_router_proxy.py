"""The router in front of two real vLLM simulators on loopback: splitting, streaming, shadow,
quality signals, fallback and the errors a client can meet. The route table comes from the
static config source here; test_router_kube.py drives it from the API server."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from quantrollout import signals
from quantrollout.api.status import TrafficBackend, TrafficStatus
from quantrollout.router.admission import Admission
from quantrollout.router.agreement import word_f1
from quantrollout.router.app import RouterApp
from quantrollout.router.quality import has_repetition_loop, is_refusal
from quantrollout.router.routes import ModelTraffic
from quantrollout.router.server import RunningRouter
from quantrollout.router.settings import RouterSettings
from quantrollout.router.source import StaticConfigSource
from quantrollout.router.split import goes_to_target, sticky_bucket
from vllmsim import SimConfig

MODEL, NS, QM = "llama", "llm", "llama3-8b"
BASE, TARGET = "fp16", "int4-awq"
BASE_SVC, TARGET_SVC = "llama3-8b-fp16", "llama3-8b-int4-awq"


def traffic(
    weight: int = 0,
    mirror: int = 0,
    sticky: str | None = "x-user-id",
    rollout: str = "rollout-1",
    target: bool = True,
) -> TrafficStatus:
    return TrafficStatus(
        rollout_id=rollout,
        served_model=MODEL,
        target_weight=weight,
        mirror_percent=mirror,
        sticky_header=sticky,
        baseline=TrafficBackend(tier=BASE, service=BASE_SVC),
        target=TrafficBackend(tier=TARGET, service=TARGET_SVC) if target else None,
    )


def routed(t: TrafficStatus) -> ModelTraffic:
    return ModelTraffic(NS, QM, "2026-11-01T00:00:00Z", t)


def chat(content: str = "What limits throughput?", **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


HACK = Path(__file__).resolve().parents[2] / "hack"


class Sim:
    """A vLLM simulator in its own process (`python -m vllmsim`), as a tier's pod would be.

    Not the in-process `vllmsim.Sim`: its thread would share the GIL with the router and
    the test client, and every request would wait on thread switches (~5 ms each)."""

    def __init__(self, tier: str) -> None:
        self.tier, self.port = tier, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(HACK)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vllmsim", "--port", str(self.port), "--model", MODEL,
             "--tier", tier],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"vllmsim ({tier}) did not start on {self.url}")

    def configure(self, **changes: Any) -> None:
        httpx.post(f"{self.url}/control", json=changes).raise_for_status()

    def reset(self) -> Sim:
        self.configure(**SimConfig().model_dump())
        return self

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def base(sims: tuple[Sim, Sim]) -> Sim:
    return sims[0].reset()


@pytest.fixture
def target(sims: tuple[Sim, Sim]) -> Sim:
    return sims[1].reset()


class Rig:
    """A running router, its config source, and a client talking to it."""

    def __init__(
        self,
        app: RouterApp,
        source: StaticConfigSource,
        client: httpx.AsyncClient,
        admission: Admission,
    ):
        self.app, self.source, self.client = app, source, client
        self.admission = admission  # in front of `app`: in flight, and streams served inline

    def set(self, t: TrafficStatus) -> None:
        self.source.set([routed(t)])

    def value(self, name: str, tier: str, **labels: str) -> float:
        """A series' value; `class` is "" (a model without classes) unless given (`cls=`)."""
        cls = labels.pop("cls", "")
        got = self.app.metrics.registry.get_sample_value(
            name, {"namespace": NS, "model": QM, "tier": tier, "class": cls, **labels}
        )
        return got or 0.0

    async def eventually(self, name: str, tier: str, want: float, **labels: str) -> None:
        """Waits for a series the router records in the background (shadows) to reach `want`."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.value(name, tier, **labels) == want:
                return
            await asyncio.sleep(0.02)
        assert self.value(name, tier, **labels) == want, (name, tier, labels)

    async def post(self, body: Any, url: str = "/v1/chat/completions", **kw: Any) -> httpx.Response:
        return await self.client.post(url, json=body, **kw)

    async def many(self, bodies: list[tuple[Any, dict[str, str]]]) -> list[httpx.Response]:
        """Posts (body, headers) pairs, 16 at a time."""
        limit = asyncio.Semaphore(16)

        async def one(body: Any, headers: dict[str, str]) -> httpx.Response:
            async with limit:
                return await self.post(body, headers=headers)

        return await asyncio.gather(*(one(b, h) for b, h in bodies))

    async def stream(self, body: dict[str, Any], **kw: Any) -> tuple[httpx.Response, list[bytes]]:
        chunks: list[bytes] = []
        async with self.client.stream(
            "POST", "/v1/chat/completions", json={**body, "stream": True}, **kw
        ) as resp:
            async for chunk in resp.aiter_raw():
                chunks.append(chunk)
        return resp, chunks


@asynccontextmanager
async def rig(
    t: TrafficStatus, base_url: str, target_url: str, **settings: Any
) -> AsyncIterator[Rig]:
    source = StaticConfigSource([routed(t)])
    upstreams = {(NS, BASE_SVC): base_url, (NS, TARGET_SVC): target_url}
    settings.setdefault("calibration_percent", 0)  # no second baseline copies unless a test asks
    app = RouterApp(source, RouterSettings(upstreams=upstreams, **settings))
    async with (
        RunningRouter(app) as router,
        httpx.AsyncClient(base_url=router.url, timeout=10) as client,
    ):
        yield Rig(app, source, client, router.admission)


@pytest.fixture
async def router(base: Sim, target: Sim) -> AsyncIterator[Rig]:
    async with rig(traffic(), base.url, target.url, read_timeout=1.0) as r:
        yield r


def tier_of(resp: httpx.Response) -> str:
    # The router names the tier; the simulator's own header proves which server answered.
    assert resp.headers["x-quantrollout-tier"] == resp.headers["x-vllmsim-tier"]
    return resp.headers["x-quantrollout-tier"]


def sse_text(chunks: list[bytes]) -> tuple[str, bool]:
    """The streamed answer's text, and whether the stream ended with [DONE]."""
    raw = b"".join(chunks).decode()
    events = [e.removeprefix("data: ") for e in raw.split("\n\n") if e.startswith("data: ")]
    text = "".join(
        (json.loads(e)["choices"] or [{}])[0].get("delta", {}).get("content") or ""
        for e in events
        if e != "[DONE]"
    )
    return text, bool(events) and events[-1] == "[DONE]"


# --- splitting ----------------------------------------------------------------------------


async def test_weight_0_and_100(router: Rig) -> None:
    assert {tier_of(await router.post(chat(f"q{i}"))) for i in range(10)} == {BASE}
    router.set(traffic(weight=100))
    assert {tier_of(await router.post(chat(f"q{i}"))) for i in range(10)} == {TARGET}
    assert router.value(signals.ROUTER_REQUESTS, BASE, code="200") == 10
    assert router.value(signals.ROUTER_REQUESTS, TARGET, code="200") == 10


async def test_without_a_sticky_key_each_request_is_split(router: Rig) -> None:
    router.set(traffic(weight=30))
    tiers = await router.many([(chat(), {})] * 200)
    share = sum(tier_of(r) == TARGET for r in tiers) / len(tiers)
    assert 0.18 < share < 0.42


async def test_sticky_users_stay_and_a_raise_moves_only_whom_it_must(router: Rig) -> None:
    users = [f"user-{i}" for i in range(200)]

    async def tiers() -> dict[str, str]:
        answers = await router.many([(chat(), {"x-user-id": u}) for u in users])
        return {u: tier_of(r) for u, r in zip(users, answers, strict=True)}

    router.set(traffic(weight=10))
    at10 = await tiers()
    assert await tiers() == at10  # the same users, the same tiers
    router.set(traffic(weight=25))
    at25 = await tiers()
    moved = {u for u in users if at10[u] != at25[u]}
    assert all(at10[u] == BASE and at25[u] == TARGET for u in moved)  # never back
    expected = {u for u in users if 1000 <= sticky_bucket("rollout-1", u) < 2500}
    assert moved == expected
    assert {u for u in users if at25[u] == TARGET} == {
        u for u in users if goes_to_target(sticky_bucket("rollout-1", u), 25)
    }
    # Another rollout reshuffles who goes first.
    router.set(traffic(weight=25, rollout="rollout-2"))
    assert await tiers() != at25


# --- streaming ----------------------------------------------------------------------------


async def test_streams_pass_through_chunk_by_chunk(router: Rig, base: Sim) -> None:
    base.configure(token_delay_ms=20)
    arrivals: list[float] = []
    chunks: list[bytes] = []
    start = time.perf_counter()
    async with router.client.stream(
        "POST", "/v1/chat/completions", json=chat(stream=True, max_tokens=20)
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        async for chunk in resp.aiter_raw():
            arrivals.append(time.perf_counter() - start)
            chunks.append(chunk)
    # 20 tokens 20 ms apart: the first arrives long before the last (no buffering), and they
    # arrive spread out, not in one piece.
    assert arrivals[0] < arrivals[-1] - 0.25
    assert len(chunks) >= 10
    text, done = sse_text(chunks)
    assert done
    direct = (await router.post(chat(max_tokens=20), url=f"{base.url}/v1/chat/completions")).json()
    assert text == direct["choices"][0]["message"]["content"]
    assert router.value(signals.ROUTER_TTFT + "_count", BASE) == 1
    assert router.value(signals.ROUTER_LATENCY + "_count", BASE) == 1
    assert router.value(signals.ROUTER_OUTPUT_TOKENS, BASE) == 20
    assert router.value(signals.ROUTER_RESPONSES, BASE) == 1


async def test_completions_endpoint_streams_too(router: Rig) -> None:
    body = {"model": MODEL, "prompt": "Say something", "stream": True, "max_tokens": 5}
    async with router.client.stream("POST", "/v1/completions", json=body) as resp:
        raw = b"".join([c async for c in resp.aiter_raw()])
    assert resp.status_code == 200
    assert raw.endswith(b"data: [DONE]\n\n")
    assert router.value(signals.ROUTER_OUTPUT_TOKENS, BASE) == 5


async def test_a_client_that_leaves_mid_stream_is_counted_and_the_tier_released(
    router: Rig, base: Sim
) -> None:
    base.configure(token_delay_ms=50)
    async with router.client.stream("POST", "/v1/chat/completions", json=chat(stream=True)) as r:
        async for _ in r.aiter_raw():
            break  # leave after the first chunk
    await router.eventually(signals.ROUTER_REQUESTS, BASE, 1, code="499")
    assert router.value(signals.ROUTER_RESPONSES, BASE) == 0  # a half answer is not judged
    await stops_generating(router.client, base)


async def stops_generating(client: httpx.AsyncClient, sim: Sim) -> None:
    """Waits (up to 5 s) for `sim` to run no request, as vLLM says it in its metrics."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        metrics = (await client.get(f"{sim.url}/metrics")).text
        running = [ln for ln in metrics.splitlines() if ln.startswith(signals.VLLM_RUNNING)]
        if running and running[0].endswith(" 0.0"):
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"the simulator still generates for a client that left: {running}")


# --- quality signals ----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_quality_signals_per_tier(router: Rig, base: Sim, target: Sim, stream: bool) -> None:
    router.set(traffic(weight=100))
    target.configure(repetition_rate=0.5, refusal_rate=0.25)
    texts: list[str] = []
    for i in range(8):
        if stream:
            resp, chunks = await router.stream(chat(f"prompt {i}"))
            texts.append(sse_text(chunks)[0])
        else:
            resp = await router.post(chat(f"prompt {i}"))
            texts.append(resp.json()["choices"][0]["message"]["content"])
        assert resp.status_code == 200
    # What the client got, judged by the same rules, is what the router counted.
    loops = sum(has_repetition_loop(t) for t in texts)
    refusals = sum(is_refusal(t) for t in texts)
    assert loops >= 2
    assert refusals >= 1
    router.set(traffic(weight=0))
    for i in range(4):
        await router.post(chat(f"prompt {i}"), headers={"x-user-id": f"u{i}"})
    assert router.value(signals.ROUTER_RESPONSES, TARGET) == 8
    assert router.value(signals.ROUTER_REPETITIONS, TARGET) == loops
    assert router.value(signals.ROUTER_REFUSALS, TARGET) == refusals
    assert router.value(signals.ROUTER_OUTPUT_TOKENS, TARGET) == sum(len(t.split()) for t in texts)
    assert router.value(signals.ROUTER_RESPONSES, BASE) == 4
    assert router.value(signals.ROUTER_REPETITIONS, BASE) == 0
    assert router.value(signals.ROUTER_REFUSALS, BASE) == 0


# --- shadow -------------------------------------------------------------------------------


async def test_shadow_never_delays_the_client_and_scores_agreement(
    router: Rig, target: Sim
) -> None:
    router.set(traffic(mirror=100))
    target.configure(latency_ms=600)
    started = time.perf_counter()
    answers = await asyncio.gather(*(router.post(chat(f"q{i}", temperature=0)) for i in range(5)))
    # The shadow waits 0.6 s for its first token, well inside the rig's 1 s read timeout.
    elapsed = time.perf_counter() - started
    assert {tier_of(r) for r in answers} == {BASE}  # only the baseline's answer comes back
    assert elapsed < 0.4, f"the client waited {elapsed:.2f}s: for the 0.6s shadow?"
    assert router.value(signals.ROUTER_SHADOW_REQUESTS, TARGET, outcome="compared") == 0
    await router.eventually(signals.ROUTER_SHADOW_REQUESTS, TARGET, 5, outcome="compared")
    # Greedy answers of the same prompt are identical on both simulators: exact match.
    assert router.value(signals.ROUTER_SHADOW_AGREEMENT + "_sum", TARGET, sampling="greedy") == 5
    assert router.value(signals.ROUTER_REQUESTS, TARGET, code="200") == 0  # no live traffic
    assert router.value(signals.ROUTER_RESPONSES, TARGET) == 5  # but its answers are judged


async def test_shadow_disagreement(router: Rig, target: Sim) -> None:
    router.set(traffic(mirror=100))
    target.configure(divergence_rate=1.0)
    for i in range(3):
        resp, _ = await router.stream(chat(f"q{i}", temperature=0))
        assert tier_of(resp) == BASE
    await router.eventually(signals.ROUTER_SHADOW_REQUESTS, TARGET, 3, outcome="compared")
    greedy = {"sampling": "greedy"}
    assert router.value(signals.ROUTER_SHADOW_AGREEMENT + "_sum", TARGET, **greedy) == 0
    assert (
        router.value(signals.ROUTER_SHADOW_AGREEMENT + "_bucket", TARGET, le="0.1", **greedy) == 3
    )


async def test_sampled_shadow_scores_word_overlap(router: Rig, base: Sim, target: Sim) -> None:
    router.set(traffic(mirror=100))
    target.configure(output_scale=0.5)  # the same words, half as many
    body = chat("overlap", temperature=0.7, seed=42)
    await router.post(body)
    await router.eventually(signals.ROUTER_SHADOW_REQUESTS, TARGET, 1, outcome="compared")
    a, b = [
        (await router.post(body, url=f"{s.url}/v1/chat/completions")).json()["choices"][0]
        for s in (base, target)
    ]
    expected = word_f1(a["message"]["content"], b["message"]["content"])
    assert 0.3 < expected < 0.9
    score = router.value(signals.ROUTER_SHADOW_AGREEMENT + "_sum", TARGET, sampling="seeded")
    assert score == pytest.approx(expected)


async def test_shadow_failures_are_counted_not_seen(router: Rig, target: Sim) -> None:
    router.set(traffic(mirror=100))
    target.configure(error_rate=1.0)
    answers = await asyncio.gather(*(router.post(chat()) for _ in range(4)))
    assert all(r.status_code == 200 for r in answers)
    await router.eventually(signals.ROUTER_SHADOW_REQUESTS, TARGET, 4, outcome="error")
    assert router.value(signals.ROUTER_ERRORS, TARGET) == 0  # errors count live requests only


async def test_shadows_past_the_limit_are_dropped(base: Sim, target: Sim) -> None:
    target.configure(latency_ms=500)
    async with rig(traffic(mirror=100), base.url, target.url, max_shadow_inflight=2) as r:
        for _ in range(5):
            assert (await r.post(chat())).status_code == 200
        assert r.value(signals.ROUTER_SHADOW_REQUESTS, TARGET, outcome="dropped") == 3
        await r.eventually(signals.ROUTER_SHADOW_REQUESTS, TARGET, 2, outcome="compared")


# --- fallback -----------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_a_failing_target_falls_back_to_the_baseline(
    router: Rig, target: Sim, stream: bool
) -> None:
    router.set(traffic(weight=100))
    target.configure(error_rate=1.0)
    for _ in range(3):
        if stream:
            resp, chunks = await router.stream(chat())
            assert sse_text(chunks)[1]
        else:
            resp = await router.post(chat())
        assert resp.status_code == 200
        assert tier_of(resp) == BASE
    assert router.value(signals.ROUTER_FALLBACKS, TARGET) == 3
    assert router.value(signals.ROUTER_ERRORS, TARGET) == 3
    assert router.value(signals.ROUTER_REQUESTS, TARGET, code="500") == 3
    assert router.value(signals.ROUTER_REQUESTS, BASE, code="200") == 3
    assert router.value(signals.ROUTER_ERRORS, BASE) == 0


async def test_a_target_that_times_out_falls_back(router: Rig, target: Sim) -> None:
    router.set(traffic(weight=100))
    target.configure(latency_ms=2000)  # the rig's read timeout is 1 s
    resp, chunks = await router.stream(chat())
    assert resp.status_code == 200
    assert tier_of(resp) == BASE
    assert sse_text(chunks)[1]
    assert router.value(signals.ROUTER_REQUESTS, TARGET, code="504") == 1
    assert router.value(signals.ROUTER_FALLBACKS, TARGET) == 1


async def test_an_unreachable_target_falls_back(base: Sim) -> None:
    async with rig(traffic(weight=100), base.url, f"http://127.0.0.1:{free_port()}") as r:
        resp = await r.post(chat())
        assert resp.status_code == 200
        assert tier_of(resp) == BASE
        assert r.value(signals.ROUTER_REQUESTS, TARGET, code="502") == 1
        assert r.value(signals.ROUTER_FALLBACKS, TARGET) == 1


async def test_a_client_error_is_not_retried(router: Rig) -> None:
    router.set(traffic(weight=100))
    resp = await router.post({"model": MODEL, "messages": "not a list"})
    assert resp.status_code == 400
    assert tier_of(resp) == TARGET
    assert router.value(signals.ROUTER_FALLBACKS, TARGET) == 0
    assert router.value(signals.ROUTER_ERRORS, TARGET) == 0


# --- errors the client sees ---------------------------------------------------------------


async def test_malformed_json_is_400_with_a_message(router: Rig) -> None:
    resp = await router.client.post("/v1/chat/completions", content=b'{"model": "llama",')
    assert resp.status_code == 400
    assert "not valid JSON" in resp.json()["error"]["message"]
    for body in (b"[1, 2]", b'{"model": 7}', b"\xff\xfe"):
        resp = await router.client.post("/v1/chat/completions", content=body)
        assert resp.status_code == 400, body
        assert resp.json()["error"]["message"]


async def test_an_oversized_body_is_413(base: Sim, target: Sim) -> None:
    async with rig(traffic(), base.url, target.url, max_body_bytes=1000) as r:
        resp = await r.post(chat("x" * 2000))
        assert resp.status_code == 413
        assert "larger than the router's limit of 1000 bytes" in resp.json()["error"]["message"]
        assert resp.json()["error"]["code"] == "request_too_large"

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
            for _ in range(5):
                yield b" " * 400

        resp = await r.client.post("/v1/chat/completions", content=chunked())
        assert resp.status_code == 413
        assert (await r.post(chat("small"))).status_code == 200


async def test_an_unknown_model_is_404(router: Rig) -> None:
    resp = await router.post({"model": "gpt-17", "messages": []})
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "model_not_found"


async def test_no_reachable_tier_is_503_with_retry_after() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with rig(traffic(weight=50), dead, dead) as r:
        for stream in (False, True):
            resp = await r.post(chat(stream=stream))
            assert resp.status_code == 503
            assert resp.headers["retry-after"] == "1"
            assert "cannot be reached" in resp.json()["error"]["message"]


async def test_a_baseline_5xx_is_passed_on(router: Rig, base: Sim) -> None:
    base.configure(error_rate=1.0)
    resp = await router.post(chat())
    assert resp.status_code == 500
    assert tier_of(resp) == BASE
    assert router.value(signals.ROUTER_ERRORS, BASE) == 1


async def test_other_paths_and_methods(router: Rig) -> None:
    assert (await router.client.get("/v1/chat/completions")).status_code == 405
    assert (await router.client.post("/v1/models")).status_code == 405
    assert (await router.client.get("/v2/whatever")).status_code == 404


# --- a tier that breaks the connection ----------------------------------------------------


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request a tier got: its head read, its body read past; the head."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )  # fmt: skip
    await reader.readexactly(length)
    return head


@asynccontextmanager
async def broken_tier(after_first_chunk: bool) -> AsyncIterator[str]:
    """A real HTTP server on loopback that starts a stream and then drops the connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        if after_first_chunk:
            event = b'data: {"choices": [{"index": 0, "delta": {"content": "Hel"}}]}\n\n'
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        await writer.drain()
        writer.transport.abort()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


async def test_a_target_dropping_before_its_first_byte_falls_back(base: Sim) -> None:
    async with (
        broken_tier(after_first_chunk=False) as url,
        rig(traffic(weight=100), base.url, url) as r,
    ):
        resp, chunks = await r.stream(chat())
        assert tier_of(resp) == BASE
        assert sse_text(chunks)[1]
        assert r.value(signals.ROUTER_FALLBACKS, TARGET) == 1


async def test_a_target_dropping_mid_stream_ends_the_stream_with_an_error(
    base: Sim,
) -> None:
    async with (
        broken_tier(after_first_chunk=True) as url,
        rig(traffic(weight=100), base.url, url) as r,
    ):
        resp, chunks = await r.stream(chat())
        assert resp.status_code == 200
        raw = b"".join(chunks)
        assert raw.startswith(b'data: {"choices"')
        assert b'"error"' in raw
        assert raw.endswith(b"data: [DONE]\n\n")
        assert r.value(signals.ROUTER_REQUESTS, TARGET, code="502") == 1
        assert r.value(signals.ROUTER_ERRORS, TARGET) == 1
        assert r.value(signals.ROUTER_FALLBACKS, TARGET) == 0  # too late: the client had bytes


# --- the other endpoints ------------------------------------------------------------------


async def test_models_health_and_metrics(router: Rig) -> None:
    models = (await router.client.get("/v1/models")).json()
    assert [m["id"] for m in models["data"]] == [MODEL]
    assert models["data"][0]["owned_by"] == f"{NS}/{QM}"
    health = await router.client.get("/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "models": 1}
    await router.post(chat())
    text = (await router.client.get("/metrics")).text
    line = f'{signals.ROUTER_REQUESTS}{{class="",code="200",model="{QM}",namespace="{NS}",tier="{BASE}"}} 1.0'
    assert line in text.splitlines()


# --- a weight change under load -----------------------------------------------------------


async def test_a_weight_change_under_load_drops_nothing_and_moves_traffic(
    router: Rig, base: Sim, target: Sim
) -> None:
    """Streams and plain requests keep flowing while the weight goes 0 -> 50 -> 100; every one
    succeeds in full, each on the tier the table said when it arrived."""
    base.configure(token_delay_ms=4)
    target.configure(token_delay_ms=4)
    # (start, answer headers received, end, tier, complete)
    done: list[tuple[float, float, float, str, bool]] = []
    streaming: set[str] = set()  # the streams whose headers came and whose end did not yet
    some_streaming = asyncio.Event()
    stop = time.monotonic() + 2.4

    async def stream(body: dict[str, Any]) -> tuple[float, str, bool]:
        async with router.client.stream(
            "POST", "/v1/chat/completions", json={**body, "stream": True}
        ) as resp:
            headers_at = time.monotonic()
            streaming.add(body["messages"][0]["content"])
            some_streaming.set()
            try:
                chunks = [chunk async for chunk in resp.aiter_raw()]
            finally:
                streaming.discard(body["messages"][0]["content"])
                if not streaming:
                    some_streaming.clear()
        return headers_at, tier_of(resp), resp.status_code == 200 and sse_text(chunks)[1]

    async def worker(i: int) -> None:
        n = 0
        while time.monotonic() < stop:
            n += 1
            start = time.monotonic()
            # Answers of different lengths, so that the workers do not fall into step.
            body = chat(f"w{i}-{n}", max_tokens=20 + 3 * (i % 5))
            if (i + n) % 2:
                headers_at, tier, complete = await stream(body)
            else:
                resp = await router.post(body)
                headers_at, tier = time.monotonic(), tier_of(resp)
                complete = resp.status_code == 200 and bool(resp.json()["choices"])
            done.append((start, headers_at, time.monotonic(), tier, complete))

    async def turn() -> tuple[float, float]:
        await asyncio.sleep(0.8)
        while not streaming:  # the first change comes while some stream is half-way
            await some_streaming.wait()
        router.set(traffic(weight=50, sticky=None))
        half = time.monotonic()
        await asyncio.sleep(0.8)
        router.set(traffic(weight=100, sticky=None))
        return half, time.monotonic()

    changes = asyncio.create_task(turn())
    await asyncio.gather(*(worker(i) for i in range(12)))
    half, full = await changes

    assert all(r[4] for r in done), "a request failed or was cut short"
    # Decided before the change (they had their answer's headers): the old table, to the end.
    before = [tier for start, headers, end, tier, _ in done if headers < half]
    # Arrived after a change: the new table.
    during = [tier for start, headers, end, tier, _ in done if start > half and end < full]
    after = [tier for start, headers, end, tier, _ in done if start > full]
    streams_across = [tier for start, headers, end, tier, _ in done if headers < half < end]
    assert set(before) == {BASE}
    assert {BASE, TARGET} <= set(during)
    assert set(after) == {TARGET}
    assert streams_across, "no stream was in flight across the change"
    assert router.value(signals.ROUTER_CONFIG_RELOADS, TARGET) == 2
    errors = router.value(signals.ROUTER_ERRORS, BASE) + router.value(signals.ROUTER_ERRORS, TARGET)
    assert errors == 0
