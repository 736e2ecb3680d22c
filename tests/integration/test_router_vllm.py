"""The router against what a real vLLM server does beyond plain chat: every request path vLLM
serves reaches the tiers through the same split, a stream vLLM ends with an error event counts as
the tier's error, tool calls and reasoning are part of the shadow comparison, the baseline's
agreement with itself is measured, and the analysis rules read all of it from a real Prometheus
scraping the router. Real HTTP servers on loopback: the router, vLLM simulators (processes), a
recording upstream, and Debian's Prometheus."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from localstack import prometheus as localprom
from quantrollout import signals
from quantrollout.analysis.rules import Scope, expression
from quantrollout.api.spec import Rule
from quantrollout.router.endpoints import FORWARDED

from .test_router_proxy import (
    BASE,
    MODEL,
    NS,
    QM,
    TARGET,
    Rig,
    Sim,
    chat,
    rig,
    tier_of,
    traffic,
)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
        },
    },
}


@pytest.fixture
def base(sims: tuple[Sim, Sim]) -> Sim:
    return sims[0].reset()


@pytest.fixture
def target(sims: tuple[Sim, Sim]) -> Sim:
    return sims[1].reset()


@pytest.fixture
async def router(base: Sim, target: Sim) -> AsyncIterator[Rig]:
    async with rig(traffic(), base.url, target.url, read_timeout=2.0) as r:
        yield r


def events(raw: bytes) -> list[Any]:
    return [
        json.loads(line[6:])
        for line in raw.decode().split("\n")
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


# --- a stream that fails mid-generation -------------------------------------------------------


async def test_a_stream_vllm_ends_with_an_error_event_is_the_tier_s_error(
    router: Rig, target: Sim
) -> None:
    router.set(traffic(weight=100))
    target.configure(stream_error_rate=1.0)
    for i in range(3):
        resp, chunks = await router.stream(chat(f"q{i}"))
        assert resp.status_code == 200  # the status line went out before the failure
        assert tier_of(resp) == TARGET
        assert "error" in events(b"".join(chunks))[-1]
    assert router.value(signals.ROUTER_ERRORS, TARGET) == 3
    assert router.value(signals.ROUTER_REQUESTS, TARGET, code="500") == 3
    assert router.value(signals.ROUTER_REQUESTS, TARGET, code="200") == 0
    assert router.value(signals.ROUTER_RESPONSES, TARGET) == 0  # half an answer is not judged


async def test_a_shadow_stream_that_fails_mid_generation_is_a_shadow_error(
    router: Rig, target: Sim
) -> None:
    router.set(traffic(mirror=100))
    target.configure(stream_error_rate=1.0)
    for i in range(2):
        resp, _ = await router.stream(chat(f"q{i}", temperature=0))
        assert tier_of(resp) == BASE
    await router.eventually(signals.ROUTER_SHADOW_REQUESTS, TARGET, 2, outcome="error")
    assert router.value(signals.ROUTER_SHADOW_REQUESTS, TARGET, outcome="compared") == 0


# --- tool calls and reasoning are compared ----------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_two_different_tool_calls_disagree(
    router: Rig, base: Sim, target: Sim, stream: bool
) -> None:
    router.set(traffic(mirror=100))
    target.configure(divergence_rate=1.0)  # the same function, other arguments
    body = chat("weather in Paris?", temperature=0, tools=[WEATHER], stream=stream)
    resp = await router.post(body)
    assert tier_of(resp) == BASE
    if not stream:
        call = resp.json()["choices"][0]["message"]["tool_calls"][0]["function"]
        assert call["name"] == "get_weather"
        assert resp.json()["choices"][0]["message"]["content"] is None
    await router.eventually(signals.ROUTER_SHADOW_REQUESTS, TARGET, 1, outcome="compared")
    greedy = {"sampling": "greedy"}
    assert router.value(signals.ROUTER_SHADOW_AGREEMENT + "_count", TARGET, **greedy) == 1
    assert router.value(signals.ROUTER_SHADOW_AGREEMENT + "_sum", TARGET, **greedy) == 0
    target.configure(divergence_rate=0.0)  # now the same call: full agreement
    await router.post(body)
    await router.eventually(signals.ROUTER_SHADOW_REQUESTS, TARGET, 2, outcome="compared")
    assert router.value(signals.ROUTER_SHADOW_AGREEMENT + "_sum", TARGET, **greedy) == 1


async def test_reasoning_is_compared(router: Rig, base: Sim, target: Sim) -> None:
    router.set(traffic(mirror=100))
    base.configure(reasoning=True)  # the target answers the same content without reasoning
    resp, _ = await router.stream(chat("why?", temperature=0))
    assert tier_of(resp) == BASE
    await router.eventually(signals.ROUTER_SHADOW_REQUESTS, TARGET, 1, outcome="compared")
    assert router.value(signals.ROUTER_SHADOW_AGREEMENT + "_sum", TARGET, sampling="greedy") == 0


# --- calibration: the baseline against itself -------------------------------------------------


async def test_the_baseline_s_agreement_with_itself_is_measured(base: Sim, target: Sim) -> None:
    # No temperature in the requests: both tiers sample (the model's generation config).
    for sim in (base, target):
        sim.configure(default_temperature=1.0)
    async with rig(traffic(mirror=100), base.url, target.url, calibration_percent=100) as r:
        for i in range(6):
            assert tier_of(await r.post(chat(f"q{i}"))) == BASE
        sampled = {"sampling": "sampled"}
        await r.eventually(signals.ROUTER_SHADOW_REQUESTS, BASE, 6, outcome="compared")
        await r.eventually(signals.ROUTER_SHADOW_REQUESTS, TARGET, 6, outcome="compared")
        calibration = r.value(signals.ROUTER_SHADOW_SELF_AGREEMENT + "_sum", BASE, **sampled) / 6
        shadow = r.value(signals.ROUTER_SHADOW_AGREEMENT + "_sum", TARGET, **sampled) / 6
        # Two samples of the same model disagree, and the target no more than the baseline.
        assert 0 < calibration < 1
        assert shadow == pytest.approx(calibration, abs=0.25)
        # A calibration copy is not a live request, nor one of the baseline's judged answers.
        assert r.value(signals.ROUTER_REQUESTS, BASE, code="200") == 6
        assert r.value(signals.ROUTER_RESPONSES, BASE) == 6


# --- every path vLLM serves goes through the split ----------------------------------------------


@asynccontextmanager
async def recording_tier(name: str, seen: list[tuple[str, str, bytes, str]]) -> AsyncIterator[str]:
    """A real HTTP server that records (method, target, body, tier) and answers `{}`."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ")
        length = next(
            (int(h.split(":")[1]) for h in lines if h.lower().startswith("content-length")), 0
        )
        body = await reader.readexactly(length)
        seen.append((method, target, body, name))
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n"
            b"connection: close\r\n\r\n{}"
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


async def test_every_forwarded_path_reaches_the_tier_the_split_picks() -> None:
    seen: list[tuple[str, str, bytes, str]] = []
    async with (
        recording_tier(BASE, seen) as base_url,
        recording_tier(TARGET, seen) as target_url,
        rig(traffic(weight=50), base_url, target_url) as r,
    ):
        for user in ("ann", "bob", "cid", "dan"):
            tiers = set()
            for route, endpoint in FORWARDED.items():
                path = route.replace("{response_id}", "resp_1")
                if endpoint.body == "json":
                    body = json.dumps({"model": MODEL, "input": "x" * 10}).encode()
                    headers = {"content-type": "application/json"}
                elif endpoint.body == "form":
                    body = b"model=" + MODEL.encode() + b"&language=en"
                    headers = {"content-type": "application/x-www-form-urlencoded"}
                else:
                    body, headers = b"", {}
                resp = await r.client.request(
                    endpoint.method,
                    path + "?x=1",
                    content=body,
                    headers={**headers, "x-user-id": user},
                )
                assert resp.status_code == 200, (route, resp.text)
                method, target, got, tier = seen[-1]
                assert (method, target, got) == (endpoint.method, path + "?x=1", body), route
                assert resp.headers["x-quantrollout-tier"] == tier
                tiers.add(tier)
            assert len(tiers) == 1, f"{user} was split across tiers: sticky on every path"
        assert {tier for *_, tier in seen} == {BASE, TARGET}


async def test_new_paths_answer_as_vllm_does(router: Rig, base: Sim) -> None:
    c = router.client
    router.set(traffic(weight=100))  # the target answers them all
    resp = await c.post("/v1/embeddings", json={"model": MODEL, "input": ["a", "b"]})
    assert tier_of(resp) == TARGET
    assert [len(d["embedding"]) for d in resp.json()["data"]] == [32, 32]
    resp = await c.post("/tokenize", json={"prompt": "héllo"})  # no model: the only one served
    tokens = resp.json()["tokens"]
    assert resp.json()["count"] == len(tokens) == 6
    assert (await c.post("/detokenize", json={"tokens": tokens})).json() == {"prompt": "héllo"}
    scores = (await c.post("/v1/score", json={"text_1": "a b", "text_2": ["a b", "c"]})).json()
    assert [d["score"] for d in scores["data"]] == [1.0, 0.0]
    rerank = await c.post("/v1/rerank", json={"query": "a b", "documents": ["c", "a b"]})
    assert [x["index"] for x in rerank.json()["results"]] == [1, 0]
    assert (await c.get("/version")).json() == {"version": "0.34.0"}
    assert (await c.get(f"/version?model={MODEL}")).status_code == 200
    assert (await c.get("/version?model=other")).status_code == 404
    assert router.value(signals.ROUTER_REQUESTS, TARGET, code="200") == 7
    assert router.value(signals.ROUTER_RESPONSES, TARGET) == 0  # not generated text: not judged


async def test_the_responses_api_is_inspected_and_stored_on_the_sticky_tier(router: Rig) -> None:
    router.set(traffic(weight=50))
    user = {"x-user-id": "ann"}
    resp = await router.client.post(
        "/v1/responses", json={"model": MODEL, "input": "hi"}, headers=user
    )
    assert resp.status_code == 200
    answered = tier_of(resp)
    assert resp.json()["output"][0]["content"][0]["text"]
    assert router.value(signals.ROUTER_RESPONSES, answered) == 1  # judged like a chat answer
    again = await router.client.get(f"/v1/responses/{resp.json()['id']}", headers=user)
    assert again.status_code == 200
    assert again.json()["id"] == resp.json()["id"]
    assert tier_of(again) == answered


async def test_a_body_of_several_mib_goes_through_by_default(router: Rig) -> None:
    image = "data:image/png;base64," + "A" * (6 << 20)
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": image}},
    ]
    resp = await router.post({"model": MODEL, "messages": [{"role": "user", "content": content}]})
    assert resp.status_code == 200
    assert tier_of(resp) == BASE


async def test_without_a_model_several_served_models_are_refused(router: Rig) -> None:
    from quantrollout.router.routes import ModelTraffic

    other = traffic().model_copy(update={"served_model": "other"})
    router.source.set(
        [
            ModelTraffic(NS, QM, "2026-11-01T00:00:00Z", traffic()),
            ModelTraffic(NS, "other", "2026-11-02T00:00:00Z", other),
        ]
    )
    resp = await router.client.post("/tokenize", json={"prompt": "x"})
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "model"
    assert (
        await router.client.post("/tokenize", json={"model": MODEL, "prompt": "x"})
    ).status_code == 200


# --- the rules read it from Prometheus ----------------------------------------------------------


def instant(prom: localprom.Prometheus, expr: str) -> list[float]:
    url = prom.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as resp:
        return [float(r["value"][1]) for r in json.load(resp)["data"]["result"]]


async def rule_value(
    prom: localprom.Prometheus, name: str, want: float, poke: Callable[[], Awaitable[object]]
) -> list[float]:
    """The rule's value as the analysis queries it, once it reaches `want`. `poke` sends one more
    request each round: Prometheus's increase() starts from a series' first scrape, so the
    requests that count are the ones after it."""
    expr = expression(Rule(name=name, min="0"), Scope(NS, QM, BASE, TARGET), "1m")
    deadline = time.monotonic() + 30
    got = await asyncio.to_thread(instant, prom, expr)
    while got != pytest.approx([want], abs=0.02) and time.monotonic() < deadline:
        await poke()
        await asyncio.sleep(1.0)
        got = await asyncio.to_thread(instant, prom, expr)
    return got


async def test_the_rules_see_failed_streams_and_judge_agreement_against_calibration(
    prometheus: localprom.Prometheus, base: Sim, target: Sim
) -> None:
    async with rig(traffic(weight=100), base.url, target.url, calibration_percent=100) as r:
        address = f"127.0.0.1:{r.client.base_url.port}"
        prometheus.add_targets("router", [address], {"job": "router"})
        try:
            await asyncio.to_thread(prometheus.wait_for_target_up, address)
            target.configure(stream_error_rate=1.0)
            # Every live request the target answers fails mid-stream, under HTTP 200.
            got = await rule_value(prometheus, "error-rate", 1.0, lambda: r.stream(chat("q")))
            assert got == pytest.approx([1.0])

            target.configure(stream_error_rate=0.0, divergence_rate=1.0)
            r.set(traffic(mirror=100))
            # The baseline agrees with itself (greedy), the divergent target not at all: 0 / 1.
            greedy = chat("p", temperature=0)
            got = await rule_value(prometheus, "shadow-agreement", 0.0, lambda: r.post(greedy))
            assert got == pytest.approx([0.0])
            compared = r.value(signals.ROUTER_SHADOW_REQUESTS, TARGET, outcome="compared")
            target.configure(divergence_rate=0.0)
            for _ in range(int(3 * compared)):  # as many agreeing as disagreeing ones, thrice
                await r.post(greedy)
            await r.eventually(
                signals.ROUTER_SHADOW_REQUESTS, TARGET, 4 * compared, outcome="compared"
            )
            got = await rule_value(prometheus, "shadow-agreement", 0.75, lambda: asyncio.sleep(0))
            assert got == pytest.approx([0.75], abs=0.02)
        finally:
            prometheus.remove_targets("router")
