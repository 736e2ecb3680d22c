"""Mixed precision on the real local API server (RBAC on, the pass acting as a ServiceAccount
with the operator's namespaced verbs, KWOK GPU nodes, the real scheduler and Deployment
controller): examples/llama3-8b-mixed.yaml walks shadow (mirrored to both quantized tiers) ->
the policy compiled from the per-class observation -> A/B -> one class's partial rollback ->
full, with every field the router reads and the plugin prints stored by the API server as
written. The Metrics seam is the unit fakes' (scripted per-class observations): what the
router's Prometheus series give is the mixed-router branch's test. Admission refuses the bad
mixed specs with the field named."""

from __future__ import annotations

import asyncio
import copy
import datetime
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from tests.unit.fakes import FakeEvents, FakeMetrics

from localstack.stack import Stack
from quantrollout.analysis.class_stats import ClassObservation
from quantrollout.cli.plugin_render import render_model
from quantrollout.kube import Kube
from quantrollout.pass_.observe import Memory
from quantrollout.pass_.run import run_pass
from quantrollout.rollout.policy import ShadowStats
from quantrollout.router.classify import CLASSES

from .support import Models, example, wait_for

NAME = "llama3-8b-mixed"
MIX = {"chat-short": 0.55, "chat-long": 0.1, "code": 0.12, "structured": 0.08, "math": 0.08,
       "tools": 0.07}  # fmt: skip
# The operator's verbs a pass uses (charts/quantrollout/templates/rbac.yaml), in one namespace.
RULES = [
    (["quantrollout.io"], ["quantizedmodels"], ["get", "patch"]),
    (["quantrollout.io"], ["quantizedmodels/status"], ["patch"]),
    (["apps"], ["deployments"], ["get", "list", "create", "patch", "delete"]),
    ([""], ["services"], ["get", "create", "patch", "delete"]),
    ([""], ["pods"], ["list"]),
]


def shadow() -> dict[tuple[str, str], ShadowStats]:
    stats = {(c, "fp8"): ShadowStats(300, 0.97, "Pass") for c in CLASSES}
    stats.update({(c, "int4-awq"): ShadowStats(600, 0.98, "Pass") for c in CLASSES})
    stats[("code", "int4-awq")] = ShadowStats(300, 0.81, "Pass")
    stats[("tools", "int4-awq")] = ShadowStats(300, 0.86, "Pass")
    return stats


def as_operator(kube: ApiClient, stack: Stack, namespace: str) -> Kube:
    """A `Kube` acting as a ServiceAccount granted exactly RULES in `namespace`."""
    core, rbac = client.CoreV1Api(kube), client.RbacAuthorizationV1Api(kube)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "operator"}})
    rbac.create_namespaced_role(namespace, {
        "metadata": {"name": "operator"},
        "rules": [{"apiGroups": g, "resources": r, "verbs": v} for g, r, v in RULES],
    })  # fmt: skip
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "operator"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "operator"},
        "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": namespace}],
    })  # fmt: skip
    authz = client.AuthorizationV1Api(kube)
    user = f"system:serviceaccount:{namespace}:operator"

    def granted() -> bool:
        review = {"spec": {"user": user, "resourceAttributes": {
            "namespace": namespace, "verb": "patch", "group": "quantrollout.io",
            "resource": "quantizedmodels", "subresource": "status"}}}  # fmt: skip
        return bool(authz.create_subject_access_review(review).status.allowed)

    wait_for("the operator's Role to be in force", granted, timeout=30)
    from kubernetes import config

    path = stack.controlplane.service_account_kubeconfig(namespace, "operator")
    return Kube(config.new_client_from_config(config_file=str(path)))


class Walk:
    """Passes of the real pass over the model, on a clock that moves 1 s per pass (the stages'
    durations are seconds); between passes, real time for the Deployments to become Ready."""

    def __init__(self, operator: Kube, namespace: str) -> None:
        self.kube, self.namespace = operator, namespace
        self.metrics = FakeMetrics(observations=[ClassObservation(shadow(), MIX)])
        self.events = FakeEvents()
        self.memory = Memory()
        self.now = datetime.datetime.now(datetime.UTC)

    def clock(self) -> datetime.datetime:
        return self.now

    def one(self) -> None:
        self.now += datetime.timedelta(seconds=1)
        self.memory.stale = True  # no watch here: read the children every pass
        asyncio.run(
            run_pass(
                self.kube, self.metrics, self.events, self.memory, self.namespace, NAME,
                lambda ns, sel: None, self.clock,
            )
        )  # fmt: skip

    def until(self, what: str, check: Any, timeout: float = 90) -> dict[str, Any]:
        def step() -> dict[str, Any] | None:
            self.one()
            status = (self.kube.get_quantizedmodel(self.namespace, NAME) or {}).get("status")
            return status if status and check(status) else None

        return wait_for(what, step, timeout=timeout)


def model() -> dict[str, Any]:
    obj = example(NAME)
    spec = obj["spec"]
    spec["serving"]["replicas"] = 1
    spec["rollout"]["stages"] = [
        {"name": "shadow", "mirrorPercent": 100, "duration": "2s"},
        {"name": "ab", "weight": 10, "duration": "2s", "stickyBy": "header:x-user-id"},
        {"name": "gradual", "weights": [50], "stepDuration": "2s"},
        {"name": "full"},
    ]
    spec["rollout"]["analysis"]["interval"] = "1s"
    spec["rollout"]["bakeDuration"] = "2s"
    return obj


