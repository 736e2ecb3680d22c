"""vLLM's request routes beyond chat and completions, in the shapes of vLLM's protocol
(vllm/entrypoints/...): the Responses API (`/v1/responses`, stored responses and their cancel),
embeddings, tokenize/detokenize, scores and rerank, speech to text, and `/version`.

What the answers say is made up, deterministically from the request (text.py): an embedding is a
unit vector picked by a hash of its text, a score the word overlap of two texts, a transcript
words picked by a hash of the audio bytes. Tokens are the bytes of the UTF-8 text (a byte-level
tokenizer), so detokenize inverts tokenize on every simulator alike.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import struct
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from vllmsim import text
from vllmsim.generate import Generation, generate
from vllmsim.wire import BadRequestError, CompletionRequest, chosen_tool, error_body

EMBEDDING_DIMENSIONS = 32
MAX_MODEL_LEN = 4096
STORED_RESPONSES = 1000  # the Responses API keeps this many, the oldest dropped first


def _error(message: str, status: int, param: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, status, param), status_code=status)


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        raise BadRequestError(f"malformed JSON in the request body: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequestError("the request body must be a JSON object")
    return body


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def _texts(value: Any, param: str) -> list[str]:
    """A string or a list of strings (token lists are read as their numbers)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, int) for v in value):
            return [" ".join(map(str, value))]
        if all(isinstance(v, str | list) for v in value):
            return [v if isinstance(v, str) else " ".join(map(str, v)) for v in value]
    raise BadRequestError(f"{param} must be a string or a non-empty list", param=param)


def _words(value: str) -> Counter[str]:
    return Counter(re.findall(r"\w+", value.casefold()))


def _overlap(a: str, b: str) -> float:
    wa, wb = _words(a), _words(b)
    total = sum(wa.values()) + sum(wb.values())
    return 1.0 if total == 0 else 2 * sum((wa & wb).values()) / total


