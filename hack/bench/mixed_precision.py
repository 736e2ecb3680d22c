#!/usr/bin/env python3
"""Mixed-precision serving figures (issue 15): a replayed mix of prompts of several classes,
through the real router, against simulated tiers whose quality differs by class.

What runs, all on 127.0.0.1:

- **Tiers**: one upstream per tier, as the router sees tiers in a cluster: fp16, fp8, int4-awq.
  Behind each quantized tier's address sit vllmsim simulators (the project's vLLM simulator),
  one per true prompt class, so a tier's quality can differ by class: the tier's simulator for
  code gives a divergent answer (no word in common with fp16's) to `1 - quality` of its requests,
  the others answer exactly what fp16 answers (greedy decoding: the answer is a function of the
  prompt). Which simulator answers is picked by the header `x-bench-true-class` the script sets
  and the router passes on untouched: the router never reads it (it classifies the request from
  its body, as in production). `--quality` replaces the quality table below.
- **The router**: `quantrollout router`'s app in its own process, with a static route table
  holding what the operator writes into `status.traffic`. **The router makes the routing
  decision itself**: it classifies each request (`classify.py`) and splits it by its class's
  route (`class_split.py`).
- **Shadow**: `--shadow` requests of the mix to a mixed model in shadow (`targets` fp8 and
  int4-awq, no `classes` yet, mirror 100%, the router's default calibration of 10%): every
  request is answered by fp16 and mirrored to both quantized tiers; the router scores each
  mirrored answer against fp16's, per class and tier, and the baseline's calibration copies
  against its own answer. The script reads the router's /metrics, turns the per-(class, tier)
  counters into the answers `analysis/class_stats.py` parses (the counters of a fresh router are
  their increase since it started: what the operator's queries ask Prometheus over the shadow
  stage), and `rollout/policy.py` compiles the policy from those `ShadowStats` (calibrated
  agreement, samples, the class's quality rules with the default thresholds).
- **Serving**: a second router process, whose route table has the compiled policy written as
  `TrafficStatus.classes` (each class 100% on its tier, the rest on fp16: the end of the
  rollout) for the model `mixed`, beside `all-int4` (a single target at 100%) and `fp16` (the
  baseline alone). `--requests` requests of the same mix (other prompts) go to each. **The seed's
  fixed thresholds stay on the client side**: its complexity score (character entropy plus 1.5
  per code marker and 1.5 per JSON marker; < 4.25 int4, < 5.75 fp8, else fp16) is a continuous
  score, not one of the router's six classes, so it cannot be written as `classes`; the script
  scores each request and sends it to a model that is all on that tier. Agreement is each answer
  against fp16's answer to the same prompt (exact match), asked of the fp16 tier directly.
  Requests per tier are the router's own `quantrollout_router_requests_total`.

Cost is GPU-seconds per 1,000 requests relative to fp16 alone: sum over tiers of requests x
GPUs per replica x service time, with the tiers of a 70B-class model: fp16 on 4 GPUs at 40 ms
per request, fp8 on 2 GPUs at 30 ms, int4-awq on 1 GPU at 25 ms (the simulators wait a tenth of
that, to keep the run short).

decide-us is measured **in the serving router**, on the requests it serves for `mixed`: the
router process runs a subclass of `RouterApp` whose `_decide_class` (the whole per-request
decision: the cached class table of the model, the `x-quantrollout-class` header, classify() on
the body the router already parsed, the sticky bucket of `x-user-id`, decide_mixed()) is timed
with `time.perf_counter_ns` around the call; it has no await, so the time is the decision's own
CPU time (and any pause of the process meanwhile: on a loaded machine, preemption shows in it).
The median is printed in the final line, the mean and p99 beside it; beside them, the same method
called in a loop in the script's own process on the same requests (`--decide-rounds` passes),
out of the serving path, for comparison.

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
from typing import Any, ClassVar

import httpx
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from quantrollout import signals
from quantrollout.analysis import class_stats
from quantrollout.analysis.batch import Series
from quantrollout.api.spec import Analysis
from quantrollout.api.status import ClassTraffic, TrafficBackend, TrafficStatus
from quantrollout.rollout.policy import (
    Choice,
    ShadowStats,
    Thresholds,
    Tier,
    compile_policy,
    relative_cost,
)
from quantrollout.router.agreement import word_f1
from quantrollout.router.classify import CLASS_HEADER, CLASSES, classify, features
from quantrollout.router.routes import ModelTraffic
from vllmsim import SimConfig, SimState, build_app

NAMESPACE, MODEL = "bench", "m"
BASELINE = Tier("fp16", "fp16", gpus_per_replica=4, relative_throughput=1.0)
FP8 = Tier("fp8", "fp8", gpus_per_replica=2, relative_throughput=40 / 30)
INT4 = Tier("int4-awq", "int4", gpus_per_replica=1, relative_throughput=40 / 25)
QUANTIZED = (FP8, INT4)
TIER_NAMES = (BASELINE.name, FP8.name, INT4.name)
TRUE_CLASS = "x-bench-true-class"  # picks the simulator behind a tier; the router never reads it
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
    # With a parameter, a divergent answer calls the tool with other arguments (with none, every
    # call would be `weather({})` and agree whatever the tier).
    city = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    tools = [{"type": "function", "function": {"name": "weather", "parameters": city}}]
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


# --- the tiers: one address each, a simulator per true class behind it ---------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tier_app(tier: str, configs: Mapping[str, SimConfig]) -> Any:
    """One tier's server: the request goes to the simulator of its true class (header
    `x-bench-true-class`), with its body's `model` set to the simulators' model, as vLLM serves
    one model under any `--served-model-name`. Nothing else of the request changes."""
    apps = {cls: build_app(SimState(MODEL, tier, config)) for cls, config in configs.items()}
    default = next(iter(apps.values()))

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await default(scope, receive, send)
            return
        true = dict(scope["headers"]).get(TRUE_CLASS.encode(), b"").decode()
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = json.loads(b"".join(chunks))
        body["model"] = MODEL
        data = json.dumps(body).encode()
        sent = False

        async def replay() -> MutableMapping[str, Any]:
            nonlocal sent
            if sent:
                message: MutableMapping[str, Any] = await receive()
                return message
            sent = True
            return {"type": "http.request", "body": data, "more_body": False}

        await apps.get(true, default)(scope, replay, send)

    return app


@contextmanager
def serve_tier(tier: str, configs: Mapping[str, SimConfig]) -> Iterator[str]:
    """A tier's server in a thread of this process; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            tier_app(tier, configs),
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
            raise RuntimeError(f"tier {tier} did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


# --- the router, with what the operator writes into status.traffic ---------------------------------


def backend(tier: str) -> TrafficBackend:
    return TrafficBackend(tier=tier, service=tier)


def shadow_table() -> list[ModelTraffic]:
    """Shadow of a mixed model: every request on fp16, mirrored to both quantized tiers."""
    traffic = TrafficStatus(
        rollout_id="bench", served_model=MODEL, target_weight=0, mirror_percent=100,
        sticky_header="x-user-id", baseline=backend(BASELINE.name),
        targets=[backend(t.name) for t in QUANTIZED],
    )  # fmt: skip
    return [ModelTraffic(NAMESPACE, "shadow", "2026-01-01T00:00:00Z", traffic)]


def serving_table(policy: Mapping[str, Choice]) -> list[ModelTraffic]:
    """`mixed`: the compiled policy as `classes` (each class 100% on its tier); `all-int4` and
    `fp16`: a single target at 100% and none; `seed-<tier>`: all on one tier (the seed picks)."""

    def single(name: str, tier: str) -> ModelTraffic:
        traffic = TrafficStatus(
            rollout_id="bench", served_model=name, target_weight=100, mirror_percent=0,
            sticky_header="x-user-id", baseline=backend(BASELINE.name),
            target=None if tier == BASELINE.name else backend(tier),
        )  # fmt: skip
        return ModelTraffic(NAMESPACE, name, "2026-01-01T00:00:00Z", traffic)

    classes = [
        ClassTraffic.model_validate(
            {"class": cls, "tier": choice.tier, "weight": 100, "rest": BASELINE.name}
        )
        for cls, choice in policy.items()
    ]
    mixed = TrafficStatus(
        rollout_id="bench", served_model="mixed", target_weight=0, mirror_percent=0,
        sticky_header="x-user-id", baseline=backend(BASELINE.name),
        targets=[backend(t.name) for t in QUANTIZED], classes=classes,
    )  # fmt: skip
    table = [ModelTraffic(NAMESPACE, "mixed", "2026-01-01T00:00:00Z", mixed)]
    table += [single("all-int4", INT4.name), single("fp16", BASELINE.name)]
    table += [single(f"seed-{tier}", tier) for tier in TIER_NAMES]
    return table


def serve_router(port: int, config_file: str) -> None:
    """The router as `quantrollout router` runs it, with this script's static table, and its
    per-request decision timed (`GET /bench/decisions`: the times in microseconds)."""
    from quantrollout.router.app import RouterApp
    from quantrollout.router.asgi import Receive, Scope, Send, send_json
    from quantrollout.router.server import build_server
    from quantrollout.router.settings import RouterSettings
    from quantrollout.router.source import StaticConfigSource

    class TimedRouter(RouterApp):
        decisions: ClassVar[list[float]] = []

        def _decide_class(self, *args: Any) -> Any:
            started = time.perf_counter_ns()
            decided = super()._decide_class(*args)
            self.decisions.append((time.perf_counter_ns() - started) / 1000)
            return decided

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and scope["path"] == "/bench/decisions":
                await send_json(send, 200, {"us": self.decisions})
                return
            await super().__call__(scope, receive, send)

    config = json.loads(Path(config_file).read_text())
    models = [
        ModelTraffic(m["namespace"], m["name"], m["created"], TrafficStatus.model_validate(m["traffic"]))
        for m in config["models"]
    ]  # fmt: skip
    upstreams = {(NAMESPACE, svc): url for svc, url in config["upstreams"].items()}
    app = TimedRouter(StaticConfigSource(models), RouterSettings(upstreams=upstreams))
    build_server(app, "127.0.0.1", port, log_level="warning").run()


@contextmanager
def router_process(
    table: list[ModelTraffic], upstreams: dict[str, str], tmp: Path, name: str
) -> Iterator[str]:
    config = tmp / f"{name}.json"
    models = [
        {"namespace": m.namespace, "name": m.name, "created": m.created,
         "traffic": m.traffic.to_wire()}
        for m in table
    ]  # fmt: skip
    config.write_text(json.dumps({"models": models, "upstreams": upstreams}))
    port = free_port()
    log = (tmp / f"{name}.log").open("ab")
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
                raise RuntimeError(f"the router did not start; see {tmp / name}.log")
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

Sample = tuple[dict[str, str], float]


def scrape(text: str) -> dict[str, list[Sample]]:
    """The router's samples by name: (labels, value)."""
    out: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def total(samples: dict[str, list[Sample]], name: str, **match: str) -> float:
    return sum(
        v
        for labels, v in samples.get(name, [])
        if all(labels.get(k) == w for k, w in match.items())
    )


# class_stats' signals -> the sample names the router exports
SAMPLE_OF = {
    class_stats.AGREEMENT_SUM: f"{signals.ROUTER_SHADOW_AGREEMENT}_sum",
    class_stats.AGREEMENT_COUNT: f"{signals.ROUTER_SHADOW_AGREEMENT}_count",
    class_stats.SELF_SUM: f"{signals.ROUTER_SHADOW_SELF_AGREEMENT}_sum",
    class_stats.SELF_COUNT: f"{signals.ROUTER_SHADOW_SELF_AGREEMENT}_count",
    class_stats.RESPONSES: signals.ROUTER_RESPONSES,
    class_stats.REPETITIONS: signals.ROUTER_REPETITIONS,
    class_stats.REFUSALS: signals.ROUTER_REFUSALS,
    class_stats.TOKENS: signals.ROUTER_OUTPUT_TOKENS,
    class_stats.REQUESTS: signals.ROUTER_REQUESTS,
    class_stats.ERRORS: signals.ROUTER_ERRORS,
    class_stats.SHADOW: signals.ROUTER_SHADOW_REQUESTS,
}


def class_answers(samples: dict[str, list[Sample]], model: str) -> dict[str, list[Series]]:
    """What `class_stats.class_queries` would answer for `model` over the router's lifetime: each
    signal summed by (class, tier) (and outcome), the unclassified series left out."""
    answers: dict[str, list[Series]] = {}
    for signal, name in SAMPLE_OF.items():
        keep = ("class", "tier", "outcome") if signal == class_stats.SHADOW else ("class", "tier")
        summed: dict[tuple[str, ...], float] = {}
        for labels, value in samples.get(name, []):
            if labels.get("model") != model or not labels.get("class"):
                continue
            key = tuple(labels.get(k, "") for k in keep)
            summed[key] = summed.get(key, 0.0) + value
        answers[signal] = [Series(dict(zip(keep, k, strict=True)), v) for k, v in summed.items()]
    return answers


async def run_all(jobs: Iterable[Awaitable[None]], concurrency: int) -> None:
    """Awaits `jobs` (created lazily), `concurrency` at a time."""
    queue = iter(jobs)

    async def worker() -> None:
        for job in queue:
            await job

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def post(client: httpx.AsyncClient, url: str, p: Prompt, served: str) -> str:
    headers = {"x-user-id": p.user, TRUE_CLASS: p.true_class}
    if p.header:
        headers[CLASS_HEADER] = p.header
    response = await client.post(
        f"{url}/v1/chat/completions", json={**p.body, "model": served}, headers=headers
    )
    response.raise_for_status()
    return str(response.json()["choices"][0]["message"]["content"])


async def shadow_phase(
    client: httpx.AsyncClient, router: str, prompts: list[Prompt], concurrency: int
) -> dict[str, list[Sample]]:
    """Every prompt through the router in shadow; its series once every mirrored copy is in."""

    async def one(p: Prompt) -> None:
        await post(client, router, p, MODEL)

    await run_all((one(p) for p in prompts), concurrency)
    sent = len(prompts) * len(QUANTIZED)
    deadline = time.monotonic() + 60
    while True:  # the router compares a mirrored answer after the live one went back
        samples = scrape((await client.get(f"{router}/metrics")).text)
        done = sum(total(samples, signals.ROUTER_SHADOW_REQUESTS, tier=t.name) for t in QUANTIZED)
        if done >= sent or time.monotonic() > deadline:
            return samples
        await asyncio.sleep(0.2)


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
    """`choose`: strategy -> the served model a prompt is sent to."""
    reference: dict[int, str] = {}

    async def ref(i: int, p: Prompt) -> None:
        reference[i] = await post(client, fp16, p, MODEL)

    await run_all((ref(i, p) for i, p in enumerate(prompts)), concurrency)
    outcomes = []
    for strategy, pick in choose.items():
        scores: list[float] = []

        async def one(
            i: int, p: Prompt, pick: Callable[[Prompt], str], scores: list[float]
        ) -> None:
            scores.append(word_f1(reference[i], await post(client, router, p, pick(p))))

        await run_all((one(i, p, pick, scores) for i, p in enumerate(prompts)), concurrency)
        samples = scrape((await client.get(f"{router}/metrics")).text)
        names = [f"seed-{t}" for t in TIER_NAMES] if strategy == "seed" else [strategy]
        per_tier = {
            t: sum(total(samples, signals.ROUTER_REQUESTS, model=m, tier=t) for m in names)
            for t in TIER_NAMES
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


def decide_alone(policy: Mapping[str, Choice], prompts: list[Prompt], rounds: int) -> list[float]:
    """The router's same decision (`RouterApp._decide_class`) on the same requests, called in a
    loop in this process, out of the serving path: what it costs without the router's other work
    and the simulators competing for the cores. Microseconds per decision."""
    from quantrollout.router.app import RouterApp
    from quantrollout.router.requests import Request, parse_request
    from quantrollout.router.source import StaticConfigSource

    app = RouterApp(StaticConfigSource(serving_table(policy)))
    traffic = next(m.traffic for m in serving_table(policy) if m.name == "mixed")
    calls = []
    for p in prompts:
        request = parse_request(json.dumps({**p.body, "model": "mixed"}).encode(), "json", "", b"")
        assert isinstance(request, Request)
        headers = [(b"x-user-id", p.user.encode())]
        if p.header:
            headers.append((CLASS_HEADER.encode(), p.header.encode()))
        calls.append((request, {"type": "http", "headers": headers}, p.user))
    clock = time.perf_counter_ns
    times: list[float] = []
    for _ in range(rounds):
        for request, scope, user in calls:
            started = clock()
            app._decide_class(traffic, request, scope, user)
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
    print("routing decision: made by the router (classify + class split, policy written as "
          "status.traffic.classes); the seed's thresholds on the client side")  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="qr-bench-mixed-") as tmp, ExitStack() as stack:
        fp16_config = SimConfig(latency_ms=SERVICE_MS["fp16"] * SIM_TIME_SCALE)
        upstreams = {"fp16": stack.enter_context(serve_tier("fp16", {"any": fp16_config}))}
        for t in QUANTIZED:
            configs: dict[str, SimConfig] = {
                cls: SimConfig(
                    latency_ms=SERVICE_MS[t.name] * SIM_TIME_SCALE,
                    divergence_rate=round(1 - quality[t.name][cls], 6),
                )
                for cls in CLASSES
            }
            upstreams[t.name] = stack.enter_context(serve_tier(t.name, configs))
        limits = httpx.Limits(max_connections=args.concurrency * 2)

        async def shadow() -> dict[str, list[Sample]]:
            with router_process(shadow_table(), upstreams, Path(tmp), "shadow") as router:
                async with httpx.AsyncClient(timeout=30, limits=limits) as client:
                    return await shadow_phase(client, router, shadow_mix, args.concurrency)

        started = time.monotonic()
        samples = asyncio.run(shadow())
        print(f"shadow: {len(shadow_mix)} requests, each mirrored to 2 tiers by the router, in "
              f"{time.monotonic() - started:.1f}s")  # fmt: skip
        analysis = Analysis()
        observed = class_stats.parse(
            class_answers(samples, "shadow"),
            [t.name for t in QUANTIZED],
            BASELINE.name,
            class_stats.class_rules(analysis),
            analysis.min_samples,
            CLASSES,
        )
        stats: Mapping[tuple[str, str], ShadowStats] = observed.stats
        thresholds = Thresholds(args.min_samples, args.min_agreement)
        policy = compile_policy(CLASSES, BASELINE, QUANTIZED, stats, thresholds)
        print(f"\ncompiled policy (min samples {thresholds.min_samples}, "
              f"min agreement {thresholds.min_agreement}; agreement calibrated per class):")  # fmt: skip
        print(f"  {'class':11}{'tier':10}{'int4 agr':>10}{'fp8 agr':>10}{'samples':>9}  reason")
        for cls, choice in policy.items():
            a4, a8 = stats[(cls, INT4.name)], stats[(cls, FP8.name)]
            cells = [f"{s.agreement:.3f}" if s.agreement is not None else "-" for s in (a4, a8)]
            print(f"  {cls:11}{choice.tier:10}{cells[0]:>10}{cells[1]:>10}"
                  f"{a4.samples:>9}  {choice.reason}")  # fmt: skip
        print("class mix seen in shadow: "
              + " ".join(f"{c}={v:.1%}" for c, v in observed.mix.items()))  # fmt: skip

        strategies: dict[str, Callable[[Prompt], str]] = {
            "mixed": lambda p: "mixed",
            "all-int4": lambda p: "all-int4",
            "seed": lambda p: f"seed-{seed_tier(p)}",
            "fp16": lambda p: "fp16",
        }

        async def serve() -> tuple[list[Outcome], list[float]]:
            table = serving_table(policy)
            with router_process(table, upstreams, Path(tmp), "serving") as router:
                async with httpx.AsyncClient(timeout=30, limits=limits) as client:
                    outcomes = await serving_phase(
                        client, router, upstreams["fp16"], served_mix, strategies,
                        args.concurrency,
                    )  # fmt: skip
                    times = (await client.get(f"{router}/bench/decisions")).json()["us"]
            return outcomes, times

        started = time.monotonic()
        outcomes, times = asyncio.run(serve())
        print(f"serving: {len(served_mix)} requests x {len(strategies)} strategies in "
              f"{time.monotonic() - started:.1f}s")  # fmt: skip

    print(
        f"\n  {'strategy':10}{'int4':>8}{'fp8':>8}{'fp16':>8}{'agreement':>11}{'cost-vs-fp16':>14}"
    )
    for o in outcomes:
        n = sum(o.per_tier.values())
        shares = "".join(f"{o.per_tier[t] / n:>8.1%}" for t in (INT4.name, FP8.name, "fp16"))
        print(f"  {o.strategy:10}{shares}{o.agreement:>11.4f}{o.cost:>14.3f}")
    if len(times) != len(served_mix):
        raise RuntimeError(f"the router timed {len(times)} decisions, not {len(served_mix)}")
    decide_us = statistics.median(times)
    p99 = statistics.quantiles(times, n=100)[98]
    print(f"\ndecide, in the router (class table, header, classify, sticky bucket, decide_mixed; "
          f"body already parsed): median {decide_us:.1f} us, mean {statistics.fmean(times):.1f} us, "
          f"p99 {p99:.1f} us over {len(times)} requests")  # fmt: skip
    alone = decide_alone(policy, served_mix, args.decide_rounds)
    print(f"decide, the same code out of the serving path (a loop in this process): median "
          f"{statistics.median(alone):.1f} us, mean {statistics.fmean(alone):.1f} us, p99 "
          f"{statistics.quantiles(alone, n=100)[98]:.1f} us over {len(alone)} decisions")  # fmt: skip
    mixed = outcomes[0]
    n = sum(mixed.per_tier.values())
    # The same split priced by policy.py's cost model, as the operator would report it.
    modelled = relative_cost({t: c / n for t, c in mixed.per_tier.items()}, QUANTIZED, BASELINE)
    print(f"policy.relative_cost of the mixed split: {modelled:.3f}")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    print(
        f"mixed: cheapest-share={mixed.per_tier[INT4.name] / n:.3f} "
        f"agreement={mixed.agreement:.4f} cost-vs-fp16={mixed.cost:.3f} decide-us={decide_us:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
