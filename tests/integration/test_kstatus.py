"""QuantizedModel's status as sigs.k8s.io/cli-utils' kstatus reads it (what Flux's health checks
and kstatus-based waits use; `hack/kstatus`, cli-utils v0.37.2): InProgress while a rollout
moves (or is paused), Current when it is done and every tier Ready, Failed when rolled back or
Degraded. Checked here on every status the operator's code can write; on live objects of the local stack
in each phase in test_gitops_walk.py."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from localstack.controlplane import tool_path

from .statuses import operator_statuses


def kstatus(objs: list[dict[str, Any]]) -> list[dict[str, str]]:
    """kstatus' result for each object: {"status": InProgress|Current|Failed|..., "message"}."""
    proc = subprocess.run(
        [tool_path("kstatus", "KSTATUS")], input=json.dumps(objs), capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout))


def expected_kstatus(status: dict[str, Any]) -> str:
    """docs/gitops.md's table."""
    conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
    if status.get("phase") in ("RolledBack", "Failed") or conditions.get("Degraded") == "True":
        return "Failed"
    if status.get("phase") == "Succeeded" and conditions.get("Ready") == "True":
        return "Current"
    return "InProgress"


def test_every_status_the_operator_writes() -> None:
    models = operator_statuses()
    results = kstatus(list(models.values()))
    tally: dict[str, int] = {}
    for (case, obj), got in zip(models.items(), results, strict=True):
        assert "error" not in got, (case, got)
        assert got["status"] == expected_kstatus(obj["status"]), (case, got, obj["status"])
        tally[got["status"]] = tally.get(got["status"], 0) + 1
    assert set(tally) == {"InProgress", "Current", "Failed"}
    print(f"kstatus of {len(models)} operator statuses: {tally}")


def test_a_generation_not_yet_observed_is_in_progress() -> None:
    (done,) = [o for k, o in operator_statuses().items() if k.startswith("Succeeded") and
               k.endswith("tiers ready, analysis pass")]  # fmt: skip
    edited = {**done, "metadata": {**done["metadata"], "generation": 3}}
    assert [r["status"] for r in kstatus([done, edited])] == ["Current", "InProgress"]
