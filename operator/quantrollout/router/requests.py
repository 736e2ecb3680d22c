"""Whether a completion request can be routed at all, before any tier is asked. Pure.

The router reads only `model` (which QuantizedModel), `stream` (pass on as SSE or read whole)
and `temperature` (how the shadow comparison scores); the body goes to the tier byte for byte,
and everything else in it is the tier's to judge.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Refused:
    """Why a request is refused, as an OpenAI-style error."""

    status: int
    message: str
    param: str | None = None
    code: str | None = None
    kind: str = "invalid_request_error"


def parse_completion(body: bytes) -> dict[str, Any] | Refused:
    """The request object, or why it cannot be routed (400)."""
    try:
        request = json.loads(body)
    except ValueError as err:  # UnicodeDecodeError is one too
        return Refused(400, f"request body is not valid JSON: {err}")
    if not isinstance(request, dict):
        return Refused(400, "request body must be a JSON object")
    if not isinstance(request.get("model"), str):
        return Refused(400, "'model' is required and must be a string", param="model")
    return request


def unknown_model(served: str) -> Refused:
    return Refused(404, f"the model {served!r} does not exist", "model", "model_not_found")
