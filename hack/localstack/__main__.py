"""`python -m localstack up|down|status|sa-kubeconfig`: the local stack from a shell
(wrapped by `hack/cluster`). Failures print one line and exit 1."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import stack
from .procs import StackError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hack/cluster", description=__doc__)
    parser.add_argument("--dir", type=Path, default=stack.DEFAULT_DIR, help="state directory")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start the control plane and Prometheus (no-op if already running)")
    sub.add_parser("down", help="stop everything and delete the cluster's data")
    sub.add_parser("status", help="say what runs, and where the kubeconfig is")
    sa = sub.add_parser("sa-kubeconfig", help="write a kubeconfig acting as a ServiceAccount")
    sa.add_argument("namespace")
    sa.add_argument("name")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except StackError as err:
        print(f"hack/cluster: {err}", file=sys.stderr)
        return 1


def _describe(s: stack.Stack) -> None:
    print(f"kube-apiserver: {s.controlplane.server}")
    print(f"kubeconfig:     {s.controlplane.kubeconfig}")
    print(f"prometheus:     {s.prometheus.url}")
    print(
        f"logs:           {s.controlplane.state_dir / 'logs'}, {s.prometheus.config.state_dir / 'logs'}"
    )
    print(f"\nexport KUBECONFIG={s.controlplane.kubeconfig}")


def _healthy(s: stack.Stack) -> bool:
    try:
        return s.controlplane.api_ready() and s.prometheus.ready()
    except OSError:
        return False


def _run(args: argparse.Namespace) -> int:
    existing = stack.attach(args.dir)
    if args.command == "up":
        if existing and _healthy(existing):
            print("already running; not starting a second one")
            _describe(existing)
            return 0
        stack.down(args.dir)  # clears a half-dead stack, if any
        s = stack.up(args.dir)
        print(
            f"control plane ready in {s.controlplane.timings['ready_s']:.1f}s "
            f"with {len(s.controlplane.config.nodes)} GPU nodes"
        )
        _describe(s)
        return 0
    if args.command == "down":
        print("stopped" if stack.down(args.dir) else "nothing was running")
        return 0
    if args.command == "status":
        if not existing:
            print("not running")
            return 1
        for part in (existing.controlplane.supervisor, existing.prometheus.supervisor):
            for name, pid in part.pids().items():
                print(f"{name:24} pid {pid:<8} {'running' if part.alive(name) else 'DEAD'}")
        _describe(existing)
        return 0 if _healthy(existing) else 1
    if not existing:
        raise StackError("the stack is not running (hack/cluster up)")
    print(existing.controlplane.service_account_kubeconfig(args.namespace, args.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
