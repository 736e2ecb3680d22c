"""The local stack's own tooling under bad input: a second `up` starts nothing, a busy port or a
failing component stops with a one-line reason and leaves no process behind, and a missing Go
toolchain is named rather than crashed into."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from localstack import controlplane
from localstack.controlplane import REPO, Binaries, ControlPlaneConfig
from localstack.procs import StackError, Supervisor, free_port, pid_alive
from localstack.stack import Stack


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "localstack", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO / "hack"), **(env or {})},
    )


def test_up_twice_does_not_start_a_second_cluster(stack: Stack) -> None:
    state = stack.controlplane.state_dir.parent
    before = {**stack.controlplane.supervisor.pids(), **stack.prometheus.supervisor.pids()}

    result = run_cli("--dir", str(state), "up")

    assert result.returncode == 0, result.stderr
    assert "already running" in result.stdout
    assert f"export KUBECONFIG={stack.controlplane.kubeconfig}" in result.stdout
    after = {**stack.controlplane.supervisor.pids(), **stack.prometheus.supervisor.pids()}
    assert after == before
    with pytest.raises(StackError, match="already recorded"):
        controlplane.up(stack.controlplane.config)


def test_port_in_use_stops_with_one_line_reason_and_no_processes(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        ports = {
            "QR_API_PORT": str(port),
            "QR_ETCD_PORT": str(free_port()),
            "QR_ETCD_PEER_PORT": str(free_port()),
            "QR_PROMETHEUS_PORT": str(free_port()),
        }
        result = run_cli("--dir", str(tmp_path), "up", env=ports)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"hack/cluster: kube-apiserver port {port} already in use on 127.0.0.1 "
        "(set another port or stop what holds it)"
    ]
    assert Supervisor(tmp_path / "controlplane").pids() == {}
    assert Supervisor(tmp_path / "prometheus").pids() == {}


def test_component_that_dies_while_starting_leaves_no_stray_process(tmp_path: Path) -> None:
    real = Binaries.ensure()
    fake_kube = tmp_path / "bin"
    fake_kube.mkdir()
    apiserver = fake_kube / "kube-apiserver"
    apiserver.write_text("#!/bin/sh\necho 'F1123 fake: cannot start the API server' >&2\nexit 1\n")
    apiserver.chmod(0o755)
    cfg = ControlPlaneConfig(
        tmp_path / "cp", api_port=free_port(), etcd_port=free_port(), etcd_peer_port=free_port()
    )

    with pytest.raises(StackError) as err:
        controlplane.up(cfg, Binaries(fake_kube, real.kwok, real.etcd))

    assert (
        str(err.value)
        == "kube-apiserver exited while starting: F1123 fake: cannot start the API server"
    )
    logs = cfg.state_dir / "logs"
    assert (logs / "etcd.log").exists(), "etcd should have been started before the API server"
    assert Supervisor(cfg.state_dir).pids() == {}
    etcd_procs = subprocess.run(
        ["pgrep", "-f", f"--data-dir={controlplane.etcd_data_dir(cfg.state_dir)}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    assert [p for p in etcd_procs if pid_alive(int(p))] == []


def test_missing_go_toolchain_is_named(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(REPO / "hack" / "tools.sh"), "kwok"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "QR_CACHE": str(tmp_path / "cache"),
            "QR_GO_FALLBACK_DIR": str(tmp_path / "no-go"),
        },
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "hack/tools.sh: no Go toolchain on PATH (needed once to build the local control plane; install Go >= 1.24)"
    ]
