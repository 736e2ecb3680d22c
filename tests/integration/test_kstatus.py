"""QuantizedModel's status as sigs.k8s.io/cli-utils' kstatus reads it (what Flux's health checks
and kstatus-based waits use; `hack/kstatus`, cli-utils v0.37.2): InProgress while a rollout
moves (or is paused), Current when it is done and every tier Ready, Failed when rolled back or
Degraded. First on every status the operator's code can write, then on live objects of the local
stack walked through each phase, with Argo CD's own action patches doing the walking (a refused
one included)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient

from localstack.controlplane import tool_path
from localstack.lab import Lab, fast_rollout
from localstack.load import Load
from quantrollout.api.crd import GROUP, PLURAL, VERSION

from .statuses import operator_statuses
from .support import Models, example, wait_for
from .test_argocd import argocd

SERVED = "meta-llama/Meta-Llama-3-8B-Instruct"


@pytest.fixture(scope="module")
def kstatus_bin() -> str:
    return tool_path("kstatus", "KSTATUS")


def kstatus(binary: str, objs: list[dict[str, Any]]) -> list[dict[str, str]]:
    proc = subprocess.run(
        [binary], input=json.dumps(objs), capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout))


def expected_kstatus(status: dict[str, Any]) -> str:
    """docs/gitops.md's table."""
    conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
    if status.get("phase") in ("RolledBack", "Failed") or conditions.get("Degraded") == "True":
        return "Failed"
    if status.get("phase") == "Succeeded" and conditions.get("Ready") == "True":
        return "Current"
    return "InProgress"


def test_every_status_the_operator_writes(kstatus_bin: str) -> None:
    models = operator_statuses()
    results = kstatus(kstatus_bin, list(models.values()))
    tally: dict[str, int] = {}
    for (case, obj), got in zip(models.items(), results, strict=True):
        assert "error" not in got, (case, got)
        assert got["status"] == expected_kstatus(obj["status"]), (case, got, obj["status"])
        tally[got["status"]] = tally.get(got["status"], 0) + 1
    assert set(tally) == {"InProgress", "Current", "Failed"}
    print(f"kstatus of {len(models)} operator statuses: {tally}")


def test_a_generation_not_yet_observed_is_in_progress(kstatus_bin: str) -> None:
    (done,) = [o for k, o in operator_statuses().items() if k.startswith("Succeeded") and
               k.endswith("tiers ready, analysis pass")]  # fmt: skip
    edited = {**done, "metadata": {**done["metadata"], "generation": 3}}
    assert [r["status"] for r in kstatus(kstatus_bin, [done, edited])] == ["Current", "InProgress"]


# --- live ----------------------------------------------------------------------------------------


@pytest.fixture
def lab(stack: Any, crd: str, namespace: str, tmp_path: Path) -> Iterator[tuple[Lab, Any]]:
    lab = Lab(stack, tmp_path)
    sims = lab.add_tiers(namespace, "llama3-8b", SERVED, ["fp16", "int4-awq"])
    for sim in sims.values():
        sim.configure(latency_ms=20)
    lab.start_router(namespace)
    try:
        yield lab, sims
    finally:
        lab.stop()


def argocd_action(kube: ApiClient, namespace: str, obj: dict[str, Any], action: str) -> None:
    """Runs an Argo CD resource action the way Argo CD's API server does: the action's Lua on
    the live object, then its merge patch, sent as Argo CD sends it."""
    (answer,) = argocd(
        tool_path("argocd-lua", "ARGOCD_LUA"),
        [{"id": action, "op": "action", "action": action, "object": obj}],
    )
    assert "error" not in answer, answer
    for patch in answer["patches"]:
        client.CustomObjectsApi(kube).patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, obj["metadata"]["name"], patch,
            field_manager="argocd-server", _content_type="application/merge-patch+json",
        )  # fmt: skip


def refused_events(kube: ApiClient, namespace: str) -> list[str]:
    events = client.CoreV1Api(kube).list_namespaced_event(namespace).items
    return [e.message for e in events if e.reason == "ActionRefused"]


def test_live_phases_through_argocd_actions(
    kube: ApiClient, namespace: str, operator: Any, lab: tuple[Lab, Any], kstatus_bin: str
) -> None:
    the_lab, sims = lab
    assert the_lab.router is not None
    models = Models(kube, namespace)
    obj = fast_rollout(example(), stage_seconds=3)
    obj["spec"]["rollout"]["analysis"]["rules"] = [
        {"name": "error-rate", "max": "5%"}, {"name": "repetition-rate", "max": "20%"},
    ]  # fmt: skip
    obj["spec"]["rollout"]["stages"][1]["duration"] = "10m"  # ab waits for a promote
    models.create(obj)
    seen: dict[str, str] = {}

    def live(phase: str, want: str, timeout: float = 60) -> dict[str, Any]:
        """Waits for `phase`, then for kstatus to read `want` on the live object."""

        def check() -> dict[str, Any] | None:
            got = models.get("llama3-8b") or {}
            if (got.get("status") or {}).get("phase") != phase:
                return None
            return got if kstatus(kstatus_bin, [got])[0]["status"] == want else None

        found = wait_for(f"{phase} read as {want}", check, timeout=timeout)
        seen[phase] = want
        return found

    with Load(the_lab.router.url, SERVED, rate_per_s=30):
        live("Progressing", "InProgress")
        argocd_action(
            kube,
            namespace,
            wait_for(
                "ab",
                lambda: (
                    (m := models.get("llama3-8b") or {}).get("status", {}).get("stage") == "ab"
                    and m
                ),
            ),
            "pause",
        )
        paused = live("Paused", "InProgress")
        assert paused["spec"]["rollout"]["paused"] is True
        sims["int4-awq"].configure(repetition_rate=0.8)
        argocd_action(kube, namespace, paused, "resume")
        rolled = live("RolledBack", "Failed")
        argocd_action(kube, namespace, rolled, "promote")  # not offered: refused, with why
        message = wait_for("an ActionRefused Event", lambda: refused_events(kube, namespace))[0]
        assert message.startswith("promote refused: promote acts only when the phase is ")
        assert "argocd-server" in message
        assert (models.get("llama3-8b") or {})["status"]["phase"] == "RolledBack"
        sims["int4-awq"].configure(repetition_rate=0.0)
        argocd_action(kube, namespace, models.get("llama3-8b") or {}, "retry")
        live("Progressing", "InProgress")
        wait_for("ab again", lambda: (models.get("llama3-8b") or {})["status"].get("stage") == "ab")
        argocd_action(kube, namespace, models.get("llama3-8b") or {}, "promote")
        done = live("Succeeded", "Current", timeout=90)
    assert not (done["metadata"].get("annotations") or {}).get("quantrollout.io/action")
    assert seen == {"Progressing": "InProgress", "Paused": "InProgress",
                    "RolledBack": "Failed", "Succeeded": "Current"}  # fmt: skip
    print(f"kstatus on the live object: {seen}")
