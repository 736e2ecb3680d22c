#!/usr/bin/env python3
"""The floor under the router, for `hack/bench/router.py --proxies router,floor,...`: the least a
Python proxy on the router's stack (uvloop, httptools) does per request, to tell what Python
costs from what the router's own request path costs. Not a product and not a peer: it has no
routing, no admission, no mirroring, no fallback, no flow control, no errors handled, and
answers 200 to everything. What it does do is the router's work per byte: a pooled keep-alive
connection to the upstream, the answer relayed as chunks from the callback the upstream's bytes
arrive in, and each streamed answer read as it passes (`AnswerReader`, as the router's relay
feeds it). Everything runs in socket callbacks: no task, no ASGI message, no await.

usage: router_floor.py PORT UPSTREAM_PORT
"""

from __future__ import annotations

import asyncio
import socket
import sys

import httptools
import uvloop

from quantrollout.router.inspect_answer import AnswerReader

INSPECT_LIMIT = 4 << 20
CONNECTING: set[asyncio.Task[tuple[asyncio.BaseTransport, asyncio.BaseProtocol]]] = set()


class Upstream(asyncio.Protocol):
    """One keep-alive connection to the upstream, carrying one client's request at a time."""

    def __init__(self, idle: list[Upstream], first: bytes, client: Client) -> None:
        self.idle = idle
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.pending = first
        self.client: Client | None = client
        self.content_type = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport
        assert self.transport is not None
        self.transport.write(self.pending)
        self.pending = b""

    def send(self, request: bytes, client: Client) -> None:
        assert self.transport is not None
        self.client = client
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        client = self.client
        self.parser.feed_data(data)
        if client is not None and client.out:
            client.transport.write(b"".join(client.out))
            client.out.clear()

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-type":
            self.content_type = value

    def on_headers_complete(self) -> None:
        assert self.client is not None
        self.client.out.append(
            b"HTTP/1.1 %d OK\r\ncontent-type: %b\r\ntransfer-encoding: chunked\r\n\r\n"
            % (self.parser.get_status_code(), self.content_type)
        )
        self.client.reader = AnswerReader(self.content_type.decode("latin-1"), INSPECT_LIMIT)

    def on_body(self, body: bytes) -> None:
        assert self.client is not None
        self.client.out.append(b"%x\r\n%b\r\n" % (len(body), body))
        self.client.reader.feed(body)

    def on_message_complete(self) -> None:
        client = self.client
        assert client is not None
        client.out.append(b"0\r\n\r\n")
        client.reader.answer()
        self.client = None
        self.idle.append(self)


class Client(asyncio.Protocol):
    """One client connection: each request goes out on an idle upstream connection (or a new
    one) from the very callback that completed it."""

    def __init__(self, upstream: tuple[str, int], idle: list[Upstream]) -> None:
        self.upstream, self.idle = upstream, idle
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport
        self.url = b""
        self.content_type = b"application/json"
        self.body: list[bytes] = []
        self.out: list[bytes] = []
        self.reader = AnswerReader("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-type":
            self.content_type = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self.body)
        request = b"POST %b HTTP/1.1\r\nhost: upstream\r\ncontent-type: %b\r\ncontent-length: %d\r\n\r\n%b" % (
            self.url, self.content_type, len(body), body,
        )  # fmt: skip
        self.url, self.body = b"", []
        if self.idle:
            self.idle.pop().send(request, self)
            return
        loop = asyncio.get_running_loop()
        connecting = loop.create_task(
            loop.create_connection(lambda: Upstream(self.idle, request, self), *self.upstream)
        )
        CONNECTING.add(connecting)
        connecting.add_done_callback(CONNECTING.discard)


async def serve(port: int, upstream_port: int) -> None:
    loop = asyncio.get_running_loop()
    idle: list[Upstream] = []
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say they are TCP.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    upstream = ("127.0.0.1", upstream_port)
    server = await loop.create_server(lambda: Client(upstream, idle), sock=sock, backlog=4096)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), int(sys.argv[2])))
