#!/usr/bin/env python3
"""What preflight costs a rollout, on a private local stack with simulated tiers.

Each trial creates a model whose tiers are two vLLM simulators (the target faster than the
baseline) and whose artifacts are real small checkpoints in a real S3 server (versitygw); the
default preflight runs: the artifact check, the warm-up and the benchmark (8 in flight, 64
measured requests, 8 warm-up requests per tier, 256-word prompts, 128-token answers) judged by
the default gate. Measured from a watch on the model:

- from both tiers Ready (`status.tiers[].ready`) to shadow (`status.stage`): what preflight adds
  before the first mirrored request;
- of that, the Job's own run (its two commands, as `localstack.jobs` ran them);
- the benchmark's overhead on the tiers: the requests each simulator answered during preflight
  (its `vllm:request_success_total`), beside the first 30 minutes of shadow the default stages
  run next, at the rate given (--rate, requests/s: every one mirrored to the target).

Final line, exactly: `preflight: <seconds> s from tiers Ready to shadow` (the median).

usage: hack/bench/preflight.py [--trials 3] [--rate 10]
The simulators' latencies: baseline 40 ms to the first token then 8 ms between streamed chunks;
target 25 ms then 5 ms (the simulator streams a few tokens per chunk, as vLLM's detokenizer can).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from kubernetes import client, watch

from artifacts import checkpoints
from artifacts.s3 import S3Server
from localstack import stack as localstack
from localstack.crds import apply_crds
from localstack.kubeapi import api_client
from localstack.lab import Lab, OperatorProcess
from localstack.procs import free_port
from quantrollout.api.crd import GROUP, PLURAL, VERSION, build_crd

REPO = Path(__file__).resolve().parents[2]
NAME = "llama3-8b"
SHADOW_S = 30 * 60  # the default shadow stage


def served(url: str) -> int:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("vllm:request_success_total{")))  # fmt: skip


def model(s3_prefix: str) -> dict[str, Any]:
    obj = yaml.safe_load((REPO / "examples" / "llama3-8b-awq.yaml").read_text())
    spec = obj["spec"]
    spec["baseline"]["artifact"] = f"s3://models/{s3_prefix}/base"
    spec["target"]["artifact"] = f"s3://models/{s3_prefix}/awq"
    spec["serving"]["replicas"] = 1
    spec["serving"]["envFrom"] = [{"secretRef": {"name": "store"}}]
    spec["serving"].pop("env", None)
    shape = checkpoints.Shape()
    spec["modelShape"] = {"parametersB": shape.parameters / 1e9, "layers": shape.layers,
                          "kvHeads": 4, "headDim": 64}  # fmt: skip
    # The default preflight, as the example has it (none given): nothing set here.
    return dict(obj)


def trial(
    api: client.ApiClient, lab: Lab, s3: S3Server, ns: str
) -> tuple[float, float, dict[str, int]]:
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    core.create_namespaced_secret(
        ns, client.V1Secret(metadata=client.V1ObjectMeta(name="store"), string_data=s3.env())
    )
    obj = model("llama")
    sims = lab.add_tiers(ns, NAME, obj["spec"]["model"], ["fp16", "int4-awq"], scraped=False)
    sims["fp16"].configure(latency_ms=40, token_delay_ms=8)
    sims["int4-awq"].configure(latency_ms=25, token_delay_ms=5)
    before = {tier: served(sim.url) for tier, sim in sims.items()}
    times: dict[str, float] = {}
    w = watch.Watch()  # type: ignore[no-untyped-call]

    def follow() -> None:
        for ev in w.stream(custom.list_namespaced_custom_object, GROUP, VERSION, ns, PLURAL,  # type: ignore[no-untyped-call]
                           timeout_seconds=600):  # fmt: skip
            st = ev["object"].get("status") or {}
            tiers = st.get("tiers") or []
            if "ready" not in times and len(tiers) == 2 and all(t.get("ready") for t in tiers):
                times["ready"] = time.monotonic()
            if st.get("stage") == "shadow" and "shadow" not in times:
                times["shadow"] = time.monotonic()
                times["phase"] = (
                    1.0 if (st.get("preflight") or {}).get("phase") == "Passed" else 0.0
                )
                w.stop()  # type: ignore[no-untyped-call]
            if st.get("phase") == "RolledBack":
                times["failed"] = time.monotonic()
                print(f"  preflight failed: {(st.get('preflight') or {}).get('reasons')}")
                w.stop()  # type: ignore[no-untyped-call]

    t = threading.Thread(target=follow, daemon=True)
    t.start()
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, obj)
    t.join(timeout=600)
    if "shadow" not in times or "ready" not in times:
        raise RuntimeError(f"{ns}: never reached shadow after preflight: {times}")
    sent = {tier: served(sim.url) - before[tier] for tier, sim in sims.items()}
    job_s = sum(
        r["seconds"] for r in (lab.preflight.runs if lab.preflight else []) if r["namespace"] == ns
    )
    return times["shadow"] - times["ready"], job_s, sent


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--rate", type=float, default=10.0, help="user requests/s in shadow")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qr-preflight-") as tmp:
        root = Path(tmp)
        checkpoints.write(root / "models" / "base")
        checkpoints.write(root / "models" / "awq", fmt="awq")
        stack = localstack.up(root / "stack", api_port=free_port(), etcd_port=free_port(),
                              etcd_peer_port=free_port(), prometheus_port=free_port())  # fmt: skip
        operator = OperatorProcess(
            stack.controlplane.kubeconfig, root / "operator.log", stack.prometheus.url
        )
        lab = Lab(stack, root)
        try:
            with S3Server(root / "s3") as s3:
                s3.create_bucket("models")
                for name in ("base", "awq"):
                    s3.upload_dir("models", f"llama/{name}", root / "models" / name)
                api = api_client(stack.controlplane.kubeconfig)
                apply_crds(api, [build_crd()])
                operator.start()
                lab.start_preflight()
                results = [trial(api, lab, s3, f"trial-{i}") for i in range(args.trials)]
        finally:
            lab.stop()
            operator.stop()
            stack.down()
    spans = [r[0] for r in results]
    jobs = [r[1] for r in results]
    sent = results[-1][2]
    shadow = int(args.rate * SHADOW_S)
    print(f"trials: {args.trials}; tiers Ready -> shadow: "
          + ", ".join(f"{s:.1f}" for s in spans) + " s")  # fmt: skip
    print(f"  of which the Job's commands ran (artifact check + warm-up + benchmark): "
          f"median {statistics.median(jobs):.1f} s")  # fmt: skip
    print(f"  requests the benchmark sent: baseline {sent['fp16']}, target {sent['int4-awq']} "
          f"(warm-up included)")  # fmt: skip
    print(f"  beside the default 30m shadow stage at {args.rate:g} requests/s: {shadow} requests "
          f"mirrored to the target, {shadow} answered by the baseline; preflight adds "
          f"{100 * sent['fp16'] / shadow:.2f}% to the baseline's load of that stage")  # fmt: skip
    print(f"preflight: {statistics.median(spans):.1f} s from tiers Ready to shadow")
    return 0


if __name__ == "__main__":
    sys.exit(main())
