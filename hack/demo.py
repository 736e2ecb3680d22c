#!/usr/bin/env python3
"""`make demo`: a rollout and an automatic rollback, live, on the local stack.

1. Brings up (or reuses) the local control plane and Prometheus (`hack/cluster up`).
2. Installs the QuantizedModel CRD, starts one vLLM simulator per tier, the router and the
   operator, and sends steady traffic through the router.
3. Applies examples/llama3-8b-awq.yaml with stages of seconds instead of hours and shows it walk
   preflight -> shadow -> ab -> gradual -> full, judged by Prometheus at every step (preflight's
   Job runs its benchmark against the simulators; the artifact check is off: see FAST_PREFLIGHT).
4. Applies examples/mistral-7b-fp8.yaml the same way, makes its FP8 target start looping
   (repetition) in the middle of the A/B stage, and shows the operator send all traffic back to
   BF16 by itself, with the reason.
5. Prints a summary and exits 0 if both went as described. The local stack keeps running
   (`make cluster-down` stops it); the demo's own processes are stopped.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from kubernetes import client

from localstack import stack as localstack
from localstack.crds import apply_crds
from localstack.kubeapi import api_client, get_custom
from localstack.lab import FAST_PREFLIGHT, Lab, OperatorProcess, fast_rollout
from localstack.load import Load
from quantrollout.api.crd import GROUP, PLURAL, VERSION, build_crd

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "demo"


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def load_example(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "examples" / f"{name}.yaml").read_text()))


def get_status(custom: client.CustomObjectsApi, name: str) -> dict[str, Any]:
    obj = get_custom(custom, GROUP, VERSION, NAMESPACE, PLURAL, name)
    return dict(obj.get("status") or {})


def describe(st: dict[str, Any]) -> str:
    line = f"{st.get('phase', '-'):<11} stage={st.get('stage') or '-':<8} live={st.get('targetWeight', 0):>3}%"
    line += f" mirror={st.get('mirrorPercent', 0):>3}%"
    pre = st.get("preflight") or {}
    if pre and not st.get("stage"):
        line += f"  preflight {pre.get('phase')}"
        for check in pre.get("checks") or []:
            line += f" {check['name']}={check['verdict']}"
    last = st.get("lastAnalysis")
    if last:
        values = ", ".join(
            f"{r['rule']}={r['value']:.3g}" if r.get("value") is not None else f"{r['rule']}=?"
            for r in last.get("results", [])
        )
        line += f"  analysis {last['verdict']}: {values}"
    return line


def follow(
    custom: client.CustomObjectsApi,
    name: str,
    until: set[str],
    timeout: float,
    on_stage: Any = None,
) -> dict[str, Any]:
    """Prints every change of phase/stage/weight (and the analysis behind it) until a final phase."""
    deadline, seen = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        st = get_status(custom, name)
        key = (st.get("phase"), st.get("stage"), st.get("targetWeight"), st.get("mirrorPercent"))
        if key != seen:
            say(f"{name:<11} {describe(st)}")
            seen = key
            if on_stage:
                on_stage(st)
        if st.get("phase") in until:
            return st
        time.sleep(0.25)
    raise TimeoutError(f"{name} did not reach {until} within {timeout:.0f}s")


def wait_routed(router_url: str, served: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if served in [
                m["id"] for m in httpx.get(f"{router_url}/v1/models", timeout=2).json()["data"]
            ]:
                return
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the router never learned {served}")


def main() -> int:
    say("bringing up the local stack (control plane with 4 fake GPU nodes, Prometheus)")
    running = localstack.attach()
    if running is None or not running.controlplane.api_ready():
        localstack.down()
        running = localstack.up()
    stack = running
    api = api_client(stack.controlplane.kubeconfig)
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    apply_crds(api, [build_crd()])

    def namespaces() -> list[str]:
        return [str(ns.metadata.name) for ns in core.list_namespace().items if ns.metadata]

    if NAMESPACE in namespaces():
        say(f"removing the previous demo namespace '{NAMESPACE}'")
        core.delete_namespace(NAMESPACE)
        while NAMESPACE in namespaces():
            time.sleep(0.5)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))

    workdir = stack.controlplane.state_dir.parent / "demo"
    workdir.mkdir(exist_ok=True)
    lab = Lab(stack, workdir)
    llama, mistral = load_example("llama3-8b-awq"), load_example("mistral-7b-fp8")
    sims = lab.add_tiers(NAMESPACE, "llama3-8b", llama["spec"]["model"], ["fp16", "int4-awq"])
    sims |= lab.add_tiers(NAMESPACE, "mistral-7b", mistral["spec"]["model"], ["bf16", "fp8"])
    for tier, sim in sims.items():
        # The quantized tiers answer sooner than their 16-bit baselines, as preflight's default
        # gate asks of them (no slower in throughput and first token).
        sim.configure(latency_ms=20 if tier in ("fp16", "bf16") else 12)
    router = lab.start_router(NAMESPACE)
    # Preflight's Jobs run their commands on the host against the simulators (localstack.jobs).
    lab.start_preflight()
    operator = OperatorProcess(
        stack.controlplane.kubeconfig, workdir / "operator.log", stack.prometheus.url
    )
    operator.start()
    say(f"simulators, router ({router.url}) and operator running; logs in {workdir}")

    loads: list[Load] = []
    try:
        say("1/2 llama3-8b: INT4 AWQ beside FP16, stages of 5s, analysis every 1s")
        # Preflight on, made fast: a short warm-up and benchmark; no artifact check (the
        # examples' s3:// artifacts are in no store the local stack runs).
        good = fast_rollout(llama, stage_seconds=5, min_samples=20, preflight=FAST_PREFLIGHT)
        custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, good)
        wait_routed(router.url, llama["spec"]["model"])
        loads.append(Load(router.url, llama["spec"]["model"], rate_per_s=30).start())
        first = follow(custom, "llama3-8b", {"Succeeded", "RolledBack"}, timeout=180)

        say("2/2 mistral-7b: FP8 beside BF16; its FP8 target will start looping mid-A/B")
        bad = fast_rollout(mistral, stage_seconds=5, min_samples=20, preflight=FAST_PREFLIGHT)
        bad["spec"]["rollout"]["stages"][1]["duration"] = (
            "30s"  # long enough to see the breach in A/B
        )
        custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, bad)
        wait_routed(router.url, mistral["spec"]["model"])
        loads.append(Load(router.url, mistral["spec"]["model"], rate_per_s=30).start())
        injected: list[bool] = []

        def inject(st: dict[str, Any]) -> None:
            if st.get("stage") == "ab" and not injected:
                time.sleep(2)
                say(
                    "           injecting a fault: the fp8 tier now answers with repetition loops 50% of the time"
                )
                sims["fp8"].configure(repetition_rate=0.5)
                injected.append(True)

        second = follow(
            custom, "mistral-7b", {"Succeeded", "RolledBack"}, timeout=180, on_stage=inject
        )
    finally:
        stats = [load.stop() for load in loads]
        operator.stop()
        lab.stop()

    print()
    say("summary")
    for name, st in (("llama3-8b", first), ("mistral-7b", second)):
        print(f"  {name:<11} {st.get('phase'):<11} live on target {st.get('targetWeight')}%")
        for reason in (st.get("rollback") or {}).get("reasons", []):
            print(f"              rollback reason: {reason}")
    for name, s in zip(("llama3-8b", "mistral-7b"), stats, strict=True):
        print(
            f"  traffic to {name}: {s.sent} requests, {s.errors} errors, answered by {dict(s.by_tier)}"
        )
    print(f"\n  kubectl --kubeconfig {stack.controlplane.kubeconfig} -n {NAMESPACE} get qm")
    print(f"  kubectl --kubeconfig {stack.controlplane.kubeconfig} -n {NAMESPACE} get events")
    print("  the local stack keeps running: make cluster-down stops it")
    ok = first.get("phase") == "Succeeded" and second.get("phase") == "RolledBack"
    say("demo OK: one rollout reached full, one rolled back by itself" if ok else "demo FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
