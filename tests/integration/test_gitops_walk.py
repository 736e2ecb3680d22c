"""One model walked through every phase on the local stack, the way on-call drives it from
Argo CD: Argo CD's own resource-action patches (hack/argocd-lua) pause, resume, promote and
retry it, and a promote it refuses gets an ActionRefused Event. At each phase, kstatus
(sigs.k8s.io/cli-utils, as Flux reads it) on the live object, and kubectl (of the control
plane's release): `wait` for the waits docs/gitops.md documents, `get -o wide`, `describe`."""

from __future__ import annotations

import time
from typing import Any

from kubernetes import client
from kubernetes.client import ApiClient

from localstack.controlplane import tool_path
from localstack.lab import Lab, fast_rollout
from localstack.load import Load
from localstack.stack import Stack
from quantrollout.api.crd import GROUP, PLURAL, VERSION

from .kubectl import kubectl
from .support import Models, example, wait_for
from .test_argocd import argocd
from .test_kstatus import kstatus

SERVED = "meta-llama/Meta-Llama-3-8B-Instruct"


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


def wait(stack: Stack, namespace: str, condition: str, timeout: str = "30s") -> tuple[int, str]:
    """`kubectl wait --for=CONDITION qm/llama3-8b`: its exit code and what it said."""
    proc = kubectl(
        stack, "-n", namespace, "wait", f"--for={condition}", "qm/llama3-8b",
        f"--timeout={timeout}", check=False,
    )  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr


def test_live_phases_through_argocd_actions(
    stack: Stack, kube: ApiClient, namespace: str, operator: Any, lab: tuple[Lab, Any]
) -> None:
    the_lab, sims = lab
    assert the_lab.router is not None
    models = Models(kube, namespace)
    obj = fast_rollout(example(), stage_seconds=3)
    obj["spec"]["rollout"]["analysis"]["rules"] = [  # short windows: a fixed fault is soon gone
        {"name": "error-rate", "max": "5%", "window": "4s"},
        {"name": "repetition-rate", "max": "20%", "window": "4s"},
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
            return got if kstatus([got])[0]["status"] == want else None

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
        for condition in ("condition=Degraded", "condition=Stalled"):
            assert wait(stack, namespace, condition)[0] == 0, condition
        argocd_action(kube, namespace, rolled, "promote")  # not offered: refused, with why
        message = wait_for("an ActionRefused Event", lambda: refused_events(kube, namespace))[0]
        assert message.startswith("promote refused: promote acts only when the phase is ")
        assert "argocd-server" in message
        assert (models.get("llama3-8b") or {})["status"]["phase"] == "RolledBack"
        sims["int4-awq"].configure(repetition_rate=0.0)
        time.sleep(8)  # the repetitions leave the rules' 4s window before the retry
        argocd_action(kube, namespace, models.get("llama3-8b") or {}, "retry")
        live("Progressing", "InProgress")
        wait_for("ab again", lambda: (models.get("llama3-8b") or {})["status"].get("stage") == "ab")
        argocd_action(kube, namespace, models.get("llama3-8b") or {}, "promote")
        done = live("Succeeded", "Current", timeout=90)
        # Traffic goes on while kubectl looks: the watch after full evaluates on, and with no
        # requests in its window its verdict (the ANALYSIS column) would be Inconclusive.
        assert not (done["metadata"].get("annotations") or {}).get("quantrollout.io/action")
        # The waits docs/gitops.md documents, and one that must time out.
        for condition in ("jsonpath={.status.phase}=Succeeded", "condition=Ready"):
            assert wait(stack, namespace, condition)[0] == 0, condition
        code, said = wait(stack, namespace, "condition=Degraded", timeout="3s")
        assert code != 0, said
        assert "timed out" in said

        wide = kubectl(stack, "-n", namespace, "get", "qm", "-o", "wide").stdout.splitlines()
        assert wide[0].split() == [
            "NAME", "MODEL", "TARGET", "STAGE", "WEIGHT", "PHASE", "AGE",
            "BASELINE", "MIRROR", "ANALYSIS", "READY", "REASON",
        ]  # fmt: skip
        row = wide[1].split()
        assert row[:6] == ["llama3-8b", SERVED, "int4-awq", "full", "100", "Succeeded"]
        assert row[7:11] == ["fp16", "0", "Pass", "True"]
        assert row[11] == "TiersHealthy"

    described = kubectl(stack, "-n", namespace, "describe", "qm", "llama3-8b").stdout
    print("\n".join(wide), described, sep="\n")  # shown on a failure, and with -s
    flat = " ".join(described.split())  # kubectl aligns its columns with runs of spaces
    for text in ("Phase: Succeeded", "Target Weight: 100", "Type: Ready", "Events:",
                 "ActionRefused", "promote refused: promote acts only when the phase is",
                 "RolledBack", "RolloutRetried", "Promoted"):  # fmt: skip
        assert text in flat, (text, described)
    assert seen == {"Progressing": "InProgress", "Paused": "InProgress",
                    "RolledBack": "Failed", "Succeeded": "Current"}  # fmt: skip
    print(f"kstatus on the live object: {seen}")


def test_an_action_on_an_invalid_model_is_refused_with_why(
    kube: ApiClient, namespace: str, operator: Any
) -> None:
    """Bad input: an action asked of a model with no rollout (its spec is invalid), and an
    unknown action, each get an ActionRefused Event saying why, and the annotation goes."""
    models = Models(kube, namespace)
    qm = example()
    qm["spec"]["target"]["serving"] = {"tensorParallelSize": 2}  # 1 GPU: refused by the operator
    models.create(qm)
    models.wait_condition("llama3-8b", "Ready", "False", "InvalidSpec")
    api = client.CustomObjectsApi(kube)
    for value in ("abort", "promte"):
        api.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "llama3-8b",
            {"metadata": {"annotations": {"quantrollout.io/action": value}}},
        )  # fmt: skip
        wait_for(
            f"the {value} annotation removed",
            lambda: not ((models.get("llama3-8b") or {})["metadata"].get("annotations") or {}),
        )

    def two_refusals() -> list[str] | None:
        found = refused_events(kube, namespace)
        return found if len(found) == 2 else None

    messages = wait_for("two ActionRefused Events", two_refusals)
    assert sorted(m.split(" (asked by")[0] for m in messages) == [
        "abort refused: abort acts only when the phase is Pending or Progressing or Paused, "
        "and the spec is invalid (see the Ready condition)",
        "promte refused: unknown action 'promte': one of promote, abort, retry",
    ]
