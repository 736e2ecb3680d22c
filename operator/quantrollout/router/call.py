"""The values one proxied request is made of: the tier it goes to and what is sent there."""

from __future__ import annotations

from dataclasses import dataclass

from .agreement import Sampling
from .metrics import TierMetrics
from .upstream import Headers


@dataclass(frozen=True, slots=True)
class Tier:
    """A tier of one model, as resolved for one request."""

    name: str
    base_url: str  # e.g. http://llama3-8b-fp16.llm.svc:8000
    metrics: TierMetrics


@dataclass(frozen=True, slots=True)
class Call:
    """One client request, as it is sent on to a tier (the body unchanged, byte for byte)."""

    path: str  # with the query string, e.g. /v1/chat/completions
    body: bytes
    headers: Headers  # already filtered for the upstream leg
    streamed: bool  # the client asked for `stream: true`
    sampling: Sampling = "sampled"  # how the shadow comparison scores (agreement.py)
    inspected: bool = True  # the answer is generated text: read for the quality signals
    method: bytes = b"POST"


@dataclass(frozen=True, slots=True)
class Route:
    """Where one request goes: the tier that answers it (`live`), the tier that answers instead
    when `live` fails before its first byte (`fallback`), the tiers a copy is mirrored to
    (`shadows`), and the tier asked for a calibration copy (`calibration`: the baseline)."""

    call: Call
    live: Tier
    fallback: Tier | None = None
    shadows: tuple[Tier, ...] = ()
    calibration: Tier | None = None
