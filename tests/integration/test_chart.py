"""The Helm chart: it lints and renders with every option on, its objects pass the real API
server's validation, and a whole rollout runs with the operator and the router using exactly the
chart's ServiceAccounts and RBAC (a missing verb fails this test)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client, utils
from kubernetes.client import ApiClient
from prometheus_client.parser import text_string_to_metric_families

from localstack.controlplane import REPO, tool_path
from localstack.lab import Lab, OperatorProcess, fast_rollout
from localstack.load import Load
from localstack.procs import free_port
from localstack.stack import Stack

from .support import Models, example, wait_for

CHART = REPO / "charts" / "quantrollout"
RELEASE, CHART_NS = "qr", "quantrollout-system"
EVERYTHING = [
    "--set",
    "serviceMonitor.enabled=true,prometheusRule.enabled=true,grafanaDashboard.enabled=true",
]


@pytest.fixture(scope="module")
def helm() -> str:
    return tool_path("helm", "HELM")


def render(helm: str, *extra: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [helm, "template", RELEASE, str(CHART), "--namespace", CHART_NS, "--kube-version", "1.33.13", *extra],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_chart_lints_with_every_option(helm: str) -> None:
    for extra in (
        [],
        EVERYTHING,
        ["--set", "operator.clusterWide=false,operator.namespaces={llm}"],
    ):
        result = subprocess.run(
            [helm, "lint", "--strict", str(CHART), *extra],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_values_are_checked_against_the_schema(helm: str) -> None:
    result = subprocess.run(
        [helm, "template", RELEASE, str(CHART), "--set", "operator.logFormat=yaml"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "logFormat" in result.stderr


def test_rendered_objects(helm: str) -> None:
    docs = render(helm, *EVERYTHING)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("Deployment", "qr-operator") in kinds
    assert ("Deployment", "qr-router") in kinds
    assert ("PrometheusRule", "qr") in kinds
    assert ("ConfigMap", "qr-dashboard") in kinds
    for dep in (d for d in docs if d["kind"] == "Deployment"):
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for c in pod["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["resources"]["requests"]
            assert c["livenessProbe"]
            assert c["readinessProbe"]
    [router] = [
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "qr-router"
    ]
    # The workers' metric files, written per request, stay in memory (tmpfs).
    [tmp] = [v for v in router["spec"]["template"]["spec"]["volumes"] if v["name"] == "tmp"]
    assert tmp["emptyDir"]["medium"] == "Memory"
    crd = (CHART / "crds" / "quantrollout.io_quantizedmodels.yaml").read_text()
    assert crd == (REPO / "crds" / "quantrollout.io_quantizedmodels.yaml").read_text()


def test_router_limits_default_to_the_product_s_and_can_be_set(helm: str) -> None:
    from quantrollout.defaults import ROUTER_CALIBRATION_PERCENT, ROUTER_MAX_BODY_BYTES

    def router_args(*extra: str) -> list[str]:
        [router] = [
            d
            for d in render(helm, *extra)
            if d["metadata"]["name"] == "qr-router" and d["kind"] == "Deployment"
        ]
        return list(router["spec"]["template"]["spec"]["containers"][0]["args"])

    args = router_args()
    assert f"--max-body-bytes={ROUTER_MAX_BODY_BYTES}" in args
    assert f"--calibration-percent={ROUTER_CALIBRATION_PERCENT}" in args
    args = router_args("--set", "router.maxBodyBytes=104857600,router.calibrationPercent=0")
    assert {"--max-body-bytes=104857600", "--calibration-percent=0"} <= set(args)


def _install(kube: ApiClient, docs: list[dict[str, Any]], tmp: Path) -> None:
    core = client.CoreV1Api(kube)
    if not any(n.metadata.name == CHART_NS for n in core.list_namespace().items):
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=CHART_NS)))
    wanted = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    for doc in docs:
        body = yaml.safe_dump(doc)
        path = tmp / f"{doc['kind']}-{doc['metadata']['name']}.yaml"
        path.write_text(body)
        if doc["kind"] in wanted:
            try:
                utils.create_from_yaml(kube, str(path))
            except utils.FailToCreateError as err:
                if not all(e.status == 409 for e in err.api_exceptions):
                    raise
        else:  # the rest is validated by the real API server, not run (no images here)
            create = {
                "Deployment": client.AppsV1Api(kube).create_namespaced_deployment,
                "Service": core.create_namespaced_service,
            }
            if doc["kind"] in create:
                create[doc["kind"]](CHART_NS, doc, dry_run="All")
    _wait_for_grants(kube, docs)


def _wait_for_grants(kube: ApiClient, docs: list[dict[str, Any]]) -> None:
    """Waits until the API server's authorizer grants every verb of every role the chart binds
    (RBAC is read from an informer: just-created bindings take a moment to count, and a process
    started before then would log a denial the test counts as a missing verb)."""
    roles = {(d["kind"], d["metadata"]["name"]): d for d in docs if d["kind"].endswith("Role")}
    checks: list[client.V1SubjectAccessReviewSpec] = []
    for binding in (d for d in docs if d["kind"].endswith("RoleBinding")):
        role = roles[(binding["roleRef"]["kind"], binding["roleRef"]["name"])]
        namespace = (
            binding["metadata"].get("namespace") if binding["kind"] == "RoleBinding" else None
        )
        for subject in binding["subjects"]:
            user = f"system:serviceaccount:{subject['namespace']}:{subject['name']}"
            for rule in role["rules"]:
                attributes = client.V1ResourceAttributes(
                    namespace=namespace or "default", verb=rule["verbs"][0],
                    group=rule["apiGroups"][0], resource=rule["resources"][0],
                    name=(rule.get("resourceNames") or [None])[0],
                )  # fmt: skip
                checks.append(
                    client.V1SubjectAccessReviewSpec(user=user, resource_attributes=attributes)
                )
    authz = client.AuthorizationV1Api(kube)

    def all_granted() -> bool:
        return all(
            authz.create_subject_access_review(
                client.V1SubjectAccessReview(spec=spec)
            ).status.allowed
            for spec in checks
        )

    assert checks
    wait_for("the chart's RBAC to be in force", all_granted, timeout=30)


def router_args(docs: list[dict[str, Any]]) -> list[str]:
    deployment = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-router")
    )
    args: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def test_router_workers_follow_the_cpu_limit(helm: str) -> None:
    from quantrollout.cli.main import build_parser

    for values, workers in (
        ([], 2),  # the default limit: 2 cores
        (["--set", "router.resources.limits.cpu=1500m"], 2),
        (["--set", "router.resources.limits.cpu=3"], 3),
        (["--set", "router.resources.limits.cpu=0.5"], 1),
        (["--set", "router.resources.limits.cpu=null"], 1),  # the request's 500m
        (["--set", "router.workers=5"], 5),
    ):
        args = router_args(render(helm, *values))
        # What the chart passes is what the router's own command line understands.
        assert build_parser().parse_args(args).workers == workers, values


def leader_election_args(docs: list[dict[str, Any]]) -> tuple[str, ...]:
    """The chart operator's leader election options, for a local process in the Lease's namespace
    (in a pod, POD_NAMESPACE says it), so that the Lease verbs are exercised too."""
    deployment = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-operator")
    )
    options = ("--leader-elect", "--lease-duration", "--renew-deadline", "--retry-period")
    args = tuple(
        arg
        for arg in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        if arg.startswith(options)
    )
    assert "--leader-elect" in args
    return (*args, f"--leader-elect-namespace={CHART_NS}")


def test_a_whole_rollout_with_the_charts_rbac(
    helm: str,
    stack: Stack,
    kube: ApiClient,
    crd: str,
    namespace: str,
    operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    docs = render(helm)
    _install(kube, docs, tmp_path)
    leader_args = leader_election_args(docs)
    as_operator = stack.controlplane.service_account_kubeconfig(CHART_NS, f"{RELEASE}-operator")
    as_router = stack.controlplane.service_account_kubeconfig(CHART_NS, f"{RELEASE}-router")
    operator.stop()  # the admin operator of the session steps aside
    metrics_port = free_port()
    chart_operator = OperatorProcess(
        as_operator, tmp_path / "operator.log", stack.prometheus.url,
        (*leader_args, f"--metrics-port={metrics_port}"),
    )  # fmt: skip
    chart_operator.start()
    lab = Lab(stack, tmp_path)
    try:
        sims = lab.add_tiers(
            namespace, "llama3-8b", example()["spec"]["model"], ["fp16", "int4-awq"]
        )
        for sim in sims.values():
            sim.configure(latency_ms=20)
        router = lab.start_router(namespace, kubeconfig=as_router)
        models = Models(kube, namespace)
        obj = fast_rollout(example(), stage_seconds=3)
        obj["spec"]["rollout"]["analysis"]["rules"] = [
            {"name": "error-rate", "max": "5%"},
            {"name": "repetition-rate", "max": "20%"},
        ]
        models.create(obj)
        wait_for(
            "the router to route the model",
            lambda: (models.get("llama3-8b") or {}).get("status", {}).get("traffic"),
        )
        with Load(router.url, obj["spec"]["model"], rate_per_s=30):
            wait_for(
                "Succeeded",
                lambda: (
                    (models.get("llama3-8b") or {}).get("status", {}).get("phase") == "Succeeded"
                ),
                timeout=90,
            )
        # Events follow the status write that records the transition (the pass's last step).
        wait_for(
            "the rollout's Events",
            lambda: (
                {"RolloutStarted", "Promoted", "Succeeded"}
                <= {e.reason for e in client.CoreV1Api(kube).list_namespaced_event(namespace).items}
            ),
        )
        log = (tmp_path / "operator.log").read_text()
        # No RBAC denial (a namespace another test is deleting may refuse an Event: not RBAC).
        assert re.findall(r'User \\?"system:serviceaccount:[^"\\]+\\?" cannot [^.]*', log) == []
        assert "became the leader" in log
        # What the chart's alerts and dashboard read, from the operator's own /metrics.
        exposed = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        seen = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(exposed)
            for sample in family.samples
        }
        model = (("name", "llama3-8b"), ("namespace", namespace))
        assert seen[("quantrollout_operator_leader", ())] == 1
        assert seen[("quantrollout_rollout_target_weight_percent", model)] == 100
        stage = tuple(sorted((*model, ("phase", "Succeeded"), ("stage", "full"))))
        assert seen[("quantrollout_rollout_stage_info", stage)] == 1
        passes = tuple(sorted((*model, ("verdict", "Pass"))))
        assert (
            seen[("quantrollout_analysis_evaluations_total", passes)] >= 3
        )  # one per stage at least
        assert seen[("quantrollout_rollbacks_total", (*model, ("reason", "analysis_failed")))] == 0
    finally:
        chart_operator.stop()
        lab.stop()
        operator.start()
