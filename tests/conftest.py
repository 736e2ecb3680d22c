"""Shared fixtures. Tests under tests/integration/ are marked `integration` automatically and get
one local stack (real control plane + real Prometheus) per session; `pytest -m "not integration"`
runs the pure tests alone, without starting anything."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from localstack import prometheus as localprom
    from localstack.lab import Lab, OperatorProcess
    from localstack.stack import Stack

INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    """The local stack. Set QR_STACK_DIR to reuse one started by `hack/cluster up` (left running)."""
    from localstack import stack as localstack
    from localstack.procs import free_port

    reuse = os.environ.get("QR_STACK_DIR")
    if reuse:
        attached = localstack.attach(Path(reuse))
        if attached is None:
            pytest.fail(f"QR_STACK_DIR={reuse} holds no running stack (hack/cluster up)")
        yield attached
        return
    state = tmp_path_factory.mktemp("stack")
    started = localstack.up(
        state,
        api_port=free_port(),
        etcd_port=free_port(),
        etcd_peer_port=free_port(),
        prometheus_port=free_port(),
    )
    request.config.stash[_STACK_DIR] = state
    try:
        yield started
    finally:
        started.down()


_STACK_DIR = pytest.StashKey[Path]()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int) -> None:
    """On failure, say where the stack's logs are and show their last lines (CI keeps only stdout)."""
    state = terminalreporter.config.stash.get(_STACK_DIR, None)
    if state is None or exitstatus == 0:
        return
    terminalreporter.section("local stack logs (kept)")
    logs = sorted(state.glob("*/logs/*.log"))
    operator_log = terminalreporter.config.stash.get(_OPERATOR_LOG, None)
    if operator_log is not None:
        logs.append(operator_log)
    for log in logs:
        lines = log.read_text(errors="replace").splitlines()[-15:]
        terminalreporter.write_line(f"--- {log}")
        for line in lines:
            terminalreporter.write_line("    " + line[:300])
    # Last, so that a CI log that keeps only its tail still says what failed and why.
    terminalreporter.section("failures, again (their last lines)")
    stats = terminalreporter.stats
    for report in stats.get("failed", []) + stats.get("error", []):
        terminalreporter.write_line(f"--- {report.nodeid} ({report.when})")
        for line in report.longreprtext.splitlines()[-25:]:
            terminalreporter.write_line("    " + line[:300])


@pytest.fixture(scope="session")
def kube(stack: Stack) -> Iterator[ApiClient]:
    """An admin API client for the local control plane."""
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(stack.controlplane.kubeconfig))
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def namespace(kube: ApiClient) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting for it to go)."""
    from kubernetes import client

    core = client.CoreV1Api(kube)
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        core.delete_namespace(name)


@pytest.fixture(scope="session")
def crd(kube: ApiClient) -> str:
    """The generated QuantizedModel CRD, applied (server-side) and Established."""
    from localstack.crds import apply_crds
    from quantrollout.api.crd import build_crd

    body = build_crd()
    apply_crds(kube, [body])
    return str(body["metadata"]["name"])


@pytest.fixture(scope="session")
def operator(
    stack: Stack, crd: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[OperatorProcess]:
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    request.config.stash[_OPERATOR_LOG] = log
    from localstack.lab import OperatorProcess

    proc = OperatorProcess(stack.controlplane.kubeconfig, log, stack.prometheus.url)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


_OPERATOR_LOG = pytest.StashKey[Path]()


@pytest.fixture
def lab(
    stack: Stack, crd: str, namespace: str, tmp_path: Path
) -> Iterator[tuple[Lab, dict[str, Any]]]:
    """llama3-8b's fp16 and int4-awq tiers in `namespace`, each a vLLM simulator answering in
    20 ms, and the router in front of them; stopped afterwards."""
    from localstack.lab import Lab

    lab = Lab(stack, tmp_path)
    sims = lab.add_tiers(
        namespace, "llama3-8b", "meta-llama/Meta-Llama-3-8B-Instruct", ["fp16", "int4-awq"]
    )
    for sim in sims.values():
        sim.configure(latency_ms=20)
    lab.start_router(namespace)
    try:
        yield lab, sims
    finally:
        lab.stop()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[localprom.Prometheus]:
    """A Prometheus of the module's own, beside the stack's: for tests that scrape a router they
    started in-process (its targets added and removed by the test)."""
    from localstack import prometheus as localprom
    from localstack.procs import free_port

    prom = localprom.up(
        localprom.PrometheusConfig(tmp_path_factory.mktemp("prometheus"), port=free_port())
    )
    try:
        yield prom
    finally:
        prom.down()
