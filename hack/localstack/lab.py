"""A live rollout on the local stack: the QuantizedModel CRD, one vLLM simulator per tier, the
built-in router (a real `quantrollout router` process watching the API), Prometheus scraping both,
and the operator (a real `quantrollout run` process). The demo and the rollout tests use it.

All processes listen on 127.0.0.1; the router reaches each tier's simulator through an
`--upstream NAMESPACE/SERVICE=URL` override, since the Services' cluster IPs route nowhere here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vllmsim import Simulator

from .jobs import PreflightRunner
from .procs import StackError, free_port
from .stack import Stack

CRD_GROUP_PLURAL = "quantizedmodels.quantrollout.io"


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


class _Process:
    """A child process that is stopped politely first (SIGTERM), then for sure."""

    proc: subprocess.Popen[bytes] | None = None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class OperatorProcess(_Process):
    """`quantrollout run` as a real process against the local stack, restartable."""

    def __init__(
        self,
        kubeconfig: Path,
        log: Path,
        prometheus_url: str,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.kubeconfig, self.log, self.prometheus_url = kubeconfig, log, prometheus_url
        self.args = args  # more `quantrollout run` options, e.g. leader election
        self.env = env or {}
        self.liveness_port = free_port()

    def start(self) -> None:
        liveness = f"http://127.0.0.1:{self.liveness_port}/healthz"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [_bin("quantrollout"), "run", "--all-namespaces", "--standalone", "--liveness", liveness, *self.args],
                stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "KUBECONFIG": str(self.kubeconfig), "QR_PROMETHEUS_URL": self.prometheus_url,
                     "PYTHONUNBUFFERED": "1", **self.env},  # unbuffered: a SIGKILLed operator's last lines stay in the log
            )  # fmt: skip

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        self.start()

    def wait_ready(self, timeout: float = 120) -> float:
        """Waits for Kopf's liveness probe, which answers once the operator has started (its
        startup handlers ran and it watches); returns how long that took."""
        began = time.monotonic()
        url = f"http://127.0.0.1:{self.liveness_port}/healthz"
        while time.monotonic() - began < timeout:
            if self.proc is None or self.proc.poll() is not None:
                raise StackError(f"the operator exited while starting (see {self.log})")
            try:
                with urllib.request.urlopen(url, timeout=1):
                    return time.monotonic() - began
            except OSError:
                time.sleep(0.05)
        raise StackError(f"the operator was not live within {timeout:.0f}s (see {self.log})")


class RouterProcess(_Process):
    """`quantrollout router` watching one namespace, with each tier pointed at its simulator."""

    def __init__(
        self, kubeconfig: Path, log: Path, upstreams: dict[tuple[str, str], str], namespace: str
    ) -> None:
        self.kubeconfig, self.log, self.upstreams, self.namespace = (
            kubeconfig,
            log,
            upstreams,
            namespace,
        )
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> None:
        args = [_bin("quantrollout"), "router", "-n", self.namespace, "--host", "127.0.0.1", "--port", str(self.port),
                "--kubeconfig", str(self.kubeconfig)]  # fmt: skip
        for (namespace, service), url in sorted(self.upstreams.items()):
            args += ["--upstream", f"{namespace}/{service}={url}"]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StackError(f"the router exited while starting (see {self.log})")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise StackError(f"the router did not answer /health within {timeout:.0f}s")


@dataclass
class Lab:
    stack: Stack
    workdir: Path
    simulators: dict[tuple[str, str, str], Simulator] = field(default_factory=dict)
    router: RouterProcess | None = None
    preflight: PreflightRunner | None = None

    def upstreams(self) -> dict[tuple[str, str], str]:
        """Each tier's Service, as (namespace, name), and the simulator standing for it."""
        return {
            (ns, f"{model}-{tier}"): sim.url for (ns, model, tier), sim in self.simulators.items()
        }

    def start_preflight(self, env: dict[str, str] | None = None) -> PreflightRunner:
        """Runs the preflight Jobs' pods on the host (localstack.jobs), their requests to the
        tiers going to the simulators (the upstreams are read when a pod runs)."""
        runner = PreflightRunner(
            self.stack.controlplane.kubeconfig, self.upstreams, self.workdir, env
        )
        self.preflight = runner.start()
        return runner

    def add_tiers(
        self, namespace: str, model: str, served_model: str, tiers: list[str], *,
        scraped: bool = True,
    ) -> dict[str, Simulator]:  # fmt: skip
        """One running simulator per tier, scraped by Prometheus with the labels the rules use
        (or not yet: `scrape` turns it on when the model is created)."""
        started = {}
        for tier in tiers:
            sim = Simulator(model=served_model, port=0, tier=tier)
            sim.start()
            self.simulators[(namespace, model, tier)] = sim
            started[tier] = sim
        self.scrape(namespace, model, scraped)
        return started

    def scrape(self, namespace: str, model: str, scraped: bool = True) -> None:
        """Turns Prometheus' scraping of one model's simulators on or off."""
        for (ns, name, tier), sim in self.simulators.items():
            if (ns, name) != (namespace, model):
                continue
            target = f"vllm-{ns}-{name}-{tier}"
            if not scraped:
                self.stack.prometheus.remove_targets(target)
                continue
            self.stack.prometheus.add_targets(
                target, [sim.url.removeprefix("http://")],
                {"job": "vllm", "namespace": ns, "model": name, "tier": tier},
            )  # fmt: skip

    def start_router(
        self, namespace: str, kubeconfig: Path | None = None,
        more_upstreams: dict[tuple[str, str], str] | None = None,
    ) -> RouterProcess:  # fmt: skip
        """A router for the models of one namespace (another namespace may serve the same model).
        `more_upstreams`: Services served by something other than one simulator of `add_tiers`."""
        upstreams = {**self.upstreams(), **(more_upstreams or {})}
        router = RouterProcess(
            kubeconfig or self.stack.controlplane.kubeconfig,
            self.workdir / "router.log",
            upstreams,
            namespace,
        )
        router.start()
        self.router = router
        self.stack.prometheus.add_targets(
            "router", [f"127.0.0.1:{router.port}"], {"job": "quantrollout-router"}
        )
        return router

    def stop(self) -> None:
        if self.preflight:
            self.preflight.stop()
            self.preflight = None
        if self.router:
            self.router.stop()
            self.stack.prometheus.remove_targets("router")
        for (ns, model, tier), sim in self.simulators.items():
            sim.stop()
            self.stack.prometheus.remove_targets(f"vllm-{ns}-{model}-{tier}")
        self.simulators.clear()


