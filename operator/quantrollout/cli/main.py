"""`quantrollout`: the operator's command line.

`quantrollout run` starts the operator with `kopf run` semantics: it registers the handlers in
`quantrollout.handlers` and watches QuantizedModels in the given namespaces (or all of them).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from quantrollout import __version__


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
        "--log-format", choices=["plain", "full", "json"], default="full",
        help="json: one structured object per line, for log pipelines",
    )  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return _run(args)
    return 2  # unreachable: argparse requires a known command


def _run(args: argparse.Namespace) -> int:
    import kopf  # imported here so `--help` works without touching the cluster libraries

    from quantrollout import handlers  # noqa: F401  (registers the handlers)

    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat[args.log_format.upper()])
    namespaces: list[str] = args.namespace
    kopf.run(
        standalone=args.standalone,
        clusterwide=args.all_namespaces,
        namespaces=namespaces,
        liveness_endpoint=args.liveness,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
