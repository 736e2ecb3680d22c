"""The benchmark's load generator and the quality probe's asker: OpenAI-compatible requests
straight to each tier's endpoint (its Service, never the router: the router's series are what the
analysis rules read, and preflight requests must not be in them).

`benchmark` warms both tiers up with requests whose results are discarded, then drives the same
load at both at the same time: `concurrency` streamed chat completions in flight per tier,
`requests` in all, each with a prompt of about `prompt_tokens` words and `max_tokens` answer
tokens (`ignore_eos`, a vLLM sampling parameter, so both tiers generate the same number of tokens
and their throughputs compare like for like). Every request carries
`X-Quantrollout-Preflight: warmup|benchmark|probe` so a tier's access log can tell them apart.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from quantrollout import defaults
from quantrollout.preflight.probe import ProbePrompt, ProbeResult, compare
from quantrollout.preflight.stats import Sample, Summary, summarize

PREFLIGHT_HEADER = "X-Quantrollout-Preflight"
# Words of the synthetic prompts; each request starts with its own number, so no two prompts
# share a prefix that a prefix cache could serve for free.
_FILLER = [
    "describe",
    "how",
    "a",
    "careful",
    "engineer",
    "measures",
    "the",
    "speed",
    "of",
    "a",
    "language",
    "model",
    "server",
    "under",
    "a",
    "steady",
    "load",
    "and",
    "explains",
    "each",
    "figure",
    "to",
    "a",
    "colleague",
    "who",
    "will",
    "decide",
    "on",
    "a",
    "rollout",
]


@dataclass(frozen=True)
class LoadSettings:
    model: str  # the served model name both tiers answer to
    concurrency: int = defaults.PREFLIGHT_CONCURRENCY
    requests: int = defaults.PREFLIGHT_REQUESTS
    warmup_requests: int = defaults.PREFLIGHT_WARMUP_REQUESTS
    prompt_tokens: int = defaults.PREFLIGHT_PROMPT_TOKENS
    max_tokens: int = defaults.PREFLIGHT_MAX_TOKENS
    timeout: float = defaults.PREFLIGHT_REQUEST_TIMEOUT_SECONDS


def prompt_text(index: int, words: int) -> str:
    body = [_FILLER[(index + i) % len(_FILLER)] for i in range(max(words - 2, 0))]
    return " ".join([f"Request {index}:", *body])


async def one_request(
    client: httpx.AsyncClient, url: str, settings: LoadSettings, index: int, phase: str
) -> Sample:
    body = {
        "model": settings.model,
        "messages": [{"role": "user", "content": prompt_text(index, settings.prompt_tokens)}],
        "max_tokens": settings.max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.monotonic()
    first: float | None = None
    last = started
    gaps: list[float] = []
    pieces, usage_tokens = 0, None
    text: list[str] = []
    try:
        async with client.stream(
            "POST", f"{url.rstrip('/')}/v1/chat/completions", json=body,
            headers={PREFLIGHT_HEADER: phase}, timeout=settings.timeout,
        ) as response:  # fmt: skip
            if response.status_code != 200:
                detail = (await response.aread())[:200].decode(errors="replace")
                return Sample(
                    False, started, time.monotonic(), error=f"HTTP {response.status_code}: {detail}"
                )
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[len("data: ") :])
                if chunk.get("usage"):
                    usage_tokens = chunk["usage"].get("completion_tokens")
                for choice in chunk.get("choices") or []:
                    content = (choice.get("delta") or {}).get("content")
                    if not content:
                        continue
                    now = time.monotonic()
                    if first is None:
                        first = now - started
                    else:
                        gaps.append(now - last)
                    last = now
                    pieces += 1
                    text.append(content)
    except (httpx.HTTPError, ValueError, AttributeError, TypeError) as err:  # ValueError: bad JSON
        return Sample(False, started, time.monotonic(), error=f"{err.__class__.__name__}: {err}")
    tokens = usage_tokens if isinstance(usage_tokens, int) else pieces
    if first is None:
        return Sample(False, started, time.monotonic(), error="the answer had no text")
    return Sample(True, started, time.monotonic(), first, tuple(gaps), tokens, text="".join(text))


async def drive(
    client: httpx.AsyncClient, url: str, settings: LoadSettings, count: int, phase: str
) -> list[Sample]:
    """`count` requests, `settings.concurrency` at a time (each worker sends its next as soon as
    its last one ended: a closed loop, so a slower tier gets fewer requests per second)."""
    samples: list[Sample] = []
    next_index = iter(range(count))

    async def worker() -> None:
        for index in next_index:
            samples.append(await one_request(client, url, settings, index, phase))

    await asyncio.gather(*(worker() for _ in range(min(settings.concurrency, count))))
    return samples


async def benchmark(
    baseline_url: str, target_url: str, settings: LoadSettings, client: httpx.AsyncClient
) -> tuple[Summary, Summary]:
    """(baseline, target) summaries of the measured phase; the warm-up is discarded."""
    if settings.warmup_requests:
        await asyncio.gather(
            drive(client, baseline_url, settings, settings.warmup_requests, "warmup"),
            drive(client, target_url, settings, settings.warmup_requests, "warmup"),
        )
    baseline, target = await asyncio.gather(
        drive(client, baseline_url, settings, settings.requests, "benchmark"),
        drive(client, target_url, settings, settings.requests, "benchmark"),
    )
    return summarize(baseline), summarize(target)


async def greedy_answer(
    client: httpx.AsyncClient,
    url: str,
    model: str,
    prompt: ProbePrompt,
    max_tokens: int,
    request_timeout: float,
) -> str | None:
    """The first choice's text of a greedy, non-streamed answer; None if none came."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt.prompt}],
        "max_tokens": prompt.max_tokens or max_tokens,
        "temperature": 0,
    }
    try:
        response = await client.post(
            f"{url.rstrip('/')}/v1/chat/completions", json=body,
            headers={PREFLIGHT_HEADER: "probe"}, timeout=request_timeout,
        )  # fmt: skip
        if response.status_code != 200:
            return None
        return str(response.json()["choices"][0]["message"]["content"])
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
        return None


async def probe(
    baseline_url: str,
    target_url: str,
    model: str,
    prompts: Sequence[ProbePrompt],
    client: httpx.AsyncClient,
    *,
    max_tokens: int = defaults.PREFLIGHT_PROBE_MAX_TOKENS,
    concurrency: int = defaults.PREFLIGHT_PROBE_CONCURRENCY,
    request_timeout: float = defaults.PREFLIGHT_REQUEST_TIMEOUT_SECONDS,
) -> list[ProbeResult]:
    gate = asyncio.Semaphore(concurrency)

    async def one(prompt: ProbePrompt) -> ProbeResult:
        async with gate:
            base, target = await asyncio.gather(
                greedy_answer(client, baseline_url, model, prompt, max_tokens, request_timeout),
                greedy_answer(client, target_url, model, prompt, max_tokens, request_timeout),
            )
        return compare(prompt, base, target)

    return list(await asyncio.gather(*(one(p) for p in prompts)))
