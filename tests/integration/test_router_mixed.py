"""Mixed precision through the real router on loopback, in front of three vLLM simulators (fp16,
fp8, int4-awq), driven by the official `openai` client: each request class to its tier, the
fallbacks counted, shadow copies to every quantized tier, and the per-(class, tier) series as
the real Prometheus scrapes them and the operator's `Metrics.classes` reads them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import openai
import pytest

from localstack import prometheus as localprom
from quantrollout import signals
from quantrollout.api.spec import QuantizedModelSpec
from quantrollout.api.status import ClassTraffic, TrafficBackend, TrafficStatus
from quantrollout.io.prometheus import Providers
from quantrollout.router.app import RouterApp
from quantrollout.router.routes import ModelTraffic
from quantrollout.router.server import RunningRouter
from quantrollout.router.settings import RouterSettings
from quantrollout.router.source import StaticConfigSource

from .support import example, wait_for
from .test_router_proxy import MODEL, NS, QM, Sim, free_port

BASE, FP8, INT4 = "fp16", "fp8", "int4-awq"
TIERS = (BASE, FP8, INT4)
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CODE = "Why does this fail?\n```python\ndef f(xs):\n    return len(xs) + 1\n```"


def backend(tier: str) -> TrafficBackend:
    return TrafficBackend(tier=tier, service=f"{QM}-{tier}")


def mixed(classes: dict[str, tuple[str, int]] | None, mirror: int = 0) -> TrafficStatus:
    """A mixed model: fp8 and int4-awq beside fp16; `classes`: class -> (tier, weight)."""
    entries = None
    if classes is not None:
        entries = [
            ClassTraffic.model_validate({"class": c, "tier": t, "weight": w, "rest": BASE})
            for c, (t, w) in classes.items()
        ]
    return TrafficStatus(
        rollout_id="mixed-1",
        served_model=MODEL,
        target_weight=0,
        mirror_percent=mirror,
        sticky_header="x-user-id",
        baseline=backend(BASE),
        targets=[backend(FP8), backend(INT4)],
        classes=entries,
    )


@pytest.fixture(scope="module")
def sims() -> Iterator[dict[str, Sim]]:
    started: dict[str, Sim] = {}
    try:
        for tier in TIERS:
            started[tier] = Sim(tier)
        yield started
    finally:
        for sim in started.values():
            sim.stop()


class Mixed:
    def __init__(self, app: RouterApp, url: str) -> None:
        self.app, self.url = app, url

    def value(self, name: str, tier: str, cls: str, **labels: str) -> float:
        got = self.app.metrics.registry.get_sample_value(
            name, {"namespace": NS, "model": QM, "tier": tier, "class": cls, **labels}
        )
        return got or 0.0

    def fallbacks(self, cls: str, reason: str) -> float:
        labels = {"namespace": NS, "model": QM, "class": cls, "reason": reason}
        got = self.app.metrics.registry.get_sample_value(signals.ROUTER_CLASS_FALLBACKS, labels)
        return got or 0.0

    async def eventually(self, name: str, tier: str, cls: str, want: float, **labels: str) -> None:
        """Waits for a series the router records in the background (shadows) to reach `want`."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.value(name, tier, cls, **labels) == want:
                return
            await asyncio.sleep(0.02)
        assert self.value(name, tier, cls, **labels) == want, (name, tier, cls, labels)


@asynccontextmanager
async def router(
    sims: dict[str, Sim], traffic: TrafficStatus, **settings: Any
) -> AsyncIterator[Mixed]:
    for sim in sims.values():
        sim.reset()
    source = StaticConfigSource([ModelTraffic(NS, QM, "2026-11-01T00:00:00Z", traffic)])
    upstreams = {(NS, f"{QM}-{tier}"): sim.url for tier, sim in sims.items()}
    app = RouterApp(source, RouterSettings(upstreams=upstreams, **settings))
    async with RunningRouter(app) as running:
        yield Mixed(app, running.url)


@asynccontextmanager
async def client(url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=10
    ) as c:
        yield c


