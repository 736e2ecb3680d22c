"""Preflight end to end on the local stack, on by default: the operator (a real process, with
exactly the chart's RBAC: its own ServiceAccount under another release name, so the least-
privilege audit of test_security.py is not mixed with this one's) creates the preflight Job; the Job controller, the scheduler and KWOK give it a Running pod whose
commands (`quantrollout preflight artifact`, then `benchmark`) really run on the host
(`localstack.jobs`) against a real S3 server (versitygw, credentials from the tier's Secret) and
two vLLM simulators; the termination messages go into the pod's status and the operator reads
them there.

- a checkpoint that is what the spec says, and a target faster than the baseline: preflight
  passes, its figures are in status, and only then does shadow start;
- a checkpoint with the wrong bits: no traffic at any time, the reason (file, field, spec field)
  in status and in a Warning Event, the target scaled to 0, the baseline untouched; `retry`
  runs preflight again (a second Job), which fails again for the same reason.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml
from kubernetes import client, watch
from kubernetes.client import ApiClient

from artifacts import checkpoints
from artifacts.s3 import S3Server
from localstack.controlplane import tool_path
from localstack.lab import Lab, OperatorProcess, fast_rollout
from localstack.stack import Stack
from quantrollout.api.crd import GROUP, PLURAL, VERSION

from .support import Models, example, wait_for
from .test_chart import CHART, CHART_NS, _install, leader_election_args

NAME = "llama3-8b"
SHAPE = checkpoints.Shape()
BENCHMARK = {"concurrency": 2, "requests": 12, "warmupRequests": 2, "promptTokens": 16,
             "maxTokens": 8}  # fmt: skip


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    models = tmp_path_factory.mktemp("models")
    checkpoints.write(models / "base")
    checkpoints.write(models / "awq", fmt="awq")
    checkpoints.write(models / "awq8", fmt="awq", bits=8,
                      quantization={**checkpoints.QUANTIZATION_CONFIGS["awq"], "bits": 8})  # fmt: skip
    with S3Server(tmp_path_factory.mktemp("s3")) as server:
        server.create_bucket("models")
        for name in ("base", "awq", "awq8"):
            server.upload_dir("models", f"llama/{name}", models / name)
        yield server


RELEASE = "qr-preflight"


@pytest.fixture(scope="module")
def chart_operator(
    stack: Stack, kube: ApiClient, crd: str, operator: OperatorProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:  # fmt: skip
    """The operator as the chart's ServiceAccount: Jobs and pods only as its RBAC allows."""
    tmp = tmp_path_factory.mktemp("preflight-chart")
    out = subprocess.run(
        [tool_path("helm", "HELM"), "template", RELEASE, str(CHART), "--namespace", CHART_NS,
         "--kube-version", "1.33.13"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    _install(kube, docs, tmp)
    as_operator = stack.controlplane.service_account_kubeconfig(CHART_NS, f"{RELEASE}-operator")
    operator.stop()  # the admin operator of the session steps aside
    proc = OperatorProcess(as_operator, tmp / "operator.log", stack.prometheus.url,
                           leader_election_args(docs))  # fmt: skip
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        operator.start()


@pytest.fixture
def lab(stack: Stack, namespace: str, tmp_path: Path, s3: S3Server, kube: ApiClient) -> Iterator[Lab]:  # fmt: skip
    client.CoreV1Api(kube).create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name="store"), string_data=s3.env()),
    )
    lab = Lab(stack, tmp_path)
    sims = lab.add_tiers(namespace, NAME, example()["spec"]["model"], ["fp16", "int4-awq"],
                         scraped=False)  # fmt: skip
    # A quantized tier that is faster than its baseline, as the default gate asks.
    sims["fp16"].configure(latency_ms=40, token_delay_ms=8)
    sims["int4-awq"].configure(latency_ms=15, token_delay_ms=3)
    lab.start_preflight()
    try:
        yield lab
    finally:
        lab.stop()


def model(target: str) -> dict[str, Any]:
    obj = fast_rollout(example(preflight=True), stage_seconds=600)
    spec = obj["spec"]
    spec["baseline"]["artifact"] = "s3://models/llama/base"
    spec["target"]["artifact"] = f"s3://models/llama/{target}"
    spec["serving"]["envFrom"] = [{"secretRef": {"name": "store"}}]
    spec["serving"].pop("env", None)
    spec["modelShape"] = {"parametersB": SHAPE.parameters / 1e9, "layers": SHAPE.layers,
                          "kvHeads": 4, "headDim": 64}  # fmt: skip
    spec["rollout"]["preflight"] = {"benchmark": BENCHMARK, "timeout": "2m"}
    return obj