def embedding(value: str, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """A unit vector that depends only on `value`."""
    digest = hashlib.shake_256(value.encode()).digest(2 * dimensions)
    raw = [
        int.from_bytes(digest[i : i + 2], "big") / 65535 - 0.5 for i in range(0, 2 * dimensions, 2)
    ]
    norm = sum(x * x for x in raw) ** 0.5 or 1.0
    return [x / norm for x in raw]


class Apis:
    """The routes, served for one simulator (`state` is its vllmsim.app.SimState)."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.stored: dict[str, dict[str, Any]] = {}

    def routes(self) -> list[Route]:
        json_routes: dict[str, Callable[[dict[str, Any]], Awaitable[Response]]] = {
            "/v1/embeddings": self.embeddings,
            "/tokenize": self.tokenize,
            "/detokenize": self.detokenize,
            "/score": self.score,
            "/v1/score": self.score,
            "/rerank": self.rerank,
            "/v1/rerank": self.rerank,
            "/v2/rerank": self.rerank,
        }
        routes = [
            Route(path, self._json_endpoint(handler), methods=["POST"])
            for path, handler in json_routes.items()
        ]
        return [
            *routes,
            Route("/v1/responses", self.responses, methods=["POST"]),
            Route("/v1/responses/{response_id}", self.retrieve, methods=["GET"]),
            Route("/v1/responses/{response_id}/cancel", self.cancel, methods=["POST"]),
            Route("/v1/audio/transcriptions", self.audio, methods=["POST"]),
            Route("/v1/audio/translations", self.audio, methods=["POST"]),
            Route("/version", self.version, methods=["GET"]),
        ]

    def _json_endpoint(
        self, handler: Callable[[dict[str, Any]], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                body = await _json_object(request)
                refused = self._wrong_model(body.get("model"))
                return refused or await handler(body)
            except BadRequestError as exc:
                return _error(str(exc), exc.status, exc.param)

        return endpoint

    def _wrong_model(self, model: Any) -> Response | None:
        if model is not None and model != self.state.model:
            return _error(f"The model `{model}` does not exist.", 404, "model")
        return None

    # --- pooling, tokens ---------------------------------------------------------------------

    async def embeddings(self, body: dict[str, Any]) -> Response:
        inputs = _texts(body.get("input"), "input")
        dimensions = body.get("dimensions") or EMBEDDING_DIMENSIONS
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise BadRequestError(
                "encoding_format must be float or base64", param="encoding_format"
            )
        data = []
        for i, value in enumerate(inputs):
            vector: Any = embedding(value, int(dimensions))
            if encoding == "base64":
                vector = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"index": i, "object": "embedding", "embedding": vector})
        tokens = sum(text.count_tokens(v) for v in inputs)
        return JSONResponse(
            {
                "id": _id("embd"), "object": "list", "created": int(time.time()),
                "model": self.state.model, "data": data,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0,
                          "prompt_tokens_details": None},
            }
        )  # fmt: skip

    async def tokenize(self, body: dict[str, Any]) -> Response:
        if isinstance(body.get("prompt"), str):
            prompt = body["prompt"]
        elif isinstance(body.get("messages"), list):
            prompt = "\n".join(
                f"{m.get('role', 'user')}: {m.get('content') or ''}"
                for m in body["messages"]
                if isinstance(m, dict)
            )
        else:
            raise BadRequestError("prompt (a string) or messages is required", param="prompt")
        tokens = list(prompt.encode())
        strs = (
            [bytes([t]).decode("latin-1") for t in tokens]
            if body.get("return_token_strs")
            else None
        )
        return JSONResponse(
            {
                "count": len(tokens),
                "max_model_len": MAX_MODEL_LEN,
                "tokens": tokens,
                "token_strs": strs,
            }
        )

    async def detokenize(self, body: dict[str, Any]) -> Response:
        tokens = body.get("tokens")
        if not isinstance(tokens, list) or not all(
            isinstance(t, int) and 0 <= t < 256 for t in tokens
        ):
            raise BadRequestError("tokens must be a list of token ids", param="tokens")
        return JSONResponse({"prompt": bytes(tokens).decode("utf-8", "replace")})

    async def score(self, body: dict[str, Any]) -> Response:
        for first, second in (("queries", "documents"), ("queries", "items"), ("data_1", "data_2"), ("text_1", "text_2")):  # fmt: skip
            if first in body and second in body:
                a, b = _texts(body[first], first), _texts(body[second], second)
                break
        else:
            raise BadRequestError(
                "give queries and documents (or text_1 and text_2)", param="queries"
            )
        if len(a) == 1:
            a = a * len(b)
        if len(a) != len(b):
            raise BadRequestError("the two lists must be as long as each other", param="documents")
        data = [
            {"index": i, "object": "score", "score": _overlap(x, y)}
            for i, (x, y) in enumerate(zip(a, b, strict=True))
        ]
        tokens = sum(text.count_tokens(x) + text.count_tokens(y) for x, y in zip(a, b, strict=True))
        return JSONResponse(
            {
                "id": _id("score"), "object": "list", "created": int(time.time()),
                "model": self.state.model, "data": data,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
            }
        )  # fmt: skip

    async def rerank(self, body: dict[str, Any]) -> Response:
        query = _texts(body.get("query"), "query")[0]
        documents = _texts(body.get("documents"), "documents")
        top_n = body.get("top_n") or len(documents)
        scores = sorted(((-_overlap(query, d), i) for i, d in enumerate(documents)))[: int(top_n)]
        ranked = [
            {"index": i, "document": {"text": documents[i]}, "relevance_score": -score}
            for score, i in scores
        ]
        tokens = sum(text.count_tokens(query) + text.count_tokens(d) for d in documents)
        return JSONResponse(
            {
                "id": _id("rerank"), "model": self.state.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}, "results": ranked,
            }
        )  # fmt: skip

    # --- speech to text, version --------------------------------------------------------------

    async def audio(self, request: Request) -> Response:
        fields = _multipart(await request.body(), request.headers.get("content-type", ""))
        if "file" not in fields:
            return _error("the upload has no `file` field", 400, "file")
        model = fields.get("model")
        refused = self._wrong_model(model.decode() if model is not None else None)
        if refused is not None:
            return refused
        key = hashlib.blake2b(fields["file"], digest_size=8).hexdigest()
        transcript = " ".join(text.normal_answer(key, 12))
        seconds = max(1, len(fields["file"]) // 32000)
        if fields.get("response_format", b"json") == b"text":
            return PlainTextResponse(transcript)
        return JSONResponse({"text": transcript, "usage": {"type": "duration", "seconds": seconds}})

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": self.state.vllm_version})

    # --- the Responses API ---------------------------------------------------------------------

    async def responses(self, request: Request) -> Response:
        try:
            body = await _json_object(request)
            refused = self._wrong_model(body.get("model"))
            if refused is not None:
                return refused
            req = _responses_request(body)
        except BadRequestError as exc:
            return _error(str(exc), exc.status, exc.param)
        config = self.state.config
        decision = self.state.plan.next(config)
        if decision.error:
            return _error(f"simulated engine failure (request {decision.sequence})", 500)
        gen = generate(req, decision, config)
        track = self.state.metrics.track()
        try:
            await asyncio.sleep(config.latency_ms / 1000)
            if not decision.stream_error:
                track.finish(gen.finish_reason, gen.prompt_tokens, gen.completion_tokens)
        finally:
            track.close()
        response = self._response(body, gen)
        if body.get("store", True):
            self._store(response)
        if req.stream:
            stream = _response_events(response, gen, decision.stream_error)
            return StreamingResponse(stream, media_type="text/event-stream")
        if decision.stream_error:
            return _error("simulated engine failure mid-generation", 500)
        return JSONResponse(response)

    def _response(self, body: dict[str, Any], gen: Generation) -> dict[str, Any]:
        output: list[dict[str, Any]] = []
        if gen.reasoning:
            output.append(
                {"id": _id("rs"), "type": "reasoning", "summary": [], "status": None,
                 "content": [{"type": "reasoning_text", "text": " ".join(gen.reasoning)}],
                 "encrypted_content": None}
            )  # fmt: skip
        if gen.tool_call is not None:
            name, arguments = gen.tool_call
            output.append(
                {"id": _id("fc"), "type": "function_call", "call_id": _id("call"), "name": name,
                 "arguments": arguments, "status": "completed"}
            )  # fmt: skip
        else:
            output.append(
                {"id": _id("msg"), "type": "message", "role": "assistant", "status": "completed",
                 "content": [{"type": "output_text", "text": gen.text, "annotations": [], "logprobs": None}]}
            )  # fmt: skip
        usage = {
            "input_tokens": gen.prompt_tokens, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": gen.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": len(gen.reasoning)},
            "total_tokens": gen.prompt_tokens + gen.completion_tokens,
        }  # fmt: skip
        return {
            "id": f"resp_{uuid.uuid4().hex}", "created_at": int(time.time()),
            "incomplete_details": None if gen.finish_reason == "stop" else {"reason": "max_output_tokens"},
            "instructions": body.get("instructions"), "metadata": body.get("metadata"),
            "model": self.state.model, "object": "response", "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "temperature": body.get("temperature", 1.0), "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools", []), "top_p": body.get("top_p", 1.0),
            "background": bool(body.get("background", False)),
            "max_output_tokens": body.get("max_output_tokens") or MAX_MODEL_LEN,
            "max_tool_calls": None, "previous_response_id": body.get("previous_response_id"),
            "prompt": None, "reasoning": None, "service_tier": "auto",
            "status": "completed" if gen.finish_reason == "stop" else "incomplete",
            "text": None, "top_logprobs": None, "truncation": "disabled", "usage": usage,
            "user": None,
        }  # fmt: skip

    def _store(self, response: dict[str, Any]) -> None:
        self.stored[response["id"]] = response
        while len(self.stored) > STORED_RESPONSES:
            del self.stored[next(iter(self.stored))]

    async def retrieve(self, request: Request) -> Response:
        response = self.stored.get(request.path_params["response_id"])
        if response is None:
            return _not_found(request.path_params["response_id"])
        return JSONResponse(response)

    async def cancel(self, request: Request) -> Response:
        response = self.stored.get(request.path_params["response_id"])
        if response is None:
            return _not_found(request.path_params["response_id"])
        # Every simulated response is finished when it is stored, as a synchronous one is.
        error = error_body("Cannot cancel a synchronous response.", 400)
        error["error"]["type"] = "invalid_request_error"
        return JSONResponse(error, status_code=400)


def _not_found(response_id: str) -> JSONResponse:
    error = error_body(f"Response with id '{response_id}' not found.", 404)
    error["error"]["type"] = "invalid_request_error"
    return JSONResponse(error, status_code=404)


def _input_text(value: Any) -> str:
    """The text of a Responses API `input`: a string, or a list of items (messages whose content
    is a string or a list of `input_text` parts)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list) or not value:
        raise BadRequestError("input must be a string or a non-empty list", param="input")
    lines = []
    for item in value:
        if not isinstance(item, dict):
            raise BadRequestError("each input item must be an object", param="input")
        content = item.get("content", item.get("output", ""))
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        lines.append(f"{item.get('role', item.get('type', 'user'))}: {content}")
    return "\n".join(lines)


