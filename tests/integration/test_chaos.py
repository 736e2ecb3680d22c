"""Crash safety, by chaos: the operator is SIGKILLed at random moments while several models roll
out at once (some healthy, some with a breach injected at a known stage) and restarted each
time; an independent watch records every version of every model, and the pure checks of
`localstack.history` judge that history with the state machine's own definitions. The router is
SIGKILLed mid-stream and restarted, and must then answer exactly the weights in the API.

The kills follow a seeded RNG: the seed is printed (and named in every failure), and
QR_CHAOS_SEED=N makes the same random choices again (the moments they land on still depend on
the machine's timing).
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client, watch
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from localstack.history import FINAL, Breach, Expectation, Seen, check
from localstack.lab import Lab, OperatorProcess
from localstack.load import Load
from localstack.stack import Stack
from quantrollout.api.crd import GROUP, PLURAL, VERSION
from quantrollout.api.status import TrafficStatus
from quantrollout.router.split import decide as route

from .support import Models, example, wait_for

STAGES = ("shadow", "ab", "gradual", "full")
MIN_KILLS, MIN_KILLS_PER_STAGE = 50, 5
CONCURRENT = 5  # models rolling out at once
POOL = 40  # models at most (each has its own simulators, so the router knows them from its start)
FINISH_BOUND_S = 600.0  # creation to Succeeded/RolledBack while the kills go on (loaded machine)
# Thresholds a healthy tier meets on a machine loaded by other test sessions: the latency rule
# reads vLLM's own TTFT (the router's end-to-end latency there measures the machine's load).
RULES = [
    {"name": "error-rate", "max": "20%"},
    {"name": "ttft-p99", "max": "1s"},
    {"name": "repetition-rate", "max": "20%"},
    {"name": "shadow-agreement", "min": "80%"},
]
# The fault injected into the target at each breach stage, and the rule that must name it.
FAULTS: dict[str, tuple[dict[str, Any], str]] = {
    "shadow": ({"repetition_rate": 0.6}, "repetition-rate "),
    "ab": ({"latency_ms": 3000}, "ttft-p99 "),
    "gradual": ({"repetition_rate": 0.6}, "repetition-rate "),
}
KINDS = ("healthy", "shadow", "healthy", "ab", "healthy", "gradual")  # None-breach or its stage


def seed() -> int:
    chosen = os.environ.get("QR_CHAOS_SEED")
    return int(chosen) if chosen else random.SystemRandom().randrange(2**32)


def served(name: str) -> str:
    return f"chaos/{name}"


def chaos_model(name: str, breach: str | None) -> dict[str, Any]:
    """Short stages (4s) and a 1s analysis; the breach stage held for minutes, so that a breach
    injected there is judged there."""
    obj = example()
    obj["metadata"] = {"name": name}
    spec = obj["spec"]
    spec["model"] = served(name)
    spec["serving"] = {**spec["serving"], "replicas": 1}
    hold = {stage: "5m" if stage == breach else "4s" for stage in STAGES}
    spec["rollout"] = {
        "stages": [
            {"name": "shadow", "mirrorPercent": 100, "duration": hold["shadow"]},
            {"name": "ab", "weight": 20, "duration": hold["ab"], "stickyBy": "header:x-user-id"},
            {"name": "gradual", "weights": [40, 70], "stepDuration": hold["gradual"]},
            {"name": "full"},
        ],
        "analysis": {"interval": "1s", "minSamples": 5, "failureLimit": 2, "rules": RULES},
        "preflight": spec["rollout"]["preflight"],  # example()'s: off (the stack runs no Job)
    }
    return obj


class Observer:
    """Watches the namespace's QuantizedModels and records every version, in order, with the
    time it arrived. A watch delivers every resourceVersion; an expired one (410) would leave
    a gap, which is counted (and fails the test) rather than papered over."""

    def __init__(self, kube: ApiClient, namespace: str, on_change: Callable[[Seen], None]) -> None:
        self.api = client.CustomObjectsApi(kube)
        self.namespace, self.on_change = namespace, on_change
        self.history: list[Seen] = []
        self.latest: dict[str, Seen] = {}
        self.changes: queue.Queue[Seen] = queue.Queue()  # a model's (phase, stage, step) moved
        self.gaps = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="observer")

    def __enter__(self) -> Observer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def saw(self, name: str, resource_version: str) -> bool:
        seen = self.latest.get(name)
        return seen is not None and seen.resource_version == resource_version

    def _record(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        seen = Seen(meta["name"], meta["resourceVersion"], time.time(),
                    obj.get("spec") or {}, obj.get("status") or {})  # fmt: skip
        with self._lock:
            before = self.latest.get(seen.name)
            self.history.append(seen)
            self.latest[seen.name] = seen
        view = ("phase", "stage", "step")
        if before is None or any(before.status.get(k) != seen.status.get(k) for k in view):
            self.changes.put(seen)
            self.on_change(seen)

    def _run(self) -> None:
        listed = self.api.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL)
        for obj in listed["items"]:
            self._record(obj)
        rv = listed["metadata"]["resourceVersion"]
        while not self._stop.is_set():
            w = watch.Watch()
            try:
                for event in w.stream(
                    self.api.list_namespaced_custom_object, GROUP, VERSION, self.namespace,
                    PLURAL, resource_version=rv, timeout_seconds=5, allow_watch_bookmarks=True,
                ):  # fmt: skip
                    obj = event["object"]
                    rv = obj["metadata"]["resourceVersion"]
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._record(obj)
                    if self._stop.is_set():
                        w.stop()
            except ApiException as err:
                if err.status != 410:
                    self.errors.append(str(err))
                    time.sleep(0.5)
                    continue
                self.gaps += 1  # expired: re-list, and say the history has a hole
                listed = self.api.list_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL
                )
                rv = listed["metadata"]["resourceVersion"]
            except Exception as err:  # a dropped connection: resume from the last version
                self.errors.append(repr(err))
                time.sleep(0.2)


@dataclass
class Chaos:
    """Kills: how many landed while some model was in each stage (a model counts while it
    rolls out, and at its final stage if it got there during the operator's life just killed)."""

    rng: random.Random
    operator: OperatorProcess
    kills: int = 0
    by_stage: Counter[str] = field(default_factory=Counter)
    after_rollback: int = 0  # kills in the life of an operator that had just rolled one back
    restarted_at: float = field(default_factory=time.time)
    startups: list[float] = field(default_factory=list)  # seconds from start to live

    def quota_met(self) -> bool:
        return self.kills >= MIN_KILLS and all(
            self.by_stage[s] >= MIN_KILLS_PER_STAGE for s in STAGES
        )

    def cycle(self, observer: Observer, names: list[str]) -> None:
        """Lets the (live) operator run until a stage change (plus a random delay) or for a
        random time, then SIGKILLs it, starts it again and waits until it is live."""
        if self.rng.random() < 0.7:
            with contextlib.suppress(queue.Empty):
                observer.changes.get(timeout=self.rng.uniform(2.0, 6.0))
            time.sleep(self.rng.uniform(0.0, 1.5))  # the other models' ticks, too
        else:
            time.sleep(self.rng.uniform(0.1, 3.0))  # anywhere: resuming, ticking, idle
        stages: set[str] = set()
        rolled_back = False
        for name in names:
            seen = observer.latest.get(name)
            if seen is None or not seen.status.get("stage"):
                continue
            phase = seen.status.get("phase")
            if phase in FINAL and seen.at < self.restarted_at:
                continue  # finished in an earlier life: nothing of it is in flight
            stages.add(str(seen.status["stage"]))
            rolled_back |= phase == "RolledBack"
        self.operator.stop(signal.SIGKILL)
        self.kills += 1
        self.by_stage.update(stages)
        self.after_rollback += rolled_back
        while not observer.changes.empty():  # wait for what this life does, not the last one
            observer.changes.get_nowait()
        self.restarted_at = time.time()
        self.operator.start()
        self.startups.append(self.operator.wait_ready())


def conditions_follow(obj: dict[str, Any]) -> bool:
    """The kstatus conditions say what the phase says (the reconcile after the last tick ran)."""
    status = obj.get("status") or {}
    conds = {c["type"]: c for c in status.get("conditions") or []}
    if status.get("phase") == "Succeeded":
        return (conds.get("Progressing") or {}).get("reason") == "RolloutSucceeded"
    if status.get("phase") == "RolledBack":
        degraded = conds.get("Degraded") or {}
        return (degraded.get("status"), degraded.get("reason")) == ("True", "RolledBack")
    return False


def test_sigkilling_the_operator_mid_rollout_breaks_no_rule(
    kube: ApiClient, stack: Stack, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    chosen = seed()
    print(f"\nchaos seed {chosen} (QR_CHAOS_SEED={chosen} makes the same random choices again)")
    rng = random.Random(chosen)
    began = time.monotonic()
    lab = Lab(stack, tmp_path)
    names = [f"m{i:02d}" for i in range(POOL)]
    kinds = {name: KINDS[i % len(KINDS)] for i, name in enumerate(names)}
    # Scraped only while their model exists: idle simulators cost the loaded machine nothing.
    sims = {
        n: lab.add_tiers(namespace, n, served(n), ["fp16", "int4-awq"], scraped=False)
        for n in names
    }
    router = lab.start_router(namespace)
    models = Models(kube, namespace)
    expectations: dict[str, Expectation] = {}
    injected: dict[str, float] = {}

    def inject(seen: Seen) -> None:
        """A breach at ab or gradual goes in the moment the watch sees the model get there."""
        stage = kinds.get(seen.name)
        if stage in FAULTS and seen.name not in injected and seen.status.get("stage") == stage:
            sims[seen.name]["int4-awq"].configure(**FAULTS[stage][0])
            injected[seen.name] = time.time()

    chaos = Chaos(rng, operator)
    operator.wait_ready()
    loads: dict[str, Load] = {}
    created: list[str] = []
    settled: set[str] = set()

    def settle(observer: Observer) -> bool:
        """Deletes each finished model once its conditions followed its phase and the watch saw
        its last version: its GPUs go back for the next models (the fake nodes have 32)."""
        for name in created:
            seen = observer.latest.get(name)
            if name in settled or seen is None or seen.status.get("phase") not in FINAL:
                continue
            obj = models.get(name)
            if (
                obj
                and conditions_follow(obj)
                and observer.saw(name, obj["metadata"]["resourceVersion"])
            ):
                models.delete(name)
                lab.scrape(namespace, name, False)
                settled.add(name)
        return len(settled) == len(created)

    try:
        with Observer(kube, namespace, inject) as observer:
            while True:
                for name in list(loads):
                    seen = observer.latest.get(name)
                    if seen is not None and seen.status.get("phase") in FINAL:
                        loads.pop(name).stop()
                if chaos.quota_met() and not loads:
                    break
                if not chaos.quota_met() and len(loads) < CONCURRENT and len(created) < POOL:
                    name = names[len(created)]
                    if kinds[name] == "shadow":
                        sims[name]["int4-awq"].configure(**FAULTS["shadow"][0])
                        injected[name] = time.time()
                    lab.scrape(namespace, name)
                    expectations[name] = Expectation(time.time())
                    models.create(
                        chaos_model(name, None if kinds[name] == "healthy" else kinds[name])
                    )
                    created.append(name)
                    loads[name] = Load(router.url, served(name), rate_per_s=4, workers=2).start()
                if not loads:
                    break  # the pool ran out before the quota: reported below
                chaos.cycle(observer, created)
                settle(observer)
            wait_for("every model to settle", functools.partial(settle, observer), timeout=120)
    finally:
        for load in loads.values():
            load.stop()
        if operator.proc is None:
            operator.start()
        lab.stop()
    took = time.monotonic() - began
    for name, kind in kinds.items():
        if name in expectations and kind in FAULTS:
            at = injected.get(name)
            assert at is not None, f"seed {chosen}: {name}'s breach at {kind} was never injected"
            breach = Breach(kind, FAULTS[kind][1], at)
            expectations[name] = Expectation(expectations[name].created_at, breach)
    print(
        f"chaos seed {chosen}: {chaos.kills} kills in {took:.0f}s over {len(created)} models; "
        f"kills by stage {dict(chaos.by_stage)}, right after a rollback {chaos.after_rollback}; "
        f"operator live {min(chaos.startups, default=0):.1f}-{max(chaos.startups, default=0):.1f}s "
        "after a start; "
        f"{len(observer.history)} versions recorded, watch errors {observer.errors}"
    )
    assert observer.gaps == 0, f"seed {chosen}: the watch expired {observer.gaps} times"
    problems = check(observer.history, expectations, FINISH_BOUND_S)
    assert problems == [], f"seed {chosen}: " + "\n".join(problems)
    assert {kinds[n] for n in created} >= {"healthy", *FAULTS}
    assert chaos.quota_met(), (
        f"seed {chosen}: {chaos.kills} kills, by stage {dict(chaos.by_stage)}: fewer than "
        f"{MIN_KILLS} (or {MIN_KILLS_PER_STAGE} in a stage) before the {POOL} models ran out"
    )


ROUTER_MODEL, ROUTER_SERVED, ROUTER_ROLLOUT = "r", "chaos/router", "chaos-1"


def undeployable(name: str, served_model: str) -> dict[str, Any]:
    """Too little GPU memory for the baseline: an operator running in the same session refuses
    to deploy it and so never writes its traffic; only this test does."""
    obj = example()
    obj["metadata"] = {"name": name}
    obj["spec"]["model"] = served_model
    obj["spec"]["serving"]["gpu"]["memoryGiB"] = 8
    obj["spec"]["modelShape"] = {"parametersB": 8, "layers": 32, "kvHeads": 8, "headDim": 128}
    return obj


def configured(weight: int) -> dict[str, Any]:
    return {
        "rolloutId": ROUTER_ROLLOUT, "servedModel": ROUTER_SERVED, "targetWeight": weight,
        "mirrorPercent": 0, "stickyHeader": "x-user-id",
        "baseline": {"tier": "fp16", "service": f"{ROUTER_MODEL}-fp16", "port": 8000},
        "target": {"tier": "int4-awq", "service": f"{ROUTER_MODEL}-int4-awq", "port": 8000},
    }  # fmt: skip


def answering_tiers(url: str, users: list[str]) -> dict[str, str]:
    """Which tier answers each user (a short streamed answer, as clients ask)."""
    body = {"model": ROUTER_SERVED, "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 4, "stream": True}  # fmt: skip
    tiers = {}
    with httpx.Client(timeout=30) as http:
        for user in users:
            with http.stream("POST", f"{url}/v1/chat/completions", json=body,
                             headers={"x-user-id": user}) as resp:  # fmt: skip
                resp.read()
                assert resp.status_code == 200, resp.text
                tiers[user] = resp.headers["x-vllmsim-tier"]
    return tiers


@dataclass
class Stream:
    """One long streamed answer: how many chunks arrived, and whether it ended properly."""

    user: str
    chunks: int = 0
    done: bool = False
    cut: bool = False
    started: threading.Event = field(default_factory=threading.Event)

    def run(self, url: str) -> None:
        body = {"model": ROUTER_SERVED, "messages": [{"role": "user", "content": "tell me"}],
                "max_tokens": 200, "stream": True}  # fmt: skip
        try:
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=body,
                              headers={"x-user-id": self.user}, timeout=30) as resp:  # fmt: skip
                for line in resp.iter_lines():
                    if line.startswith("data: "):
                        self.chunks += 1
                        self.started.set()
                        self.done |= line == "data: [DONE]"
        except httpx.HTTPError:
            self.cut = True
        finally:
            self.started.set()


def test_sigkilling_the_router_mid_stream_keeps_the_configured_weights(
    kube: ApiClient, stack: Stack, crd: str, namespace: str, tmp_path: Path
) -> None:
    chosen = seed()
    print(f"\nrouter chaos seed {chosen}")
    rng = random.Random(chosen)
    models = client.CustomObjectsApi(kube)

    def set_weight(weight: int) -> None:
        models.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, ROUTER_MODEL, {"status": {"traffic": configured(weight)}}
        )  # fmt: skip

    lab = Lab(stack, tmp_path)
    sims = lab.add_tiers(namespace, ROUTER_MODEL, ROUTER_SERVED, ["fp16", "int4-awq"])
    Models(kube, namespace).create(undeployable(ROUTER_MODEL, ROUTER_SERVED))
    weight = 30
    set_weight(weight)
    users = [f"user-{i}" for i in range(150)]
    try:
        router = lab.start_router(namespace)

        def exact(w: int) -> dict[str, str]:
            traffic = TrafficStatus.model_validate(configured(w))
            return {u: "int4-awq" if route(traffic, u).live_on_target else "fp16" for u in users}

        assert answering_tiers(router.url, users) == exact(weight)
        for kill in range(6):
            for sim in sims.values():
                sim.configure(token_delay_ms=150)  # even a short answer streams for seconds
            streams = [Stream(rng.choice(users)) for _ in range(8)]
            threads = [threading.Thread(target=s.run, args=(router.url,)) for s in streams]
            for t in threads:
                t.start()
            for s in streams:
                s.started.wait(timeout=30)
            time.sleep(rng.uniform(0.0, 0.3))
            router.stop(signal.SIGKILL)
            for t in threads:
                t.join(timeout=30)
            assert any(s.chunks > 0 and not s.done for s in streams), (
                f"seed {chosen}, kill {kill}: no stream was cut mid-answer"
            )
            if kill % 2:  # the weight changes while the router is down, too
                weight = rng.choice([w for w in range(0, 101, 5) if w != weight])
                set_weight(weight)
            for sim in sims.values():
                sim.configure(token_delay_ms=0)
            router.start()  # returns once /health says the route table is loaded
            assert answering_tiers(router.url, users) == exact(weight), (
                f"seed {chosen}, kill {kill}: the restarted router does not answer {weight}%"
            )
        stored = models.get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, ROUTER_MODEL
        )
        assert stored["status"]["traffic"] == configured(weight)  # nobody else wrote it
    finally:
        lab.stop()
