"""The chart's Prometheus Operator objects against the real thing: the ServiceMonitor, PodMonitor
and PrometheusRule `helm template` renders pass a server-side dry run against prometheus-operator
v0.85.0's own CRDs (from its Go module) on the local API server; and the PodMonitor's
relabelling, prefixed the way prometheus-operator v0.85.0 generates a PodMonitor's scrape config
(pkg/prometheus/promcfg.go, generatePodMonitorConfig), run by the real Prometheus with
Kubernetes service discovery on the tier pods the operator created, gives vLLM's series the
`namespace`, `model` and `tier` labels the rules select on. (Debian's Prometheus is built without
Kubernetes discovery: `hack/promsd` runs Prometheus v2.42's own Kubernetes discovery code against
the local API server and hands the targets, with every `__meta_kubernetes_*` label, to that
Prometheus through file_sd; the relabelling is Prometheus' own.)"""

from __future__ import annotations

import copy
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client
from kubernetes.client import ApiClient

from localstack.controlplane import REPO, tool_path
from localstack.procs import Supervisor, free_port
from localstack.stack import Stack
from quantrollout.signals import VLLM_RUNNING
from vllmsim.server import Simulator

from .kubectl import kubectl
from .support import Models, example, wait_for

CHART = REPO / "charts" / "quantrollout"
KINDS = ("servicemonitors", "podmonitors", "prometheusrules")


@pytest.fixture(scope="module")
def monitoring_crds(stack: Stack) -> None:
    """prometheus-operator's CRDs for the three kinds the chart renders, Established."""
    crds = Path(tool_path("promop-crds", "PROMOP_CRDS"))
    for kind in KINDS:
        kubectl(
            stack, "apply", "--server-side", "-f", str(crds / f"monitoring.coreos.com_{kind}.yaml")
        )
    kubectl(stack, "wait", "--for=condition=Established", "--timeout=60s",
            *[f"crd/{kind}.monitoring.coreos.com" for kind in KINDS])  # fmt: skip


