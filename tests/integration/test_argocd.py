"""The Argo CD health check and resource actions of QuantizedModel, run by Argo CD's own engine:
`hack/argocd-lua` runs them with Argo CD v3.5.7's util/lua (copied verbatim and checked against
the release in the Go module cache), from the argocd-cm keys exactly as a user installs them
(`charts/quantrollout/argocd/argocd-cm-snippet.yaml`, no useOpenLibs). Statuses come from hand
fixtures with exact messages and from the operator's own status code in every phase; actions are
checked against the phase table the operator enforces and against the kubectl plugin's patches.

Set UPDATE_GOLDEN=1 to regenerate argocd-cm-snippet.yaml from the .lua files."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from localstack.controlplane import tool_path
from quantrollout.cli.plugin_render import action_patch, pause_patch
from quantrollout.rollout.actions import ACTIONS, ONE_SHOT, PHASES, offered

from .statuses import SPEC, T, model, operator_statuses

ARGOCD_DIR = Path(__file__).resolve().parents[2] / "charts" / "quantrollout" / "argocd"
HEALTH_LUA = ARGOCD_DIR / "health.lua"
ACTIONS_DIR = ARGOCD_DIR / "actions"
SNIPPET = ARGOCD_DIR / "argocd-cm-snippet.yaml"
GROUP_KIND = "quantrollout.io_QuantizedModel"
HEALTH_KEY = f"resource.customizations.health.{GROUP_KIND}"
ACTIONS_KEY = f"resource.customizations.actions.{GROUP_KIND}"
OPEN_LIBS_KEY = f"resource.customizations.useOpenLibs.{GROUP_KIND}"
HEALTH_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def _indent(text: str, by: str) -> str:
    return "".join(f"{by}{line}" if line.strip() else "\n" for line in text.splitlines(True))


def actions_value() -> str:
    """The value of the actions key: Argo CD's ResourceActions as YAML, scripts verbatim."""
    out = "discovery.lua: |\n" + _indent((ACTIONS_DIR / "discovery.lua").read_text(), "  ")
    out += "definitions:\n"
    for name in ACTIONS:
        out += f"  - name: {name}\n    action.lua: |\n"
        out += _indent((ACTIONS_DIR / name / "action.lua").read_text(), "      ")
    return out


def render_snippet() -> str:
    """The argocd-cm data fragment: the health script and the actions, verbatim."""
    return (
        "# The Argo CD health check and resource actions for QuantizedModel, for the argocd-cm\n"
        "# ConfigMap (docs/gitops.md). Generated from health.lua and actions/: edit those, then run\n"
        "#   UPDATE_GOLDEN=1 pytest tests/integration/test_argocd.py -k snippet\n"
        "data:\n"
        f"  {HEALTH_KEY}: |\n{_indent(HEALTH_LUA.read_text(), '    ')}"
        f"  {ACTIONS_KEY}: |\n{_indent(actions_value(), '    ')}"
    )


def snippet_data() -> dict[str, str]:
    """argocd-cm's data as a user has it after installing the snippet."""
    return dict(yaml.safe_load(SNIPPET.read_text())["data"])


@pytest.fixture(scope="module")
def argocd_lua() -> str:
    return tool_path("argocd-lua", "ARGOCD_LUA")


def argocd(
    binary: str, cases: list[dict[str, Any]], data: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Runs `cases` (op health | actions | action) through Argo CD's engine; its answers."""
    request = {"configMap": {"data": snippet_data() if data is None else data}, "cases": cases}
    proc = subprocess.run(
        [binary, "run"], input=json.dumps(request), capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    answers = json.loads(proc.stdout)
    assert [a["id"] for a in answers] == [c["id"] for c in cases]
    return list(answers)


def health_of(binary: str, objs: dict[str, dict[str, Any]], **kw: Any) -> dict[str, Any]:
    cases = [{"id": k, "op": "health", "object": o} for k, o in objs.items()]
    return {a["id"]: a for a in argocd(binary, cases, **kw)}


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
        "unknown phase Exploded (a newer operator than this health check?)",
    ),
}


