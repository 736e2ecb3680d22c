"""Two operator replicas with leader election on the real API server: only the Lease holder acts,
a killed leader is replaced and its rollout finishes, a stopped leader hands over at once, and a
leader that loses its Lease exits. The session's own operator steps aside for this module."""

from __future__ import annotations

import itertools
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from localstack.lab import Lab, OperatorProcess, fast_rollout
from localstack.load import Load
from localstack.stack import Stack
from quantrollout.leader.election import Timing
from quantrollout.leader.lease import LeaseLock

from .support import Models, example, wait_for

SERVED = "meta-llama/Meta-Llama-3-8B-Instruct"
LEASE = "quantrollout-operator"
FAST = ("--lease-duration", "3", "--renew-deadline", "2", "--retry-period", "0.25")


@pytest.fixture(scope="module")
def no_session_operator(operator: OperatorProcess) -> Iterator[None]:
    operator.stop()
    try:
        yield
    finally:
        operator.start()


class Replicas:
    """Operator processes that elect a leader on a Lease in `namespace`."""

    def __init__(self, stack: Stack, namespace: str, tmp_path: Path, timing: tuple[str, ...]):
        self.stack, self.namespace, self.tmp_path, self.timing = stack, namespace, tmp_path, timing
        self.procs: dict[str, OperatorProcess] = {}

    def start(self, identity: str) -> OperatorProcess:
        args = (
            "--leader-elect", "--leader-elect-namespace", self.namespace,
            "--leader-elect-identity", identity, *self.timing,
        )  # fmt: skip
        proc = self.procs.get(identity) or OperatorProcess(
            self.stack.controlplane.kubeconfig,
            self.tmp_path / f"{identity}.log",
            self.stack.prometheus.url,
            args,
        )
        self.procs[identity] = proc
        proc.start()
        return proc

    def log(self, identity: str) -> str:
        return (self.tmp_path / f"{identity}.log").read_text()

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()


@pytest.fixture
def replicas(
    stack: Stack, crd: str, namespace: str, tmp_path: Path, no_session_operator: None
) -> Iterator[Replicas]:
    found = Replicas(stack, namespace, tmp_path, FAST)
    try:
        yield found
    finally:
        found.stop()


def lease_spec(kube: ApiClient, namespace: str) -> dict[str, Any]:
    try:
        response: Any = client.CoordinationV1Api(kube).read_namespaced_lease(
            LEASE, namespace, _preload_content=False
        )
    except ApiException as err:
        if err.status == 404:
            return {}
        raise
    return dict(json.loads(response.data)["spec"])


def holder(kube: ApiClient, namespace: str) -> str:
    return str(lease_spec(kube, namespace).get("holderIdentity") or "")


def acted(log: str) -> bool:
    """Kopf ran a handler, or the operator wrote a rollout decision."""
    return "Handler '" in log


