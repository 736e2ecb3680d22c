"""The ground is real: the local control plane schedules GPU pods on fake GPU nodes, enforces
RBAC, and Prometheus scrapes a loopback HTTP target that a PromQL query then reads back."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.rest import ApiException
from prometheus_api_client import PrometheusConnect

from localstack.controlplane import GPU_PRODUCT_LABEL
from localstack.stack import Stack

from .support import wait_for


def gpu_deployment(name: str, gpus: int, product: str | None = None) -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    node_selector={GPU_PRODUCT_LABEL: product} if product else None,
                    containers=[
                        client.V1Container(
                            name="vllm",
                            image="vllm/vllm-openai:v0.8.5",
                            resources=client.V1ResourceRequirements(
                                limits={"nvidia.com/gpu": str(gpus)},
                            ),
                        )
                    ],
                ),
            ),
        ),
    )


def test_gpu_deployment_becomes_available_on_fake_gpu_nodes(
    kube: ApiClient, namespace: str
) -> None:
    apps, core = client.AppsV1Api(kube), client.CoreV1Api(kube)
    apps.create_namespaced_deployment(namespace, gpu_deployment("fits", 4, "NVIDIA-H100-80GB-HBM3"))

    def available() -> bool:
        dep = apps.read_namespaced_deployment_status("fits", namespace)
        conds = {c.type: c.status for c in dep.status.conditions or []}
        return conds.get("Available") == "True" and dep.status.ready_replicas == 2

    wait_for("Deployment fits to be Available", available)
    pods = core.list_namespaced_pod(namespace, label_selector="app=fits").items
    assert len(pods) == 2
    for pod in pods:
        assert pod.status.phase == "Running"
        node = core.read_node(pod.spec.node_name)
        assert node.status.allocatable["nvidia.com/gpu"] == "8"
        assert node.metadata.labels[GPU_PRODUCT_LABEL] == "NVIDIA-H100-80GB-HBM3"


def test_pod_wanting_more_gpus_than_any_node_stays_pending(kube: ApiClient, namespace: str) -> None:
    apps, core = client.AppsV1Api(kube), client.CoreV1Api(kube)
    apps.create_namespaced_deployment(namespace, gpu_deployment("too-big", 9))

    def failed_scheduling() -> list[client.CoreV1Event]:
        events = core.list_namespaced_event(
            namespace, field_selector="reason=FailedScheduling"
        ).items
        return [e for e in events if "Insufficient nvidia.com/gpu" in (e.message or "")]

    events = wait_for("a FailedScheduling event", failed_scheduling)
    assert "0/4 nodes are available" in events[0].message
    pods = core.list_namespaced_pod(namespace, label_selector="app=too-big").items
    assert pods
    assert all(p.status.phase == "Pending" and not p.spec.node_name for p in pods)
    dep = apps.read_namespaced_deployment_status("too-big", namespace)
    assert not dep.status.ready_replicas


def test_service_account_without_binding_is_refused(
    stack: Stack, kube: ApiClient, namespace: str
) -> None:
    from kubernetes import config

    core, rbac = client.CoreV1Api(kube), client.RbacAuthorizationV1Api(kube)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="bot"))
    )
    kubeconfig = stack.controlplane.service_account_kubeconfig(namespace, "bot")
    with config.new_client_from_config(config_file=str(kubeconfig)) as as_bot:
        bot = client.CoreV1Api(as_bot)
        with pytest.raises(ApiException) as refused:
            bot.list_namespaced_pod(namespace)
        assert refused.value.status == 403
        assert f"system:serviceaccount:{namespace}:bot" in refused.value.body

        # The same token works once RBAC grants it: the 403 above was authorization, not a broken login.
        rbac.create_namespaced_role(
            namespace,
            client.V1Role(
                metadata=client.V1ObjectMeta(name="read-pods"),
                rules=[client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["list"])],
            ),
        )
        rbac.create_namespaced_role_binding(
            namespace,
            client.V1RoleBinding(
                metadata=client.V1ObjectMeta(name="bot-reads-pods"),
                role_ref=client.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="Role", name="read-pods"
                ),
                subjects=[
                    client.RbacV1Subject(kind="ServiceAccount", name="bot", namespace=namespace)
                ],
            ),
        )
        wait_for("the RoleBinding to take effect", lambda: _can_list(bot, namespace), timeout=10)


def _can_list(api: client.CoreV1Api, namespace: str) -> bool:
    try:
        api.list_namespaced_pod(namespace)
    except ApiException as err:
        if err.status == 403:
            return False
        raise
    return True


@pytest.fixture
def metrics_target() -> Iterator[tuple[str, float]]:
    """A loopback HTTP server exposing one gauge with a random value, in Prometheus text format."""
    value = round(random.uniform(1, 1000), 3)
    body = f'# TYPE qr_ground_value gauge\nqr_ground_value{{source="test"}} {value}\n'.encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", value
    finally:
        server.shutdown()
        server.server_close()


def test_prometheus_scrapes_a_loopback_target_and_promql_reads_it_back(
    stack: Stack, metrics_target: tuple[str, float]
) -> None:
    address, value = metrics_target
    prom = stack.prometheus
    prom.add_targets("ground", [address], {"job": "ground", "tier": "fp16"})
    try:
        prom.wait_for_target_up(address)
        api = PrometheusConnect(url=prom.url, disable_ssl=True)

        def sample() -> list[dict[str, Any]]:
            return list(api.custom_query(f'qr_ground_value{{instance="{address}"}}'))

        result = wait_for("the scraped series", sample)
        assert len(result) == 1
        assert result[0]["metric"]["tier"] == "fp16"
        assert result[0]["metric"]["job"] == "ground"
        assert float(result[0]["value"][1]) == value
    finally:
        prom.remove_targets("ground")


def test_prometheus_reloads_rules_without_restart(stack: Stack, tmp_path: Any) -> None:
    prom = stack.prometheus
    pid = prom.supervisor.pids()["prometheus"]
    rules = prom.config.state_dir / "ground-rules.yml"
    rules.write_text(
        "groups:\n- name: ground\n  rules:\n  - record: qr_ground_recorded\n    expr: vector(7)\n"
    )
    prom.config.rule_files.append(str(rules))
    try:
        prom.reload()
        api = PrometheusConnect(url=prom.url, disable_ssl=True)
        result = wait_for("the recording rule", lambda: api.custom_query("qr_ground_recorded"))
        assert float(result[0]["value"][1]) == 7
        assert prom.supervisor.pids()["prometheus"] == pid
        assert prom.supervisor.alive("prometheus")
    finally:
        prom.config.rule_files.remove(str(rules))
        prom.reload()