class Watcher:
    """Every version of the model's status, from a watch (nothing between two polls is missed)."""

    def __init__(self, kube: ApiClient, namespace: str) -> None:
        self.seen: list[dict[str, Any]] = []
        self._w = watch.Watch()
        api = client.CustomObjectsApi(kube)

        def run() -> None:
            stream = self._w.stream(api.list_namespaced_custom_object, GROUP, VERSION,
                                    namespace, PLURAL, timeout_seconds=300)  # fmt: skip
            with contextlib.suppress(urllib3.exceptions.HTTPError):  # stopped mid-read
                for ev in stream:
                    # A cut stream yields None; an ERROR event carries a Status, not the model.
                    if not isinstance(ev, dict) or ev.get("type") == "ERROR":
                        continue
                    obj = ev.get("object")
                    if isinstance(obj, dict):
                        self.seen.append(dict(obj.get("status") or {}))

        self._t = threading.Thread(target=run, daemon=True)
        self._t.start()

    def stop(self) -> None:
        self._w.stop()


def events(kube: ApiClient, namespace: str) -> list[tuple[str, str, str]]:
    items = client.CoreV1Api(kube).list_namespaced_event(namespace).items
    return [
        (e.type, e.reason, e.message) for e in items if e.involved_object.kind == "QuantizedModel"
    ]


def jobs(kube: ApiClient, namespace: str) -> list[client.V1Job]:
    return list(client.BatchV1Api(kube).list_namespaced_job(namespace).items)


def test_a_passing_preflight_comes_before_shadow(
    kube: ApiClient, namespace: str, chart_operator: OperatorProcess, lab: Lab
) -> None:
    models = Models(kube, namespace)
    watcher = Watcher(kube, namespace)
    models.create(model("awq"))

    def status() -> dict[str, Any]:
        return dict((models.get(NAME) or {}).get("status") or {})

    wait_for("shadow", lambda: status().get("stage") == "shadow", timeout=120)
    watcher.stop()
    assert len(watcher.seen) >= 3  # created, preflight running, shadow
    s = status()
    pre = s["preflight"]
    assert pre["phase"] == "Passed", pre
    artifact, gate = pre["checks"]
    assert (artifact["name"], artifact["verdict"]) == ("artifact", "Pass")
    assert (gate["name"], gate["verdict"]) == ("gate", "Pass")
    assert {r["rule"] for r in gate["results"]} == {
        "throughput-ratio",
        "ttft-p99-ratio",
        "error-rate",
    }
    assert gate["baseline"]["requests"] == gate["target"]["requests"] == BENCHMARK["requests"]
    assert gate["target"]["ttftP99"] < gate["baseline"]["ttftP99"]
    # Before preflight passed, not one version of the status sent the target anything.
    for st in watcher.seen:
        if (st.get("preflight") or {}).get("phase") != "Passed":
            traffic = st.get("traffic") or {}
            assert (traffic.get("targetWeight", 0), traffic.get("mirrorPercent", 0)) == (0, 0), st
    (job,) = jobs(kube, namespace)
    assert job.metadata.owner_references[0].kind == "QuantizedModel"
    assert job.spec.backoff_limit == 0
    assert job.spec.template.spec.init_containers[0].args[:2] == ["preflight", "artifact"]
    wait_for(
        "the preflight Events",
        lambda: (
            {"PreflightStarted", "PreflightPassed"} <= {r for _, r, _ in events(kube, namespace)}
        ),
    )
    # The benchmark's requests went straight to each tier: warm-up and measured ones.
    runs = {r["container"]: r["exitCode"] for r in lab.preflight.runs} if lab.preflight else {}
    assert runs == {"artifact": 0, "benchmark": 0}


