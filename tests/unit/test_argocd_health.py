"""The Argo CD health check (charts/quantrollout/argocd/health.lua), run with lupa against
QuantizedModel status fixtures, and the argocd-cm snippet that embeds it.

Argo CD embeds gopher-lua (Lua 5.1), so every case runs on Lua 5.1 and on Lua 5.4.
Set UPDATE_GOLDEN=1 to regenerate argocd-cm-snippet.yaml from health.lua."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

ARGOCD_DIR = Path(__file__).resolve().parents[2] / "charts" / "quantrollout" / "argocd"
HEALTH_LUA = ARGOCD_DIR / "health.lua"
SNIPPET = ARGOCD_DIR / "argocd-cm-snippet.yaml"
KEY = "resource.customizations.health.quantrollout.io_QuantizedModel"
RUNTIMES = ("lua51", "lua54")
T = "2026-11-23T10:00:00Z"


def render_snippet(lua: str) -> str:
    """The argocd-cm data fragment that embeds `lua` verbatim as a YAML literal block."""
    body = "".join(f"    {line}" if line.strip() else "\n" for line in lua.splitlines(True))
    return (
        "# The Argo CD health check for QuantizedModel, for the argocd-cm ConfigMap (README.md).\n"
        "# Generated from health.lua: edit health.lua, then run\n"
        "#   UPDATE_GOLDEN=1 pytest tests/unit/test_argocd_health.py\n"
        "data:\n"
        f"  {KEY}: |\n"
        f"{body}"
    )


def run_health(obj: dict[str, Any], runtime: str = "lua51") -> tuple[str, str]:
    """Runs health.lua the way Argo CD does (the object as the global `obj`); (status, message)."""
    lupa_runtime = importlib.import_module(f"lupa.{runtime}")
    lua = lupa_runtime.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    hs = lua.execute(HEALTH_LUA.read_text())
    return str(hs.status), str(hs.message)


def cond(ctype: str, status: bool, reason: str, message: str = "") -> dict[str, Any]:
    """A kstatus condition as the operator writes it."""
    return {
        "type": ctype,
        "status": "True" if status else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": T,
        "observedGeneration": 2,
    }


TIERS = [
    {"name": "fp16", "role": "baseline", "replicas": 2, "readyReplicas": 2, "ready": True},
    {"name": "int4-awq", "role": "target", "replicas": 2, "readyReplicas": 2, "ready": True},
]
SUMMARY = "fp16 2/2 ready, int4-awq 2/2 ready"
HEALTHY_CONDITIONS = [
    cond("Ready", True, "TiersReady", SUMMARY),
    cond("Progressing", True, "RolloutProgressing", "stage ab: 10% live, 0% mirrored"),
    cond("Degraded", False, "TiersHealthy", SUMMARY),
]
PASS = {
    "at": T,
    "verdict": "Pass",
    "results": [{"rule": "latency-p99", "value": 0.183, "threshold": 0.25, "verdict": "Pass"}],
}


def model(status: dict[str, Any] | None, generation: int = 2) -> dict[str, Any]:
    """A QuantizedModel as Argo CD sees it (camelCase), with `status` unless None."""
    obj: dict[str, Any] = {
        "apiVersion": "quantrollout.io/v1alpha1",
        "kind": "QuantizedModel",
        "metadata": {"name": "llama3-8b", "namespace": "llm", "generation": generation},
        "spec": {"model": "meta-llama/Meta-Llama-3-8B-Instruct"},
    }
    if status is not None:
        obj["status"] = status
    return obj


def rollout(phase: str, stage: str, weight: int, mirror: int, **extra: Any) -> dict[str, Any]:
    """A status written by the operator for the current generation."""
    status: dict[str, Any] = {
        "observedGeneration": 2,
        "phase": phase,
        "stage": stage,
        "step": 0,
        "targetWeight": weight,
        "mirrorPercent": mirror,
        "stageStartedAt": T,
        "tiers": TIERS,
        "conditions": HEALTHY_CONDITIONS,
    }
    status.update(extra)
    return status


UNSCHEDULABLE = (
    "tier int4-awq cannot be scheduled: 0/4 nodes are available: 4 Insufficient nvidia.com/gpu."
)
INVALID = "spec.target.serving.tensorParallelSize: 2 needs gpu.count >= 2 (got 1)"

CASES: dict[str, tuple[dict[str, Any], str, str]] = {
    "fresh object": (model(None, generation=1), "Progressing", "waiting for the operator"),
    "stale observedGeneration": (
        model(rollout("Progressing", "ab", 10, 0, lastAnalysis=PASS), generation=3),
        "Progressing",
        "waiting for the operator",
    ),
    "status without observedGeneration": (
        model({"conditions": HEALTHY_CONDITIONS}),
        "Progressing",
        "waiting for the operator",
    ),
    "tiers coming up, no phase yet": (
        model(
            {
                "observedGeneration": 2,
                "conditions": [
                    cond("Ready", False, "TiersNotReady", "fp16 0/2 ready, int4-awq 0/2 ready"),
                    cond(
                        "Progressing", True, "TiersRollingOut", "fp16 0/2 ready, int4-awq 0/2 ready"
                    ),
                    cond("Degraded", False, "TiersHealthy", "fp16 0/2 ready, int4-awq 0/2 ready"),
                ],
            }
        ),
        "Progressing",
        "waiting for the rollout to start: fp16 0/2 ready, int4-awq 0/2 ready",
    ),
    "pending": (
        model(rollout("Pending", "shadow", 0, 0)),
        "Progressing",
        "stage shadow: 0% live, 0% mirrored; no analysis yet",
    ),
    "shadow": (
        model(rollout("Progressing", "shadow", 0, 100, lastAnalysis=PASS)),
        "Progressing",
        "stage shadow: 0% live, 100% mirrored; last analysis: Pass",
    ),
    "ab": (
        model(rollout("Progressing", "ab", 10, 0, lastAnalysis=PASS)),
        "Progressing",
        "stage ab: 10% live, 0% mirrored; last analysis: Pass",
    ),
    "gradual, one failed evaluation": (
        model(
            rollout(
                "Progressing",
                "gradual",
                50,
                0,
                step=3,
                lastAnalysis={
                    "at": T,
                    "verdict": "Fail",
                    "results": [
                        {"rule": "latency-p99", "value": 0.2, "threshold": 0.25, "verdict": "Pass"},
                        {
                            "rule": "repetition-rate",
                            "value": 0.21,
                            "threshold": 0.15,
                            "verdict": "Fail",
                        },
                    ],
                },
            )
        ),
        "Progressing",
        "stage gradual: 50% live, 0% mirrored; last analysis: Fail (repetition-rate 0.21 vs 0.15)",
    ),
    "metrics unavailable while progressing": (
        model(
            rollout(
                "Progressing",
                "gradual",
                25,
                0,
                lastAnalysis={
                    "at": T,
                    "verdict": "Inconclusive",
                    "results": [
                        {
                            "rule": "error-rate",
                            "threshold": 0.01,
                            "verdict": "Inconclusive",
                            "reason": "Prometheus unreachable: timed out after 5s",
                        },
                        {
                            "rule": "latency-p99",
                            "threshold": 0.25,
                            "verdict": "Inconclusive",
                            "reason": "no series",
                        },
                    ],
                },
            )
        ),
        "Progressing",
        "stage gradual: 25% live, 0% mirrored; last analysis: Inconclusive "
        "(error-rate: Prometheus unreachable: timed out after 5s, latency-p99: no series)",
    ),
    "paused": (
        model(rollout("Paused", "ab", 10, 0, lastAnalysis=PASS)),
        "Suspended",
        "paused at stage ab, 10% live",
    ),
    "succeeded": (
        model(
            rollout(
                "Succeeded",
                "full",
                100,
                0,
                conditions=[
                    cond("Ready", True, "TiersReady", SUMMARY),
                    cond("Progressing", False, "RolloutSucceeded", SUMMARY),
                    cond("Degraded", False, "TiersHealthy", SUMMARY),
                ],
            )
        ),
        "Healthy",
        "100% on int4-awq",
    ),
    "succeeded, a tier not ready": (
        model(
            rollout(
                "Succeeded",
                "full",
                100,
                0,
                conditions=[
                    cond("Ready", False, "TiersNotReady", "fp16 2/2 ready, int4-awq 1/2 ready")
                ],
            )
        ),
        "Progressing",
        "rollout succeeded, waiting for tiers: fp16 2/2 ready, int4-awq 1/2 ready",
    ),
    "rolled back": (
        model(
            rollout(
                "RolledBack",
                "gradual",
                0,
                0,
                rollback={
                    "at": T,
                    "reasons": [
                        "repetition-rate 0.21 > 0.15 for 2 consecutive evaluations",
                        "latency-p99 0.31 > 0.25 for 2 consecutive evaluations",
                    ],
                },
                conditions=[
                    cond("Ready", True, "TiersReady", SUMMARY),
                    cond("Progressing", False, "RolledBack", "all traffic back on the baseline"),
                    cond("Degraded", True, "RolledBack", "all traffic back on the baseline"),
                ],
            )
        ),
        "Degraded",
        "rolled back: repetition-rate 0.21 > 0.15 for 2 consecutive evaluations; "
        "latency-p99 0.31 > 0.25 for 2 consecutive evaluations",
    ),
    "invalid spec": (
        model(
            {
                "observedGeneration": 2,
                "phase": "Failed",
                "conditions": [
                    cond("Ready", False, "InvalidSpec", INVALID),
                    cond("Progressing", False, "InvalidSpec", INVALID),
                    cond("Degraded", True, "InvalidSpec", INVALID),
                ],
            }
        ),
        "Degraded",
        INVALID,
    ),
    "unschedulable tier while progressing": (
        model(
            rollout(
                "Progressing",
                "ab",
                10,
                0,
                lastAnalysis=PASS,
                conditions=[
                    cond("Ready", False, "Unschedulable", UNSCHEDULABLE),
                    cond("Progressing", False, "Unschedulable", UNSCHEDULABLE),
                    cond("Degraded", True, "Unschedulable", UNSCHEDULABLE),
                ],
            )
        ),
        "Degraded",
        UNSCHEDULABLE,
    ),
    "unknown phase": (
        model(rollout("Exploded", "ab", 10, 0)),
        "Unknown",
        "unknown phase Exploded",
    ),
}


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize(("obj", "status", "message"), CASES.values(), ids=CASES.keys())
def test_health(obj: dict[str, Any], status: str, message: str, runtime: str) -> None:
    """Each status fixture maps to the exact Argo CD health status and message."""
    assert run_health(obj, runtime) == (status, message)


def test_snippet_embeds_health_lua_verbatim() -> None:
    """argocd-cm-snippet.yaml is generated from health.lua and never drifts from it."""
    lua = HEALTH_LUA.read_text()
    expected = render_snippet(lua)
    if os.environ.get("UPDATE_GOLDEN"):
        SNIPPET.write_text(expected)
    text = SNIPPET.read_text()
    assert text == expected, (
        f"{SNIPPET.name} differs from health.lua (UPDATE_GOLDEN=1 to regenerate)"
    )
    assert yaml.safe_load(text) == {"data": {KEY: lua}}