def monitoring_objects(namespace: str) -> list[dict[str, Any]]:
    """The chart's monitoring.coreos.com objects, as `helm template` renders them."""
    out = subprocess.run(
        [tool_path("helm", "HELM"), "template", "qr", str(CHART), "--namespace", namespace,
         "--kube-version", "1.33.13", "--set", "serviceMonitor.enabled=true,prometheusRule.enabled=true"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    docs = [d for d in yaml.safe_load_all(out) if d]
    return [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")]


def dry_run(stack: Stack, docs: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    return kubectl(
        stack, "apply", "--dry-run=server", "-f", "-", check=False,
        stdin=yaml.safe_dump_all(docs),
    )  # fmt: skip


def test_the_charts_monitoring_objects_pass_the_real_crds(
    stack: Stack, monitoring_crds: None, namespace: str
) -> None:
    docs = monitoring_objects(namespace)
    assert sorted(d["kind"] for d in docs) == ["PodMonitor", "PrometheusRule", "ServiceMonitor"]
    proc = dry_run(stack, docs)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("(server dry run)") == 3
    # The dry run does check: a relabelling action prometheus-operator does not know is refused.
    bad = copy.deepcopy(docs)
    pm = next(d for d in bad if d["kind"] == "PodMonitor")
    pm["spec"]["podMetricsEndpoints"][0]["relabelings"][0]["action"] = "rename"
    refused = dry_run(stack, bad)
    assert refused.returncode != 0
    assert "relabelings[0].action" in refused.stderr


def _label(name: str) -> str:
    """prometheus-operator's sanitizeLabelName: a Kubernetes label as a Prometheus label name."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def scrape_config(pm: dict[str, Any], sd_file: Path) -> dict[str, Any]:
    """The scrape config prometheus-operator v0.85.0 generates for the PodMonitor's first
    endpoint (promcfg.go, generatePodMonitorConfig: its own relabelings, then the endpoint's),
    its targets from `sd_file` (what Kubernetes discovery found, see hack/promsd)."""
    ep = pm["spec"]["podMetricsEndpoints"][0]
    relabel: list[dict[str, Any]] = [
        {"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"},
        {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"},
    ]  # fmt: skip
    selector = pm["spec"]["selector"]
    for key, value in sorted((selector.get("matchLabels") or {}).items()):
        relabel.append({"action": "keep", "regex": f"({value});true", "source_labels": [
            f"__meta_kubernetes_pod_label_{_label(key)}", f"__meta_kubernetes_pod_labelpresent_{_label(key)}"]})  # fmt: skip
    for exp in selector.get("matchExpressions") or []:
        assert exp["operator"] == "Exists", exp  # the only kind the chart uses
        relabel.append({"action": "keep", "regex": "true",
                        "source_labels": [f"__meta_kubernetes_pod_labelpresent_{_label(exp['key'])}"]})  # fmt: skip
    relabel += [
        {"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": ep["port"]},
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"target_label": "job", "replacement": f"{pm['metadata']['namespace']}/{pm['metadata']['name']}"},
        {"target_label": "endpoint", "replacement": ep["port"]},
    ]  # fmt: skip
    for r in ep.get("relabelings") or []:  # the chart's own, camelCase to Prometheus' names
        relabel.append({re.sub(r"([A-Z])", r"_\1", k).lower(): v for k, v in r.items()})
    return {
        "job_name": f"podMonitor/{pm['metadata']['namespace']}/{pm['metadata']['name']}/0",
        "honor_labels": False,
        "metrics_path": ep.get("path", "/metrics"),
        "scrape_interval": "1s",
        "file_sd_configs": [{"files": [str(sd_file)]}],
        "relabel_configs": relabel,
    }


def test_the_podmonitor_labels_vllm_series_with_namespace_model_tier(
    stack: Stack, kube: ApiClient, crd: str, namespace: str, operator: Any, tmp_path: Path
) -> None:
    (pm,) = [d for d in monitoring_objects("monitoring") if d["kind"] == "PodMonitor"]
    Models(kube, namespace).create(example())
    core, apps = client.CoreV1Api(kube), client.AppsV1Api(kube)

    def running_pods() -> list[tuple[str, str]] | None:
        wanted = sum(d.spec.replicas for d in apps.list_namespaced_deployment(namespace).items)
        running = [
            (p.metadata.labels.get("quantrollout.io/tier", ""), p.metadata.name)
            for p in core.list_namespaced_pod(namespace).items
            if p.status.phase == "Running" and p.metadata.deletion_timestamp is None
        ]
        done = len(running) == wanted and {t for t, _ in running} == {"fp16", "int4-awq"}
        return running if done else None

    pods = wait_for("the tiers' pods running", running_pods, timeout=60)
    sims = {
        tier: Simulator(model=example()["spec"]["model"], port=0) for tier in ("fp16", "int4-awq")
    }
    for sim in sims.values():
        sim.start()
    discovered = subprocess.run(
        [tool_path("promsd", "PROMSD"), str(stack.controlplane.kubeconfig), namespace, str(len(pods))],
        capture_output=True, text=True, check=False, timeout=90,
    )  # fmt: skip
    assert discovered.returncode == 0, discovered.stderr
    sd_file = tmp_path / "pods.json"
    sd_file.write_text(discovered.stdout)
    job = scrape_config(pm, sd_file)
    jobs = []
    for tier, sim in sims.items():
        # Test-only, after everything prometheus-operator and the chart put there: one job per
        # tier scrapes that tier's simulator on loopback instead of the fake pod's address (KWOK
        # pods listen nowhere). Only __address__ changes, so the labels are exactly the
        # generated relabelling's.
        one = copy.deepcopy(job)
        one["job_name"] += f"-{tier}"
        one["relabel_configs"] += [
            {"action": "keep", "source_labels": ["tier"], "regex": tier},
            {"target_label": "__address__", "replacement": f"127.0.0.1:{sim.port}"},
        ]
        jobs.append(one)
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({"scrape_configs": jobs}))
    sup = Supervisor(tmp_path)
    sup.start("prometheus", [
        "prometheus", f"--config.file={tmp_path / 'prometheus.yml'}", "--log.level=warn",
        f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
    ])  # fmt: skip
    try:

        def labelled() -> list[dict[str, str]] | None:
            try:
                r = httpx.get(
                    f"http://127.0.0.1:{port}/api/v1/query",
                    params={"query": VLLM_RUNNING},
                    timeout=2,
                )
                found = [s["metric"] for s in r.json()["data"]["result"]]
            except (httpx.HTTPError, ValueError, KeyError):
                return None
            return found if len(found) == len(pods) else None

        deadline = time.monotonic() + 60
        while (series := labelled()) is None and time.monotonic() < deadline:
            time.sleep(0.5)
        if series is None:  # say what Prometheus discovered and why it did not scrape
            targets = httpx.get(f"http://127.0.0.1:{port}/api/v1/targets", timeout=5).json()
            pytest.fail(f"no labelled series per tier pod; Prometheus' targets: {targets}")
        assert sorted((s["namespace"], s["model"], s["tier"], s["pod"]) for s in series) == sorted(
            (namespace, "llama3-8b", tier, pod) for tier, pod in pods
        )
        assert {s["job"] for s in series} == {"monitoring/qr-vllm-tiers"}
    finally:
        sup.stop("prometheus")
        for sim in sims.values():
            sim.stop()
