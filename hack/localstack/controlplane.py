"""A real Kubernetes control plane on loopback: etcd, kube-apiserver (RBAC on, service-account
tokens on), kube-controller-manager, kube-scheduler, and KWOK playing the kubelets of fake GPU
nodes, so Deployments really become scheduled, Running, Ready pods.

Binaries come from `hack/tools.sh` (built once from the Go module proxy and cached) and Debian's
`etcd-server`. Every component gets its own client certificate and therefore its own RBAC
identity, exactly as in a kubeadm cluster; the admin is in `system:masters`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .pki import CertPair, LocalPKI
from .procs import StackError, Supervisor, require_free_ports

REPO = Path(__file__).resolve().parents[2]
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_STAGES = Path(__file__).with_name("kwok-stages.yaml")
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"


@dataclass(frozen=True)
class FakeNode:
    """A KWOK node: a Node object whose kubelet is simulated."""

    name: str
    gpus: int = 8
    gpu_product: str = "NVIDIA-H100-80GB-HBM3"
    gpu_memory_mib: int = 81559
    cpu: str = "192"
    memory: str = "2Ti"
    pods: int = 110

    def manifest(self) -> dict[str, Any]:
        capacity = {
            "cpu": self.cpu,
            "memory": self.memory,
            "pods": str(self.pods),
            "ephemeral-storage": "2Ti",
            "nvidia.com/gpu": str(self.gpus),
        }
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "kubernetes.io/hostname": self.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                    GPU_PRODUCT_LABEL: self.gpu_product,
                    "nvidia.com/gpu.count": str(self.gpus),
                    "nvidia.com/gpu.memory": str(self.gpu_memory_mib),
                },
            },
            # Node status may be set on create; KWOK then keeps its conditions and lease fresh.
            "status": {"capacity": capacity, "allocatable": capacity},
        }


DEFAULT_NODES = tuple(FakeNode(f"gpu-node-{i}") for i in range(4))


@dataclass(frozen=True)
class Binaries:
    kube_bin_dir: Path
    kwok: Path
    etcd: Path

    @classmethod
    def ensure(cls) -> Binaries:
        """Builds what is missing (once per machine) and returns the paths."""
        kube = tool_path("kube", "KUBE_BIN_DIR")
        kwok = tool_path("kwok", "KWOK")
        etcd = shutil.which("etcd") or "/usr/bin/etcd"
        if not Path(etcd).exists():
            raise StackError(
                "etcd not found: install Debian's etcd-server (hack/install-deps.sh does)"
            )
        return cls(Path(kube), Path(kwok), Path(etcd))


def tool_path(tool: str, key: str) -> str:
    """What `hack/tools.sh TOOL` prints under KEY (building the tool first if it must)."""
    proc = subprocess.run(
        [str(REPO / "hack" / "tools.sh"), tool], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise StackError(lines[-1] if lines else f"hack/tools.sh {tool} failed")
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)[key]


@dataclass
class ControlPlaneConfig:
    state_dir: Path
    api_port: int = 16443
    etcd_port: int = 12379
    etcd_peer_port: int = 12380
    nodes: tuple[FakeNode, ...] = DEFAULT_NODES
    service_cidr: str = "10.96.0.0/16"
    pod_cidr: str = "10.244.0.1/16"
    extra_apiserver_args: tuple[str, ...] = ()
    extra_controller_manager_args: tuple[str, ...] = ()
    start_timeout: float = 90.0

    @property
    def ports(self) -> dict[str, int]:
        return {
            "kube-apiserver": self.api_port,
            "etcd": self.etcd_port,
            "etcd peer": self.etcd_peer_port,
        }


@dataclass
class ControlPlane:
    config: ControlPlaneConfig
    supervisor: Supervisor
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return self.config.state_dir

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.config.api_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "admin.kubeconfig"

    @property
    def pki(self) -> Path:
        return self.state_dir / "pki"

    def api_ready(self) -> bool:
        """Whether the API server answers ready; False when nothing listens (a stack left behind
        by a reboot, say) or its certificates are gone."""
        try:
            return (
                _get(
                    self.server + "/readyz",
                    self.pki / "ca.crt",
                    CertPair(self.pki / "admin.crt", self.pki / "admin.key"),
                )
                == 200
            )
        except OSError:  # urllib's URLError and ssl's errors are OSErrors
            return False

    @property
    def audit_log(self) -> Path:
        """JSON lines, one audit event per request by a ServiceAccount of AUDITED_NAMESPACE."""
        return self.state_dir / "logs" / "audit.log"

    def down(self) -> None:
        self.supervisor.stop_all()
        shutil.rmtree(etcd_data_dir(self.state_dir), ignore_errors=True)

    def stop_apiserver(self) -> None:
        """Stops kube-apiserver alone (etcd and everything else keep running): an API outage."""
        self.supervisor.stop("kube-apiserver")

    def start_apiserver(self) -> None:
        """Starts kube-apiserver again as it was, on the same etcd, and waits until it is ready."""
        self.supervisor.start_again("kube-apiserver")
        self.supervisor.wait_until(
            "kube-apiserver", self.api_ready, self.config.start_timeout, "ready"
        )

    def service_account_kubeconfig(
        self, namespace: str, name: str, path: Path | None = None, expiration_seconds: int = 86400
    ) -> Path:
        """A kubeconfig that acts as exactly that ServiceAccount (token from the TokenRequest API)."""
        token = request_token(self, namespace, name, expiration_seconds)
        path = path or self.state_dir / f"sa-{namespace}-{name}.kubeconfig"
        write_kubeconfig(path, self.server, self.pki / "ca.crt", f"{namespace}:{name}", token=token)
        return path


AUDITED_NAMESPACE = "quantrollout-system"  # where the chart's ServiceAccounts live in tests


def _audit_policy(state_dir: Path) -> Path:
    """Metadata-level audit of the requests made as the ServiceAccounts of AUDITED_NAMESPACE
    (the chart's operator and router), and nothing else: it costs the other tests nothing."""
    policy = {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "rules": [
            {"level": "Metadata", "userGroups": [f"system:serviceaccounts:{AUDITED_NAMESPACE}"]},
            {"level": "None"},
        ],
    }
    path = state_dir / "audit-policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


def etcd_data_dir(state_dir: Path) -> Path:
    # tmpfs when there is one: Debian's etcd 3.4 has no --unsafe-no-fsync, and fsync on a VM disk
    # dominates every write the tests make. The data is disposable by design.
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else state_dir
    # A digest of the whole path: every stack on the machine gets its own directory (a suffix
    # of the path's encoding was the same for every `.../stack0/controlplane`, so concurrent
    # sessions shared, and deleted, one another's etcd data).
    tag = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:24]
    return base / f"quantrollout-etcd-{tag}"


