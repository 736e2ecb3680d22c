#!/usr/bin/env python3
"""Mixed-precision serving figures (issue 15): a replayed mix of prompts of several classes,
through the real router, against simulated tiers whose quality differs by class.

What runs, all on 127.0.0.1:

- **Tiers**: vllmsim (the project's vLLM simulator), one for fp16 and one per (quantized tier,
  true prompt class), so a tier's quality can differ by class: the simulator for (int4-awq, code)
  gives a divergent answer (no word in common with fp16's) to `1 - quality` of its requests, the
  others answer exactly what fp16 answers (greedy decoding: the answer is a function of the
  prompt). `--quality` replaces the table below. vLLM serves one model under several names
  (`--served-model-name A B`); vllmsim serves one, so each simulator sits behind a 10-line ASGI
  wrapper that sets the body's `model` to its own name before the real simulator sees it.
- **The router**: `quantrollout router`'s app in its own process (static route table, as
  hack/bench/router.py runs it), one route per (class, tier). The router does not classify
  requests yet (that is wired next session, docs/mixed-precision.md): **this script decides
  each request's class and tier on the client side**, with the product's `classify.py` and
  `policy.py`, and sends it to the route of that tier. What the router does here is what it
  does today: forward, mirror in shadow, score agreement, count per tier.
- **Shadow**: `--shadow` requests of the mix, each mirrored by the router to both quantized tiers
  (one route per classified class and tier, mirror 100%); the router scores each mirrored answer
  against fp16's (`quantrollout_router_shadow_agreement_ratio`, exact match for greedy requests:
  fp16's self-agreement is 1, so calibrated = raw) and the script reads its /metrics per
  (class, tier). `rollout/policy.py` compiles the policy from those figures.
- **Serving**: `--requests` requests of the same mix (other prompts), routed by each strategy:
  the compiled policy at its end (`mixed`: each class 100% on its tier, decided per request by
  classify() and class_split.decide_class()), everything on int4 (`all-int4`), the seed's fixed thresholds on
  a complexity score (`seed`: character entropy plus 1.5 per code marker and 1.5 per JSON
  marker; < 4.25 int4, < 5.75 fp8, else fp16), and fp16 alone (the reference). Agreement is each
  answer against fp16's answer to the same prompt (exact match), asked of the fp16 simulator
  directly. Requests per tier are the router's own `quantrollout_router_requests_total`.

Cost is GPU-seconds per 1,000 requests relative to fp16 alone: sum over tiers of requests x
GPUs per replica x service time, with the tiers of a 70B-class model: fp16 on 4 GPUs at 40 ms
per request, fp8 on 2 GPUs at 30 ms, int4-awq on 1 GPU at 25 ms (the simulators wait a tenth of
that, to keep the run short). decide-us is the median time of the whole per-request decision the
router will make once wired (classify(), the sticky bucket of the request's x-user-id, and
class_split.decide_class()) per request of the mix, the body already parsed (as the router has
it), over `--decide-rounds` passes; the mean and p99 are printed beside it.

The mix (true classes, by the generator): chat-short 55%, chat-long 10%, code 12% (a quarter of
them without a fence or keyword, "write a function that ..."), structured 8%, math 8%, tools 7%;
3% of requests name their class in `x-quantrollout-class`.

usage: hack/bench/mixed_precision.py [--shadow N] [--requests N] [--concurrency N]
                                     [--quality JSON] [--seed N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, MutableMapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from quantrollout import signals
from quantrollout.api.status import TrafficBackend, TrafficStatus
from quantrollout.rollout.policy import (
    ShadowStats,
    Thresholds,
    Tier,
    Verdict,
    compile_policy,
    relative_cost,
)
from quantrollout.router.agreement import word_f1
from quantrollout.router.class_split import ClassRoute, decide_class
from quantrollout.router.classify import CLASS_HEADER, CLASSES, classify, features
from quantrollout.router.routes import ModelTraffic
from quantrollout.router.split import choose_bucket
from vllmsim import SimConfig, SimState, build_app

NAMESPACE, MODEL = "bench", "m"
BASELINE = Tier("fp16", "fp16", gpus_per_replica=4, relative_throughput=1.0)
FP8 = Tier("fp8", "fp8", gpus_per_replica=2, relative_throughput=40 / 30)
INT4 = Tier("int4-awq", "int4", gpus_per_replica=1, relative_throughput=40 / 25)
QUANTIZED = (FP8, INT4)
KNOWN = frozenset(t.name for t in (BASELINE, *QUANTIZED))
SERVICE_MS = {"fp16": 40.0, "fp8": 30.0, "int4-awq": 25.0}
SIM_TIME_SCALE = 0.1  # the simulators wait this fraction of SERVICE_MS
# P(the tier's answer is fp16's answer), by true class.
QUALITY: dict[str, dict[str, float]] = {
    "int4-awq": {"chat-short": 0.985, "chat-long": 0.94, "code": 0.80, "structured": 0.86,
                 "math": 0.88, "tools": 0.84},
    "fp8": {"chat-short": 0.995, "chat-long": 0.985, "code": 0.965, "structured": 0.97,
            "math": 0.96, "tools": 0.955},
}  # fmt: skip
MIX = {"chat-short": 0.55, "chat-long": 0.10, "code": 0.12, "structured": 0.08, "math": 0.08,
       "tools": 0.07}  # fmt: skip
HEADER_SHARE = 0.03
SEED_THRESHOLDS = (4.25, 5.75)  # complexity score: < 4.25 int4, < 5.75 fp8, else fp16

# --- the replayed mix ----------------------------------------------------------------------------

_TOPICS = ["the French revolution", "photosynthesis", "jet lag", "compound interest", "tides",
           "sourdough bread", "the Roman roads", "volcanoes", "sleep cycles", "honey bees"]  # fmt: skip
_PROSE = (
    "the model answers each question with care and detail so readers follow every step of "
    "the story from the harbour to the hills where old towns keep their markets busy"
)
_WORDS = tuple(_PROSE.split(" "))


@dataclass(frozen=True)
class Prompt:
    true_class: str
    body: dict[str, Any]
    header: str | None
    user: str  # the sticky key (x-user-id)


def _chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], "temperature": 0,
            "max_tokens": 64, **extra}  # fmt: skip


def make_prompt(cls: str, rng: random.Random, n: int) -> dict[str, Any]:
    topic = rng.choice(_TOPICS)
    if cls == "chat-short":
        return _chat(f"({n}) {rng.choice(['Explain', 'Summarise', 'Tell me about'])} {topic}.")
    if cls == "chat-long":
        story = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(800, 1100)))
        return _chat(f"({n}) Here is my draft about {topic}: {story}. What would you change?")
    if cls == "code":
        if rng.random() < 0.25:  # no marker the classifier can see
            return _chat(f"({n}) Write a Python function that counts words about {topic}.")
        return _chat(
            f"({n}) Why does this fail?\n```python\ndef count(xs):\n    return len(xs) + {n}\n```"
        )
    if cls == "structured":
        schema = {"type": "object", "properties": {"name": {"type": "string"}}}
        return _chat(
            f"({n}) Extract the names from this note on {topic}.",
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
        )
    if cls == "math":
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        return _chat(f"({n}) Solve {a}x + {b} = {a * b} and prove the solution is unique.")
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {}}}]
    return _chat(f"({n}) What is the weather like near {topic}?", tools=tools)


def make_mix(count: int, rng: random.Random, start: int) -> list[Prompt]:
    classes, weights = list(MIX), list(MIX.values())
    prompts = []
    for i in range(count):
        cls = rng.choices(classes, weights)[0]
        header = cls if rng.random() < HEADER_SHARE else None
        user = f"user-{rng.randrange(500)}"
        prompts.append(Prompt(cls, make_prompt(cls, rng, start + i), header, user))
    return prompts


def seed_tier(p: Prompt) -> str:
    """The seed's router: a hand-tuned complexity score against fixed thresholds."""
    f = features(p.body)
    text = str(p.body["messages"][-1].get("content", ""))[:2048]
    json_marker = f.structured or "{" in text or "json" in text.casefold()
    score = f.entropy_bits + 1.5 * (f.code_fence or f.code_keywords > 0) + 1.5 * json_marker
    low, high = SEED_THRESHOLDS
    return "int4-awq" if score < low else "fp8" if score < high else "fp16"