def table(status: dict[str, Any]) -> dict[str, tuple[str, int]]:
    return {r["class"]: (r["tier"], r["share"]) for r in status.get("classes") or []}


def test_a_two_target_model_walks_shadow_policy_ab_partial_rollback_full(
    kube: ApiClient, stack: Stack, crd: str, namespace: str
) -> None:
    models = Models(kube, namespace)
    models.create(model())
    walk = Walk(as_operator(kube, stack, namespace), namespace)

    status = walk.until("shadow", lambda s: s.get("stage") == "shadow")
    traffic = status["traffic"]
    assert [b["service"] for b in traffic["targets"]] == [f"{NAME}-fp8", f"{NAME}-int4-awq"]
    assert traffic["mirrorPercent"] == 100
    assert "classes" not in traffic
    apps = client.AppsV1Api(kube)
    for tier in ("fp16", "fp8", "int4-awq"):
        assert apps.read_namespaced_deployment(f"{NAME}-{tier}", namespace).spec.replicas == 1
        client.CoreV1Api(kube).read_namespaced_service(f"{NAME}-{tier}", namespace)

    status = walk.until("the policy compiled, A/B", lambda s: s.get("stage") == "ab")
    assert status["policy"]["source"] == "learned"
    assert table(status) == {
        "chat-short": ("int4-awq", 10), "chat-long": ("int4-awq", 10),
        "structured": ("int4-awq", 10), "math": ("int4-awq", 10),
        "code": ("fp8", 10), "tools": ("fp8", 10),
    }  # fmt: skip
    routed = {c["class"]: (c["tier"], c["weight"], c["rest"]) for c in status["traffic"]["classes"]}
    assert routed["code"] == ("fp8", 10, "fp16")
    assert routed["chat-short"] == ("int4-awq", 10, "fp16")
    assert status["gpuSaving"]["relativeCost"] < 0.7

    # math breaches on int4-awq: it alone moves to fp8, the rollout goes on
    stats = shadow()
    stats[("math", "int4-awq")] = ShadowStats(
        120, 0.9, "Fail", ("math repetition-rate 0.31 > 0.15",)
    )
    walk.metrics.observations = [ClassObservation(stats, MIX)]
    status = walk.until("math on fp8", lambda s: table(s).get("math", ("",))[0] == "fp8")
    assert status["phase"] == "Progressing"
    assert table(status)["chat-short"][0] == "int4-awq"
    assert (
        "Warning",
        "ClassRolledBack",
        "class math breached on int4-awq: math repetition-rate 0.31 > 0.15; now on fp8",
    ) in walk.events.posted
    walk.metrics.observations = [ClassObservation(shadow(), MIX)]

    status = walk.until("full", lambda s: s.get("phase") == "Succeeded", timeout=120)
    assert table(status) == {
        "chat-short": ("int4-awq", 100), "chat-long": ("int4-awq", 100),
        "structured": ("int4-awq", 100), "math": ("fp8", 100),
        "code": ("fp8", 100), "tools": ("fp8", 100),
    }  # fmt: skip
    assert {c["weight"] for c in status["traffic"]["classes"]} == {100}
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Progressing"]["reason"] == "RolloutSucceeded"
    rendered = render_model(models.get(NAME) or {})
    assert "  math         fp8        100%" in rendered


def test_admission_refuses_bad_mixed_specs_with_the_field_named(
    kube: ApiClient, crd: str, namespace: str
) -> None:
    models = Models(kube, namespace)
    base = example(NAME)

    def refused(edit: Any) -> str:
        obj = copy.deepcopy(base)
        edit(obj["spec"])
        with pytest.raises(ApiException) as err:
            models.create(obj)
        assert err.value.status == 422
        return str(err.value.body)

    def both(spec: dict[str, Any]) -> None:
        spec["target"] = spec["targets"][0]

    assert "spec.target and spec.targets: set exactly one" in refused(both)

    def unknown_tier(spec: dict[str, Any]) -> None:
        spec["rollout"]["policy"] = {"classes": {"code": "int3"}}

    assert "spec.rollout.policy.classes: every tier must be" in refused(unknown_tier)

    def unknown_class(spec: dict[str, Any]) -> None:
        spec["rollout"]["policy"] = {"classes": {"poetry": "fp8"}}

    assert "spec.rollout.policy.classes: unknown request class" in refused(unknown_class)

    def duplicate(spec: dict[str, Any]) -> None:
        spec["targets"].append(copy.deepcopy(spec["targets"][0]))

    assert "Duplicate value" in refused(duplicate)

    def not_lower(spec: dict[str, Any]) -> None:
        spec["targets"][0]["precision"] = "fp16"

    assert "spec.targets" in refused(not_lower)

    def named_like_the_baseline(spec: dict[str, Any]) -> None:
        spec["targets"][0]["name"] = "fp16"

    assert "must differ from the baseline's tier name" in refused(named_like_the_baseline)

    def gateway(spec: dict[str, Any]) -> None:
        spec["traffic"] = {"router": "gateway-api", "httpRoute": {"name": "r"}}

    assert "gateway-api cannot split by request class" in refused(gateway)

    models.create(base)  # the example itself is admitted
