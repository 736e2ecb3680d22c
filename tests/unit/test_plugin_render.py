"""The kubectl plugin's text: rendered from status fixtures, compared with the exact output."""

from __future__ import annotations

import copy
import datetime
from typing import Any

import pytest

from quantrollout.cli.plugin_render import (
    action_patch,
    age,
    pause_patch,
    render_action,
    render_model,
    render_pause,
    render_table,
    table,
)

NOW = datetime.datetime(2026, 11, 23, 12, 0, tzinfo=datetime.UTC)

SPEC: dict[str, Any] = {
    "model": "meta-llama/Meta-Llama-3-8B-Instruct",
    "baseline": {"artifact": "s3://models/llama3-8b-fp16", "precision": "fp16"},
    "target": {
        "name": "int4-awq",
        "artifact": "s3://models/llama3-8b-awq",
        "precision": "int4",
        "format": "awq",
    },
    "rollout": {
        "stages": [
            {"name": "shadow", "mirrorPercent": 100, "duration": "30m"},
            {"name": "ab", "weight": 10, "duration": "24h", "stickyBy": "header:x-user-id"},
            {"name": "gradual", "weights": [25, 50, 75], "stepDuration": "1h"},
            {"name": "full"},
        ],
        "analysis": {
            "rules": [
                {"name": "latency-p99", "max": "250ms"},
                {"name": "repetition-rate", "max": "15%"},
                {"name": "output-length-ratio", "min": "60%"},
            ]
        },
    },
}

TIERS = [
    {
        "name": "fp16", "role": "baseline", "deployment": "llama3-8b-fp16", "replicas": 2,
        "readyReplicas": 2, "gpus": 2, "estimatedWeightMemoryGiB": 15.0,
        "estimatedMemoryPerGPUGiB": 17.4, "ready": True,
    },
    {
        "name": "int4-awq", "role": "target", "deployment": "llama3-8b-int4-awq", "replicas": 2,
        "readyReplicas": 1, "gpus": 2, "estimatedWeightMemoryGiB": 4.2,
        "estimatedMemoryPerGPUGiB": 6.1, "ready": False, "message": "1 of 2 replicas ready",
    },
]  # fmt: skip


def model(name: str, spec: dict[str, Any], status: dict[str, Any] | None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "quantrollout.io/v1alpha1",
        "kind": "QuantizedModel",
        "metadata": {"name": name, "namespace": "llm"},
        "spec": copy.deepcopy(spec),
    }
    if status is not None:
        obj["status"] = status
    return obj


MID_AB = model(
    "llama3-8b",
    SPEC,
    {
        "observedGeneration": 1, "phase": "Progressing", "stage": "ab", "step": 1,
        "targetWeight": 10, "mirrorPercent": 0, "stageStartedAt": "2026-11-23T10:00:00Z",
        "lastAnalysis": {
            "at": "2026-11-23T11:59:30Z", "verdict": "Pass",
            "results": [
                {"rule": "latency-p99", "value": 0.183, "threshold": 0.25, "verdict": "Pass"},
                {"rule": "repetition-rate", "value": 0.04, "threshold": 0.15, "verdict": "Pass"},
                {"rule": "output-length-ratio", "value": 0.94, "threshold": 0.6, "verdict": "Pass"},
            ],
        },
        "tiers": TIERS,
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Progressing",
             "message": "ab: 10% of live traffic on int4-awq",
             "lastTransitionTime": "2026-11-23T10:00:00Z"},
        ],
        "kopf": {"progress": {}},  # Kopf's bookkeeping: ignored
    },
)  # fmt: skip

ROLLED_BACK_SPEC = {
    **SPEC,
    "rollout": {
        "stages": [
            {"name": "shadow", "duration": "10m"},
            {"name": "ab", "weight": 20, "duration": "1h30m"},
            {"name": "full"},
        ],
        "analysis": SPEC["rollout"]["analysis"],
    },
}

ROLLED_BACK = model(
    "qwen-7b",
    ROLLED_BACK_SPEC,
    {
        "phase": "RolledBack", "stage": "ab", "step": 1, "targetWeight": 0, "mirrorPercent": 0,
        "lastAnalysis": {
            "at": "2026-11-23T11:00:00Z", "verdict": "Fail",
            "results": [
                {"rule": "repetition-rate", "value": 0.21, "threshold": 0.15, "verdict": "Fail"},
                {"rule": "latency-p99", "value": 0.2, "threshold": 0.25, "verdict": "Pass"},
            ],
        },
        "rollback": {
            "at": "2026-11-23T11:00:00Z",
            "reasons": ["repetition-rate 0.21 > 0.15 for 2 consecutive evaluations"],
        },
        "tiers": TIERS,
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "RolledBack",
             "message": "all traffic back on fp16", "lastTransitionTime": "2026-11-23T11:00:00Z"},
            {"type": "Degraded", "status": "True", "reason": "RolledBack",
             "message": "repetition-rate 0.21 > 0.15", "lastTransitionTime": "2026-11-23T11:00:00Z"},
        ],
    },
)  # fmt: skip

