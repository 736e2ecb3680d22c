#!/usr/bin/env python3
"""Scale figures for issue 7 on a private local stack (control plane with KWOK GPU nodes, a real
Prometheus, the operator as a real `quantrollout run` process):

- time for N QuantizedModels (default 1,000) to reach Ready, per model (median, p99, max) and in total;
- the operator's resident memory and CPU (cores, averaged) during the ramp and at steady state;
- API requests per minute the operator makes at steady state, by verb (counted by the API server's
  audit log: the operator runs as its own ServiceAccount, and only that user is audited);
- Prometheus queries per analysis round while every model is in shadow and analysed (counted by
  Prometheus itself), against one query per rule per round;
- whether the goals (under 500 MiB resident and under one core at steady state) were met.

The models are examples/llama3-8b-awq.yaml with 1 replica per tier (2 GPUs per model), staying in
a 1 h shadow stage judged by the example's six rules every --interval. Their router series come
from one synthetic /metrics endpoint (localstack.routerseries, a named stand-in for N routers),
healthy enough that every rule passes. The fake GPU nodes are sized so every pod fits
(--pods-per-node GPUs and pods each).

usage: hack/bench/scale.py [--models 1000] [--interval 30s] [--steady-seconds 180]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml
from kubernetes import client

from localstack import controlplane, prometheus
from localstack.crds import apply_crds
from localstack.kubeapi import api_client
from localstack.lab import OperatorProcess
from localstack.procs import free_port
from localstack.routerseries import RouterSeries, RouterSeriesServer, TierRates
from quantrollout.api.crd import GROUP, PLURAL, VERSION, build_crd
from quantrollout.api.durations import parse_duration

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "scale"
OPERATOR_NS, OPERATOR_SA = "qr-system", "operator"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NS}:{OPERATOR_SA}"
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived", "ResponseStarted"],
    "rules": [{"level": "Metadata", "users": [OPERATOR_USER]}, {"level": "None"}],
}
MIB = 1024 * 1024
HEALTHY = TierRates(latency_shares=(0.5, 0.9, 0.995, 1.0, 1.0))  # p99 ~0.2 s: every rule passes


@dataclass
class Sample:
    at: float
    cpu_s: float
    rss: int


@dataclass
class Sampler:
    """The operator process's CPU seconds and resident memory, from /proc, once a second."""

    pid: int
    samples: list[Sample] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def read(self) -> Sample | None:
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        rss = next(
            int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")
        )
        return Sample(time.monotonic(), (int(stat[11]) + int(stat[12])) / ticks, rss)

    def run(self) -> None:
        while not self.stop.wait(1.0):
            if (s := self.read()) is not None:
                self.samples.append(s)

    def between(self, start: float, end: float) -> tuple[float, int, int]:
        """Average cores, peak and last RSS over [start, end]."""
        inside = [s for s in self.samples if start <= s.at <= end]
        if len(inside) < 2:
            return math.nan, 0, 0
        cores = (inside[-1].cpu_s - inside[0].cpu_s) / (inside[-1].at - inside[0].at)
        return cores, max(s.rss for s in inside), inside[-1].rss


def audit_events(audit: Path, start: float, end: float) -> list[dict[str, Any]]:
    """The operator's completed requests with a receive time in [start, end) (wall clock)."""
    found = []
    for path in sorted(audit.parent.glob(audit.name + "*")):
        for line in path.read_text().splitlines():
            ev = json.loads(line)
            if (
                ev.get("stage") != "ResponseComplete"
                or ev.get("user", {}).get("username") != OPERATOR_USER
            ):
                continue
            ts = datetime.datetime.fromisoformat(ev["requestReceivedTimestamp"]).timestamp()
            if start <= ts < end:
                found.append(ev)
    return found


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)]


def model(example: dict[str, Any], name: str, interval: str) -> dict[str, Any]:
    obj = yaml.safe_load(yaml.safe_dump(example))
    obj["metadata"] = {"name": name, "namespace": NAMESPACE}
    obj["spec"]["serving"]["replicas"] = 1
    obj["spec"]["rollout"]["stages"] = [
        {"name": "shadow", "mirrorPercent": 100, "duration": "1h"},
        {"name": "full"},
    ]
    obj["spec"]["rollout"]["analysis"]["interval"] = interval
    # Off: this measures N models in shadow, not preflight (hack/bench/preflight.py does).
    obj["spec"]["rollout"]["preflight"] = {"enabled": False}
    return dict(obj)


