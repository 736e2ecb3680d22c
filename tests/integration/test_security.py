"""Security of a whole rollout, rollback included, run as the chart's ServiceAccounts:

- least privilege: every (apiGroup, resource, verb) the chart grants the operator and the router
  was used during the rollout, as the API server's audit log records it (a short allow-list names
  the verbs only used on paths this rollout does not take, each with the reason);
- no Secret value leaks: the Prometheus bearer token (spec.prometheus.tokenSecretRef), the
  webhook URL (a Slack webhook URL is a credential) and the tiers' credentials (an HF_TOKEN and
  AWS keys given by env/envFrom from Secrets) appear in no operator or router log line, no Event,
  no status and no rendered Deployment, and the operator never reads the tiers' Secrets;
- the token really reaches Prometheus as `Authorization: Bearer ...` (a loopback proxy in front
  of the real Prometheus records the header of every query).
"""

from __future__ import annotations

import json
import secrets
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client import ApiClient

from localstack.lab import Lab, OperatorProcess, fast_rollout
from localstack.load import Load
from localstack.stack import Stack

from .support import Models, example, wait_for
from .test_chart import CHART_NS, RELEASE, _install, leader_election_args, render

TOKEN_SECRET = "prom-token"
HF_SECRET = "hf-token"
STORE_SECRET = "model-store-credentials"
Use = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)

# Held but not used by this rollout, each used elsewhere (and tested there).
OPERATOR_UNUSED_OK: dict[Use, str] = {
    # Removing the one-shot action annotation after `kubectl quantrollout promote|abort|retry`
    # (test_plugin.py); this rollout rolls back on a metric breach, not on an action.
    ("quantrollout.io", "quantizedmodels", "patch"): "action annotations",
    # A target tier that cannot be deployed (say, too little GPU memory) is deleted
    # (test_reconcile.py); this rollout's target deploys.
    ("apps", "deployments", "delete"): "undeployable target",
    ("", "services", "delete"): "undeployable target",
    # A tier with serving.autoscaling gets an HPA whose bounds follow its traffic share
    # (test_capacity.py); this rollout's tiers have fixed replicas.
    ("autoscaling", "horizontalpodautoscalers", "get"): "autoscaled tiers",
    ("autoscaling", "horizontalpodautoscalers", "create"): "autoscaled tiers",
    ("autoscaling", "horizontalpodautoscalers", "patch"): "autoscaled tiers",
    ("autoscaling", "horizontalpodautoscalers", "delete"): "autoscaled tiers",
    # The preflight Job (test_preflight_rollout.py); this rollout runs with preflight off (the
    # operator watches Jobs all the same: list and watch are used).
    ("batch", "jobs", "get"): "preflight",
    ("batch", "jobs", "create"): "preflight",
    ("batch", "jobs", "patch"): "preflight",
    ("batch", "jobs", "delete"): "preflight",
    # traffic.router gateway-api writes the HTTPRoute's rules (test_gateway_route.py).
    ("gateway.networking.k8s.io", "httproutes", "patch"): "gateway-api router",
}
ROUTER_UNUSED_OK: dict[Use, str] = {}  # the router's every verb is on its one path


def held(docs: list[dict[str, Any]], account: str) -> set[Use]:
    """What the chart grants the ServiceAccount `account` through every (Cluster)Role bound to
    it, one triple per verb."""
    bound = {
        d["roleRef"]["name"]
        for d in docs
        if d["kind"] in ("ClusterRoleBinding", "RoleBinding")
        and any(s["name"] == account for s in d["subjects"])
    }
    rules = [
        rule
        for d in docs
        if d["kind"] in ("ClusterRole", "Role") and d["metadata"]["name"] in bound
        for rule in d["rules"]
    ]
    assert rules, f"nothing is bound to {account}"
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def audited(audit_log: Path, user: str) -> tuple[set[Use], list[dict[str, Any]]]:
    """What `user` did (allowed requests) and every audit event of theirs, from the audit log."""
    used: set[Use] = set()
    events = []
    for line in audit_log.read_text().splitlines():
        event = json.loads(line)
        # A watch is audited when its response starts (it completes only when the watch ends).
        if event["user"]["username"] != user or event["stage"] == "RequestReceived":
            continue
        events.append(event)
        ref = event.get("objectRef")
        code = event.get("responseStatus", {}).get("code", 200)
        if ref is None or code == 403:
            continue
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        group = ref.get("apiGroup", "")
        used.add((group, resource, event["verb"]))
        if event["verb"] == "patch" and code == 201:
            # A server-side apply that created the object: audited as patch, authorised (and
            # only possible) with create as well.
            used.add((group, resource, "create"))
    return used, events