PENDING = model(
    "pending-7b",
    {**{k: v for k, v in SPEC.items() if k != "rollout"}, "rollout": {"paused": True}},
    None,
)

INCONCLUSIVE = model(
    "mistral-7b",
    {k: v for k, v in SPEC.items() if k != "rollout"},  # default stages and rules
    {
        "phase": "Paused", "stage": "gradual", "step": 3, "targetWeight": 50, "mirrorPercent": 0,
        "stageStartedAt": "2026-11-23T11:30:00Z",
        "lastAnalysis": {
            "at": "2026-11-23T11:58:00Z", "verdict": "Inconclusive",
            "results": [
                {"rule": "error-rate", "threshold": 0.01, "verdict": "Inconclusive",
                 "reason": "12 requests, fewer than minSamples 50"},
                {"rule": "output-length-ratio", "threshold": 0.6, "verdict": "Inconclusive",
                 "reason": "no series"},
            ],
        },
    },
)  # fmt: skip


def test_mid_ab() -> None:
    assert render_model(MID_AB, NOW) == (
        "Name:       llm/llama3-8b\n"
        "Model:      meta-llama/Meta-Llama-3-8B-Instruct\n"
        "Baseline:   fp16 (s3://models/llama3-8b-fp16)\n"
        "Target:     int4-awq (int4 awq, s3://models/llama3-8b-awq)\n"
        "Phase:      Progressing\n"
        "Stage:      ab, since 2026-11-23T10:00:00Z (2h ago)\n"
        "Traffic:    live 10% on int4-awq, mirror 0%\n"
        "\n"
        "Tiers:\n"
        "  ROLE       TIER       READY   GPUS   WEIGHTS    MEMORY/GPU   STATUS\n"
        "  baseline   fp16       2/2     2      15.0 GiB   17.4 GiB     Ready\n"
        "  target     int4-awq   1/2     2      4.2 GiB    6.1 GiB      1 of 2 replicas ready\n"
        "\n"
        "Stages (step 2 of 6):\n"
        "  ├─ shadow    mirror 100% for 30m                     done\n"
        "  ├─ ab        live 10% for 24h, sticky by x-user-id   <- current\n"
        "  ├─ gradual\n"
        "  │  ├─ live 25% for 1h\n"
        "  │  ├─ live 50% for 1h\n"
        "  │  └─ live 75% for 1h\n"
        "  └─ full      live 100%\n"
        "\n"
        "Last analysis: Pass at 2026-11-23T11:59:30Z (30s ago)\n"
        "  RULE                  VALUE   THRESHOLD   VERDICT\n"
        "  latency-p99           0.183   max 0.25    Pass\n"
        "  repetition-rate       0.04    max 0.15    Pass\n"
        "  output-length-ratio   0.94    min 0.6     Pass\n"
        "\n"
        "Conditions:\n"
        "  TYPE    STATUS   REASON        MESSAGE\n"
        "  Ready   True     Progressing   ab: 10% of live traffic on int4-awq\n"
    )


def test_rolled_back_with_reasons() -> None:
    assert render_model(ROLLED_BACK, NOW) == (
        "Name:       llm/qwen-7b\n"
        "Model:      meta-llama/Meta-Llama-3-8B-Instruct\n"
        "Baseline:   fp16 (s3://models/llama3-8b-fp16)\n"
        "Target:     int4-awq (int4 awq, s3://models/llama3-8b-awq)\n"
        "Phase:      RolledBack\n"
        "Stage:      ab\n"
        "Traffic:    live 0% on int4-awq, mirror 0%\n"
        "\n"
        "Tiers:\n"
        "  ROLE       TIER       READY   GPUS   WEIGHTS    MEMORY/GPU   STATUS\n"
        "  baseline   fp16       2/2     2      15.0 GiB   17.4 GiB     Ready\n"
        "  target     int4-awq   1/2     2      4.2 GiB    6.1 GiB      1 of 2 replicas ready\n"
        "\n"
        "Stages (step 2 of 3):\n"
        "  ├─ shadow   mirror 100% for 10m                       done\n"
        "  ├─ ab       live 20% for 1h30m, sticky by x-user-id   <- rolled back from here\n"
        "  └─ full     live 100%\n"
        "\n"
        "Last analysis: Fail at 2026-11-23T11:00:00Z (1h ago)\n"
        "  RULE              VALUE   THRESHOLD   VERDICT\n"
        "  repetition-rate   0.21    max 0.15    Fail\n"
        "  latency-p99       0.2     max 0.25    Pass\n"
        "\n"
        "Rolled back at 2026-11-23T11:00:00Z (1h ago):\n"
        "  - repetition-rate 0.21 > 0.15 for 2 consecutive evaluations\n"
        "\n"
        "Conditions:\n"
        "  TYPE       STATUS   REASON       MESSAGE\n"
        "  Ready      False    RolledBack   all traffic back on fp16\n"
        "  Degraded   True     RolledBack   repetition-rate 0.21 > 0.15\n"
    )


