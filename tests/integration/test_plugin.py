"""`kubectl quantrollout` against the real API server, run as the user runs it: a subprocess
with a kubeconfig. The test writes the status the plugin shows, so the session's operator steps
aside for this module (it would write its own status over the test's). The models are huge
(4000B parameters) so that nothing would be deployed even if an operator were running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client import ApiClient

from quantrollout.api.crd import GROUP, PLURAL, VERSION

from .support import Models, example, wait_for

if TYPE_CHECKING:
    from localstack.lab import OperatorProcess
    from localstack.stack import Stack

PLUGIN = Path(sys.executable).parent / "kubectl-quantrollout"
NAME = "llama3-8b"
MERGE_PATCH = "application/merge-patch+json"

STATUS: dict[str, Any] = {
    "phase": "Progressing", "stage": "ab", "step": 1, "targetWeight": 10, "mirrorPercent": 0,
    "stageStartedAt": "2026-11-23T10:00:00Z",
    "lastAnalysis": {
        "at": "2026-11-23T11:59:30Z", "verdict": "Pass",
        "results": [
            {"rule": "ttft-p99", "value": 0.183, "threshold": 1.0, "verdict": "Pass"},
            {"rule": "repetition-rate", "value": 0.04, "threshold": 0.15, "verdict": "Pass"},
        ],
    },
    "tiers": [
        {"name": "fp16", "role": "baseline", "replicas": 2, "readyReplicas": 2, "gpus": 2,
         "ready": True},
        {"name": "int4-awq", "role": "target", "replicas": 2, "readyReplicas": 1, "gpus": 2,
         "ready": False, "message": "1 of 2 replicas ready"},
    ],
    "conditions": [
        {"type": "Ready", "status": "True", "reason": "Progressing", "message": "ab at 10%",
         "lastTransitionTime": "2026-11-23T10:00:00Z"},
    ],
}  # fmt: skip

ROLLED_BACK: dict[str, Any] = {
    "phase": "RolledBack", "targetWeight": 0, "mirrorPercent": 0,
    "rollback": {
        "at": "2026-11-23T12:00:00Z",
        "reasons": ["repetition-rate 0.21 > 0.15 for 2 consecutive evaluations"],
    },
}  # fmt: skip


def huge_model() -> dict[str, Any]:
    obj = example()
    obj["metadata"]["name"] = NAME
    obj["spec"]["modelShape"] = {"parametersB": 4000, "layers": 200, "kvHeads": 16, "headDim": 128}
    return obj


@pytest.fixture(scope="module")
def no_operator(operator: OperatorProcess) -> Iterator[None]:
    """The session's operator is stopped for this module and restarted after it."""
    operator.stop()
    try:
        yield
    finally:
        operator.start()


@pytest.fixture
def models(kube: ApiClient, crd: str, namespace: str, no_operator: None) -> Models:
    found = Models(kube, namespace)
    found.create(huge_model())
    return found


def write_status(models: Models, status: dict[str, Any]) -> None:
    models.api.patch_namespaced_custom_object_status(
        GROUP, VERSION, models.namespace, PLURAL, NAME, {"status": status},
        _content_type=MERGE_PATCH,
    )  # fmt: skip


