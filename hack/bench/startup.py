#!/usr/bin/env python3
"""Foundation figures: cold build of the local control plane, warm start to "API ready and every
fake GPU node Ready", and (optionally) the wall time of `make test`.

usage: hack/bench/startup.py [--runs N] [--cold] [--make-test]

--cold builds everything from an empty Go module cache, build cache and binary cache (in a
temporary directory, so the real caches are untouched): that is the first run on a new machine,
downloads included. It takes several minutes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from localstack import controlplane
from localstack.procs import free_port

REPO = Path(__file__).resolve().parents[2]


def cold_build() -> float:
    with tempfile.TemporaryDirectory(prefix="qr-cold-") as tmp:
        env = {
            **os.environ,
            "QR_CACHE": f"{tmp}/cache",
            "GOMODCACHE": f"{tmp}/gomod",
            "GOCACHE": f"{tmp}/gobuild",
        }
        t0 = time.monotonic()
        for tool in ("kube", "kwok"):
            subprocess.run(
                [str(REPO / "hack" / "tools.sh"), tool],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
        elapsed = time.monotonic() - t0
        subprocess.run(["chmod", "-R", "u+w", tmp], check=False)  # the module cache is read-only
        return elapsed


def warm_starts(runs: int) -> list[float]:
    binaries = controlplane.Binaries.ensure()
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="qr-warm-") as tmp:
            cfg = controlplane.ControlPlaneConfig(
                Path(tmp), api_port=free_port(), etcd_port=free_port(), etcd_peer_port=free_port()
            )
            t0 = time.monotonic()
            cp = controlplane.up(cfg, binaries)
            times.append(time.monotonic() - t0)
            cp.down()
    return times


def make_test() -> float:
    t0 = time.monotonic()
    subprocess.run(["make", "-C", str(REPO), "test"], check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - t0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cold", action="store_true", help="also time a cold build (minutes)")
    parser.add_argument("--make-test", action="store_true", help="also time `make test` (warm)")
    args = parser.parse_args()

    print(f"machine: {os.cpu_count()} cores")
    if args.cold:
        print(f"cold build (empty Go caches, downloads included): {cold_build():.0f} s")
    times = warm_starts(args.runs)
    print(
        f"warm start to API ready + {len(controlplane.DEFAULT_NODES)} GPU nodes Ready, {args.runs} runs: "
        f"median {statistics.median(times):.1f} s, min {min(times):.1f} s, max {max(times):.1f} s (goal < 30 s)"
    )
    if args.make_test:
        print(f"make test (warm machine): {make_test():.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