def test_pending_without_status() -> None:
    assert render_model(PENDING, NOW) == (
        "Name:       llm/pending-7b\n"
        "Model:      meta-llama/Meta-Llama-3-8B-Instruct\n"
        "Baseline:   fp16 (s3://models/llama3-8b-fp16)\n"
        "Target:     int4-awq (int4 awq, s3://models/llama3-8b-awq)\n"
        "Phase:      Pending\n"
        "Stage:      -\n"
        "Traffic:    no traffic on the target yet\n"
        "Paused:     yes (spec.rollout.paused: true)\n"
        "\n"
        "Tiers:      (none reported yet)\n"
        "\n"
        "Stages:\n"
        "  ├─ shadow    mirror 100% for 30m\n"
        "  ├─ ab        live 10% for 24h, sticky by x-user-id\n"
        "  ├─ gradual\n"
        "  │  ├─ live 25% for 1h\n"
        "  │  ├─ live 50% for 1h\n"
        "  │  └─ live 75% for 1h\n"
        "  └─ full      live 100%\n"
        "\n"
        "Last analysis: none yet\n"
        "\n"
        "Conditions: none\n"
    )


def test_inconclusive_analysis_on_default_stages_and_rules() -> None:
    assert render_model(INCONCLUSIVE, NOW) == (
        "Name:       llm/mistral-7b\n"
        "Model:      meta-llama/Meta-Llama-3-8B-Instruct\n"
        "Baseline:   fp16 (s3://models/llama3-8b-fp16)\n"
        "Target:     int4-awq (int4 awq, s3://models/llama3-8b-awq)\n"
        "Phase:      Paused\n"
        "Stage:      gradual, since 2026-11-23T11:30:00Z (30m ago)\n"
        "Traffic:    live 50% on int4-awq, mirror 0%\n"
        "\n"
        "Tiers:      (none reported yet)\n"
        "\n"
        "Stages (step 4 of 6):\n"
        "  ├─ shadow    mirror 100% for 30m                     done\n"
        "  ├─ ab        live 10% for 24h, sticky by x-user-id   done\n"
        "  ├─ gradual\n"
        "  │  ├─ live 25% for 1h                                done\n"
        "  │  ├─ live 50% for 1h                                <- current (paused)\n"
        "  │  └─ live 75% for 1h\n"
        "  └─ full      live 100%\n"
        "\n"
        "Last analysis: Inconclusive at 2026-11-23T11:58:00Z (2m ago)\n"
        "  RULE                  VALUE   THRESHOLD   VERDICT        REASON\n"
        "  error-rate            -       max 0.01    Inconclusive   12 requests, fewer than minSamples 50\n"
        "  output-length-ratio   -       min 0.6     Inconclusive   no series\n"
        "\n"
        "Conditions: none\n"
    )


def test_table_of_models() -> None:
    text = render_table([ROLLED_BACK, MID_AB, PENDING, INCONCLUSIVE], "llm", NOW)
    assert text == (
        "NAME         MODEL                                 TARGET     STAGE     LIVE   MIRROR   PHASE         LAST ANALYSIS\n"
        "llama3-8b    meta-llama/Meta-Llama-3-8B-Instruct   int4-awq   ab        10%    0%       Progressing   Pass (30s ago)\n"
        "mistral-7b   meta-llama/Meta-Llama-3-8B-Instruct   int4-awq   gradual   50%    0%       Paused        Inconclusive (2m ago)\n"
        "pending-7b   meta-llama/Meta-Llama-3-8B-Instruct   int4-awq   -         -      -        -             -\n"
        "qwen-7b      meta-llama/Meta-Llama-3-8B-Instruct   int4-awq   ab        0%     0%       RolledBack    Fail (1h ago)\n"
    )


