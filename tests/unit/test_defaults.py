"""quantrollout.defaults is the one home of the rollout's defaults: the CRD (its schema defaults
and field descriptions), the steps the operator walks, the rules it runs, the chart and the
docs all say what that module says."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from quantrollout import __version__, defaults
from quantrollout.analysis.rules import DEFAULT_RULES, Scope, default_window, queries
from quantrollout.api.crd import build_crd
from quantrollout.api.durations import parse_duration
from quantrollout.api.spec import Analysis, QuantizedModelSpec
from quantrollout.rollout.steps import Step, steps_for

REPO = Path(__file__).resolve().parents[2]
SCOPE = Scope(namespace="ns", model="m", baseline="fp16", target="int4-awq")


def spec_without_rollout(rollout: dict[str, Any] | None = None) -> QuantizedModelSpec:
    obj = yaml.safe_load((REPO / "examples" / "llama3-8b-awq.yaml").read_text())
    obj["spec"].pop("rollout")
    if rollout is not None:
        obj["spec"]["rollout"] = rollout
    return QuantizedModelSpec.model_validate(obj["spec"])


def schema(*path: str) -> dict[str, Any]:
    node: dict[str, Any] = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for name in path:
        node = node["items"] if name == "[]" else node["properties"][name]
    return node


def test_a_model_without_stages_walks_the_default_stages() -> None:
    sticky = defaults.AB_STICKY_BY.removeprefix("header:")
    gradual = parse_duration(defaults.GRADUAL_STEP_DURATION)
    assert steps_for(spec_without_rollout()) == (
        Step("shadow", 0, defaults.SHADOW_MIRROR_PERCENT, parse_duration(defaults.SHADOW_DURATION)),
        Step("ab", defaults.AB_WEIGHT, 0, parse_duration(defaults.AB_DURATION), sticky),
        *(Step("gradual", w, 0, gradual) for w in defaults.GRADUAL_WEIGHTS),
        Step("full", 100, 0, None),
    )


def test_a_stage_that_leaves_fields_out_gets_the_defaults() -> None:
    bare = [{"name": name} for name in ("shadow", "ab", "gradual", "full")]
    spec = spec_without_rollout({"stages": bare})
    assert steps_for(spec) == steps_for(spec_without_rollout())


def test_the_crd_defaults_the_analysis_as_defaults_says() -> None:
    analysis = schema("spec", "rollout", "analysis")["properties"]
    assert analysis["interval"]["default"] == defaults.ANALYSIS_INTERVAL
    assert analysis["failureLimit"]["default"] == defaults.FAILURE_LIMIT
    assert analysis["minSamples"]["default"] == defaults.MIN_SAMPLES
    assert analysis["onMetricsUnavailable"]["default"] == defaults.ON_METRICS_UNAVAILABLE
    assert analysis["metricsUnavailableGrace"]["default"] == defaults.METRICS_UNAVAILABLE_GRACE


@pytest.mark.parametrize("interval", ["30s", "1s", "2m", "10m"])
def test_the_window_description_is_the_window_the_code_uses(interval: str) -> None:
    text = schema("spec", "rollout", "analysis", "rules", "[]", "window")["description"]
    found = re.search(r"default (\d+) analysis intervals, at least (\d+)s", text)
    assert found, text
    intervals, floor = int(found[1]), int(found[2])
    described = max(intervals * parse_duration(interval), floor)
    assert parse_duration(default_window(Analysis(interval=interval))) == described


def test_the_default_rules_are_the_ones_described_and_run() -> None:
    described = schema("spec", "rollout", "analysis", "rules")["description"]
    run = {(q.rule, q.compare) for q in queries(Analysis(), SCOPE, "shadow")}
    assert run == {(name, cmp) for name, cmp, _ in defaults.RULES}
    for name, cmp, value in defaults.RULES:
        assert f"{name} {cmp} {value}" in described
    assert [r.name for r in DEFAULT_RULES] == [name for name, _, _ in defaults.RULES]


def test_stage_descriptions_name_the_defaults() -> None:
    stages = schema("spec", "rollout", "stages")
    assert f"ab {defaults.AB_WEIGHT}% {defaults.AB_DURATION}" in stages["description"]
    stage = stages["items"]["properties"]
    assert f"(default {defaults.AB_WEIGHT})" in stage["weight"]["description"]
    assert f"(default {defaults.GRADUAL_STEP_DURATION})" in stage["stepDuration"]["description"]
    assert f"default {defaults.AB_STICKY_BY}" in stage["stickyBy"]["description"]


def test_the_chart_and_the_cli_default_to_the_same_prometheus() -> None:
    values = yaml.safe_load((REPO / "charts" / "quantrollout" / "values.yaml").read_text())
    assert values["operator"]["prometheusURL"] == defaults.PROMETHEUS_URL
    url = schema("spec", "prometheus", "url")["description"]
    assert defaults.PROMETHEUS_URL in url


def test_the_docs_written_by_hand_state_the_same_defaults() -> None:
    """README and the runbook summarise some defaults in prose; they must be these."""
    readme = " ".join((REPO / "README.md").read_text().split())
    weights = "/".join(map(str, defaults.GRADUAL_WEIGHTS))
    sticky = defaults.AB_STICKY_BY.removeprefix("header:")
    assert (
        f"the stages are shadow {defaults.SHADOW_DURATION}, A/B {defaults.AB_WEIGHT}% for "
        f"{defaults.AB_DURATION} sticky by `{sticky}`, gradual {weights}% for "
        f"{defaults.GRADUAL_STEP_DURATION} each, full; the analysis runs every "
        f"{defaults.ANALYSIS_INTERVAL} with {len(defaults.RULES)} quality and latency rules"
    ) in readme
    timeout = f"`no answer within the {defaults.PROMETHEUS_TIMEOUT_S:g}s timeout`"
    runbook = " ".join((REPO / "docs" / "runbook.md").read_text().split())
    assert timeout in readme
    assert timeout in runbook
    assert f"`metricsUnavailableGrace` (default {defaults.METRICS_UNAVAILABLE_GRACE})" in runbook
    assert f"`operator.prometheusURL` | `{defaults.PROMETHEUS_URL}`" in readme


def test_the_chart_runs_the_package_version_by_default() -> None:
    """The chart's default image tag is its appVersion, which `make image` tags: the package's."""
    chart = yaml.safe_load((REPO / "charts" / "quantrollout" / "Chart.yaml").read_text())
    values = yaml.safe_load((REPO / "charts" / "quantrollout" / "values.yaml").read_text())
    assert chart["appVersion"] == __version__
    assert values["image"]["tag"] == ""