@pytest.fixture
def plugin(stack: Stack, namespace: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
        config = kubeconfig or stack.controlplane.kubeconfig
        argv = [str(PLUGIN), "--kubeconfig", str(config), "-n", namespace, *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)

    return run


Plugin = Callable[..., subprocess.CompletedProcess[str]]


def test_get_shows_the_rollout(models: Models, plugin: Plugin) -> None:
    write_status(models, STATUS)
    shown = plugin("get", NAME)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert f"Name:       {models.namespace}/{NAME}\n" in out
    assert "Traffic:    live 10% on int4-awq, mirror 0%\n" in out
    assert (
        "  target     int4-awq   1/2     2      -         -            1 of 2 replicas ready\n"
        in out
    )
    assert "  ├─ ab        live 10% for 24h, sticky by x-user-id   <- current\n" in out
    assert "  ttft-p99          0.183   max 1       Pass\n" in out
    assert "  Ready   True     Progressing   ab at 10%\n" in out

    write_status(models, ROLLED_BACK)
    out = plugin("get", NAME).stdout
    assert "Phase:      RolledBack\n" in out
    assert (
        "  ├─ ab        live 10% for 24h, sticky by x-user-id   <- rolled back from here\n" in out
    )
    assert "  - repetition-rate 0.21 > 0.15 for 2 consecutive evaluations\n" in out

    listed = plugin("get")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == [
        "NAME",
        "MODEL",
        "TARGET",
        "STAGE",
        "LIVE",
        "MIRROR",
        "PHASE",
        "LAST",
        "ANALYSIS",
    ]
    assert lines[1].split()[:7] == [
        NAME,
        "meta-llama/Meta-Llama-3-8B-Instruct",
        "int4-awq",
        "ab",
        "0%",
        "0%",
        "RolledBack",
    ]


@pytest.mark.parametrize("action", ["promote", "abort", "retry"])
def test_actions_set_the_annotation_as_kubectl_quantrollout(
    models: Models, plugin: Plugin, action: str
) -> None:
    done = plugin(action, NAME)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(
        f"quantizedmodel {models.namespace}/{NAME}: asked the operator to {action} "
        f"(quantrollout.io/action={action})"
    )
    obj = models.get(NAME) or {}
    assert obj["metadata"]["annotations"]["quantrollout.io/action"] == action
    owners = [
        entry["manager"]
        for entry in obj["metadata"]["managedFields"]
        if "f:quantrollout.io/action"
        in entry.get("fieldsV1", {}).get("f:metadata", {}).get("f:annotations", {})
    ]
    assert owners == ["kubectl-quantrollout"]


def test_pause_and_resume_flip_the_spec(models: Models, plugin: Plugin) -> None:
    paused = plugin("pause", NAME)
    assert paused.returncode == 0, paused.stderr
    assert "Argo CD" in paused.stdout
    assert (models.get(NAME) or {})["spec"]["rollout"]["paused"] is True
    assert "Paused:     yes (spec.rollout.paused: true)\n" in plugin("get", NAME).stdout
    resumed = plugin("resume", NAME)
    assert resumed.returncode == 0, resumed.stderr
    assert (models.get(NAME) or {})["spec"]["rollout"]["paused"] is False
    assert (models.get(NAME) or {})["spec"]["rollout"]["stages"]  # the rest of the spec is kept


class Output:
    """A subprocess's stdout, read as it comes."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.text = ""
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, ""):
            with self._lock:
                self.text += line

    def __call__(self) -> str:
        with self._lock:
            return self.text


@pytest.fixture
def watching(stack: Stack, namespace: str, models: Models) -> Iterator[subprocess.Popen[str]]:
    argv = [str(PLUGIN), "--kubeconfig", str(stack.controlplane.kubeconfig), "-n", namespace]
    proc = subprocess.Popen(
        [*argv, "get", NAME, "--watch"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_watch_redraws_after_a_status_change(
    models: Models, watching: subprocess.Popen[str]
) -> None:
    output = Output(watching)
    wait_for("the first frame", lambda: "Conditions: none" in output(), timeout=15)
    write_status(models, STATUS)
    wait_for("a redraw", lambda: "Phase:      Progressing" in output(), timeout=15)
    write_status(models, ROLLED_BACK)
    wait_for("a second redraw", lambda: "Phase:      RolledBack" in output(), timeout=15)
    assert output().count("Name:       ") == 3
    watching.send_signal(signal.SIGINT)  # Ctrl-C
    assert watching.wait(timeout=10) == 0
    assert watching.stderr is not None
    assert "Traceback" not in watching.stderr.read()


def test_clear_errors(
    stack: Stack, kube: ApiClient, models: Models, plugin: Plugin, tmp_path: Path
) -> None:
    missing = plugin("get", "nope")
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr == (
        f'Error: quantizedmodel "nope" not found in namespace "{models.namespace}"\n'
    )
    assert plugin("promote", "nope").stderr == missing.stderr

    # No cluster: a kubeconfig pointing at a port nothing listens on.
    config = yaml.safe_load(stack.controlplane.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"
    unreachable = tmp_path / "unreachable"
    unreachable.write_text(yaml.safe_dump(config))
    down = plugin("get", NAME, kubeconfig=unreachable)
    assert down.returncode == 1
    assert down.stderr.startswith("Error: cannot reach the cluster at https://127.0.0.1:1: ")
    assert len(down.stderr.splitlines()) == 1

    # Forbidden: a ServiceAccount that may read models but not change them.
    ns = models.namespace
    client.CoreV1Api(kube).create_namespaced_service_account(
        ns, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="viewer"))
    )
    rbac = client.RbacAuthorizationV1Api(kube)
    rule = client.V1PolicyRule(
        api_groups=[GROUP], resources=[PLURAL], verbs=["get", "list", "watch"]
    )
    rbac.create_namespaced_role(
        ns, client.V1Role(metadata=client.V1ObjectMeta(name="viewer"), rules=[rule])
    )
    rbac.create_namespaced_role_binding(
        ns,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="viewer"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="viewer"
            ),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="viewer", namespace=ns)],
        ),
    )
    viewer = stack.controlplane.service_account_kubeconfig(ns, "viewer", tmp_path / "viewer")
    # RBAC caches settle quickly, but not instantly.
    wait_for("the viewer to read", lambda: plugin("get", NAME, kubeconfig=viewer).returncode == 0)
    denied = plugin("pause", NAME, kubeconfig=viewer)
    assert denied.returncode == 1
    assert denied.stderr.startswith("Error: forbidden: ")
    assert f'User "system:serviceaccount:{ns}:viewer" cannot patch resource' in denied.stderr
    assert len(denied.stderr.splitlines()) == 1


def test_namespace_defaults_to_the_contexts(stack: Stack, models: Models, tmp_path: Path) -> None:
    config = yaml.safe_load(stack.controlplane.kubeconfig.read_text())
    for context in config["contexts"]:
        context["context"]["namespace"] = models.namespace
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "KUBECONFIG": str(path)}
    shown = subprocess.run(
        [str(PLUGIN), "get", NAME], capture_output=True, text=True, timeout=30, env=env, check=False
    )
    assert shown.returncode == 0, shown.stderr
    assert f"Name:       {models.namespace}/{NAME}\n" in shown.stdout