def test_empty_table() -> None:
    assert render_table([], "llm", NOW) == "No QuantizedModels found in namespace llm.\n"


def test_unreadable_status_degrades_the_view() -> None:
    broken = model("broken", SPEC, {"phase": "Exploded", "step": 0})
    text = render_model(broken, NOW)
    assert "Warning:    status could not be read (1 errors)\n" in text
    assert "Phase:      Pending\n" in text


def test_actions_and_pause() -> None:
    assert action_patch("promote") == {
        "metadata": {"annotations": {"quantrollout.io/action": "promote"}}
    }
    assert pause_patch(True) == {"spec": {"rollout": {"paused": True}}}
    assert render_action("llm", "llama3-8b", "abort") == (
        "quantizedmodel llm/llama3-8b: asked the operator to abort (quantrollout.io/action=abort): "
        "send all traffic back to the baseline and stop the rollout.\n"
        "The operator acts once and removes the annotation; "
        "watch it with: kubectl quantrollout get llama3-8b -n llm --watch\n"
    )
    assert render_pause("llm", "llama3-8b", True) == (
        "quantizedmodel llm/llama3-8b paused (spec.rollout.paused: true).\n"
        "A breach of the rules still rolls back while paused.\n"
        "Warning: this changes the spec. If Argo CD manages this model with self-heal, it may "
        "revert the change; set spec.rollout.paused in Git instead.\n"
    )
    assert render_pause("llm", "llama3-8b", False).startswith(
        "quantizedmodel llm/llama3-8b resumed (spec.rollout.paused: false).\nWarning: "
    )


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        ("2026-11-23T11:59:15Z", "45s"),
        ("2026-11-23T11:55:00Z", "5m"),
        ("2026-11-23T09:00:00Z", "3h"),
        ("2026-11-21T12:00:00Z", "2d"),
        ("2026-11-23T12:00:05Z", "0s"),  # a clock a little ahead
        ("not a time", ""),
        (None, ""),
    ],
)
def test_age(at: str | None, expected: str) -> None:
    assert age(at, NOW) == expected


def test_table_layout() -> None:
    assert table(["A", "LONG"], [["xyz", ""], ["1", "2"]], indent="  ") == [
        "  A     LONG",
        "  xyz",
        "  1     2",
    ]


def test_a_failed_preflight_shows_each_rule_its_value_and_bound() -> None:
    status = {
        "phase": "RolledBack", "targetWeight": 0, "mirrorPercent": 0,
        "preflight": {
            "rolloutId": "abc", "attempt": 1, "job": "llama3-8b-preflight-abc-1", "phase": "Failed",
            "finishedAt": "2026-11-23T11:58:00Z",
            "reasons": ["the gate check failed: throughput-ratio 0.8 (f), must be >= 1: breached"],
            "checks": [
                {"name": "artifact", "verdict": "Pass", "reasons": []},
                {"name": "gate", "verdict": "Fail", "reasons": ["throughput-ratio 0.8"],
                 "results": [{"rule": "throughput-ratio", "field": "f", "value": 0.8,
                              "threshold": 1.0, "bound": "min", "verdict": "Fail"}],
                 "baseline": {"requests": 64, "errors": 0, "ttftP50": 0.05, "ttftP99": 0.2,
                              "outputTokensPerSecond": 900.0},
                 "target": {"requests": 64, "errors": 0, "ttftP50": 0.04, "ttftP99": 0.3,
                            "outputTokensPerSecond": 720.0}},
            ],
        },
    }  # fmt: skip
    out = render_model(model("llama3-8b", SPEC, status), NOW)
    block = out[out.index("Preflight:") :].split("\n\n")[0].splitlines()
    assert (
        block[0]
        == "Preflight:  Failed (attempt 1, Job llama3-8b-preflight-abc-1), ended 2026-11-23T11:58:00Z (2m ago)"
    )
    assert block[1] == "  artifact: Pass"
    assert block[2] == "  gate: Fail"
    assert block[3].split() == ["RULE", "VALUE", "BOUND", "VERDICT"]
    assert block[4].split() == ["throughput-ratio", "0.8", "min", "1", "Fail"]
    assert block[6].split() == ["baseline", "64", "0", "50ms", "200ms", "-", "900.0"]
    assert (
        block[-1] == "  - the gate check failed: throughput-ratio 0.8 (f), must be >= 1: breached"
    )