def _get(url: str, ca: Path, client: CertPair | None = None, token: str | None = None) -> int:
    ctx = ssl.create_default_context(cafile=str(ca))
    if client:
        ctx.load_cert_chain(str(client.cert), str(client.key))
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def write_kubeconfig(
    path: Path,
    server: str,
    ca: Path,
    user: str,
    *,
    client: CertPair | None = None,
    token: str | None = None,
) -> None:
    creds: dict[str, str] = {}
    if client:
        creds["client-certificate-data"] = base64.b64encode(client.cert.read_bytes()).decode()
        creds["client-key-data"] = base64.b64encode(client.key.read_bytes()).decode()
    if token:
        creds["token"] = token
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "quantrollout-local",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca.read_bytes()).decode(),
                },
            }
        ],
        "users": [{"name": user, "user": creds}],
        "contexts": [{"name": user, "context": {"cluster": "quantrollout-local", "user": user}}],
        "current-context": user,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


def request_token(cp: ControlPlane, namespace: str, name: str, expiration_seconds: int) -> str:
    body = json.dumps(
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": expiration_seconds},
        }
    ).encode()
    status, data = _admin_request(
        cp, "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", body
    )
    if status != 201:
        raise StackError(f"TokenRequest for {namespace}/{name} failed: HTTP {status} {data!r:.200}")
    return str(data["status"]["token"])