async def ask(
    c: openai.AsyncOpenAI, content: str, user: str, cls: str | None = None, **extra: Any
) -> str:
    """The tier that answered one chat request (the router's response header)."""
    headers = {"x-user-id": user, **({"x-quantrollout-class": cls} if cls else {})}
    raw = await c.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": content}],
        temperature=0,
        extra_headers=headers,
        **extra,
    )
    assert raw.parse().choices[0].message is not None  # a whole answer, parsed by the client
    assert raw.headers["x-quantrollout-tier"] == raw.headers["x-vllmsim-tier"]
    return raw.headers["x-quantrollout-tier"]


async def test_each_class_goes_to_its_tier_and_the_rest_to_the_baseline_counted(
    sims: dict[str, Sim],
) -> None:
    routes = {"chat-short": (INT4, 100), "code": (FP8, 100), "structured": ("int3", 100)}
    async with router(sims, mixed(routes)) as r, client(r.url) as c:
        for i in range(4):
            assert await ask(c, "What limits throughput?", f"u{i}") == INT4
            assert await ask(c, CODE, f"u{i}") == FP8
            # The header names the class; a value outside the six is ignored.
            assert await ask(c, "Hello there", f"u{i}", cls="Code") == FP8
            assert await ask(c, "Hello there", f"u{i}", cls="gpu-poor") == INT4
            # No route for tools; structured names a tier the router does not know.
            assert await ask(c, "Weather in Oslo?", f"u{i}", tools=[WEATHER]) == BASE
            json_mode = {"type": "json_object"}
            assert await ask(c, "List three colours", f"u{i}", response_format=json_mode) == BASE
        requests = signals.ROUTER_REQUESTS
        assert r.value(requests, INT4, "chat-short", code="200") == 8
        assert r.value(requests, FP8, "code", code="200") == 8
        assert r.value(requests, BASE, "tools", code="200") == 4
        assert r.value(requests, BASE, "structured", code="200") == 4
        assert r.value(requests, BASE, "", code="200") == 0  # every request was classified
        assert r.fallbacks("tools", "no-route") == 4
        assert r.fallbacks("structured", "tier-missing") == 4
        assert r.fallbacks("code", "no-route") == 0


async def test_a_class_weight_splits_sticky_users_and_a_failing_tier_falls_back(
    sims: dict[str, Sim],
) -> None:
    async with router(sims, mixed({"chat-short": (INT4, 50)})) as r, client(r.url) as c:
        tiers = {f"user-{i}": await ask(c, "Hi", f"user-{i}") for i in range(40)}
        assert set(tiers.values()) == {BASE, INT4}  # half the users each way, about
        for user, tier in list(tiers.items())[:10]:
            assert await ask(c, "Hi again", user) == tier  # sticky per user
        sims[INT4].configure(error_rate=1.0)
        on_int4 = next(u for u, t in tiers.items() if t == INT4)
        assert await ask(c, "Hi", on_int4) == BASE  # the tier failed: the baseline answered
        assert r.value(signals.ROUTER_FALLBACKS, INT4, "chat-short") == 1


async def test_shadow_mirrors_every_quantized_tier_per_class(sims: dict[str, Sim]) -> None:
    async with (
        router(sims, mixed(None, mirror=100), calibration_percent=100) as r,
        client(r.url) as c,
    ):
        sims[INT4].configure(divergence_rate=1.0)
        for i in range(3):
            assert await ask(c, CODE, f"u{i}") == BASE  # no routes yet: all live on the baseline
            assert await ask(c, "What limits throughput?", f"u{i}") == BASE
        compared = signals.ROUTER_SHADOW_REQUESTS
        for cls in ("code", "chat-short"):
            for tier in (FP8, INT4):
                await r.eventually(compared, tier, cls, 3, outcome="compared")
            await r.eventually(compared, BASE, cls, 3, outcome="compared")  # calibration, once
        greedy = {"sampling": "greedy"}
        agreement = signals.ROUTER_SHADOW_AGREEMENT
        assert r.value(agreement + "_sum", FP8, "code", **greedy) == 3  # agrees every time
        assert r.value(agreement + "_sum", INT4, "code", **greedy) == 0  # diverges every time
        assert r.value(signals.ROUTER_SHADOW_SELF_AGREEMENT + "_count", BASE, "code", **greedy) == 3
        assert r.fallbacks("code", "no-route") == 0  # nothing to fall back from in shadow