def test_only_the_leader_acts_and_a_killed_leader_is_replaced(
    kube: ApiClient, namespace: str, replicas: Replicas, stack: Stack, tmp_path: Path
) -> None:
    lab = Lab(stack, tmp_path)
    stop = threading.Event()
    watcher: threading.Thread | None = None
    try:
        lab.add_tiers(namespace, "llama3-8b", SERVED, ["fp16", "int4-awq"])
        router = lab.start_router(namespace)
        for identity in ("a", "b"):
            replicas.start(identity)
        leader = wait_for("a leader", lambda: holder(kube, namespace), timeout=30)
        follower = "b" if leader == "a" else "a"

        models = Models(kube, namespace)
        obj = fast_rollout(example(), stage_seconds=3)
        obj["spec"]["rollout"]["stages"][1]["duration"] = "8s"
        # Judged on errors only: a busy machine's latency is not what this test is about.
        obj["spec"]["rollout"]["analysis"]["rules"] = [{"name": "error-rate", "max": "5%"}]
        models.create(obj)

        def status() -> dict[str, Any]:
            return dict((models.get("llama3-8b") or {}).get("status") or {})

        weights: list[int] = []

        def watch() -> None:
            while not stop.is_set():
                weight = (status().get("traffic") or {}).get("targetWeight")
                if weight is not None:
                    weights.append(weight)
                time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        with Load(router.url, SERVED, rate_per_s=30):
            wait_for("ab", lambda: status().get("stage") == "ab", timeout=90)
            assert acted(replicas.log(leader))
            assert "waiting to lead" in replicas.log(follower)
            assert not acted(replicas.log(follower)), "a follower ran a handler"
            watcher.start()

            killed_at = time.monotonic()
            replicas.procs[leader].stop(signal.SIGKILL)
            wait_for("the follower to lead", lambda: holder(kube, namespace) == follower, 30)
            print(f"handover after SIGKILL: {time.monotonic() - killed_at:.2f}s (lease 3s)")
            replicas.start(leader)  # back as a follower
            done = wait_for(
                "Succeeded", lambda: (s := status()).get("phase") == "Succeeded" and s, timeout=120
            )
        assert done["stage"] == "full"
        assert "became the leader" in replicas.log(follower)
        restarted = replicas.log(leader).rsplit("waiting to lead", 1)[1]
        assert not acted(restarted), "the restarted replica acted while the other one led"
        assert lease_spec(kube, namespace)["leaseTransitions"] >= 1
        # No flip back across the handover: from A/B on, the weight only ever rises.
        weights.append(done["traffic"]["targetWeight"])
        assert weights[-1] == 100
        assert all(b >= a for a, b in itertools.pairwise(weights))
    finally:
        stop.set()
        if watcher is not None and watcher.is_alive():
            watcher.join()
        lab.stop()


def test_a_leader_stopped_with_sigterm_releases_the_lease(
    kube: ApiClient, namespace: str, stack: Stack, tmp_path: Path, no_session_operator: None
) -> None:
    # A lease of 60s: a takeover within 30s can only come from the release.
    slow = Replicas(
        stack, namespace, tmp_path, ("--lease-duration", "60", "--renew-deadline", "40", "--retry-period", "0.25")
    )  # fmt: skip
    try:
        slow.start("a")
        wait_for("a to lead", lambda: holder(kube, namespace) == "a", timeout=30)
        slow.start("b")
        wait_for("b to wait", lambda: "waiting to lead" in slow.log("b"))
        proc = slow.procs["a"].proc
        assert proc is not None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "released the Lease" in slow.log("a")
        wait_for("b to lead", lambda: holder(kube, namespace) == "b", timeout=30)
    finally:
        slow.stop()


def test_a_leader_that_loses_the_lease_exits(
    kube: ApiClient, namespace: str, replicas: Replicas
) -> None:
    replicas.start("a")
    wait_for("a to lead", lambda: holder(kube, namespace) == "a", timeout=30)
    coordination = client.CoordinationV1Api(kube)
    lease: Any = coordination.read_namespaced_lease(LEASE, namespace)
    lease.spec.holder_identity = "intruder"
    lease.spec.lease_duration_seconds = 3600
    coordination.replace_namespaced_lease(LEASE, namespace, lease)
    proc = replicas.procs["a"].proc
    assert proc is not None
    assert proc.wait(timeout=30) == 1
    assert "lost leadership (intruder holds the Lease): stopping" in replicas.log("a")


def test_of_two_candidates_writing_at_once_one_wins(
    kube: ApiClient, namespace: str, stack: Stack
) -> None:
    timing = Timing(lease_duration=1, renew_deadline=0.8, retry_period=0.1)
    a = LeaseLock(kube, namespace, LEASE, "a", timing)
    assert a.try_once()  # created, a leads
    b_clock = [0.0]
    b = LeaseLock(kube, namespace, LEASE, "b", timing, clock=lambda: b_clock[0])
    assert not b.try_once()  # first sight of a's lease: wait
    b_clock[0] = 5.0  # ... until b has seen no renewal for longer than the lease lasts

    # Right between b's read and b's write, a renews: b's write carries a stale resourceVersion.
    def renew_then_tell_time() -> float:
        assert a.try_once()
        return b_clock[0]

    b._clock = renew_then_tell_time
    assert not b.try_once()  # 409 Conflict: b stays a follower
    assert holder(kube, namespace) == "a"
    b._clock = lambda: b_clock[0]
    assert not b.try_once()  # a's renewal restarted b's clock
