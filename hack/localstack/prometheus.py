"""A real Prometheus (Debian's package) on loopback, for tests and the demo.

Its config is generated; scrape targets are file-SD JSON files under `targets/`, which Prometheus
watches, so adding a target needs neither a restart nor a reload. Rule files and other config
changes take effect through `/-/reload` (the lifecycle API is on), again without a restart.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .procs import StackError, Supervisor, require_free_ports


@dataclass
class PrometheusConfig:
    state_dir: Path
    port: int = 19090
    scrape_interval: str = "1s"
    rule_files: list[str] = field(default_factory=list)
    start_timeout: float = 30.0


@dataclass
class Prometheus:
    config: PrometheusConfig
    supervisor: Supervisor

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.config.port}"

    @property
    def targets_dir(self) -> Path:
        return self.config.state_dir / "targets"

    def ready(self) -> bool:
        with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as resp:
            return int(resp.status) == 200

    def add_targets(
        self, name: str, targets: list[str], labels: dict[str, str] | None = None
    ) -> None:
        """Adds (or replaces) one group of scrape targets, e.g. `["127.0.0.1:8000"]`.

        `labels` are attached to every series scraped from them (`job` may be set here)."""
        tmp = self.targets_dir / f".{name}.json.tmp"
        tmp.write_text(json.dumps([{"targets": targets, "labels": labels or {}}]))
        tmp.replace(self.targets_dir / f"{name}.json")  # atomic: Prometheus never reads half a file

    def remove_targets(self, name: str) -> None:
        (self.targets_dir / f"{name}.json").unlink(missing_ok=True)

    def write_config(self) -> None:
        cfg = self.config
        doc: dict[str, Any] = {
            "global": {
                "scrape_interval": cfg.scrape_interval,
                "evaluation_interval": cfg.scrape_interval,
            },
            "rule_files": cfg.rule_files,
            "scrape_configs": [
                {
                    "job_name": "local",
                    "file_sd_configs": [
                        {"files": [str(self.targets_dir / "*.json")], "refresh_interval": "1s"}
                    ],
                }
            ],
        }
        (cfg.state_dir / "prometheus.yml").write_text(yaml.safe_dump(doc, sort_keys=False))

    def reload(self) -> None:
        """Rewrites the config and makes the running Prometheus load it, without a restart."""
        self.write_config()
        req = urllib.request.Request(self.url + "/-/reload", method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            if resp.status != 200:
                raise StackError(f"prometheus reload failed: HTTP {resp.status}")

    def active_targets(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(self.url + "/api/v1/targets?state=active", timeout=5) as resp:
            return list(json.load(resp)["data"]["activeTargets"])

    def wait_for_target_up(self, address: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t in self.active_targets():
                if t["labels"].get("instance") == address and t["health"] == "up":
                    return
            time.sleep(0.2)
        raise StackError(f"prometheus never scraped {address} successfully within {timeout:.0f}s")

    def down(self) -> None:
        self.supervisor.stop_all()


def served_queries(url: str) -> float:
    """Prometheus's own count of /api/v1/query requests, from its /metrics (the benchmarks count
    the operator's queries with it; Prometheus does not scrape itself here)."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("prometheus_http_requests_total{") and 'handler="/api/v1/query"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def up(config: PrometheusConfig) -> Prometheus:
    binary = shutil.which("prometheus")
    if not binary:
        raise StackError(
            "prometheus not found: install Debian's prometheus (hack/install-deps.sh does)"
        )
    config.state_dir.mkdir(parents=True, exist_ok=True)
    sup = Supervisor(config.state_dir)
    if sup.pids():
        raise StackError(f"a Prometheus is already recorded in {config.state_dir} (run down first)")
    require_free_ports({"prometheus": config.port})
    prom = Prometheus(config, sup)
    prom.targets_dir.mkdir(exist_ok=True)
    data = config.state_dir / "data"
    shutil.rmtree(data, ignore_errors=True)
    prom.write_config()
    sup.start(
        "prometheus",
        [
            binary,
            f"--config.file={config.state_dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{config.port}",
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=1d",
            "--log.level=warn",
        ],
    )
    try:
        sup.wait_until("prometheus", prom.ready, config.start_timeout, "ready")
    except BaseException:
        prom.down()
        raise
    (config.state_dir / "config.json").write_text(json.dumps({"port": config.port}))
    return prom


def attach(state_dir: Path) -> Prometheus | None:
    sup = Supervisor(state_dir)
    saved = state_dir / "config.json"
    if not sup.pids() or not saved.exists():
        return None
    return Prometheus(PrometheusConfig(state_dir, port=json.loads(saved.read_text())["port"]), sup)
