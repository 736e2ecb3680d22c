"""The tests' kubectl: built from the control plane's own Kubernetes module (hack/tools.sh
kubectl), never whatever kubectl the machine has, run against the local stack as its admin."""

from __future__ import annotations

import functools
import subprocess
from typing import Any

from localstack.controlplane import tool_path


@functools.cache
def kubectl_path() -> str:
    return tool_path("kubectl", "KUBECTL")


def kubectl(
    stack: Any, *args: str, check: bool = True, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Runs kubectl with the stack's admin kubeconfig; fails the test on a non-zero exit unless
    `check` is False."""
    proc = subprocess.run(
        [kubectl_path(), f"--kubeconfig={stack.controlplane.kubeconfig}", *args],
        input=stdin, capture_output=True, text=True, check=False, timeout=timeout,
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc
