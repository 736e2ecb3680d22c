"""The router as the official `openai` Python client sees it: chat (streamed with usage), tool
calls, the Responses API, embeddings, transcriptions, and every error raising the client's own
exception class for its status. The router runs on loopback in front of two vLLM simulators."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import openai
import pytest

from quantrollout import signals

from .test_router_proxy import BASE, MODEL, TARGET, Rig, Sim, free_port, rig, traffic

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
ASK = [{"role": "user", "content": "What limits throughput?"}]


@pytest.fixture
async def router(sims: tuple[Sim, Sim]) -> AsyncIterator[Rig]:
    base, target = (sim.reset() for sim in sims)
    async with rig(traffic(), base.url, target.url, max_body_bytes=4096) as r:
        yield r


@pytest.fixture
async def client(router: Rig) -> AsyncIterator[openai.AsyncOpenAI]:
    # No retries: a test sees the status the router answered, not the client's third attempt.
    async with openai.AsyncOpenAI(
        base_url=f"{router.client.base_url}/v1", api_key="unused", max_retries=0, timeout=10
    ) as c:
        yield c


async def test_chat(client: openai.AsyncOpenAI, router: Rig) -> None:
    answer = await client.chat.completions.create(model=MODEL, messages=ASK, temperature=0)
    assert answer.choices[0].message.content
    assert answer.usage is not None
    assert answer.usage.completion_tokens == len(answer.choices[0].message.content.split())
    assert router.value(signals.ROUTER_OUTPUT_TOKENS, BASE) == answer.usage.completion_tokens


async def test_a_stream_with_include_usage(client: openai.AsyncOpenAI, router: Rig) -> None:
    stream = await client.chat.completions.create(
        model=MODEL, messages=ASK, stream=True, stream_options={"include_usage": True}
    )
    text, usage = "", None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage is not None:
            usage = chunk.usage
    assert text
    assert usage is not None
    assert usage.completion_tokens == len(text.split())
    assert router.value(signals.ROUTER_OUTPUT_TOKENS, BASE) == usage.completion_tokens
    assert router.value(signals.ROUTER_RESPONSES, BASE) == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_calls(client: openai.AsyncOpenAI, stream: bool) -> None:
    if not stream:
        answer = await client.chat.completions.create(
            model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="auto"
        )
        calls = answer.choices[0].message.tool_calls or []
        assert answer.choices[0].finish_reason == "tool_calls"
        assert [(c.function.name, list(json.loads(c.function.arguments))) for c in calls] == [
            ("get_weather", ["city"])
        ]
        return
    chunks = await client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER], stream=True
    )
    name, arguments, finish = "", "", None
    async for chunk in chunks:
        for delta in chunk.choices[0].delta.tool_calls or []:
            name += (delta.function and delta.function.name) or ""
            arguments += (delta.function and delta.function.arguments) or ""
        finish = chunk.choices[0].finish_reason or finish
    assert (name, finish) == ("get_weather", "tool_calls")
    assert list(json.loads(arguments)) == ["city"]


async def test_the_responses_api(client: openai.AsyncOpenAI, router: Rig) -> None:
    response = await client.responses.create(model=MODEL, input="Say something.", temperature=0)
    assert response.status == "completed"
    assert response.output_text
    assert response.usage is not None
    got = await client.responses.retrieve(response.id)
    assert got.id == response.id
    deltas = []
    async for event in await client.responses.create(
        model=MODEL, input="Say something.", stream=True
    ):
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        last = event
    assert last.type == "response.completed"
    assert "".join(deltas) == last.response.output_text
    assert router.value(signals.ROUTER_RESPONSES, BASE) == 2  # both answers judged


async def test_responses_with_a_tool(client: openai.AsyncOpenAI) -> None:
    tool = {
        "type": "function",
        "name": "get_weather",
        "parameters": WEATHER["function"]["parameters"],
    }
    response = await client.responses.create(model=MODEL, input="Weather?", tools=[tool])
    [call] = [item for item in response.output if item.type == "function_call"]
    assert call.name == "get_weather"


async def test_embeddings(client: openai.AsyncOpenAI, router: Rig) -> None:
    # Not told, the client asks for base64 and decodes it itself; told, it passes floats on.
    for told in ({}, {"encoding_format": "float"}):
        result = await client.embeddings.create(model=MODEL, input=["one", "two"], **told)
        assert [len(d.embedding) for d in result.data] == [32, 32]
        assert sum(x * x for x in result.data[0].embedding) == pytest.approx(1.0, abs=1e-5)
    assert router.value(signals.ROUTER_REQUESTS, BASE, code="200") == 2


async def test_a_transcription_upload(sims: tuple[Sim, Sim]) -> None:
    base, target = (sim.reset() for sim in sims)
    async with (
        rig(traffic(weight=100), base.url, target.url) as r,
        openai.AsyncOpenAI(base_url=f"{r.client.base_url}/v1", api_key="-", max_retries=0) as c,
    ):
        text = await c.audio.transcriptions.create(
            model=MODEL, file=("a.wav", b"RIFF" + bytes(64000)), response_format="json"
        )
        assert text.text
        assert r.value(signals.ROUTER_REQUESTS, TARGET, code="200") == 1  # the split held


# --- errors, as the client raises them ------------------------------------------------------


async def test_errors_raise_the_client_s_classes(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as unknown:
        await client.chat.completions.create(model="gpt-17", messages=ASK)
    assert unknown.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):  # the tier's own 400, passed on
        await client.chat.completions.create(model=MODEL, messages=[])
    with pytest.raises(openai.APIStatusError) as too_large:
        await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x" * 5000}]
        )
    assert too_large.value.status_code == 413
    assert "larger than the router's limit" in too_large.value.message
    with pytest.raises(openai.NotFoundError):  # a path vLLM does not serve
        await client.post("/nowhere", cast_to=object)


async def test_a_failing_tier_and_a_failed_stream(
    client: openai.AsyncOpenAI, router: Rig, sims: tuple[Sim, Sim]
) -> None:
    base = sims[0]
    base.configure(error_rate=1.0)
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model=MODEL, messages=ASK)
    base.configure(error_rate=0.0, stream_error_rate=1.0)
    stream = await client.chat.completions.create(model=MODEL, messages=ASK, stream=True)
    with pytest.raises(openai.APIError, match="mid-generation"):
        async for _ in stream:
            pass
    assert router.value(signals.ROUTER_ERRORS, BASE) == 2


async def test_no_tier_to_reach_is_a_503_the_client_can_retry() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with (
        rig(traffic(), dead, dead) as r,
        openai.AsyncOpenAI(base_url=f"{r.client.base_url}/v1", api_key="-", max_retries=0) as c,
    ):
        with pytest.raises(openai.InternalServerError) as failed:
            await c.chat.completions.create(model=MODEL, messages=ASK)
        assert failed.value.status_code == 503
        assert failed.value.response.headers["retry-after"] == "1"