def _admin_request(
    cp: ControlPlane, method: str, path: str, body: bytes | None = None
) -> tuple[int, Any]:
    ctx = ssl.create_default_context(cafile=str(cp.pki / "ca.crt"))
    ctx.load_cert_chain(str(cp.pki / "admin.crt"), str(cp.pki / "admin.key"))
    req = urllib.request.Request(cp.server + path, data=body, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return int(resp.status), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return int(err.code), json.loads(err.read() or b"null")


def up(config: ControlPlaneConfig, binaries: Binaries | None = None) -> ControlPlane:
    """Starts the control plane and returns when the API is ready and every fake node is Ready.

    On any failure it stops whatever it started and raises StackError with a one-line reason.
    """
    config.state_dir.mkdir(parents=True, exist_ok=True)
    sup = Supervisor(config.state_dir)
    cp = ControlPlane(config, sup)
    if sup.pids():
        raise StackError(
            f"a control plane is already recorded in {config.state_dir} (run down first)"
        )
    require_free_ports(config.ports)
    bins = binaries or Binaries.ensure()
    t0 = time.monotonic()
    try:
        _start(cp, bins)
    except BaseException:
        cp.down()
        raise
    cp.timings["ready_s"] = time.monotonic() - t0
    (config.state_dir / "config.json").write_text(
        json.dumps(
            {
                "api_port": config.api_port,
                "etcd_port": config.etcd_port,
                "etcd_peer_port": config.etcd_peer_port,
            }
        )
    )
    return cp


def _start(cp: ControlPlane, bins: Binaries) -> None:
    cfg, sup, d = cp.config, cp.supervisor, cp.state_dir
    for stale in d.glob("*.kubeconfig"):
        stale.unlink()
    pki = LocalPKI(cp.pki)
    serving = pki.issue(
        "apiserver",
        "kube-apiserver",
        server=True,
        dns=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
        ips=("127.0.0.1", "10.96.0.1"),
    )
    sa = pki.service_account_keys()
    admin = pki.issue("admin", "quantrollout-admin", "system:masters")
    write_kubeconfig(cp.kubeconfig, cp.server, pki.ca.cert, "admin", client=admin)
    for component in ("kube-controller-manager", "kube-scheduler"):
        pair = pki.issue(component, f"system:{component}")
        write_kubeconfig(
            d / f"{component}.kubeconfig", cp.server, pki.ca.cert, component, client=pair
        )

    etcd_data = etcd_data_dir(d)
    shutil.rmtree(etcd_data, ignore_errors=True)
    etcd_url = f"http://127.0.0.1:{cfg.etcd_port}"
    peer_url = f"http://127.0.0.1:{cfg.etcd_peer_port}"
    sup.start(
        "etcd",
        [
            str(bins.etcd),
            "--name=local",
            f"--data-dir={etcd_data}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=local={peer_url}",
            "--initial-cluster-state=new",
            "--quota-backend-bytes=4294967296",
            "--log-level=warn",
        ],
    )
    sup.wait_until("etcd", lambda: _http_ok(etcd_url + "/health"), 30, "healthy")

    sup.start(
        "kube-apiserver",
        [
            str(bins.kube_bin_dir / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={cfg.api_port}",
            f"--cert-dir={cp.pki}",
            f"--tls-cert-file={serving.cert}",
            f"--tls-private-key-file={serving.key}",
            f"--client-ca-file={pki.ca.cert}",
            "--authorization-mode=RBAC",
            "--anonymous-auth=false",
            f"--service-cluster-ip-range={cfg.service_cidr}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={sa.cert}",
            f"--service-account-signing-key-file={sa.key}",
            "--allow-privileged=true",
            "--profiling=false",
            # Who did what (metadata only, never bodies), for the least-privilege test.
            f"--audit-policy-file={_audit_policy(d)}",
            f"--audit-log-path={cp.audit_log}",
            "--audit-log-maxsize=200",
            # No kubelets, so no node addresses to reconcile the `kubernetes` Service endpoints to.
            "--endpoint-reconciler-type=none",
            "--v=1",
            *cfg.extra_apiserver_args,
        ],
    )
    sup.wait_until("kube-apiserver", cp.api_ready, cfg.start_timeout, "ready")

    sup.start(
        "kube-controller-manager",
        [
            str(bins.kube_bin_dir / "kube-controller-manager"),
            f"--kubeconfig={d / 'kube-controller-manager.kubeconfig'}",
            f"--authentication-kubeconfig={d / 'kube-controller-manager.kubeconfig'}",
            f"--authorization-kubeconfig={d / 'kube-controller-manager.kubeconfig'}",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={sa.key}",
            f"--root-ca-file={pki.ca.cert}",
            f"--cluster-signing-cert-file={pki.ca.cert}",
            f"--cluster-signing-key-file={pki.ca.key}",
            "--v=1",
            *cfg.extra_controller_manager_args,
        ],
    )
    sup.start(
        "kube-scheduler",
        [
            str(bins.kube_bin_dir / "kube-scheduler"),
            f"--kubeconfig={d / 'kube-scheduler.kubeconfig'}",
            f"--authentication-kubeconfig={d / 'kube-scheduler.kubeconfig'}",
            f"--authorization-kubeconfig={d / 'kube-scheduler.kubeconfig'}",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            "--leader-elect=false",
            "--v=1",
        ],
    )
    sup.start(
        "kwok",
        [
            str(bins.kwok),
            f"--kubeconfig={cp.kubeconfig}",
            f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake",
            # KWOK's own pod stages, except that preflight Job pods stay Running: their
            # commands run on the host (localstack.jobs), which writes how they ended.
            f"--config={KWOK_STAGES}",
            f"--cidr={cfg.pod_cidr}",
            "--node-ip=10.250.0.1",
            "--node-lease-duration-seconds=40",
        ],
    )

    for node in cfg.nodes:
        status, data = _admin_request(
            cp, "POST", "/api/v1/nodes", json.dumps(node.manifest()).encode()
        )
        if status not in (201, 409):
            raise StackError(f"creating node {node.name} failed: HTTP {status} {data!r:.200}")
    names = {n.name for n in cfg.nodes}
    sup.wait_until(
        "kwok", lambda: names <= _ready_nodes(cp), cfg.start_timeout, "making nodes Ready"
    )
    # The default ServiceAccount is how we know the controller-manager is working.
    sup.wait_until(
        "kube-controller-manager",
        lambda: (
            _admin_request(cp, "GET", "/api/v1/namespaces/default/serviceaccounts/default")[0]
            == 200
        ),
        cfg.start_timeout,
        "creating ServiceAccounts",
    )
    if not sup.alive("kube-scheduler"):
        raise StackError("kube-scheduler exited while starting (see its log)")


def _ready_nodes(cp: ControlPlane) -> set[str]:
    status, data = _admin_request(cp, "GET", "/api/v1/nodes")
    if status != 200:
        return set()
    ready = set()
    for item in data["items"]:
        for cond in item.get("status", {}).get("conditions", []):
            if cond["type"] == "Ready" and cond["status"] == "True":
                ready.add(item["metadata"]["name"])
    return ready


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return int(resp.status) == 200


def attach(state_dir: Path) -> ControlPlane | None:
    """The control plane recorded in `state_dir`, if one is recorded there (alive or not)."""
    sup = Supervisor(state_dir)
    saved = state_dir / "config.json"
    if not sup.pids() or not saved.exists():
        return None
    raw = json.loads(saved.read_text())
    cfg = ControlPlaneConfig(
        state_dir=state_dir,
        api_port=raw["api_port"],
        etcd_port=raw["etcd_port"],
        etcd_peer_port=raw["etcd_peer_port"],
    )
    return ControlPlane(cfg, sup)