def test_the_copy_of_argocd_util_lua_matches_the_release() -> None:
    """hack/argocd-lua's copy of Argo CD's engine setup is still the pinned release's code."""
    src = tool_path("argocd-src", "ARGOCD_SRC")
    proc = subprocess.run(
        [tool_path("argocd-lua", "ARGOCD_LUA"), "verify-upstream", src],
        cwd=Path(__file__).resolve().parents[2] / "hack" / "argocd-lua",
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_snippet_embeds_the_scripts_verbatim() -> None:
    """argocd-cm-snippet.yaml is generated from the .lua files and never drifts from them."""
    expected = render_snippet()
    if os.environ.get("UPDATE_GOLDEN"):
        SNIPPET.write_text(expected)
    assert SNIPPET.read_text() == expected, "argocd-cm-snippet.yaml differs (UPDATE_GOLDEN=1)"
    data = snippet_data()
    assert set(data) == {HEALTH_KEY, ACTIONS_KEY}  # no useOpenLibs: the default engine
    assert data[HEALTH_KEY] == HEALTH_LUA.read_text()
    parsed = yaml.safe_load(data[ACTIONS_KEY])
    assert parsed["discovery.lua"] == (ACTIONS_DIR / "discovery.lua").read_text()
    assert [d["name"] for d in parsed["definitions"]] == list(ACTIONS)


@pytest.mark.parametrize("open_libs", [False, True], ids=["default", "useOpenLibs"])
def test_health_messages(argocd_lua: str, open_libs: bool) -> None:
    """Each fixture gets its exact health and message, with Argo CD's default engine (no string
    library) and with useOpenLibs set, never a Lua error."""
    data = snippet_data()
    if open_libs:
        data[OPEN_LIBS_KEY] = "true"
    answers = health_of(argocd_lua, {k: v[0] for k, v in CASES.items()}, data=data)
    for case, (_, status, message) in CASES.items():
        got = answers[case]
        assert "error" not in got, (case, got)
        assert (got["status"], got["message"]) == (status, message), case


# --- every status the operator writes ------------------------------------------------------------


def expected_health(status: dict[str, Any]) -> str:
    """The health each status must map to (the table in docs/gitops.md)."""
    conditions = {c["type"]: c for c in status.get("conditions") or []}
    phase = status.get("phase")
    if phase in ("RolledBack", "Failed") or conditions.get("Degraded", {}).get("status") == "True":
        return "Degraded"
    if phase == "Paused":
        return "Suspended"
    if phase == "Succeeded" and conditions["Ready"]["status"] == "True":
        return "Healthy"
    return "Progressing"


def test_every_status_the_operator_writes(argocd_lua: str) -> None:
    """Every phase x step x tier situation x verdict the operator's status code can produce
    gets the health of the docs' table, a message that says why, and never a Lua error."""
    models = operator_statuses()
    answers = health_of(argocd_lua, models)
    for case, obj in models.items():
        got, status = answers[case], obj["status"]
        assert "error" not in got, (case, got)
        assert got["status"] == expected_health(status), (case, got, status)
        assert got["message"], case
        if status.get("phase") == "RolledBack":
            assert "repetition-rate 0.21 > 0.15" in got["message"], case
        elif got["status"] == "Degraded":
            degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
            assert got["message"] == degraded["message"], case
    phases = {str(o["status"].get("phase")) for o in models.values()}
    assert phases == {
        "None",
        "Pending",
        "Progressing",
        "Paused",
        "Succeeded",
        "RolledBack",
        "Failed",
    }
    print(f"{len(models)} operator statuses under Argo CD's engine")


MALFORMED = {
    "phase from the future": {"observedGeneration": 2, "phase": "Canarying"},
    "phase not a string": {"observedGeneration": 2, "phase": 7},
    "conditions not a list": {"observedGeneration": 2, "phase": "Succeeded", "conditions": "Ready"},
    "condition not an object": {"observedGeneration": 2, "phase": "Progressing", "conditions": [1]},
    "weight a string": {"observedGeneration": 2, "phase": "Paused", "targetWeight": "ten"},
    "results not a list": {"observedGeneration": 2, "phase": "Progressing",
                           "lastAnalysis": {"verdict": "Fail", "results": {"a": 1}}},
    "rollback a string": {"observedGeneration": 2, "phase": "RolledBack", "rollback": "oops"},
    "observedGeneration a string": {"observedGeneration": "2", "phase": "Succeeded"},
    "status a string": "broken",
}  # fmt: skip


def test_a_status_it_does_not_know_is_unknown_with_a_reason(argocd_lua: str) -> None:
    """Bad input: statuses no operator writes give a health with a readable message (Unknown
    for what it cannot read), never a Lua error."""
    objs = {k: {**model(None), "status": v} for k, v in MALFORMED.items()}
    answers = health_of(argocd_lua, objs)
    for case, got in answers.items():
        assert "error" not in got, (case, got)
        assert got["status"] in HEALTH_STATUSES, (case, got)
        assert got["message"], (case, got)
    assert answers["phase from the future"]["status"] == "Unknown"
    assert answers["phase from the future"]["message"].startswith("unknown phase Canarying")
    assert answers["rollback a string"] == {
        "id": "rollback a string", "status": "Unknown",
        "message": answers["rollback a string"]["message"],
    }  # fmt: skip
    assert "cannot read the QuantizedModel status" in answers["rollback a string"]["message"]


def test_the_old_script_fails_under_argo_cds_engine(argocd_lua: str) -> None:
    """The check that this test is the real engine: string.format, which the health script used
    to call, is a Lua error under Argo CD's default libraries and works with useOpenLibs."""
    script = 'return {status = "Healthy", message = string.format("%g", 0.5)}'
    obj = model({"observedGeneration": 2})
    default = health_of(argocd_lua, {"x": obj}, data={HEALTH_KEY: script})["x"]
    assert default["status"] == "Unknown", default
    assert "attempt to index a non-table object(nil) with key 'format'" in default["error"]
    opened = health_of(argocd_lua, {"x": obj}, data={HEALTH_KEY: script, OPEN_LIBS_KEY: "true"})
    assert opened["x"]["message"] == "0.5"


# --- resource actions ----------------------------------------------------------------------------


def test_actions_offered_in_each_phase_follow_the_operators_table(argocd_lua: str) -> None:
    """discovery.lua offers exactly the actions the operator acts on (rollout/actions.py), in
    every phase, paused or not."""
    cases, expected = [], {}
    for phase in PHASES:
        for paused in (False, True):
            obj = model({"observedGeneration": 2, "phase": phase} if phase else None)
            obj["spec"] = {**SPEC, "rollout": {"paused": paused}}
            cid = f"{phase} paused={paused}"
            cases.append({"id": cid, "op": "actions", "object": obj})
            expected[cid] = offered(phase, paused)
    covered = 0
    for answer in argocd(argocd_lua, cases):
        assert "error" not in answer, answer
        got = {a["name"]: not a.get("disabled", False) for a in answer["actions"]}
        assert got == expected[answer["id"]], answer["id"]
        assert all(a["displayName"] for a in answer["actions"])
        covered += 1
    print(f"action discovery: {covered} phase x paused cases, {len(ACTIONS)} actions each")


@pytest.mark.parametrize("rollout", [None, {}, {"paused": True}, {"stages": [{"name": "full"}]}])
@pytest.mark.parametrize("annotations", [None, {"team": "llm"}])
def test_each_action_patches_what_the_kubectl_plugin_patches(
    argocd_lua: str, rollout: dict[str, Any] | None, annotations: dict[str, str] | None
) -> None:
    """Argo CD's merge patch for each action is exactly the plugin's patch, whatever the
    object already holds (no annotations, no spec.rollout, ...)."""
    obj = model({"observedGeneration": 2, "phase": "Progressing"})
    obj["spec"] = {k: v for k, v in SPEC.items() if k != "rollout"}
    if rollout is not None:
        obj["spec"]["rollout"] = rollout
    if annotations is not None:
        obj["metadata"]["annotations"] = annotations
    cases = [{"id": a, "op": "action", "action": a, "object": obj} for a in ACTIONS]
    for answer in argocd(argocd_lua, cases):
        name = answer["id"]
        assert "error" not in answer, answer
        assert not answer.get("creates")
        want = action_patch(name) if name in ONE_SHOT else pause_patch(name == "pause")
        if name == "pause" and (rollout or {}).get("paused") is True:
            want = {}  # nothing to change: Argo CD sends no patch
        assert [json.loads(json.dumps(p)) for p in answer["patches"]] == [want], name
