"""Notifications: a Slack-compatible webhook (JSON `{"text": ...}`) on promotion, completion and
rollback, with the reasons. Optional (`--webhook-url` / QR_WEBHOOK_URL). Best effort: a slow or
failing webhook is logged and never holds the rollout back."""

from __future__ import annotations

import logging
import os

import httpx

from quantrollout.rollout.machine import Event

NOTIFIED = {
    "Promoted": ":arrow_up:",
    "Succeeded": ":white_check_mark:",
    "RolledBack": ":rotating_light:",
}
log = logging.getLogger(__name__)


def message(namespace: str, name: str, event: Event) -> dict[str, str] | None:
    """The webhook body for an Event worth a notification, else None. Pure."""
    icon = NOTIFIED.get(event.reason)
    if icon is None:
        return None
    return {"text": f"{icon} quantrollout {namespace}/{name}: {event.reason}: {event.message}"}


async def send(namespace: str, name: str, events: tuple[Event, ...], url: str | None = None) -> int:
    """Posts one notification per notable event; returns how many were delivered."""
    url = url or os.environ.get("QR_WEBHOOK_URL")
    if not url:
        return 0
    delivered = 0
    async with httpx.AsyncClient(timeout=5) as client:
        for event in events:
            body = message(namespace, name, event)
            if body is None:
                continue
            try:
                response = await client.post(url, json=body)
                response.raise_for_status()
                delivered += 1
            except httpx.HTTPError as err:
                # Never `err` itself: httpx puts the URL in its messages, and a Slack-style
                # webhook URL is a credential (the chart reads it from a Secret).
                log.warning("webhook notification for %s/%s failed: %s", namespace, name, _why(err))
    return delivered


def _why(err: httpx.HTTPError) -> str:
    """What went wrong, without the URL."""
    if isinstance(err, httpx.HTTPStatusError):
        return f"the webhook answered {err.response.status_code}"
    return type(err).__name__
