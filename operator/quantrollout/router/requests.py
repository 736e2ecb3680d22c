"""Whether a request can be routed at all, before any tier is asked, and the little the router
reads from it. Pure.

The router reads only `model` (which QuantizedModel), `stream` (pass on as SSE or read whole)
and the sampling parameters (`temperature`, `top_k`, `seed`: how the shadow comparison scores);
the body goes to the tier byte for byte, and everything else in it is the tier's to judge.

`model` is optional, as in vLLM (which then answers with its one served model): a request
without one goes to the router's only model, and is refused (400) when the router serves
several. A JSON body gives it as `model`; an upload (multipart/form-data or a urlencoded form,
as the audio endpoints take) as its `model` field; a request without a body (GET /version) as
the query parameter `?model=` (vLLM ignores unknown query parameters).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from .agreement import Sampling, sampling
from .endpoints import Body


@dataclass(frozen=True, slots=True)
class Refused:
    """Why a request is refused, as an OpenAI-style error."""

    status: int
    message: str
    param: str | None = None
    code: str | None = None
    kind: str = "invalid_request_error"


@dataclass(frozen=True, slots=True)
class Request:
    """What the router read from one request."""

    model: str | None  # None: not given
    streamed: bool = False
    sampling: Sampling = "sampled"
    # The JSON body as parsed (None for a form or a body-less request): what the request class
    # of a mixed-precision model is read from (classify.py), without parsing it twice.
    parsed: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)


def parse_completion(body: bytes) -> dict[str, Any] | Refused:
    """The JSON request object, or why it cannot be routed (400)."""
    try:
        request = json.loads(body)
    except ValueError as err:  # UnicodeDecodeError is one too
        return Refused(400, f"request body is not valid JSON: {err}")
    if not isinstance(request, dict):
        return Refused(400, "request body must be a JSON object")
    model = request.get("model")
    if model is not None and not isinstance(model, str):
        return Refused(400, "'model' must be a string", param="model")
    return request


def _param(query: bytes, name: str) -> str | None:
    """The first value of a query (or urlencoded form) parameter, or None."""
    values = parse_qs(query.decode("latin-1")).get(name)
    return values[0] if values else None


def _form_model(body: bytes, content_type: str) -> str | None:
    """The `model` field of a form upload, or None."""
    kind, _, params = content_type.partition(";")
    kind = kind.strip().lower()
    if kind == "application/x-www-form-urlencoded":
        return _param(body, "model")
    if kind != "multipart/form-data":
        return None
    boundary = ""
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip().strip('"')
    if not boundary:
        return None
    delimiter = b"--" + boundary.encode("latin-1")
    for part in body.split(delimiter)[1:]:
        head, sep, content = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        for line in head.split(b"\r\n"):
            name, _, disposition = line.partition(b":")
            if name.strip().lower() != b"content-disposition":
                continue
            fields = [f.strip() for f in disposition.split(b";")]
            if b'name="model"' in fields or b"name=model" in fields:
                return content.removesuffix(b"\r\n").decode("utf-8", "replace")
    return None


def parse_request(body: bytes, kind: Body, content_type: str, query: bytes) -> Request | Refused:
    """What the router needs of a request to the tiers, or why it cannot be routed (400)."""
    if kind == "json":
        parsed = parse_completion(body)
        if isinstance(parsed, Refused):
            return parsed
        return Request(parsed.get("model"), parsed.get("stream") is True, sampling(parsed), parsed)
    streamed = (_param(query, "stream") or "").lower() == "true"
    if kind == "form":
        return Request(_form_model(body, content_type), streamed)
    return Request(_param(query, "model"), streamed)


def choose_model(requested: str | None, served: Collection[str]) -> str | Refused:
    """The served model a request goes to: the one it names, else the router's only one."""
    if requested is not None:
        return requested if requested in served else unknown_model(requested)
    if len(served) == 1:
        return next(iter(served))
    if not served:
        return Refused(404, "no model is served yet", "model", "model_not_found")
    names = ", ".join(sorted(served))
    return Refused(
        400,
        f"'model' is required: this router serves several models ({names})",
        param="model",
    )


def unknown_model(served: str) -> Refused:
    return Refused(404, f"the model {served!r} does not exist", "model", "model_not_found")