class Recorder(ThreadingHTTPServer):
    """A loopback HTTP server that records what it receives; `answer` decides the reply."""

    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.seen: list[
            tuple[str, str, dict[str, str], bytes]
        ] = []  # (method, path, headers, body)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def prometheus_proxy(upstream: str) -> Recorder:
    """Passes every request on to the real Prometheus, recording its headers."""

    class Handler(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            server: Recorder = self.server  # type: ignore[assignment]
            server.seen.append((self.command, self.path, dict(self.headers.items()), body))
            req = urllib.request.Request(
                upstream + self.path, data=body or None, method=self.command
            )
            if self.headers.get("content-type"):
                req.add_header("content-type", self.headers["content-type"])
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    status, payload = resp.status, resp.read()
            except urllib.error.HTTPError as err:
                status, payload = err.code, err.read()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            self._forward()

        def do_POST(self) -> None:
            self._forward()

        def log_message(self, *args: Any) -> None:
            pass

    return Recorder(Handler)


def webhook_receiver() -> Recorder:
    """Answers 500 to the first notification (the operator logs the failure: that log line must
    not carry the URL either), 200 afterwards."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            server: Recorder = self.server  # type: ignore[assignment]
            server.seen.append((self.command, self.path, dict(self.headers.items()), body))
            self.send_response(500 if len(server.seen) == 1 else 200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    return Recorder(Handler)


@pytest.fixture(scope="module")
def helm() -> str:
    from localstack.controlplane import tool_path

    return tool_path("helm", "HELM")


class Run:
    """What one rollout as the chart's ServiceAccounts left behind."""

    def __init__(self) -> None:
        self.token = "tok-" + secrets.token_hex(16)
        self.hook_secret = "hook-" + secrets.token_hex(16)
        self.docs: list[dict[str, Any]] = []
        self.operator_log = Path()
        self.router_log = Path()
        self.namespace = ""
        self.prometheus: Recorder | None = None
        self.webhook: Recorder | None = None
        self.final: dict[str, Any] = {}
        self.hf_token = "hf_" + secrets.token_hex(16)
        self.aws_secret = "aws-" + secrets.token_hex(16)
        self.deployments: list[dict[str, Any]] = []


@pytest.fixture(scope="module")
def run(
    helm: str,
    stack: Stack,
    kube: ApiClient,
    crd: str,
    operator: OperatorProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Run]:
    r = Run()
    tmp = tmp_path_factory.mktemp("security")
    r.docs = render(helm, "--set", f"operator.prometheusTokenSecretNames={{{TOKEN_SECRET}}}")
    _install(kube, r.docs, tmp)
    core = client.CoreV1Api(kube)
    r.namespace = f"t-sec-{secrets.token_hex(3)}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=r.namespace)))
    core.create_namespaced_secret(
        r.namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name=TOKEN_SECRET), string_data={"token": r.token}
        ),
    )
    # The tiers' own credentials, which only the kubelet may read.
    for name, data in (
        (HF_SECRET, {"token": r.hf_token}),
        (STORE_SECRET, {"AWS_ACCESS_KEY_ID": "AKIA-test", "AWS_SECRET_ACCESS_KEY": r.aws_secret}),
    ):
        core.create_namespaced_secret(
            r.namespace,
            client.V1Secret(metadata=client.V1ObjectMeta(name=name), string_data=data),
        )
    core.create_namespaced_service_account(
        r.namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="model-reader"))
    )
    r.prometheus = prometheus_proxy(stack.prometheus.url)
    r.webhook = webhook_receiver()
    as_operator = stack.controlplane.service_account_kubeconfig(CHART_NS, f"{RELEASE}-operator")
    as_router = stack.controlplane.service_account_kubeconfig(CHART_NS, f"{RELEASE}-router")
    r.operator_log = tmp / "operator.log"
    operator.stop()  # the admin operator of the session steps aside
    chart_operator = OperatorProcess(
        as_operator,
        r.operator_log,
        stack.prometheus.url,
        leader_election_args(r.docs),
        env={"QR_WEBHOOK_URL": f"{r.webhook.url}/services/{r.hook_secret}"},
    )
    chart_operator.start()
    lab = Lab(stack, tmp)
    try:
        sims = lab.add_tiers(
            r.namespace, "llama3-8b", example()["spec"]["model"], ["fp16", "int4-awq"]
        )
        for sim in sims.values():
            sim.configure(latency_ms=20)
        router = lab.start_router(r.namespace, kubeconfig=as_router)
        r.router_log = router.log
        models = Models(kube, r.namespace)
        obj = fast_rollout(example(), stage_seconds=3)
        obj["spec"]["rollout"]["stages"][1]["duration"] = "5m"  # stay in ab until the breach
        obj["spec"]["rollout"]["analysis"]["rules"] = [
            {"name": "error-rate", "max": "5%"},
            {"name": "repetition-rate", "max": "20%"},
        ]
        obj["spec"]["prometheus"] = {
            "url": r.prometheus.url,
            "tokenSecretRef": {"name": TOKEN_SECRET, "key": "token"},
        }
        obj["spec"]["serving"]["env"] = [
            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": HF_SECRET, "key": "token"}}}
        ]
        obj["spec"]["serving"]["envFrom"] = [{"secretRef": {"name": STORE_SECRET}}]
        obj["spec"]["target"]["serving"] = {"serviceAccountName": "model-reader"}
        models.create(obj)

        def status() -> dict[str, Any]:
            return dict((models.get("llama3-8b") or {}).get("status") or {})

        wait_for("the router to route the model", lambda: status().get("traffic"), timeout=60)
        with Load(router.url, obj["spec"]["model"], rate_per_s=30):
            wait_for("ab", lambda: status().get("stage") == "ab", timeout=90)
            sims["int4-awq"].configure(repetition_rate=0.6)
            wait_for("RolledBack", lambda: status().get("phase") == "RolledBack", timeout=90)
        wait_for("the rollback notification", lambda: len(r.webhook.seen) >= 2, timeout=30)
        r.final = models.get("llama3-8b") or {}
        apps = client.AppsV1Api(kube)
        r.deployments = [
            kube.sanitize_for_serialization(d)
            for d in apps.list_namespaced_deployment(r.namespace).items
        ]
        yield r
    finally:
        chart_operator.stop()
        lab.stop()
        r.prometheus.stop()
        r.webhook.stop()
        operator.start()
        core.delete_namespace(r.namespace)


