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
class ToolSpec:
    """The function a request lets the model call: its name and its parameters' names."""

    name: str
    parameters: tuple[str, ...]


@dataclass(frozen=True)
class CompletionRequest:
    kind: Kind
    model: str | None
    prompt: str  # the text the answer is a function of
    max_tokens: int | None
    stream: bool
    include_usage: bool
    temperature: float | None  # None: not given (the server's default applies)
    seed: int | None
    top_k: int | None = None
    tool: ToolSpec | None = None  # the function the answer calls, if the request offers one


def _tool_spec(tool: object) -> ToolSpec | None:
    """A chat tool ({"type": "function", "function": {...}}) or a Responses API one (flat)."""
    if not isinstance(tool, dict):
        return None
    function = tool.get("function", tool)
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        return None
    parameters = function.get("parameters")
    properties = parameters.get("properties") if isinstance(parameters, dict) else None
    names = tuple(sorted(properties)) if isinstance(properties, dict) else ()
    return ToolSpec(function["name"], names)


def chosen_tool(body: dict[str, Any]) -> ToolSpec | None:
    """The tool the answer calls: the one `tool_choice` names, else the first offered (a real
    model decides; the simulator always calls one), none when `tool_choice` is "none"."""
    tools = body.get("tools")
    choice = body.get("tool_choice", "auto")
    if not isinstance(tools, list) or not tools or choice == "none":
        return None
    specs = [spec for spec in map(_tool_spec, tools) if spec is not None]
    if isinstance(choice, dict):
        named = choice.get("function", choice)
        name = named.get("name") if isinstance(named, dict) else None
        for spec in specs:
            if spec.name == name:
                return spec
        raise BadRequestError(
            f"tool_choice names a function not in tools: {name!r}", param="tool_choice"
        )
    return specs[0] if specs else None


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
    temperature = _optional(body, "temperature", float)
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
        top_k=_optional(body, "top_k", int),
        tool=chosen_tool(body) if kind == "chat" else None,
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
        self,
        text: str,
        finish_reason: str,
        prompt_tokens: int,
        completion_tokens: int,
        reasoning: str | None = None,
        tool_call: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0}
        if self.kind == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if reasoning is not None:
                message["reasoning"] = reasoning
            if tool_call is not None:  # vLLM: no content beside a parsed tool call
                message["content"] = None
                message["tool_calls"] = [tool_call_item(*tool_call)]
                finish_reason = "tool_calls"
            choice["message"] = message
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

    def delta_chunk(
        self, delta: dict[str, Any], finish_reason: str | None = None
    ) -> dict[str, Any]:
        """A chat chunk with any delta: reasoning, or a piece of a tool call."""
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._base("chat.completion.chunk") | {"choices": [choice]}

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return self._base(obj) | {"choices": [], "usage": usage(prompt_tokens, completion_tokens)}


def tool_call_item(name: str, arguments: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-tool-{uuid.uuid4().hex}",
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


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