# A preflight of seconds for simulated tiers: no artifact check (the examples' artifacts are in no
# store the local stack runs), a short warm-up and benchmark, the default gate.
FAST_PREFLIGHT: dict[str, Any] = {
    "artifact": {"enabled": False},
    "benchmark": {"concurrency": 4, "requests": 24, "warmupRequests": 4, "promptTokens": 32,
                  "maxTokens": 16},
    "timeout": "2m",
}  # fmt: skip


def fast_rollout(
    obj: dict[str, Any], *, stage_seconds: int = 4, interval: str = "1s", min_samples: int = 5,
    preflight: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The same model with stages and analysis short enough to watch: seconds, not hours.
    `preflight`: spec.rollout.preflight (e.g. FAST_PREFLIGHT, with `Lab.start_preflight`);
    without it, whatever the manifest says."""
    spec = obj["spec"]
    if preflight is not None:
        spec.setdefault("rollout", {})["preflight"] = preflight
    d = f"{stage_seconds}s"
    spec.setdefault("rollout", {})["stages"] = [
        {"name": "shadow", "mirrorPercent": 100, "duration": d},
        {"name": "ab", "weight": 10, "duration": d, "stickyBy": "header:x-user-id"},
        {"name": "gradual", "weights": [50], "stepDuration": d},
        {"name": "full"},
    ]
    analysis = spec["rollout"].setdefault("analysis", {})
    analysis.update({"interval": interval, "minSamples": min_samples, "failureLimit": 2})
    analysis.setdefault("rules", [])
    spec["serving"] = {**spec.get("serving", {}), "replicas": 1}
    return obj