# --- simulators behind a served-model-name alias ---------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def aliased(app: Any, model: str) -> Any:
    """`app` answering any model name, as vLLM does for each `--served-model-name`: the body's
    `model` is set to `model`; nothing else changes."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = json.loads(b"".join(chunks))
        body["model"] = model
        data = json.dumps(body).encode()
        sent = False

        async def replay() -> MutableMapping[str, Any]:
            nonlocal sent
            if sent:
                message: MutableMapping[str, Any] = await receive()
                return message
            sent = True
            return {"type": "http.request", "body": data, "more_body": False}

        await app(scope, replay, send)

    return wrapped


@contextmanager
def simulator(tier: str, config: SimConfig) -> Iterator[str]:
    """A vllmsim tier in a thread of this process; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            aliased(build_app(SimState(MODEL, tier, config)), MODEL),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError(f"simulator {tier} did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


# --- the router's route table ------------------------------------------------------------------


def service(tier: str, true_class: str) -> str:
    return "fp16" if tier == "fp16" else f"{tier}-{true_class}"


def route(name: str, served: str, tier: str, true_class: str, mirror: bool) -> dict[str, Any]:
    target = None if tier == "fp16" else {"tier": tier, "service": service(tier, true_class)}
    return {"name": name, "served": served, "target": target, "mirror": mirror}


def shadow_route(cls: str, true_class: str, tier: str) -> str:
    return f"shadow/{cls}/{true_class}/{tier}"


def serve_route(strategy: str, true_class: str, tier: str) -> str:
    return f"serve/{strategy}/{true_class}/{tier}"


STRATEGIES = ("mixed", "all-int4", "seed", "fp16")


def route_table() -> list[dict[str, Any]]:
    """Shadow: per classified class (the router's `model` label) x true class x quantized tier,
    mirror 100% to the tier. Serving: per strategy x true class x tier, all live on the tier."""
    routes = [
        route(f"shadow-{cls}", shadow_route(cls, true, t.name), t.name, true, mirror=True)
        for cls in CLASSES
        for true in CLASSES
        for t in QUANTIZED
    ]
    routes += [
        route(f"serve-{strategy}", serve_route(strategy, true, tier), tier, true, mirror=False)
        for strategy in STRATEGIES
        for true in CLASSES
        for tier in ("fp16", FP8.name, INT4.name)
    ]
    return routes


def serve_router(port: int, config_file: str) -> None:
    """The router as `quantrollout router` runs it, with this script's static table."""
    from quantrollout.router.app import RouterApp
    from quantrollout.router.server import build_server
    from quantrollout.router.settings import RouterSettings
    from quantrollout.router.source import StaticConfigSource

    config = json.loads(Path(config_file).read_text())
    models = []
    for r in config["routes"]:
        target = r["target"]
        traffic = TrafficStatus(
            rollout_id="bench", served_model=r["served"],
            target_weight=0 if r["mirror"] or target is None else 100,
            mirror_percent=100 if r["mirror"] else 0,
            baseline=TrafficBackend(tier="fp16", service="fp16"),
            target=TrafficBackend(tier=target["tier"], service=target["service"]) if target else None,
        )  # fmt: skip
        models.append(ModelTraffic(NAMESPACE, r["name"], "2026-01-01T00:00:00Z", traffic))
    upstreams = {(NAMESPACE, svc): url for svc, url in config["upstreams"].items()}
    app = RouterApp(StaticConfigSource(models), RouterSettings(upstreams=upstreams))
    build_server(app, "127.0.0.1", port, log_level="warning").run()


@contextmanager
def router_process(upstreams: dict[str, str], tmp: Path) -> Iterator[str]:
    config = tmp / "routes.json"
    config.write_text(json.dumps({"routes": route_table(), "upstreams": upstreams}))
    port = free_port()
    log = (tmp / "router.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, __file__, "serve-router", str(port), str(config)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the router did not start; see {tmp / 'router.log'}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# --- measuring -------------------------------------------------------------------------------------

Samples = dict[tuple[str, ...], float]


def scrape(text: str) -> dict[str, Samples]:
    """Router series by sample name -> {(model, tier, extra label values...): value}."""
    out: dict[str, Samples] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = s.labels
            key = (labels.get(signals.MODEL, ""), labels.get(signals.TIER, ""),
                   labels.get("code", labels.get("outcome", "")))  # fmt: skip
            series = out.setdefault(s.name, {})
            series[key] = series.get(key, 0.0) + s.value
    return out


def total(series: Samples, model: str | None = None, tier: str | None = None) -> float:
    return sum(
        v
        for (m, t, _), v in series.items()
        if (model is None or m == model) and (tier is None or t == tier)
    )


async def run_all(jobs: Iterable[Awaitable[None]], concurrency: int) -> None:
    """Awaits `jobs` (created lazily), `concurrency` at a time."""
    queue = iter(jobs)

    async def worker() -> None:
        for job in queue:
            await job

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def post(client: httpx.AsyncClient, url: str, p: Prompt, served: str) -> str:
    headers = {"x-user-id": p.user, **({CLASS_HEADER: p.header} if p.header else {})}
    response = await client.post(
        f"{url}/v1/chat/completions", json={**p.body, "model": served}, headers=headers
    )
    response.raise_for_status()
    return str(response.json()["choices"][0]["message"]["content"])


async def shadow_phase(
    client: httpx.AsyncClient, router: str, prompts: list[Prompt], concurrency: int
) -> dict[tuple[str, str], ShadowStats]:
    async def one(p: Prompt, tier: str) -> None:
        cls = classify(p.body, p.header)
        await post(client, router, p, shadow_route(cls, p.true_class, tier))

    sent = len(prompts) * len(QUANTIZED)
    await run_all((one(p, t.name) for p in prompts for t in QUANTIZED), concurrency)
    # The router compares a mirrored answer after the live one went back: wait for all of them.
    deadline = time.monotonic() + 60
    while True:
        series = scrape((await client.get(f"{router}/metrics")).text)
        done = total(series.get(signals.ROUTER_SHADOW_REQUESTS, {}))
        if done >= sent or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    sums = series.get(signals.ROUTER_SHADOW_AGREEMENT + "_sum", {})
    counts = series.get(signals.ROUTER_SHADOW_AGREEMENT + "_count", {})
    stats: dict[tuple[str, str], ShadowStats] = {}
    for cls in CLASSES:
        for t in QUANTIZED:
            model = f"shadow-{cls}"
            n = total(counts, model, t.name)
            bad = (
                sum(
                    total(series.get(name, {}), model, t.name)
                    for name in (signals.ROUTER_REFUSALS, signals.ROUTER_REPETITIONS)
                )
                + total(series.get(signals.ROUTER_SHADOW_REQUESTS, {}), model, t.name)
                - n
            )
            rules: Verdict = "Pass" if bad == 0 else "Fail"
            reasons = () if bad == 0 else (f"{bad:.0f} refusals, loops or failed shadow calls",)
            stats[(cls, t.name)] = ShadowStats(
                int(n), total(sums, model, t.name) / n if n else None, rules, reasons
            )
    return stats


@dataclass
class Outcome:
    strategy: str
    per_tier: dict[str, float]  # requests answered, from the router's counters
    agreement: float
    cost: float  # relative to fp16 alone


async def serving_phase(
    client: httpx.AsyncClient,
    router: str,
    fp16: str,
    prompts: list[Prompt],
    choose: Mapping[str, Callable[[Prompt], str]],
    concurrency: int,
) -> list[Outcome]:
    reference: dict[int, str] = {}

    async def ref(i: int, p: Prompt) -> None:
        reference[i] = await post(client, fp16, p, MODEL)

    await run_all((ref(i, p) for i, p in enumerate(prompts)), concurrency)
    outcomes = []
    for strategy, pick in choose.items():
        scores: list[float] = []

        async def one(
            i: int, p: Prompt, pick: Callable[[Prompt], str], strategy: str, scores: list[float]
        ) -> None:
            answer = await post(client, router, p, serve_route(strategy, p.true_class, pick(p)))
            scores.append(word_f1(reference[i], answer))

        jobs = (one(i, p, pick, strategy, scores) for i, p in enumerate(prompts))
        await run_all(jobs, concurrency)
        series = scrape((await client.get(f"{router}/metrics")).text)
        requests = series.get(signals.ROUTER_REQUESTS, {})
        per_tier = {
            t: total(requests, f"serve-{strategy}", t) for t in ("fp16", FP8.name, INT4.name)
        }
        answered = sum(per_tier.values())
        if answered != len(prompts):
            raise RuntimeError(f"{strategy}: the router counted {answered} of {len(prompts)}")
        share = {t: n / answered for t, n in per_tier.items()}
        outcomes.append(Outcome(strategy, per_tier, statistics.fmean(scores), gpu_seconds(share)))
    return outcomes


def gpu_seconds(share: Mapping[str, float]) -> float:
    """GPU-seconds per request of a split, relative to fp16 alone (tiers' GPUs x service time)."""
    gpus = {t.name: t.gpus_per_replica for t in (BASELINE, *QUANTIZED)}
    cost = sum(s * gpus[t] * SERVICE_MS[t] for t, s in share.items())
    return cost / (BASELINE.gpus_per_replica * SERVICE_MS["fp16"])


def decide(p: Prompt, routes: Mapping[str, ClassRoute]) -> str:
    """The tier of one request as the router will decide it once wired: its class, its sticky
    bucket, the class's split (docs/mixed-precision.md)."""
    cls = classify(p.body, p.header)
    return decide_class(routes, cls, choose_bucket("bench", p.user), KNOWN, BASELINE.name).tier


def decide_times(
    prompts: list[Prompt], routes: Mapping[str, ClassRoute], rounds: int
) -> list[float]:
    """Microseconds per decision (`decide`), one per request per round."""
    clock = time.perf_counter_ns
    times: list[float] = []
    for _ in range(rounds):
        for p in prompts:
            started = clock()
            decide(p, routes)
            times.append((clock() - started) / 1000)
    return times


# --- the run -----------------------------------------------------------------------------------


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "serve-router":
        serve_router(int(sys.argv[2]), sys.argv[3])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shadow", type=int, default=2000, help="shadow requests of the mix")
    parser.add_argument("--requests", type=int, default=1000, help="served requests per strategy")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--decide-rounds", type=int, default=20)
    parser.add_argument("--min-samples", type=int, default=Thresholds().min_samples)
    parser.add_argument("--min-agreement", type=float, default=Thresholds().min_agreement)
    parser.add_argument("--quality", type=json.loads, default=None,
                        help='JSON like {"int4-awq": {"code": 0.8}}: P(answer = fp16\'s) by class')  # fmt: skip
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args()
    quality = {t: {**QUALITY[t], **(args.quality or {}).get(t, {})} for t in QUALITY}

    rng = random.Random(args.seed)
    shadow_mix = make_mix(args.shadow, rng, 0)
    served_mix = make_mix(args.requests, rng, args.shadow)
    print(f"load average at start: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})")
    print("tiers: " + ", ".join(
        f"{t.name} {t.gpus_per_replica} GPU x {SERVICE_MS[t.name]:.0f} ms"
        for t in (BASELINE, *QUANTIZED)
    ))  # fmt: skip
    print("quality by true class, P(answer = fp16's):")
    for tier, by_class in quality.items():
        print(f"  {tier:9} " + " ".join(f"{c}={q:.3f}" for c, q in by_class.items()))
    mix_seen = Counter(p.true_class for p in served_mix)
    right = sum(classify(p.body, p.header) == p.true_class for p in served_mix)
    print("mix (served): " + " ".join(f"{c}={mix_seen[c] / len(served_mix):.1%}" for c in CLASSES)
          + f"; classified as generated: {right / len(served_mix):.1%}")  # fmt: skip
    print("routing decision: client side (classify.py, class_split.py, policy.py in this script); the router "
          "forwards, mirrors, scores and counts (it does not classify yet)")  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="qr-bench-mixed-") as tmp, ExitStack() as stack:
        upstreams = {"fp16": stack.enter_context(
            simulator("fp16", SimConfig(latency_ms=SERVICE_MS["fp16"] * SIM_TIME_SCALE)))}  # fmt: skip
        for t in QUANTIZED:
            for cls in CLASSES:
                config = SimConfig(
                    latency_ms=SERVICE_MS[t.name] * SIM_TIME_SCALE,
                    divergence_rate=round(1 - quality[t.name][cls], 6),
                )
                upstreams[service(t.name, cls)] = stack.enter_context(simulator(t.name, config))
        router = stack.enter_context(router_process(upstreams, Path(tmp)))
        limits = httpx.Limits(max_connections=args.concurrency * 2)
        client = httpx.AsyncClient(timeout=30, limits=limits)

        async def run() -> tuple[
            dict[tuple[str, str], ShadowStats], list[Outcome], dict[str, ClassRoute]
        ]:
            async with client:
                started = time.monotonic()
                stats = await shadow_phase(client, router, shadow_mix, args.concurrency)
                print(f"shadow: {len(shadow_mix)} requests x 2 tiers in "
                      f"{time.monotonic() - started:.1f}s")  # fmt: skip
                thresholds = Thresholds(args.min_samples, args.min_agreement)
                policy = compile_policy(CLASSES, BASELINE, QUANTIZED, stats, thresholds)
                print(f"\ncompiled policy (min samples {thresholds.min_samples}, "
                      f"min agreement {thresholds.min_agreement}):")  # fmt: skip
                print(
                    f"  {'class':11}{'tier':10}{'int4 agr':>10}{'fp8 agr':>10}{'samples':>9}  reason"
                )
                for cls, choice in policy.items():
                    a4, a8 = stats[(cls, INT4.name)], stats[(cls, FP8.name)]
                    cells = [
                        f"{s.agreement:.3f}" if s.agreement is not None else "-" for s in (a4, a8)
                    ]
                    print(f"  {cls:11}{choice.tier:10}{cells[0]:>10}{cells[1]:>10}"
                          f"{a4.samples:>9}  {choice.reason}")  # fmt: skip
                # At the end of the rollout: each class 100% on its tier.
                routes = {cls: ClassRoute(c.tier, 100, BASELINE.name) for cls, c in policy.items()}
                strategies: dict[str, Callable[[Prompt], str]] = {
                    "mixed": lambda p: decide(p, routes),
                    "all-int4": lambda p: INT4.name,
                    "seed": seed_tier,
                    "fp16": lambda p: "fp16",
                }
                started = time.monotonic()
                outcomes = await serving_phase(
                    client, router, upstreams["fp16"], served_mix, strategies, args.concurrency
                )
                print(f"serving: {len(served_mix)} requests x {len(strategies)} strategies in "
                      f"{time.monotonic() - started:.1f}s")  # fmt: skip
                return stats, outcomes, routes

        _, outcomes, routes = asyncio.run(run())

    print(
        f"\n  {'strategy':10}{'int4':>8}{'fp8':>8}{'fp16':>8}{'agreement':>11}{'cost-vs-fp16':>14}"
    )
    for o in outcomes:
        n = sum(o.per_tier.values())
        shares = "".join(f"{o.per_tier[t] / n:>8.1%}" for t in (INT4.name, FP8.name, "fp16"))
        print(f"  {o.strategy:10}{shares}{o.agreement:>11.4f}{o.cost:>14.3f}")
    times = decide_times(served_mix, routes, args.decide_rounds)
    decide_us = statistics.median(times)
    p99 = statistics.quantiles(times, n=100)[98]
    print(f"\ndecide (classify + sticky bucket + decide_class, parsed body): median {decide_us:.1f} us, "
          f"mean {statistics.fmean(times):.1f} us, p99 {p99:.1f} us over {len(times)} decisions")  # fmt: skip
    mixed = outcomes[0]
    n = sum(mixed.per_tier.values())
    # The same split priced by policy.py's cost model, as the operator would report it.
    modelled = relative_cost({t: c / n for t, c in mixed.per_tier.items()}, QUANTIZED, BASELINE)
    print(f"policy.relative_cost of the mixed split: {modelled:.3f}")
    print(
        f"mixed: cheapest-share={mixed.per_tier[INT4.name] / n:.3f} "
        f"agreement={mixed.agreement:.4f} cost-vs-fp16={mixed.cost:.3f} decide-us={decide_us:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