def test_the_token_is_sent_to_prometheus_as_a_bearer_header(run: Run) -> None:
    assert run.prometheus is not None
    queries = [s for s in run.prometheus.seen if s[1].startswith("/api/v1/query")]
    assert len(queries) >= 4  # several evaluations, each a few queries
    assert {h.get("Authorization") for _, _, h, _ in queries} == {f"Bearer {run.token}"}


def test_no_secret_value_in_logs_events_or_status(run: Run, kube: ApiClient) -> None:
    assert run.webhook is not None
    assert run.webhook.seen, "the webhook was never called: the test would prove nothing"
    assert all(path.endswith(run.hook_secret) for _, path, _, _ in run.webhook.seen)
    operator_log = run.operator_log.read_text(errors="replace")
    assert "webhook notification" in operator_log  # the failed first call was logged
    core = client.CoreV1Api(kube)
    # Kopf posts Events from a queue of its own: the webhook (called by the same pass) can be
    # answered before the RolledBack Event is created.
    events = wait_for(
        "the Promoted and RolledBack Events",
        lambda: (
            (items := core.list_namespaced_event(run.namespace).items)
            and {"Promoted", "RolledBack"} <= {e.reason for e in items}
            and items
        ),
    )
    places = {
        "operator log": operator_log,
        "router log": run.router_log.read_text(errors="replace"),
        "events": json.dumps([kube.sanitize_for_serialization(e) for e in events]),
        "status": json.dumps(run.final.get("status")),
        "model": yaml.safe_dump(run.final),
        "deployments": json.dumps(run.deployments),
    }
    for value in (run.token, run.hook_secret, run.hf_token, run.aws_secret):
        leaked = [where for where, text in places.items() if value in text]
        assert leaked == [], f"a secret value appears in: {leaked}"


