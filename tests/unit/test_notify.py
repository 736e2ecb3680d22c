"""Notifications reach a real loopback webhook; only notable events are sent; a dead webhook is
logged, not raised."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from localstack.procs import free_port
from quantrollout import notify
from quantrollout.rollout.machine import Event

ROLLED = Event(
    "Warning",
    "RolledBack",
    "all traffic back to the baseline: repetition-rate 0.21 > 0.15 for 2 consecutive evaluations",
)


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200 if self.path == "/hook" else 404)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()


async def test_notable_events_are_posted(webhook: tuple[str, list[dict[str, Any]]]) -> None:
    url, received = webhook
    events = (
        Event("Normal", "StagesChanged", "x"),
        Event("Normal", "Promoted", "analysis passed; now at ab (10% live)"),
        ROLLED,
    )
    assert await notify.send("llm", "llama3-8b", events, url) == 2
    assert received == [
        {
            "text": ":arrow_up: quantrollout llm/llama3-8b: Promoted: analysis passed; now at ab (10% live)"
        },
        {"text": f":rotating_light: quantrollout llm/llama3-8b: RolledBack: {ROLLED.message}"},
    ]


async def test_a_dead_webhook_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{free_port()}/services/T0/B0/s3cr3t"
    assert await notify.send("llm", "m", (ROLLED,), url) == 0
    assert "webhook notification for llm/m failed: ConnectError" in caplog.text
    assert "s3cr3t" not in caplog.text  # the URL is a credential


async def test_a_failing_webhook_is_logged_without_its_url(
    webhook: tuple[str, list[dict[str, Any]]], caplog: pytest.LogCaptureFixture
) -> None:
    url, _ = webhook
    secret_url = url.replace("/hook", "/missing/s3cr3t")  # the test server answers 404 there
    assert await notify.send("llm", "m", (ROLLED,), secret_url) == 0
    assert "failed: the webhook answered 404" in caplog.text
    assert "s3cr3t" not in caplog.text


async def test_no_url_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QR_WEBHOOK_URL", raising=False)
    assert await notify.send("llm", "m", (ROLLED,)) == 0
