#!/usr/bin/env python3
"""Leader handover time of two operator replicas (`quantrollout run --leader-elect`), on a private
local stack.

A model sits in A/B, evaluated every second (a custom rule that always passes), so the leader
writes its status every second. Each trial stops the current leader, alternately with SIGKILL
(a crash: the Lease must expire) and SIGTERM (a rollout or a drain: the leader releases it), and
measures from the signal to (1) the Lease naming the other replica and (2) the first status write
of the new leader (the rollout ticking again). The stopped replica is restarted as the follower.
Timing defaults are the chart's (lease 15 s, renew deadline 10 s, retry 2 s): a crash costs up to
lease + retry, plus Kopf's start; a clean stop about one retry period.

usage: hack/bench/handover.py [--trials N] [--lease-duration S] [--renew-deadline S] [--retry-period S]
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localstack import stack as localstack
from localstack.crds import apply_crds
from localstack.kubeapi import api_client, get_custom
from localstack.lab import OperatorProcess
from localstack.procs import free_port
from quantrollout.api.crd import GROUP, PLURAL, VERSION, build_crd

REPO = Path(__file__).resolve().parents[2]
NS, LEASE = "bench", "quantrollout-operator"


def holder(coordination: client.CoordinationV1Api) -> str:
    try:
        response: Any = coordination.read_namespaced_lease(LEASE, NS, _preload_content=False)
    except ApiException as err:
        if err.status == 404:
            return ""
        raise
    return str(json.loads(response.data)["spec"].get("holderIdentity") or "")


def until(what: str, check: Any, timeout: float = 120) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(0.02)
    raise TimeoutError(what)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--lease-duration", default="15")
    parser.add_argument("--renew-deadline", default="10")
    parser.add_argument("--retry-period", default="2")
    args = parser.parse_args()
    timing = ("--lease-duration", args.lease_duration, "--renew-deadline", args.renew_deadline,
              "--retry-period", args.retry_period)  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="qr-handover-") as tmp:
        stack = localstack.up(Path(tmp), api_port=free_port(), etcd_port=free_port(), etcd_peer_port=free_port(),
                              prometheus_port=free_port())  # fmt: skip
        replicas = {
            name: OperatorProcess(
                stack.controlplane.kubeconfig,
                Path(tmp) / f"{name}.log",
                stack.prometheus.url,
                (
                    "--leader-elect",
                    "--leader-elect-namespace",
                    NS,
                    "--leader-elect-identity",
                    name,
                    *timing,
                ),
            )
            for name in ("a", "b")
        }
        try:
            api = api_client(stack.controlplane.kubeconfig)
            apply_crds(api, [build_crd()])
            core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
            coordination = client.CoordinationV1Api(api)
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))
            obj = yaml.safe_load((REPO / "examples" / "llama3-8b-awq.yaml").read_text())
            obj["spec"]["serving"]["replicas"] = 1
            obj["spec"]["rollout"] = {
                "stages": [{"name": "ab", "weight": 10, "duration": "24h"}, {"name": "full"}],
                "analysis": {"interval": "1s", "minSamples": 0,
                             "rules": [{"name": "custom", "query": "vector(0)", "max": "1"}]},
                # Off: this measures the leader handover, not preflight (bench/preflight.py).
                "preflight": {"enabled": False},
            }  # fmt: skip
            custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, obj)
            for replica in replicas.values():
                replica.start()

            def version() -> str:
                got = get_custom(custom, GROUP, VERSION, NS, PLURAL, "llama3-8b")
                return str(got["metadata"]["resourceVersion"])

            def analysed() -> bool:
                got = get_custom(custom, GROUP, VERSION, NS, PLURAL, "llama3-8b")
                return bool(((got.get("status") or {}).get("lastAnalysis") or {}).get("verdict"))

            until("a first analysis", analysed)
            figures: dict[str, list[tuple[float, float]]] = {"SIGKILL": [], "SIGTERM": []}
            for trial in range(args.trials):
                sig = signal.SIGKILL if trial % 2 == 0 else signal.SIGTERM
                until("a leader", lambda: holder(coordination))
                leader = holder(coordination)
                other = "b" if leader == "a" else "a"
                proc = replicas[leader].proc
                assert proc is not None
                stopped = time.monotonic()
                proc.send_signal(sig)
                leased = until("the handover", lambda other=other: holder(coordination) == other)
                seen = version()
                acting = until("the new leader's first write", lambda seen=seen: version() != seen)
                proc.wait(timeout=60)
                figures[sig.name].append((leased - stopped, acting - stopped))
                print(f"trial {trial}: {sig.name}: Lease to the other replica {leased - stopped:.2f} s, "
                      f"first status write {acting - stopped:.2f} s")  # fmt: skip
                log = replicas[leader].log
                waits = log.read_text().count("waiting to lead")
                replicas[leader].start()  # back as the follower, once it is really waiting
                until(
                    "the follower",
                    lambda log=log, waits=waits: log.read_text().count("waiting to lead") > waits,
                )
        finally:
            for replica in replicas.values():
                replica.stop()
            stack.down()

    print(
        f"\nlease {args.lease_duration} s, renew deadline {args.renew_deadline} s, retry {args.retry_period} s; 2 cores"
    )
    for name, rows in figures.items():
        if rows:
            handed, ticking = [r[0] for r in rows], [r[1] for r in rows]
            print(f"{name}: Lease handed over median {statistics.median(handed):.2f} s (max {max(handed):.2f}); "
                  f"rollout ticking again median {statistics.median(ticking):.2f} s (max {max(ticking):.2f}), "
                  f"{len(rows)} trials")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
