"""The ASGI plumbing the router needs and nothing more: reading a bounded request body and
sending small JSON answers (errors in OpenAI's `{"error": {...}}` shape)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON = (b"content-type", b"application/json")


class BodyTooLargeError(Exception):
    """The request body is over the limit."""


class ClientGoneError(Exception):
    """The client disconnected before its request body was read."""


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a request header (`name` lower-case), or None."""
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value)
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body; BodyTooLargeError past `limit` bytes (checked before reading when the
    client declares its length, so a huge upload is refused without being received)."""
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGoneError
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def send_json(
    send: Send, status: int, payload: Any, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [JSON, (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_error(
    send: Send,
    status: int,
    message: str,
    kind: str,
    code: str | None = None,
    headers: Sequence[tuple[bytes, bytes]] = (),
    param: str | None = None,
) -> None:
    """An error as OpenAI's API words them, so OpenAI client libraries show `message`."""
    error = {"message": message, "type": kind, "param": param, "code": code}
    await send_json(send, status, {"error": error}, headers)
