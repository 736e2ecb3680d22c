"""The ASGI application: vLLM's HTTP endpoints, /metrics and the /control knob.

`SimState` is one simulator's state (served model, fault configuration, request numbering,
metrics); `build_app(state)` serves it. Several states, and so several apps, can live in one
process.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from quantrollout.defaults import VLLM_NEWEST
from vllmsim.apis import Apis
from vllmsim.config import SimConfig, describe
from vllmsim.faults import FaultPlan
from vllmsim.generate import Generation, generate
from vllmsim.metrics import CONTENT_TYPE, VllmMetrics
from vllmsim.text import as_chunks
from vllmsim.wire import (
    BadRequestError,
    CompletionRequest,
    Envelope,
    Kind,
    error_body,
    models_list,
    tool_call_item,
)
from vllmsim.wire import parse_request as parse_completion_request

TIER_HEADER = "x-vllmsim-tier"


async def _sleep_at_least(seconds: float) -> None:
    """asyncio.sleep, but never shorter: uvloop's millisecond timers may fire a little early,
    and a configured latency is a floor the tests and the rules rely on."""
    deadline = time.monotonic() + seconds
    await asyncio.sleep(seconds)
    left = deadline - time.monotonic()
    if left > 0:
        await asyncio.sleep(left + 0.001)  # the timer's granularity is 1 ms


class SimState:
    def __init__(
        self,
        model: str,
        tier: str | None = None,
        config: SimConfig | None = None,
        *,
        max_model_len: int = 4096,
        vllm_version: str = VLLM_NEWEST,
    ) -> None:
        self.model, self.tier = model, tier
        self.vllm_version = vllm_version  # the release it simulates (its contract, `/version`)
        self.created = int(time.time())
        self.plan = FaultPlan()
        self.metrics = VllmMetrics(model, max_model_len, vllm_version)
        self._config = config or SimConfig()
        self._lock = threading.Lock()

    @property
    def config(self) -> SimConfig:
        return self._config

    def configure(self, changes: dict[str, Any]) -> SimConfig:
        """Applies a partial update; raises pydantic.ValidationError and keeps the old config."""
        with self._lock:
            self._config = self._config.updated(changes)
            return self._config


def _error(message: str, status: int, param: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, status, param), status_code=status)


async def _json_body(request: Request) -> object:
    try:
        return json.loads(await request.body())
    except ValueError as exc:  # includes UnicodeDecodeError
        raise BadRequestError(f"malformed JSON in the request body: {exc}") from exc


def _sse(data: dict[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


STREAM_FAILURE = "simulated engine failure mid-generation"


def stream_error_event() -> dict[str, Any]:
    """What vLLM sends when a generation fails after the stream began (its
    create_streaming_error_response: an ErrorResponse, under HTTP 200)."""
    return error_body(STREAM_FAILURE, 500)


def _chat_deltas(gen: Generation) -> list[dict[str, Any]]:
    """A chat answer's deltas in order: reasoning first, then the content, or the tool call (its
    id and name, then its arguments in pieces), as vLLM's parsers stream them."""
    deltas: list[dict[str, Any]] = [{"reasoning": piece} for piece in as_chunks(gen.reasoning)]
    if gen.tool_call is not None:
        name, arguments = gen.tool_call
        deltas.append({"tool_calls": [{"index": 0, **tool_call_item(name, "")}]})
        for piece in as_chunks(arguments.split(" ")):
            deltas.append({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
    else:
        deltas.extend({"content": piece} for piece in as_chunks(gen.tokens))
    return deltas


async def _stream(
    envelope: Envelope,
    req: CompletionRequest,
    gen: Generation,
    config: SimConfig,
    metrics: VllmMetrics,
    fails: bool = False,
) -> AsyncIterator[bytes]:
    track = metrics.track()  # here, not before: a stream never started must not stay counted
    try:
        await _sleep_at_least(config.latency_ms / 1000)
        track.first_token()
        if envelope.kind == "chat":  # vLLM opens a chat stream with the role
            yield _sse(envelope.chunk("", role=True))
            chunks = [envelope.delta_chunk(delta) for delta in _chat_deltas(gen)]
        else:
            chunks = [envelope.chunk(piece) for piece in as_chunks(gen.tokens)]
        finish = "tool_calls" if gen.tool_call is not None else gen.finish_reason
        if fails:  # half the answer, then the error event, then [DONE], as vLLM ends it
            for chunk in chunks[: len(chunks) // 2]:
                yield _sse(chunk)
                await _sleep_at_least(config.token_delay_ms / 1000)
            yield _sse(stream_error_event())
            yield _sse("[DONE]")
            return
        for i, chunk in enumerate(chunks):
            if i:
                await _sleep_at_least(config.token_delay_ms / 1000)
            if i == len(chunks) - 1:
                chunk["choices"][0]["finish_reason"] = finish
            yield _sse(chunk)
        if not chunks:
            yield _sse(envelope.chunk("", finish))
        if req.include_usage:
            yield _sse(envelope.usage_chunk(gen.prompt_tokens, gen.completion_tokens))
        yield _sse("[DONE]")
        track.finish(gen.finish_reason, gen.prompt_tokens, gen.completion_tokens)
    finally:
        track.close()


async def _complete(state: SimState, kind: Kind, request: Request) -> Response:
    try:
        req = parse_completion_request(kind, await _json_body(request))
    except BadRequestError as exc:
        return _error(str(exc), exc.status, exc.param)
    if req.model is not None and req.model != state.model:
        return _error(f"The model `{req.model}` does not exist.", 404, "model")
    config = state.config
    decision = state.plan.next(config)
    if decision.error:
        return _error(f"simulated engine failure (request {decision.sequence})", 500)
    gen = generate(req, decision, config)
    envelope = Envelope.new(kind, state.model)
    if req.stream:
        stream = _stream(envelope, req, gen, config, state.metrics, decision.stream_error)
        return StreamingResponse(stream, media_type="text/event-stream")
    track = state.metrics.track()
    try:
        await _sleep_at_least(config.latency_ms / 1000)
        track.first_token()
        await _sleep_at_least(config.token_delay_ms * max(0, gen.completion_tokens - 1) / 1000)
        if decision.stream_error:  # the generation failed: a non-streamed answer is a 500
            return _error(STREAM_FAILURE, 500)
        track.finish(gen.finish_reason, gen.prompt_tokens, gen.completion_tokens)
    finally:
        track.close()
    reasoning = " ".join(gen.reasoning) if config.reasoning else None
    return JSONResponse(
        envelope.response(
            gen.text, gen.finish_reason, gen.prompt_tokens, gen.completion_tokens,
            reasoning if kind == "chat" else None, gen.tool_call,
        )
    )  # fmt: skip


async def _control(state: SimState, request: Request) -> Response:
    if request.method == "POST":
        try:
            changes = await _json_body(request)
        except BadRequestError as exc:
            return _error(str(exc), 400)
        if not isinstance(changes, dict):
            return _error("POST /control takes a JSON object of SimConfig fields", 400)
        try:
            state.configure(changes)
        except ValidationError as exc:
            return _error(describe(exc), 400)
    return JSONResponse(state.config.model_dump())


def _tier_header(app: ASGIApp, tier: str) -> ASGIApp:
    """Marks every response with the simulator's tier, so a test can tell who answered."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_tier(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (TIER_HEADER.encode(), tier.encode()),
                ]
            await send(message)

        await app(scope, receive, send_with_tier)

    return wrapped


def build_app(state: SimState) -> ASGIApp:
    async def health(request: Request) -> Response:
        return Response(status_code=200 if state.config.healthy else 503)

    async def models(request: Request) -> Response:
        return JSONResponse(models_list(state.model, state.created))

    async def metrics(request: Request) -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    async def chat(request: Request) -> Response:
        return await _complete(state, "chat", request)

    async def completions(request: Request) -> Response:
        return await _complete(state, "completion", request)

    async def control(request: Request) -> Response:
        return await _control(state, request)

    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/control", control, methods=["GET", "POST"]),
            *Apis(state).routes(),
        ]
    )
    return _tier_header(app, state.tier) if state.tier else app
