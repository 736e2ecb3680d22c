"""`quantrollout`: the operator's command line.

`quantrollout run` starts the operator with `kopf run` semantics: it registers the handlers in
`quantrollout.handlers` and watches QuantizedModels in the given namespaces (or all of them).
`quantrollout router` serves the built-in router (`quantrollout.router`), which watches the
QuantizedModels' `status.traffic` and proxies OpenAI-compatible requests to their tiers.
`quantrollout preflight artifact` checks a quantized checkpoint before its tier serves
(`quantrollout.cli.preflight`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from quantrollout import __version__, defaults
from quantrollout.cli import preflight
from quantrollout.cli.run import add_arguments as add_run_arguments
from quantrollout.defaults import ROUTER_CALIBRATION_PERCENT, ROUTER_MAX_BODY_BYTES

if TYPE_CHECKING:
    from quantrollout.router.settings import RouterSettings

MAX_BODY_ENV = "QR_ROUTER_MAX_BODY_BYTES"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quantrollout",
        description="Roll quantized LLM variants out beside their FP16 baseline, with automatic rollback.",
    )
    parser.add_argument("--version", action="version", version=f"quantrollout {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the operator (kopf run semantics)")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch this namespace (repeatable; globs allowed)",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    run.add_argument(
        "--standalone", action="store_true", help="do not pause for other operators (no peering)"
    )
    run.add_argument(
        "--liveness",
        metavar="URL",
        default=None,
        help="serve a liveness probe, e.g. http://0.0.0.0:8080/healthz",
    )
    run.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    run.add_argument(
        "--metrics-port", type=int, default=None, metavar="PORT",
        help="serve the operator's Prometheus metrics on this port (e.g. 9090)",
    )  # fmt: skip
    run.add_argument(
        "--webhook-url", default=None, metavar="URL",
        help="post Slack-compatible notifications on promotion, completion and rollback "
        "(default: $QR_WEBHOOK_URL)",
    )  # fmt: skip
    run.add_argument(
        "--prometheus-url", default=None, metavar="URL",
        help="Prometheus for models that name none (default: $QR_PROMETHEUS_URL, "
        f"else {defaults.PROMETHEUS_URL})",
    )  # fmt: skip
    run.add_argument(
        "--log-format", choices=["plain", "full", "json"], default="full",
        help="json: one structured object per line, for log pipelines",
    )  # fmt: skip
    add_run_arguments(run)
    _add_router(sub)
    preflight.add_parser(sub)
    return parser


def _add_router(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    router = sub.add_parser(
        "router",
        help="run the built-in router: an OpenAI-compatible proxy in front of the tiers",
        description="Split, mirror and inspect OpenAI-compatible requests between each "
        "QuantizedModel's tiers, as its status.traffic says; serve /metrics for the analysis.",
    )
    scope = router.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", metavar="NS", default=None,
        help="route the QuantizedModels of this namespace only",
    )  # fmt: skip
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="route every namespace (the default)"
    )
    router.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    router.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    router.add_argument(
        "--kubeconfig", metavar="PATH", default=None,
        help="kubeconfig to watch with (default: in-cluster, else KUBECONFIG or ~/.kube/config)",
    )  # fmt: skip
    router.add_argument(
        "--upstream", action="append", default=[], type=_upstream,
        metavar="NAMESPACE/SERVICE=URL",
        help="send a tier's traffic to URL instead of http://SERVICE.NAMESPACE.svc:PORT "
        "(repeatable; for local runs and tests)",
    )  # fmt: skip
    router.add_argument(
        "--max-body-bytes", type=_positive, default=None, metavar="N",
        help="larger request bodies get 413 (default: $QR_ROUTER_MAX_BODY_BYTES, else "
        f"{ROUTER_MAX_BODY_BYTES}, 32 MiB: room for base64 images and audio uploads)",
    )  # fmt: skip
    router.add_argument(
        "--calibration-percent", type=_percent, default=None, metavar="P",
        help="share of mirrored requests the baseline answers twice, to measure its agreement "
        f"with itself, the yardstick of shadow-agreement (default {ROUTER_CALIBRATION_PERCENT})",
    )  # fmt: skip
    router.add_argument(
        "--connect-timeout", type=float, default=None, metavar="S",
        help="seconds to connect to a tier (default 3)",
    )  # fmt: skip
    router.add_argument(
        "--read-timeout", type=float, default=None, metavar="S",
        help="seconds a tier may stay silent mid-answer; bounds a whole non-streamed answer "
        "(default 300)",
    )  # fmt: skip
    router.add_argument(
        "--max-shadow-inflight", type=int, default=None, metavar="N",
        help="mirrored calls in flight at once; more are dropped and counted (default 256)",
    )  # fmt: skip
    router.add_argument(
        "--workers", type=_workers, default=None, metavar="N|auto",
        help="router processes sharing the port (default 1; auto: one per core of the CPU "
        "limit)",
    )  # fmt: skip
    router.add_argument(
        "--max-inflight", type=int, default=None, metavar="N",
        help="completions one process serves at once; more get 503 + Retry-After "
        "(default 1024)",
    )  # fmt: skip
    router.add_argument(
        "--max-loop-lag", type=float, default=None, metavar="S",
        help="new completions get 503 + Retry-After while a process's event loop runs this "
        "many seconds late (default 0.25)",
    )  # fmt: skip
    router.add_argument("--access-log", action="store_true", help="log every request")
    router.add_argument("-v", "--verbose", action="store_true", help="log at debug level")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of bytes, got {text!r}")
    return value


def _percent(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"expected a percentage from 0 to 100, got {text!r}")
    return value


def _workers(text: str) -> int:
    if text == "auto":
        from quantrollout.router.workers import cpu_limit

        return cpu_limit() or 1
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1 or auto, got {text!r}")
    return int(text)


def _upstream(text: str) -> tuple[tuple[str, str], str]:
    from quantrollout.router.routes import parse_override

    try:
        return parse_override(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return _run(args)
    if args.command == "router":
        return _router(args)
    if args.command == "preflight":
        return preflight.run(args)
    return 2  # unreachable: argparse requires a known command


def _run(args: argparse.Namespace) -> int:
    from quantrollout.cli.run import run_operator

    return run_operator(args)


def router_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> RouterSettings:
    """The router's settings from its options; an option not given falls back to its
    environment variable, if any, then to the default (ArgumentTypeError when one is bad)."""
    from quantrollout.router.settings import RouterSettings

    max_body = args.max_body_bytes
    if max_body is None and environ.get(MAX_BODY_ENV):
        try:
            max_body = _positive(environ[MAX_BODY_ENV])
        except argparse.ArgumentTypeError as err:
            raise argparse.ArgumentTypeError(f"${MAX_BODY_ENV}: {err}") from None
    knobs = {
        "max_body_bytes": max_body,
        "calibration_percent": args.calibration_percent,
        "connect_timeout": args.connect_timeout,
        "read_timeout": args.read_timeout,
        "max_shadow_inflight": args.max_shadow_inflight,
        "max_inflight": args.max_inflight,
        "max_loop_lag": args.max_loop_lag,
    }
    return RouterSettings(
        upstreams=dict(args.upstream), **{k: v for k, v in knobs.items() if v is not None}
    )


def _router(args: argparse.Namespace) -> int:
    import logging

    from quantrollout import defaults
    from quantrollout.router.kube_source import KubeConfigSource, KubeEndpoint
    from quantrollout.router.workers import Supervisor, serve

    level = logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # one line per API request (the watch) says nothing the router does not
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        settings = router_settings(args, os.environ)
    except argparse.ArgumentTypeError as err:
        print(f"quantrollout router: {err}", file=sys.stderr)
        return 2
    source = KubeConfigSource(KubeEndpoint.load(args.kubeconfig), namespace=args.namespace)
    serve(
        Supervisor(
            source, args.workers or defaults.ROUTER_WORKERS, args.host, args.port, settings,
            "debug" if args.verbose else "info", args.access_log,
        )
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
