#!/usr/bin/env python3
"""Detection-to-rollback time, on a private local stack (control plane, Prometheus, operator).

Each trial: a model sits in A/B (10% live) judged by one custom rule over a gauge this script
serves on loopback; the script flips the gauge to a breach, notes when Prometheus first answers
the rule's query with the breach (the first moment an evaluation *can* see it), and then when the
router configuration (`status.traffic`) and the model's HTTPRoute both say 0% on the target. The
goal is under 1 s beyond interval x failureLimit. Also printed: Prometheus queries per evaluation,
from Prometheus's own request counter.

usage: hack/bench/rollback.py [--trials N] [--interval 1s] [--failure-limit 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import yaml
from kubernetes import client

from localstack import stack as localstack
from localstack.crds import apply_crds, gateway_api_crds
from localstack.kubeapi import api_client, get_custom
from localstack.lab import OperatorProcess
from localstack.procs import free_port
from localstack.prometheus import served_queries
from quantrollout.api.crd import GROUP, PLURAL, VERSION, build_crd
from quantrollout.api.durations import parse_duration

REPO = Path(__file__).resolve().parents[2]
BREACH: dict[str, float] = {}


class Gauge(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = "".join(f'qr_bench_breach{{trial="{t}"}} {v}\n' for t, v in BREACH.items()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


def query(prom_url: str, expr: str) -> float | None:
    data = httpx.get(f"{prom_url}/api/v1/query", params={"query": expr}, timeout=2).json()
    result = data["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def queries_per_evaluation(
    prom: str,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    example: dict[str, Any],
    interval: str,
) -> float:
    """Prometheus's own count of query requests over a quiet window, divided by the evaluations."""
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="quiet")))
    obj = yaml.safe_load(yaml.safe_dump(example))
    obj["spec"]["serving"]["replicas"] = 1
    obj["spec"]["rollout"]["stages"] = [
        {"name": "ab", "weight": 10, "duration": "1h"},
        {"name": "full"},
    ]
    obj["spec"]["rollout"]["analysis"]["interval"] = interval
    custom.create_namespaced_custom_object(GROUP, VERSION, "quiet", PLURAL, obj)
    time.sleep(5)  # started and evaluating
    window = 20.0
    before = served_queries(prom)
    time.sleep(window)
    after = served_queries(prom)
    return (after - before) / (window / parse_duration(interval))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--interval", default="1s")
    parser.add_argument("--failure-limit", type=int, default=2)
    args = parser.parse_args()
    budget = parse_duration(args.interval) * args.failure_limit

    server = ThreadingHTTPServer(("127.0.0.1", 0), Gauge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory(prefix="qr-rollback-") as tmp:
        stack = localstack.up(Path(tmp), api_port=free_port(), etcd_port=free_port(), etcd_peer_port=free_port(),
                              prometheus_port=free_port())  # fmt: skip
        operator = OperatorProcess(
            stack.controlplane.kubeconfig, Path(tmp) / "operator.log", stack.prometheus.url
        )
        try:
            api = api_client(stack.controlplane.kubeconfig)
            apply_crds(api, [build_crd(), *gateway_api_crds("httproutes")])
            stack.prometheus.add_targets(
                "bench", [f"127.0.0.1:{server.server_address[1]}"], {"job": "bench"}
            )
            operator.start()
            core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
            example = yaml.safe_load((REPO / "examples" / "llama3-8b-awq.yaml").read_text())
            # Preflight off: this measures rollbacks, not preflight (hack/bench/preflight.py).
            example["spec"]["rollout"]["preflight"] = {"enabled": False}
            delays: list[float] = []
            beyond: list[float] = []
            reasons: list[str] = []
            for trial in range(args.trials):
                ns = f"trial-{trial}"
                BREACH[str(trial)] = 0
                core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
                custom.create_namespaced_custom_object("gateway.networking.k8s.io", "v1", ns, "httproutes", {
                    "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "llm"},
                    "spec": {"parentRefs": [{"name": "gw"}]},
                })  # fmt: skip
                obj = yaml.safe_load(yaml.safe_dump(example))
                obj["spec"]["serving"]["replicas"] = 1
                obj["spec"]["traffic"] = {"router": "gateway-api", "httpRoute": {"name": "llm"}}
                expr = f'max(qr_bench_breach{{trial="{trial}"}})'
                obj["spec"]["rollout"] = {
                    "stages": [{"name": "ab", "weight": 10, "duration": "1h"}, {"name": "full"}],
                    "analysis": {"interval": args.interval, "failureLimit": args.failure_limit, "minSamples": 0,
                                 "rules": [{"name": "custom", "query": expr, "max": "0"}]},
                    "preflight": {"enabled": False},
                }  # fmt: skip
                custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, obj)

                def get(ns: str = ns) -> dict[str, Any]:
                    return get_custom(custom, GROUP, VERSION, ns, PLURAL, "llama3-8b")

                def route_weight(ns: str = ns) -> int:
                    r = get_custom(
                        custom, "gateway.networking.k8s.io", "v1", ns, "httproutes", "llm"
                    )
                    refs = ((r.get("spec", {}).get("rules") or [{}])[0]).get("backendRefs") or []
                    return int(refs[1]["weight"]) if len(refs) > 1 else -1

                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    st = get().get("status", {})
                    if (st.get("lastAnalysis") or {}).get(
                        "verdict"
                    ) == "Pass" and route_weight() == 10:
                        break
                    time.sleep(0.05)
                else:
                    raise TimeoutError(f"trial {trial}: never reached a passing A/B")

                BREACH[str(trial)] = 1
                while query(stack.prometheus.url, expr) != 1:
                    time.sleep(0.01)
                visible = time.monotonic()
                traffic_zero = route_zero = None
                while traffic_zero is None or route_zero is None:
                    now = time.monotonic()
                    if (
                        traffic_zero is None
                        and (get().get("status", {}).get("traffic") or {}).get("targetWeight") == 0
                    ):
                        traffic_zero = now
                    if route_zero is None and route_weight() == 0:
                        route_zero = now
                    if now - visible > 60:
                        raise TimeoutError(f"trial {trial}: no rollback")
                    time.sleep(0.01)
                done = max(traffic_zero, route_zero)
                delays.append(done - visible)
                beyond.append(done - visible - budget)
                reasons.append(get()["status"]["rollback"]["reasons"][0])
                core.delete_namespace(ns)
            per_eval = queries_per_evaluation(
                stack.prometheus.url, custom, core, example, args.interval
            )
            print(
                f"trials: {args.trials}; interval {args.interval}, failureLimit {args.failure_limit} "
                f"(budget {budget:.1f} s); 2 cores"
            )
            print(
                f"visible breach -> router config and HTTPRoute at 0%: median {statistics.median(delays):.2f} s, "
                f"max {max(delays):.2f} s"
            )
            print(
                f"beyond interval x failureLimit: median {statistics.median(beyond):+.2f} s, max {max(beyond):+.2f} s "
                f"(goal < 1 s)"
            )
            print(f"rollback reason (trial 0): {reasons[0]}")
            print(
                f"Prometheus queries per evaluation (examples/llama3-8b-awq.yaml in A/B: 5 rules + the "
                f"sample count): {per_eval:.2f}"
            )
        finally:
            operator.stop()
            stack.down()
            server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
