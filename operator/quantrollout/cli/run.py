"""`quantrollout run`: the operator process.

Without `--leader-elect` it runs Kopf at once. With it, the process first waits to hold the
Lease (`quantrollout.leader`), answering its liveness probe meanwhile, and only then starts
Kopf: a follower reads and writes nothing but the Lease. The leader renews the Lease in a thread;
if it loses it, the process exits at once (status 1, as controller-runtime does), so no tick of a
replica that is no longer the leader can write after the deadline; Kubernetes restarts it as a
follower. A leader stopped with SIGTERM finishes Kopf's shutdown and then releases the Lease, so
the next replica takes over within one retry period.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import logging
import os
import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def add_arguments(run: argparse.ArgumentParser) -> None:
    group = run.add_argument_group("leader election (for more than one replica)")
    group.add_argument(
        "--leader-elect", action="store_true",
        help="act only while holding a coordination.k8s.io Lease; other replicas wait",
    )  # fmt: skip
    group.add_argument(
        "--leader-elect-namespace", metavar="NS", default=None,
        help="namespace of the Lease (default: $POD_NAMESPACE, else the pod's own namespace)",
    )  # fmt: skip
    group.add_argument(
        "--leader-elect-lease", metavar="NAME", default="quantrollout-operator",
        help="name of the Lease (default quantrollout-operator)",
    )  # fmt: skip
    group.add_argument(
        "--leader-elect-identity", metavar="ID", default=None,
        help="this replica's name in the Lease (default: $POD_NAME, else host name; plus a random suffix)",
    )  # fmt: skip
    group.add_argument(
        "--lease-duration", type=float, default=15.0, metavar="S",
        help="a follower takes over after the leader has not renewed for this long (default 15)",
    )  # fmt: skip
    group.add_argument(
        "--renew-deadline", type=float, default=10.0, metavar="S",
        help="the leader stops if it could not renew for this long (default 10)",
    )  # fmt: skip
    group.add_argument(
        "--retry-period", type=float, default=2.0, metavar="S",
        help="how often the leader renews and followers look (default 2)",
    )  # fmt: skip


def _lease_namespace(explicit: str | None) -> str:
    if explicit:
        return explicit
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    with contextlib.suppress(OSError):
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    return "default"


def _identity(explicit: str | None) -> str:
    if explicit:
        return explicit
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


class _Healthy(http.server.BaseHTTPRequestHandler):
    path_ok = "/healthz"

    def do_GET(self) -> None:
        ok = self.path == self.path_ok
        self.send_response(200 if ok else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def _liveness_while_waiting(url: str | None) -> Iterator[None]:
    """A follower is alive: it answers the liveness URL that Kopf serves once it leads."""
    if not url:
        yield
        return
    parts = urlsplit(url)
    handler = type("Healthy", (_Healthy,), {"path_ok": parts.path or "/"})
    server = http.server.ThreadingHTTPServer(
        (parts.hostname or "0.0.0.0", parts.port or 80), handler
    )
    thread = threading.Thread(target=server.serve_forever, name="liveness", daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def _exit_lost() -> None:
    sys.stderr.flush()
    os._exit(1)


def run_operator(args: argparse.Namespace) -> int:
    import kopf  # imported here so `--help` works without touching the cluster libraries

    from quantrollout import (
        handlers,  # noqa: F401  (registers the handlers)
        metrics,
    )

    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat[args.log_format.upper()])
    # httpx logs every request with its URL at INFO (and DEBUG): the webhook's URL is a credential
    # (a Slack webhook URL is all it takes to post), so its logger never goes below WARNING.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    if args.prometheus_url:
        os.environ["QR_PROMETHEUS_URL"] = args.prometheus_url
    if args.webhook_url:
        os.environ["QR_WEBHOOK_URL"] = args.webhook_url
    if args.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, registry=metrics.REGISTRY)

    lock = None
    done = threading.Event()
    if args.leader_elect:
        from quantrollout.kube import Kube, new_api_client
        from quantrollout.leader.election import Timing
        from quantrollout.leader.lease import LeaseLock

        try:
            timing = Timing(args.lease_duration, args.renew_deadline, args.retry_period)
        except ValueError as err:
            print(f"quantrollout run: {err}", file=sys.stderr)
            return 2
        lock = LeaseLock(
            new_api_client(),
            _lease_namespace(args.leader_elect_namespace),
            args.leader_elect_lease,
            _identity(args.leader_elect_identity),
            timing,
        )
        # The client's API modules take seconds to import on a busy node: load them while
        # following, not after winning the Lease.
        Kube(new_api_client())
        with _liveness_while_waiting(args.liveness):
            try:
                lock.acquire(done)
            except KeyboardInterrupt:
                return 130
        threading.Thread(
            target=lock.hold, args=(done, _exit_lost), name="lease", daemon=True
        ).start()
    metrics.LEADER.set(1)
    log.info("starting Kopf")
    try:
        kopf.run(
            standalone=args.standalone,
            clusterwide=args.all_namespaces,
            namespaces=list(args.namespace),
            liveness_endpoint=args.liveness,
        )
    finally:
        done.set()
        if lock is not None:
            lock.release()
    return 0
