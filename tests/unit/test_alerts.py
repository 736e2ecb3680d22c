"""The alerting rules (charts/quantrollout/alerts/rules.yaml): valid for Prometheus, every alert
complete for on-call, and every alert tested both firing and silent by `promtool test rules`
(charts/quantrollout/alerts/rules_test.yaml)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ALERTS_DIR = Path(__file__).resolve().parents[2] / "charts" / "quantrollout" / "alerts"
RULES = ALERTS_DIR / "rules.yaml"
RULES_TEST = ALERTS_DIR / "rules_test.yaml"
RUNBOOK = (
    "https://github.com/quantrollout/quantrollout/blob/main/README.md#when-a-rollout-rolled-back"
)
REQUIRED = {
    "QuantizedModelRolledBack",
    "QuantizedModelRolloutStuck",
    "QuantizedModelBaselineServingAfterFull",
    "QuantizedModelLowPrecisionLatencySLO",
    "QuantizedModelAnalysisInconclusive",
}
PROMTOOL = shutil.which("promtool")
# `make unit` may run where Prometheus is not installed; `make test` installs it and sets
# QR_REQUIRE_TOOLS, so there a missing promtool fails instead of skipping the alert tests.
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None and not os.environ.get("QR_REQUIRE_TOOLS"),
    reason="promtool is not on PATH (Debian: apt-get install prometheus)",
)


def alerts() -> list[dict[str, Any]]:
    """Every alerting rule in rules.yaml."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Runs promtool in the alerts folder (rules_test.yaml names rules.yaml relative to it)."""
    assert PROMTOOL, "promtool is not on PATH (make test installs Debian's prometheus)"
    return subprocess.run(
        [PROMTOOL, *args], cwd=ALERTS_DIR, capture_output=True, text=True, timeout=120, check=False
    )


@needs_promtool
def test_promtool_check_rules() -> None:
    """Prometheus accepts the rules file."""
    result = promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_test_rules() -> None:
    """Every alert fires, and stays silent, exactly as rules_test.yaml expects."""
    result = promtool("test", "rules", RULES_TEST.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_required_alerts_are_complete() -> None:
    """Each alert has a severity, a summary, a description and the runbook link."""
    by_name = {rule["alert"]: rule for rule in alerts()}
    assert not REQUIRED - by_name.keys(), f"missing: {REQUIRED - by_name.keys()}"
    for name, rule in by_name.items():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        annotations = rule["annotations"]
        assert annotations["summary"].strip(), name
        assert annotations["description"].strip(), name
        assert annotations["runbook_url"] == RUNBOOK, name


def test_every_alert_is_tested_firing_and_silent() -> None:
    """rules_test.yaml has, for every alert, a case where it fires and one where it does not."""
    firing: set[str] = set()
    silent: set[str] = set()
    tests = yaml.safe_load(RULES_TEST.read_text())
    assert tests["rule_files"] == [RULES.name]
    for test in tests["tests"]:
        for case in test.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else silent).add(case["alertname"])
            for expected in case.get("exp_alerts") or []:
                assert expected["exp_annotations"]["runbook_url"] == RUNBOOK
                assert "severity" in expected["exp_labels"]
    names = {rule["alert"] for rule in alerts()}
    assert firing == names, f"never tested firing: {names - firing}"
    assert silent == names, f"never tested silent: {names - silent}"
