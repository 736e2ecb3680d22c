"""The whole local stack (control plane + Prometheus) under one state directory, as the CLI,
the demo and the test fixtures use it."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from . import controlplane, prometheus
from .procs import Supervisor

DEFAULT_DIR = controlplane.REPO / ".stack"


def _env_port(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass
class Stack:
    controlplane: controlplane.ControlPlane
    prometheus: prometheus.Prometheus

    def down(self) -> None:
        self.prometheus.down()
        self.controlplane.down()


def up(
    state_dir: Path = DEFAULT_DIR,
    *,
    api_port: int | None = None,
    etcd_port: int | None = None,
    etcd_peer_port: int | None = None,
    prometheus_port: int | None = None,
) -> Stack:
    cp_cfg = controlplane.ControlPlaneConfig(
        state_dir / "controlplane",
        api_port=api_port or _env_port("QR_API_PORT", 16443),
        etcd_port=etcd_port or _env_port("QR_ETCD_PORT", 12379),
        etcd_peer_port=etcd_peer_port or _env_port("QR_ETCD_PEER_PORT", 12380),
    )
    prom_cfg = prometheus.PrometheusConfig(
        state_dir / "prometheus", port=prometheus_port or _env_port("QR_PROMETHEUS_PORT", 19090)
    )
    cp = controlplane.up(cp_cfg)
    try:
        prom = prometheus.up(prom_cfg)
    except BaseException:
        cp.down()
        raise
    return Stack(cp, prom)


def attach(state_dir: Path = DEFAULT_DIR) -> Stack | None:
    cp = controlplane.attach(state_dir / "controlplane")
    prom = prometheus.attach(state_dir / "prometheus")
    return Stack(cp, prom) if cp and prom else None


def down(state_dir: Path = DEFAULT_DIR) -> bool:
    """Stops whatever is recorded under `state_dir`, even a half-started stack. True if anything was."""
    stopped = False
    for part in ("prometheus", "controlplane"):
        sup = Supervisor(state_dir / part)
        if sup.pids():
            stopped = True
        sup.stop_all()
    shutil.rmtree(controlplane.etcd_data_dir(state_dir / "controlplane"), ignore_errors=True)
    return stopped
