"""The OpenAI wire format, as vLLM speaks it: parsing completion requests and shaping answers,
stream chunks and errors. Pure functions; the HTTP handling is in app.py."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["chat", "completion"]


class BadRequestError(ValueError):
    """The request cannot be served; `status` and the message go back in an OpenAI error."""

    def __init__(self, message: str, status: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.param = status, param


@dataclass(frozen=True)
class CompletionRequest:
    kind: Kind
    model: str | None
    prompt: str  # the text the answer is a function of
    max_tokens: int | None
    stream: bool
    include_usage: bool
    temperature: float
    seed: int | None


def _message_text(message: object, index: int) -> str:
    if not isinstance(message, dict):
        raise BadRequestError(f"messages[{index}] must be an object", param="messages")
    content = message.get("content")
    if content is None or isinstance(content, str):
        text = content or ""
    elif isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict)]
        text = " ".join(p for p in parts if isinstance(p, str))
    else:
        raise BadRequestError(
            f"messages[{index}].content must be a string or a list", param="messages"
        )
    return f"{message.get('role', 'user')}: {text}"


def _prompt(kind: Kind, body: dict[str, Any]) -> str:
    if kind == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequestError("messages must be a non-empty list", param="messages")
        return "\n".join(_message_text(m, i) for i, m in enumerate(messages))
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return "\n".join(prompt)
    raise BadRequestError("prompt must be a string or a non-empty list of strings", param="prompt")


def _optional(body: dict[str, Any], key: str, kind: type, default: Any = None) -> Any:
    value = body.get(key, default)
    if value is None or (isinstance(value, kind) and not isinstance(value, bool)):
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    raise BadRequestError(f"{key} must be {'an integer' if kind is int else 'a number'}", param=key)


def parse_request(kind: Kind, body: object) -> CompletionRequest:
    if not isinstance(body, dict):
        raise BadRequestError("the request body must be a JSON object")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise BadRequestError("model must be a string", param="model")
    max_tokens = _optional(body, "max_tokens", int)
    if kind == "chat" and max_tokens is None:
        max_tokens = _optional(body, "max_completion_tokens", int)
    if max_tokens is not None and max_tokens < 1:
        raise BadRequestError("max_tokens must be at least 1", param="max_tokens")
    temperature = _optional(body, "temperature", float) or 0.0
    options = body.get("stream_options")
    return CompletionRequest(
        kind=kind,
        model=model,
        prompt=_prompt(kind, body),
        max_tokens=max_tokens,
        stream=bool(body.get("stream", False)),
        include_usage=isinstance(options, dict) and bool(options.get("include_usage")),
        temperature=temperature,
        seed=_optional(body, "seed", int),
    )


def error_body(message: str, status: int, param: str | None = None) -> dict[str, Any]:
    kinds = {400: "BadRequestError", 404: "NotFoundError", 500: "InternalServerError"}
    return {
        "error": {
            "message": message,
            "type": kinds.get(status, "Error"),
            "param": param,
            "code": status,
        }
    }


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


@dataclass(frozen=True)
class Envelope:
    """What every response and chunk of one request shares."""

    kind: Kind
    model: str
    id: str
    created: int

    @classmethod
    def new(cls, kind: Kind, model: str) -> Envelope:
        prefix = "chatcmpl" if kind == "chat" else "cmpl"
        return cls(kind, model, f"{prefix}-{uuid.uuid4().hex}", int(time.time()))

    def _base(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def response(
        self, text: str, finish_reason: str, prompt_tokens: int, completion_tokens: int
    ) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0}
        if self.kind == "chat":
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        choice |= {"logprobs": None, "finish_reason": finish_reason}
        obj = "chat.completion" if self.kind == "chat" else "text_completion"
        return self._base(obj) | {
            "choices": [choice],
            "usage": usage(prompt_tokens, completion_tokens),
        }

    def chunk(
        self, text: str, finish_reason: str | None = None, *, role: bool = False
    ) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0}
        if self.kind == "chat":
            delta: dict[str, Any] = {"role": "assistant"} if role else {}
            choice["delta"] = delta | {"content": text}
        else:
            choice["text"] = text
        choice |= {"logprobs": None, "finish_reason": finish_reason}
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return self._base(obj) | {"choices": [choice]}

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return self._base(obj) | {"choices": [], "usage": usage(prompt_tokens, completion_tokens)}


def models_list(model: str, created: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {
                "id": model,
                "object": "model",
                "created": created,
                "owned_by": "vllm",
                "root": model,
                "parent": None,
            }
        ],
    }