def is_ready(qm: dict[str, Any]) -> bool:
    conds = (qm.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def operator_identity(api: client.ApiClient) -> None:
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=OPERATOR_NS)))
    core.create_namespaced_service_account(
        OPERATOR_NS, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=OPERATOR_SA))
    )
    rbac.create_cluster_role_binding(cast(Any, {
        "metadata": {"name": "qr-scale-operator"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": OPERATOR_NS}],
    }))  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--interval", default="30s", help="analysis interval of every model")
    parser.add_argument("--steady-seconds", type=int, default=180)
    parser.add_argument(
        "--pods-per-node", type=int, default=110, help="GPUs and pod slots per fake node"
    )
    parser.add_argument("--ready-timeout", type=int, default=3600)
    parser.add_argument(
        "--controller-qps",
        type=int,
        default=0,
        help="kube-controller-manager's API rate per controller (0: its default, 20 per second, "
        "burst 30); the ramp of 2 Deployments, ReplicaSets and Pods per model waits on it",
    )
    parser.add_argument("--keep", action="store_true", help="print the state directory and keep it")
    args = parser.parse_args()
    interval_s = parse_duration(args.interval)

    tmp = tempfile.mkdtemp(prefix="qr-scale-")
    state = Path(tmp)
    (state / "audit-policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY))
    audit = state / "audit.log"
    nodes = tuple(
        controlplane.FakeNode(f"gpu-node-{i}", gpus=args.pods_per_node, pods=args.pods_per_node)
        for i in range(math.ceil(2 * args.models / args.pods_per_node) + 1)
    )
    cfg = controlplane.ControlPlaneConfig(
        state / "cp", api_port=free_port(), etcd_port=free_port(), etcd_peer_port=free_port(), nodes=nodes,
        extra_apiserver_args=(f"--audit-policy-file={state / 'audit-policy.yaml'}", f"--audit-log-path={audit}",
                              "--audit-log-mode=batch", "--audit-log-maxsize=0"),
        extra_controller_manager_args=(
            (f"--kube-api-qps={args.controller_qps}", f"--kube-api-burst={2 * args.controller_qps}")
            if args.controller_qps else ()
        ),
        start_timeout=300,
    )  # fmt: skip
    print(
        f"uptime before: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}",
        flush=True,
    )
    cp = controlplane.up(cfg)
    prom = series_server = operator = sampler = None
    try:
        prom = prometheus.up(
            prometheus.PrometheusConfig(
                state / "prometheus", port=free_port(), scrape_interval="5s"
            )
        )
        api = api_client(cp.kubeconfig)
        apply_crds(api, [build_crd()])
        operator_identity(api)
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
        example = yaml.safe_load((REPO / "examples" / "llama3-8b-awq.yaml").read_text())
        names = [f"m-{i:04d}" for i in range(args.models)]
        data = RouterSeries()
        for name in names:
            for tier in ("fp16", "int4-awq"):
                data.tiers[(NAMESPACE, name, tier)] = HEALTHY
        series_server = RouterSeriesServer(data)
        prom.add_targets("routers", [series_server.address], {"job": "quantrollout-router"})

        kubeconfig = cp.service_account_kubeconfig(OPERATOR_NS, OPERATOR_SA)
        operator = OperatorProcess(kubeconfig, state / "operator.log", prom.url)
        operator.start()
        assert operator.proc is not None
        sampler = Sampler(operator.proc.pid)
        threading.Thread(target=sampler.run, daemon=True).start()
        time.sleep(5)  # the operator is up and watching

        created: dict[str, float] = {}
        ready: dict[str, float] = {}
        ramp_start = time.monotonic()

        def create(name: str) -> None:
            created[name] = time.monotonic()
            custom.create_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, PLURAL, model(example, name, args.interval)
            )

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(create, names))
        all_created = time.monotonic()
        print(f"created {args.models} models in {all_created - ramp_start:.1f} s", flush=True)

        def listed() -> list[dict[str, Any]]:
            body = custom.list_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, PLURAL, _preload_content=False
            )
            return list(json.loads(cast(Any, body).data)["items"])

        deadline = ramp_start + args.ready_timeout
        last_print = 0.0
        while len(ready) < args.models:
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(
                    f"only {len(ready)}/{args.models} Ready after {args.ready_timeout} s"
                )
            for qm in listed():
                name = qm["metadata"]["name"]
                if name not in ready and is_ready(qm):
                    ready[name] = now
            if now - last_print > 30:
                print(f"  {now - ramp_start:6.0f} s: {len(ready)}/{args.models} Ready", flush=True)
                last_print = now
            time.sleep(2.0)  # a list of every model is not free for the API server either
        all_ready = time.monotonic()
        per_model = [ready[n] - created[n] for n in names]

        # Steady: every model analysed at least once in shadow, then a quiet window.
        def analysed() -> int:
            return sum(
                1
                for qm in listed()
                if ((qm.get("status") or {}).get("lastAnalysis") or {}).get("at")
            )

        settle_deadline = time.monotonic() + max(120.0, 4 * interval_s)
        while analysed() < args.models and time.monotonic() < settle_deadline:
            time.sleep(2)
        time.sleep(interval_s)  # one more round, so nothing left over from the ramp
        before = {qm["metadata"]["name"]: qm for qm in listed()}
        q0, wall0, mono0 = prometheus.served_queries(prom.url), time.time(), time.monotonic()
        time.sleep(args.steady_seconds)
        q1, wall1, mono1 = prometheus.served_queries(prom.url), time.time(), time.monotonic()
        after = {qm["metadata"]["name"]: qm for qm in listed()}
        time.sleep(3)  # the audit batch is flushed
        steady_events = audit_events(audit, wall0, wall1)
        ramp_events = audit_events(audit, 0, wall0)

        evaluations = sum(
            1 for n in names
            if ((after[n].get("status") or {}).get("lastAnalysis") or {}).get("at")
            != ((before[n].get("status") or {}).get("lastAnalysis") or {}).get("at")
        )  # fmt: skip
        verdicts = Counter(
            ((qm.get("status") or {}).get("lastAnalysis") or {}).get("verdict")
            for qm in after.values()
        )
        stages = Counter((qm.get("status") or {}).get("stage") for qm in after.values())
        rounds = (mono1 - mono0) / interval_s
        rules = len(example["spec"]["rollout"]["analysis"]["rules"]) + 1  # + the sample count
        per_round = (q1 - q0) / rounds
        ramp_cores, ramp_peak, _ = sampler.between(ramp_start, all_ready)
        steady_cores, steady_peak, steady_last = sampler.between(mono0, mono1)
        minutes = (wall1 - wall0) / 60
        by_verb = Counter(
            f"{e['verb']} {e['objectRef'].get('resource', '?')}" for e in steady_events
        )

        print()
        print(f"models: {args.models} (examples/llama3-8b-awq.yaml, 1 replica per tier, shadow 1 h, "
              f"analysis every {args.interval}); {len(nodes)} fake GPU nodes x {args.pods_per_node} GPUs; "
              f"{os.cpu_count()} cores; kube-controller-manager API rate "
              f"{args.controller_qps or 'default (20/s)'}")  # fmt: skip
        print(f"apply -> Ready (both tiers Available), per model: median {statistics.median(per_model):.1f} s, "
              f"p99 {pct(per_model, 99):.1f} s, max {max(per_model):.1f} s; first apply -> all Ready "
              f"{all_ready - ramp_start:.1f} s")  # fmt: skip
        print(f"operator during the ramp: {ramp_cores:.2f} cores on average, peak RSS {ramp_peak / MIB:.0f} MiB; "
              f"{len(ramp_events)} API requests")  # fmt: skip
        print(f"operator at steady state ({mono1 - mono0:.0f} s): {steady_cores:.2f} cores on average, "
              f"RSS {steady_last / MIB:.0f} MiB (peak {steady_peak / MIB:.0f} MiB)")  # fmt: skip
        print(f"API requests at steady state: {len(steady_events) / minutes:.1f} per minute "
              f"({len(steady_events) / minutes / args.models:.2f} per model per minute)")  # fmt: skip
        for verb, n in by_verb.most_common():
            print(f"  {verb}: {n / minutes:.1f} per minute")
        print(f"analysis at steady state: {evaluations}/{args.models} models evaluated in the window; stages {dict(stages)}; "
              f"verdicts {dict(verdicts)}")  # fmt: skip
        print(f"Prometheus queries: {q1 - q0:.0f} over {rounds:.1f} rounds = {per_round:.1f} per round, "
              f"{per_round / rules:.2f} per rule per round ({rules} distinct queries: "
              f"{rules - 1} rules + the sample count; per model it would be {args.models * rules} per round)")  # fmt: skip
        mem_ok, cpu_ok = steady_peak < 500 * MIB, steady_cores < 1.0
        print(f"goals: RSS < 500 MiB at steady state: {'met' if mem_ok else 'NOT met'}; "
              f"< 1 core at steady state: {'met' if cpu_ok else 'NOT met'}; "
              f"one query per rule per round: {'met' if per_round / rules <= 1.05 else 'NOT met'}")  # fmt: skip
        print(
            f"uptime after: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}"
        )
    except BaseException:
        print((state / "operator.log").read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        if sampler:
            sampler.stop.set()
        if operator:
            operator.stop()
        if series_server:
            series_server.stop()
        if prom:
            prom.down()
        cp.down()
        if args.keep:
            print(f"state kept in {state}")
        else:
            import shutil

            shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