def _responses_request(body: dict[str, Any]) -> CompletionRequest:
    prompt = _input_text(body.get("input"))
    if isinstance(body.get("instructions"), str):
        prompt = f"system: {body['instructions']}\n{prompt}"
    limit = body.get("max_output_tokens")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise BadRequestError(
            "max_output_tokens must be a positive integer", param="max_output_tokens"
        )
    temperature = body.get("temperature")
    return CompletionRequest(
        kind="chat",
        model=body.get("model"),
        prompt=prompt,
        max_tokens=limit,
        stream=body.get("stream") is True,
        include_usage=True,
        temperature=float(temperature) if isinstance(temperature, int | float) else None,
        seed=body.get("seed") if isinstance(body.get("seed"), int) else None,
        top_k=body.get("top_k") if isinstance(body.get("top_k"), int) else None,
        tool=chosen_tool(body),
    )


def _event(kind: str, sequence: int, **fields: Any) -> bytes:
    data = json.dumps({"type": kind, "sequence_number": sequence, **fields}, separators=(",", ":"))
    return f"event: {kind}\ndata: {data}\n\n".encode()


async def _response_events(
    response: dict[str, Any], gen: Generation, fails: bool
) -> AsyncIterator[bytes]:
    """A Responses API stream, as vLLM sends it: created, in_progress, each output item (added,
    its deltas, done), completed; `fails`: an error event halfway through the text instead."""
    n = iter(range(1_000_000))
    started = response | {"status": "in_progress", "output": [], "usage": None}
    yield _event("response.created", next(n), response=started)
    yield _event("response.in_progress", next(n), response=started)
    for index, item in enumerate(response["output"]):
        blank: dict[str, Any] = (
            {"content": []} if item["type"] in ("message", "reasoning") else {"arguments": ""}
        )
        empty = item | blank
        yield _event(
            "response.output_item.added",
            next(n),
            output_index=index,
            item=empty | {"status": "in_progress"},
        )
        at = {"item_id": item["id"], "output_index": index}
        if item["type"] == "function_call":
            yield _event(
                "response.function_call_arguments.delta", next(n), **at, delta=item["arguments"]
            )
            yield _event(
                "response.function_call_arguments.done",
                next(n),
                **at,
                arguments=item["arguments"],
                name=item["name"],
            )
        elif item["type"] == "reasoning":
            thought = item["content"][0]["text"]
            for piece in text.as_chunks(thought.split(" ")):
                yield _event(
                    "response.reasoning_text.delta", next(n), **at, content_index=0, delta=piece
                )
            yield _event(
                "response.reasoning_text.done", next(n), **at, content_index=0, text=thought
            )
        else:
            part: dict[str, Any] = {"type": "output_text", "text": "", "annotations": []}
            yield _event("response.content_part.added", next(n), **at, content_index=0, part=part)
            pieces = text.as_chunks(gen.tokens)
            for i, piece in enumerate(pieces):
                if fails and i == len(pieces) // 2:
                    yield _event("error", next(n), code="server_error", message="simulated engine failure mid-generation", param=None)  # fmt: skip
                    return
                yield _event(
                    "response.output_text.delta",
                    next(n),
                    **at,
                    content_index=0,
                    delta=piece,
                    logprobs=[],
                )
            if fails:  # nothing to cut in half
                yield _event("error", next(n), code="server_error", message="simulated engine failure mid-generation", param=None)  # fmt: skip
                return
            yield _event(
                "response.output_text.done",
                next(n),
                **at,
                content_index=0,
                text=gen.text,
                logprobs=[],
            )
            yield _event(
                "response.content_part.done",
                next(n),
                **at,
                content_index=0,
                part=item["content"][0],
            )
        yield _event("response.output_item.done", next(n), output_index=index, item=item)
    yield _event("response.completed", next(n), response=response)


def _multipart(body: bytes, content_type: str) -> dict[str, bytes]:
    """The fields of a multipart/form-data body, by name (the last of a repeated name)."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if match is None:
        return {}
    fields: dict[str, bytes] = {}
    for part in body.split(b"--" + match.group(1).encode())[1:]:
        head, sep, content = part.partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]*)"', head)
        if sep and name is not None:
            fields[name.group(1).decode()] = content.removesuffix(b"\r\n")
    return fields
