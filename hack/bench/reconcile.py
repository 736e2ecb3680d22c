#!/usr/bin/env python3
"""Reconcile figures for issue 3, on a private local control plane with the API server's audit
log on (so requests are counted by the server, not by the operator about itself):

- time from `create QuantizedModel` to both tier Deployments existing, and to the model Ready
  (both tiers Available on the fake GPU nodes), median and max of N models;
- API requests the operator makes per model per minute once everything is steady.

usage: hack/bench/reconcile.py [--models N] [--steady-seconds S]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localstack import controlplane
from localstack.crds import apply_crds
from localstack.kubeapi import api_client, get_custom
from localstack.procs import free_port
from quantrollout.api.crd import GROUP, PLURAL, VERSION, build_crd

REPO = Path(__file__).resolve().parents[2]
AUDIT_POLICY = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n"
OPERATOR_AGENTS = ("kopf/", "OpenAPI-Generator/")  # Kopf's own client and the official client


def wait(check: Any, timeout: float = 60.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(0.02)
    raise TimeoutError


def operator_requests(audit: Path, since: float, until: float) -> list[dict[str, Any]]:
    found = []
    for line in audit.read_text().splitlines():
        ev = json.loads(line)
        if ev.get("stage") != "ResponseComplete" or not ev.get("userAgent", "").startswith(
            OPERATOR_AGENTS
        ):
            continue
        ts = (
            time.mktime(time.strptime(ev["requestReceivedTimestamp"][:19], "%Y-%m-%dT%H:%M:%S"))
            - time.timezone
        )
        if since <= ts < until:
            found.append(ev)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--steady-seconds", type=int, default=60)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="qr-bench-") as tmp:
        state = Path(tmp)
        (state / "audit-policy.yaml").write_text(AUDIT_POLICY)
        audit = state / "audit.log"
        cfg = controlplane.ControlPlaneConfig(
            state / "cp", api_port=free_port(), etcd_port=free_port(), etcd_peer_port=free_port(),
            extra_apiserver_args=(f"--audit-policy-file={state / 'audit-policy.yaml'}", f"--audit-log-path={audit}",
                                  "--audit-log-mode=blocking"),
        )  # fmt: skip
        cp = controlplane.up(cfg)
        operator = None
        try:
            api = api_client(cp.kubeconfig)
            apply_crds(api, [build_crd()])
            operator = subprocess.Popen(
                [str(Path(sys.executable).parent / "quantrollout"), "run", "-A", "--standalone"],
                stdout=(state / "operator.log").open("wb"), stderr=subprocess.STDOUT,
                env={**os.environ, "KUBECONFIG": str(cp.kubeconfig)},
            )  # fmt: skip
            time.sleep(3)
            core, apps, custom = (
                client.CoreV1Api(api),
                client.AppsV1Api(api),
                client.CustomObjectsApi(api),
            )
            example = yaml.safe_load((REPO / "examples" / "llama3-8b-awq.yaml").read_text())
            # One replica per tier, so 10 models (20 GPUs) fit the 4 x 8 fake GPUs; a rollout with
            # nothing left to do (only `full`), so what is measured at steady state is the reconcile.
            example["spec"]["serving"]["replicas"] = 1
            example["spec"]["rollout"]["stages"] = [{"name": "full"}]
            # Preflight off: this measures the reconcile, not preflight (hack/bench/preflight.py).
            example["spec"]["rollout"]["preflight"] = {"enabled": False}
            created, ready = [], []
            for i in range(args.models):
                ns = f"bench-{i}"
                core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
                t0 = time.monotonic()
                custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, example)

                def both_created(ns: str = ns) -> bool:
                    return len(apps.list_namespaced_deployment(ns).items) == 2

                def is_ready(ns: str = ns) -> bool:
                    try:
                        qm = get_custom(custom, GROUP, VERSION, ns, PLURAL, "llama3-8b")
                    except ApiException:
                        return False
                    conds = qm.get("status", {}).get("conditions") or []
                    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

                created.append(wait(both_created) - t0)
                ready.append(wait(is_ready) - t0)
            time.sleep(5)  # the last status updates settle
            start = time.time()
            time.sleep(args.steady_seconds)
            end = time.time()
            steady = operator_requests(audit, start, end)
            setup = operator_requests(audit, 0, start)
            per_model_minute = len(steady) / args.models / (args.steady_seconds / 60)
            writes = [e for e in steady if e["verb"] in ("create", "update", "patch", "delete")]
            print(
                f"models: {args.models} (examples/llama3-8b-awq.yaml, 1 replica per tier), "
                f"{len(cfg.nodes)} fake GPU nodes, {os.cpu_count()} cores"
            )
            print(
                f"apply -> both Deployments created: median {statistics.median(created) * 1000:.0f} ms, "
                f"max {max(created) * 1000:.0f} ms"
            )
            print(
                f"apply -> model Ready (both tiers Available): median {statistics.median(ready) * 1000:.0f} ms, "
                f"max {max(ready) * 1000:.0f} ms"
            )
            print(
                f"from start to all Ready: {len(setup)} operator API requests "
                f"({len(setup) / args.models:.0f} per model; counted by the same filter)"
            )
            print(
                f"steady state over {args.steady_seconds}s: {len(steady)} operator API requests "
                f"({per_model_minute:.2f} per model per minute), {len(writes)} writes (goal: 0)"
            )
        except BaseException:
            print((state / "operator.log").read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            if operator:
                operator.terminate()
                operator.wait(timeout=15)
            cp.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