def test_a_failed_artifact_check_moves_no_traffic_and_retry_runs_it_again(
    kube: ApiClient, namespace: str, chart_operator: OperatorProcess, lab: Lab
) -> None:
    models = Models(kube, namespace)
    watcher = Watcher(kube, namespace)
    models.create(model("awq8"))

    def status() -> dict[str, Any]:
        return dict((models.get(NAME) or {}).get("status") or {})

    wait_for("RolledBack", lambda: status().get("phase") == "RolledBack", timeout=120)
    s = status()
    pre = s["preflight"]
    assert pre["phase"] == "Failed"
    why = "config.json: quantization_config.bits is 8, the spec says int4 (spec.target.precision)"
    assert any(why in r for r in pre["reasons"]), pre["reasons"]
    assert any(why in r for r in s["rollback"]["reasons"])
    wait_for(
        "the PreflightFailed Event (it follows the status write)",
        lambda: any(t == "Warning" and r == "PreflightFailed" and why in m
                    for t, r, m in events(kube, namespace)),
    )  # fmt: skip
    apps = client.AppsV1Api(kube)
    wait_for(
        "the target scaled to 0",
        lambda: apps.read_namespaced_deployment(f"{NAME}-int4-awq", namespace).spec.replicas == 0,
    )
    assert apps.read_namespaced_deployment(f"{NAME}-fp16", namespace).spec.replicas == 1

    models.api.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, NAME,
        {"metadata": {"annotations": {"quantrollout.io/action": "retry"}}},
    )  # fmt: skip
    wait_for("a second preflight Job", lambda: len(jobs(kube, namespace)) == 2, timeout=90)
    wait_for(
        "the retry's verdict",
        lambda: (
            (status().get("preflight") or {}).get("attempt") == 1
            and status()["preflight"]["phase"] == "Failed"
        ),
        timeout=120,
    )
    watcher.stop()
    assert any(why in r for r in status()["preflight"]["reasons"])
    for st in watcher.seen:
        traffic = st.get("traffic") or {}
        assert (traffic.get("targetWeight", 0), traffic.get("mirrorPercent", 0)) == (0, 0), st


def test_a_job_that_cannot_start_ends_at_its_deadline_with_the_kubelets_reason(
    kube: ApiClient, namespace: str, chart_operator: OperatorProcess, lab: Lab
) -> None:
    """The tier names a Secret that does not exist: its pod cannot start its container (the
    kubelet's CreateContainerConfigError, played by the local stack's runner); the real Job
    controller ends the Job at spec.rollout.preflight.timeout, and preflight fails with both."""
    models = Models(kube, namespace)
    obj = model("awq")
    obj["spec"]["serving"]["envFrom"] = [{"secretRef": {"name": "no-such-secret"}}]
    obj["spec"]["rollout"]["preflight"]["timeout"] = "15s"
    models.create(obj)

    def preflight() -> dict[str, Any]:
        return dict(((models.get(NAME) or {}).get("status") or {}).get("preflight") or {})

    waiting = wait_for("the waiting reason", lambda: preflight().get("waiting", "").startswith("container artifact"), timeout=60)  # fmt: skip
    assert waiting
    assert preflight()["waiting"] == (
        'container artifact: CreateContainerConfigError: secret "no-such-secret" not found'
    )
    wait_for("the deadline", lambda: preflight().get("phase") == "Failed", timeout=60)
    (reason,) = preflight()["reasons"]
    assert "DeadlineExceeded" in reason
    assert 'CreateContainerConfigError: secret "no-such-secret" not found' in reason
    status = (models.get(NAME) or {}).get("status") or {}
    assert status["phase"] == "RolledBack"
    assert (status["traffic"]["targetWeight"], status["traffic"]["mirrorPercent"]) == (0, 0)


def test_a_job_superseded_by_a_new_target_is_deleted_with_its_pod(
    kube: ApiClient, namespace: str, chart_operator: OperatorProcess, lab: Lab
) -> None:
    """A Job that cannot start stays Running; a new target supersedes it: the operator, as the
    chart's ServiceAccount, deletes it (the real garbage collector takes its pod) and runs the
    new rollout's own Job."""
    models = Models(kube, namespace)
    obj = model("awq")
    obj["spec"]["serving"]["envFrom"] = [{"secretRef": {"name": "no-such-secret"}}]
    models.create(obj)

    def preflight() -> dict[str, Any]:
        return dict(((models.get(NAME) or {}).get("status") or {}).get("preflight") or {})

    wait_for("the first Job running", lambda: preflight().get("waiting", "").startswith("container"), timeout=60)  # fmt: skip
    first = preflight()["job"]
    assert [j.metadata.name for j in jobs(kube, namespace)] == [first]
    models.api.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, NAME,
        {"spec": {"target": {"artifact": "s3://models/llama/awq-v2"}}},
    )  # fmt: skip
    wait_for("the first Job deleted", lambda: first not in [j.metadata.name for j in jobs(kube, namespace)], timeout=60)  # fmt: skip
    core = client.CoreV1Api(kube)
    wait_for(
        "its pod deleted too",
        lambda: not core.list_namespaced_pod(namespace, label_selector=f"job-name={first}").items,
        timeout=60,
    )
    wait_for("the new rollout's Job", lambda: preflight().get("job") not in (None, first), timeout=60)  # fmt: skip
    assert any(
        r == "PreflightJobDeleted" and first in m and "superseded" in m
        for _, r, m in events(kube, namespace)
    )