# --- the per-(class, tier) series in the real Prometheus, as the operator reads them -----------


def instant(prom: localprom.Prometheus, expr: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{prom.url}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


async def test_prometheus_sees_per_class_tier_series_and_the_operator_reads_them(
    sims: dict[str, Sim], prometheus: localprom.Prometheus
) -> None:
    spec = QuantizedModelSpec.model_validate(
        {
            **example()["spec"],
            "prometheus": {"url": prometheus.url},
            "rollout": {"analysis": {"minSamples": 20}},
        }
    )
    async with (
        router(sims, mixed(None, mirror=100), calibration_percent=100) as r,
        client(r.url) as c,
    ):
        address = r.url.removeprefix("http://")
        prometheus.add_targets("mixed-router", [address], {"job": "mixed-router"})
        try:
            sims[INT4].configure(repetition_rate=1.0)  # every int4 answer loops
            # One request per class creates its series; increase() counts from their first scrape.
            await ask(c, CODE, "warm")
            await ask(c, "What limits throughput?", "warm")
            count = f'{signals.ROUTER_SHADOW_AGREEMENT}_count{{model="{QM}",class="code"}}'
            await asyncio.to_thread(
                wait_for, "the series scraped", lambda: instant(prometheus, count)
            )
            for i in range(30):
                await ask(c, CODE, f"u{i}")
                if i % 3 == 0:
                    await ask(c, "What limits throughput?", f"u{i}")
            await r.eventually(signals.ROUTER_SHADOW_REQUESTS, INT4, "code", 31, outcome="compared")
            # Prometheus holds one series per (class, tier): the label survives the scrape.
            series = instant(prometheus, f'{signals.ROUTER_REQUESTS}{{model="{QM}"}}')
            assert {(s["metric"]["class"], s["metric"]["tier"]) for s in series} == {
                ("code", BASE),
                ("chat-short", BASE),
            }
            providers = Providers()

            def settled() -> Any:
                seen = providers.classes(None, spec, NS, QM, [FP8, INT4], BASE, "1m")  # type: ignore[arg-type]
                got = seen.stats[("code", INT4)]
                return (
                    seen if got.samples >= 29 and seen.stats[("code", FP8)].samples >= 29 else None
                )

            seen = await asyncio.to_thread(wait_for, "31 code samples in Prometheus", settled)
        finally:
            prometheus.remove_targets("mixed-router")
    assert seen.unavailable is None
    code_int4, code_fp8 = seen.stats[("code", INT4)], seen.stats[("code", FP8)]
    # Extrapolated increase()s of two series (sum, count): equal to within a scrape.
    assert code_fp8.agreement == pytest.approx(1.0, abs=0.02)  # fp16 agrees with itself: 1.0
    assert (code_fp8.rules, code_fp8.reasons) == ("Pass", ())
    assert code_int4.agreement == pytest.approx(0.0, abs=0.02)  # a loop is not fp16's answer
    assert code_int4.rules == "Fail"
    assert [r.split()[0] for r in code_int4.reasons] == ["repetition-rate"]
    chat = seen.stats[("chat-short", FP8)]
    assert chat.rules == "Inconclusive"  # 11 requests < minSamples 20
    assert seen.mix["code"] == pytest.approx(31 / 42, abs=0.08)
    assert seen.mix["chat-short"] == pytest.approx(11 / 42, abs=0.08)
    assert seen.stats[("tools", FP8)].samples == 0


def test_an_unreachable_prometheus_is_unavailable_never_stats() -> None:
    spec = QuantizedModelSpec.model_validate(
        {**example()["spec"], "prometheus": {"url": f"http://127.0.0.1:{free_port()}"}}
    )
    seen = Providers().classes(None, spec, NS, QM, [FP8, INT4], BASE, "5m")  # type: ignore[arg-type]
    assert seen.unavailable is not None
    assert seen.unavailable.startswith("prometheus at http://127.0.0.1:")
    assert (dict(seen.stats), dict(seen.mix)) == ({}, {})