def test_tier_credentials_reach_the_pods_by_reference_only(run: Run, stack: Stack) -> None:
    """The Deployments name the Secrets and the ServiceAccount; the operator never reads them
    (the kubelet resolves the references), as the API server's audit log shows."""
    assert run.deployments, "no Deployment rendered: the test would prove nothing"
    for d in run.deployments:
        pod = d["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert {
            "name": "HF_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": HF_SECRET, "key": "token"}},
        } in container["env"]
        assert container["envFrom"] == [{"secretRef": {"name": STORE_SECRET}}]
        tier = d["metadata"]["labels"]["quantrollout.io/tier"]
        assert pod.get("serviceAccountName") == ("model-reader" if tier == "int4-awq" else None)
    operator = f"system:serviceaccount:{CHART_NS}:{RELEASE}-operator"
    _, events = audited(stack.controlplane.audit_log, operator)
    read = {
        e["objectRef"].get("name")
        for e in events
        if e.get("objectRef", {}).get("resource") == "secrets"
    }
    assert read & {HF_SECRET, STORE_SECRET} == set()


@pytest.mark.parametrize(
    ("account", "unused_ok"),
    [("operator", OPERATOR_UNUSED_OK), ("router", ROUTER_UNUSED_OK)],
)
def test_every_verb_the_chart_grants_is_used(
    run: Run, stack: Stack, account: str, unused_ok: dict[Use, str]
) -> None:
    name = f"{RELEASE}-{account}"
    granted = held(run.docs, name)
    used, events = audited(stack.controlplane.audit_log, f"system:serviceaccount:{CHART_NS}:{name}")
    assert events, "no audit events: the API server's audit log is not on"
    # RBAC's own refusals (a 403 from admission, say a namespace being deleted, is not one).
    forbidden = [
        e
        for e in events
        if e.get("annotations", {}).get("authorization.k8s.io/decision") == "forbid"
    ]
    assert forbidden == []
    assert used <= granted  # (RBAC enforces it; this checks the audit parsing)
    assert set(unused_ok) <= granted, "an allow-list entry names a verb the chart no longer grants"
    assert granted - used - set(unused_ok) == set()
    assert set(unused_ok) & used == set(), "used after all: drop it from the allow-list"


def test_the_operator_reads_only_the_named_secret(run: Run, stack: Stack) -> None:
    _, events = audited(
        stack.controlplane.audit_log, f"system:serviceaccount:{CHART_NS}:{RELEASE}-operator"
    )
    reads = [e["objectRef"] for e in events if e.get("objectRef", {}).get("resource") == "secrets"]
    assert reads, "the token Secret was never read"
    assert {(r["namespace"], r["name"]) for r in reads} == {(run.namespace, TOKEN_SECRET)}
    assert {e["verb"] for e in events if e.get("objectRef", {}).get("resource") == "secrets"} == {
        "get"
    }
