"""Mixed precision end to end: both halves together, nothing faked. The operator as a process
(`quantrollout run`), the built-in router as a process watching the API, one vLLM simulator per
tier, the real Prometheus scraping the router, and load of two request classes (chat-short and
code) through the router. The shadow copies reach both quantized tiers per class; the policy is
compiled from what Prometheus measured; live requests of a class then reach its tier; and a tier
that goes bad for one class only (int4-awq's code answers loop) rolls that class back alone while
the model goes on.

The int4-awq tier is two simulators behind one address, picked by a test-only header the router
passes on untouched (to live requests and shadow copies alike) and never reads, so the tier's
quality can differ by class: one simulator cannot tell classes apart."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from kubernetes import client
from kubernetes.client import ApiClient

from localstack.lab import Lab, fast_rollout
from localstack.procs import free_port
from localstack.stack import Stack
from quantrollout import signals
from vllmsim.app import SimState, build_app

from .kubectl import kubectl
from .support import Models, example, wait_for
from .test_rollout import routed  # the same served model

NAME = "llama3-8b-mixed"
SERVED = "meta-llama/Meta-Llama-3-8B-Instruct"
QUANTIZED = ("fp8", "int4-awq")
TEST_CLASS = "x-test-class"  # picks the simulator behind int4-awq; the router never reads it
# The rules judged per (class, tier) and per tier. Repetition per class: the fault below makes
# every int4-awq code answer loop; code is a fifth of the load, so int4-awq's answers as a whole
# stay under 50% (the tier's model-wide rule) while its code answers are far over it.
RULES = [{"name": "error-rate", "max": "5%"}, {"name": "repetition-rate", "max": "50%"}]


class Int4Tier:
    """int4-awq: one address, a simulator per class behind it (the header TEST_CLASS)."""

    def __init__(self) -> None:
        self.states = {cls: SimState(SERVED, "int4-awq") for cls in ("chat-short", "code")}
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", interface="asgi3",
                           access_log=False, lifespan="off")
        )  # fmt: skip
        self.apps = {cls: build_app(state) for cls, state in self.states.items()}
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        headers = dict(scope.get("headers") or [])
        cls = headers.get(TEST_CLASS.encode(), b"chat-short").decode()
        await self.apps.get(cls, self.apps["chat-short"])(scope, receive, send)

    def __enter__(self) -> Int4Tier:
        self.thread.start()
        wait_for("the int4-awq tier", lambda: self.server.started, timeout=10)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def mixed_lab(
    stack: Stack, crd: str, namespace: str, tmp_path: Path
) -> Iterator[tuple[Lab, Int4Tier]]:
    lab = Lab(stack, tmp_path)
    sims = lab.add_tiers(namespace, NAME, SERVED, ["fp16", "fp8"])
    with Int4Tier() as int4:
        for sim in sims.values():
            sim.configure(latency_ms=10)
        for state in int4.states.values():
            state.configure({"latency_ms": 10})
        lab.start_router(namespace, more_upstreams={(namespace, f"{NAME}-int4-awq"): int4.url})
        try:
            yield lab, int4
        finally:
            lab.stop()


def chat(n: int) -> str:
    return f"What is the capital of country number {n}?"


def code(n: int) -> str:
    return f"Why does this fail?\n```python\ndef count(xs):\n    return len(xs) + {n}\n```"


class MixedLoad:
    """Chat-short and code requests (four to one) at a steady rate through the router, each from
    one of many users (the sticky header), counting answers by (class, answering tier)."""

    def __init__(self, url: str, rate_per_s: float = 30, workers: int = 4) -> None:
        self.url, self.interval, self.workers = url, workers / rate_per_s, workers
        self.by_class_tier: Counter[tuple[str, str]] = Counter()
        self.errors = 0
        self._counter = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(workers)]

    def __enter__(self) -> MixedLoad:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def snapshot(self) -> Counter[tuple[str, str]]:
        with self._lock:
            return Counter(self.by_class_tier)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as http:
            while not self._stop.is_set():
                n = next(self._counter)
                cls = "code" if n % 5 == 0 else "chat-short"
                prompt = code(n % 50) if cls == "code" else chat(n % 50)
                body = {"model": SERVED, "messages": [{"role": "user", "content": prompt}],
                        "temperature": 0, "max_tokens": 64}  # fmt: skip
                headers = {"x-user-id": f"user-{n}", TEST_CLASS: cls}
                try:
                    resp = http.post(f"{self.url}/v1/chat/completions", json=body, headers=headers)
                    ok = resp.status_code == 200
                    tier = resp.headers.get("x-vllmsim-tier", "?")
                except httpx.HTTPError:
                    ok, tier = False, "?"
                with self._lock:
                    if ok:
                        self.by_class_tier[(cls, tier)] += 1
                    else:
                        self.errors += 1
                self._stop.wait(self.interval)


def model() -> dict[str, Any]:
    obj = fast_rollout(example(NAME), stage_seconds=15, min_samples=5)
    rollout = obj["spec"]["rollout"]
    rollout["policy"] = {"learn": {"minSamples": 20, "minAgreement": 0.95}}
    rollout["stages"][1]["duration"] = "10m"  # stay in A/B: the class breach happens there
    rollout["analysis"]["rules"] = RULES
    return obj


def status(models: Models) -> dict[str, Any]:
    return dict((models.get(NAME) or {}).get("status") or {})


def instant(prometheus_url: str, expr: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def classes(s: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["class"]: row for row in s.get("classes") or []}


def events(kube: ApiClient, namespace: str) -> list[tuple[str, str]]:
    listed = client.CoreV1Api(kube).list_namespaced_event(namespace)
    return [(e.reason, e.message) for e in listed.items if e.involved_object.name == NAME]


def test_a_mixed_model_learns_its_policy_from_the_real_router_and_rolls_one_class_back(
    kube: ApiClient,
    stack: Stack,
    namespace: str,
    operator: Any,
    mixed_lab: tuple[Lab, Int4Tier],
) -> None:
    lab, int4 = mixed_lab
    assert lab.router is not None
    prom = stack.prometheus.url
    models = Models(kube, namespace)
    models.create(model())
    wait_for("the router to route the model", lambda: routed(lab.router.url))  # type: ignore[union-attr]
    with MixedLoad(lab.router.url) as load:
        # 1. Shadow: every quantized tier is a target, and the router's copies of both classes
        # reach both of them (one series per (class, tier) in Prometheus).
        s = wait_for("shadow", lambda: (s := status(models)).get("stage") == "shadow" and s)
        targets = (s.get("traffic") or {}).get("targets") or []
        assert sorted(t["tier"] for t in targets) == sorted(QUANTIZED)
        assert not (s.get("traffic") or {}).get("classes")  # shadow: nothing split yet
        got = kubectl(stack, "-n", namespace, "get", "qm", NAME).stdout.splitlines()
        assert got[0].split()[:3] == ["NAME", "MODEL", "TARGET"]
        assert got[1].split()[2] == ",".join(QUANTIZED), got  # every target, joined
        copies = (
            f'sum by (class, tier) ({signals.ROUTER_SHADOW_REQUESTS}{{namespace="{namespace}",'
            f'model="{NAME}",outcome="compared"}}) > 0'
        )
        want = {(c, t) for c in ("chat-short", "code") for t in QUANTIZED}
        wait_for(
            "shadow copies of both classes on both tiers",
            lambda: want <= {(r["metric"]["class"], r["metric"]["tier"]) for r in instant(prom, copies)},
        )  # fmt: skip
        # 2. The end of shadow: the policy compiled from those measurements.
        s = wait_for(
            "the compiled policy",
            lambda: (s := status(models)).get("stage") == "ab" and classes(s) and s,
            timeout=90,
        )
        policy = classes(s)
        assert (s.get("policy") or {}).get("source") == "learned"
        for cls in ("chat-short", "code"):
            row = policy[cls]
            # Healthy tiers agree with the baseline, so the cheapest (int4-awq) takes both.
            assert row["tier"] == "int4-awq", row
            assert row["samples"] >= 20, row
            assert row["agreement"] >= 0.95, row
        # Classes nobody sent have no samples: they stay on the baseline.
        assert policy["math"]["tier"] == "fp16", policy["math"]
        assert "PolicyCompiled" in {r for r, _ in events(kube, namespace)}
        split = {c["class"]: c for c in s["traffic"]["classes"]}
        assert (split["code"]["tier"], split["code"]["weight"], split["code"]["rest"]) == (
            "int4-awq", 10, "fp16",
        )  # fmt: skip
        # 3. Live requests of each class now reach int4-awq through the router (A/B, 10% of
        # users), counted by class and tier by the router and scraped by Prometheus.
        before = load.snapshot()
        wait_for(
            "live code and chat on int4-awq",
            lambda: all(
                load.snapshot()[(c, "int4-awq")] > before[(c, "int4-awq")] + 3
                for c in ("chat-short", "code")
            ),
        )
        live = (
            f'sum by (class, tier) ({signals.ROUTER_REQUESTS}{{namespace="{namespace}",'
            f'model="{NAME}",tier="int4-awq"}}) > 0'
        )
        wait_for(
            "requests_total of both classes on int4-awq",
            lambda: {"chat-short", "code"} <= {r["metric"]["class"] for r in instant(prom, live)},
        )
        # 4. int4-awq goes bad for code only: code alone rolls back to the next higher
        # precision that passed shadow for it (fp8); chat-short stays; the model goes on.
        int4.states["code"].configure({"repetition_rate": 1.0})
        s = wait_for(
            "code rolled back alone",
            lambda: (s := status(models)) and classes(s)["code"]["tier"] != "int4-awq" and s,
            timeout=90,
        )
        after = classes(s)
        assert after["code"]["tier"] == "fp8", after["code"]
        assert after["chat-short"]["tier"] == "int4-awq", after["chat-short"]
        assert (s["phase"], s["stage"]) == ("Progressing", "ab"), s
        rolled = [m for r, m in events(kube, namespace) if r == "ClassRolledBack"]
        assert rolled, "no ClassRolledBack Event"
        assert all("code" in m and "chat-short" not in m for m in rolled), rolled
        split = {c["class"]: c for c in s["traffic"]["classes"]}
        assert (split["code"]["tier"], split["chat-short"]["tier"]) == ("fp8", "int4-awq")
        # The router follows: new code requests stop reaching int4-awq, chat-short still does.
        time.sleep(2)  # the router's watch applies the new status.traffic
        settled = load.snapshot()
        wait_for(
            "code on fp8 and chat still on int4-awq",
            lambda: (
                (now := load.snapshot())[("code", "fp8")] > settled[("code", "fp8")] + 3
                and now[("chat-short", "int4-awq")] > settled[("chat-short", "int4-awq")] + 3
            ),
        )
        assert load.snapshot()[("code", "int4-awq")] == settled[("code", "int4-awq")]
        assert status(models)["phase"] == "Progressing"
    assert load.errors == 0
    print(json.dumps({"answers": {f"{c}/{t}": n for (c, t), n in load.snapshot().items()}}))
