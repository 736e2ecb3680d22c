"""Gateway API: the operator drives the weights and the RequestMirror filter of the user's
HTTPRoute (CRDs of Gateway API v1.3.0, standard channel), and an abort asked for by annotation
puts all traffic back on the baseline, route first, then status, with an Event naming who asked."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient

from localstack.crds import apply_crds, gateway_api_crds

from .support import Models, example, wait_for


@pytest.fixture(scope="session")
def gateway_crds(kube: ApiClient) -> None:
    apply_crds(kube, gateway_api_crds("httproutes", "gateways"))


def route(kube: ApiClient, namespace: str) -> dict[str, Any]:
    return dict(
        client.CustomObjectsApi(kube).get_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", namespace, "httproutes", "llm"
        )
    )


def weights(r: dict[str, Any]) -> list[tuple[str, int]]:
    return [(b["name"], b.get("weight", 1)) for b in r["spec"]["rules"][0]["backendRefs"]]


def mirror(r: dict[str, Any]) -> int | None:
    for f in r["spec"]["rules"][0].get("filters") or []:
        if f["type"] == "RequestMirror":
            return int(f["requestMirror"]["percent"])
    return None


def test_httproute_follows_the_rollout_and_abort_rolls_back(
    kube: ApiClient, namespace: str, operator: Any, gateway_crds: None
) -> None:
    custom = client.CustomObjectsApi(kube)
    custom.create_namespaced_custom_object("gateway.networking.k8s.io", "v1", namespace, "httproutes", {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "llm"},
        "spec": {"parentRefs": [{"name": "inference-gateway"}], "rules": [{"backendRefs": [{"name": "llama3-8b-fp16", "port": 8000}]}]},
    })  # fmt: skip
    qm = example()
    qm["spec"]["traffic"] = {"router": "gateway-api", "httpRoute": {"name": "llm"}}
    models = Models(kube, namespace)
    models.create(qm)

    shadowing = wait_for(
        "the route to mirror to the target",
        lambda: (r := route(kube, namespace)) and mirror(r) == 100 and r,
    )
    assert weights(shadowing) == [("llama3-8b-fp16", 100), ("llama3-8b-int4-awq", 0)]
    assert shadowing["spec"]["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "inference-gateway"}
    ]
    status = (models.get("llama3-8b") or {})["status"]
    assert (status["phase"], status["stage"], status["targetWeight"], status["mirrorPercent"]) == (
        "Progressing",
        "shadow",
        0,
        100,
    )

    custom.patch_namespaced_custom_object(
        "quantrollout.io", "v1alpha1", namespace, "quantizedmodels", "llama3-8b",
        {"metadata": {"annotations": {"quantrollout.io/action": "abort"}}},
    )  # fmt: skip
    wait_for("the route back on the baseline", lambda: mirror(route(kube, namespace)) is None)
    assert weights(route(kube, namespace)) == [("llama3-8b-fp16", 100), ("llama3-8b-int4-awq", 0)]
    rolled = wait_for(
        "RolledBack",
        lambda: (s := (models.get("llama3-8b") or {})["status"])["phase"] == "RolledBack" and s,
    )
    (reason,) = rolled["rollback"]["reasons"]
    assert reason.startswith(
        "aborted by OpenAPI-Generator"
    )  # the field manager that set the annotation
    assert reason.endswith("(annotation quantrollout.io/action=abort)")
    # Acted on once, then removed (after the status that records it).
    wait_for(
        "the action annotation removed",
        lambda: (
            "quantrollout.io/action"
            not in ((models.get("llama3-8b") or {})["metadata"].get("annotations") or {})
        ),
    )
    degraded = models.wait_condition("llama3-8b", "Degraded", "True", "RolledBack")
    assert degraded["message"].startswith("all traffic back on the baseline: aborted by ")
    reasons = [e.reason for e in client.CoreV1Api(kube).list_namespaced_event(namespace).items]
    assert "RolledBack" in reasons


def test_a_missing_httproute_holds_the_rollout_and_says_so_once(
    kube: ApiClient, namespace: str, operator: Any, gateway_crds: None
) -> None:
    """No HTTPRoute yet: the rollout holds without recording traffic it could not apply, with one
    Warning Event however often it retries (every interval, here 1 s); once the route exists the
    next retry writes it, says so in a Normal Event, and the rollout goes on."""
    qm = example()
    qm["spec"]["traffic"] = {"router": "gateway-api", "httpRoute": {"name": "llm"}}
    qm["spec"]["rollout"]["analysis"]["interval"] = "1s"
    models = Models(kube, namespace)
    models.create(qm)
    core = client.CoreV1Api(kube)
    retry_line = f"still cannot write HTTPRoute {namespace}/llm"

    def events(reason: str) -> list[Any]:
        return [e for e in core.list_namespaced_event(namespace).items if e.reason == reason]

    (refused,) = wait_for("the TrafficNotApplied event", lambda: events("TrafficNotApplied"))
    assert f"cannot write HTTPRoute {namespace}/llm: HTTP 404" in refused.message
    wait_for("three retries", lambda: operator.log.read_text().count(retry_line) >= 3)
    assert len(events("TrafficNotApplied")) == 1
    assert ((models.get("llama3-8b") or {}).get("status") or {}).get("traffic") is None

    client.CustomObjectsApi(kube).create_namespaced_custom_object("gateway.networking.k8s.io", "v1", namespace, "httproutes", {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "llm"},
        "spec": {"parentRefs": [{"name": "inference-gateway"}], "rules": [{"backendRefs": [{"name": "llama3-8b-fp16", "port": 8000}]}]},
    })  # fmt: skip
    wait_for("the route to mirror to the target", lambda: mirror(route(kube, namespace)) == 100)
    (applied,) = wait_for("the TrafficApplied event", lambda: events("TrafficApplied"))
    assert applied.type == "Normal"
    assert applied.message == f"HTTPRoute {namespace}/llm written again"

    def recorded() -> dict[str, Any]:
        return dict(((models.get("llama3-8b") or {}).get("status") or {}).get("traffic") or {})

    wait_for("the traffic recorded in status", lambda: recorded().get("mirrorPercent") == 100)
    assert len(events("TrafficNotApplied")) == 1
