"""Mixed precision through the one pass (`spec.targets`), against the fakes of its I/O seams:
shadow mirrors to every tier, the policy is compiled from the per-class observation at the end
of shadow, A/B and gradual move each class's share onto its own tier, a class that breaches
moves alone to the next higher precision, full puts every class on its tier; a restart resumes
the same policy and weights; a hand-written policy naming an unknown tier holds traffic."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from quantrollout.analysis.class_stats import ClassObservation
from quantrollout.api.durations import parse_duration
from quantrollout.pass_.plan import ACTION_ANNOTATION
from quantrollout.rollout.policy import ShadowStats
from quantrollout.router.classify import CLASSES

from .fakes import FakeMetrics
from .test_pass import SPEC, Model

TIERS = ("fp8", "int4-awq")


def mixed_spec(**rollout: Any) -> dict[str, Any]:
    spec = copy.deepcopy(SPEC)
    del spec["target"]
    spec["targets"] = [
        {"name": "fp8", "artifact": "s3://models/llama3-8b-fp8", "precision": "fp8", "format": "fp8"},
        {"name": "int4-awq", "artifact": "s3://models/llama3-8b-awq", "precision": "int4",
         "format": "awq"},
    ]  # fmt: skip
    spec["baseline"]["serving"] = {"gpu": {"count": 2}, "tensorParallelSize": 2}
    spec["rollout"].update(rollout)
    return spec


def shadow_stats() -> dict[tuple[str, str], ShadowStats]:
    """fp8 passes every class; int4-awq passes all but code (agreement too low) and tools (too
    few samples)."""
    stats = {(c, "fp8"): ShadowStats(200, 0.97, "Pass") for c in CLASSES}
    stats.update({(c, "int4-awq"): ShadowStats(500, 0.98, "Pass") for c in CLASSES})
    stats[("code", "int4-awq")] = ShadowStats(300, 0.85, "Pass")
    stats[("tools", "int4-awq")] = ShadowStats(40, 0.99, "Pass")
    return stats


MIX = {"chat-short": 0.5, "chat-long": 0.1, "code": 0.2, "structured": 0.1, "math": 0.05,
       "tools": 0.05}  # fmt: skip


def observed(stats: dict[tuple[str, str], ShadowStats] | None = None) -> ClassObservation:
    return ClassObservation(shadow_stats() if stats is None else stats, MIX)


def mixed_model(**rollout: Any) -> tuple[Model, FakeMetrics]:
    m = Model(mixed_spec(**rollout))
    m.metrics.observations = [observed()]
    return m, m.metrics


def table(m: Model) -> dict[str, tuple[str, int]]:
    return {r["class"]: (r["tier"], r["share"]) for r in m.status.get("classes") or []}


def routed(m: Model) -> dict[str, tuple[str, int]]:
    return {c["class"]: (c["tier"], c["weight"]) for c in m.status["traffic"].get("classes") or []}


def test_shadow_mirrors_to_every_tier_and_the_policy_is_compiled_when_it_ends() -> None:
    m, metrics = mixed_model()
    m.until(lambda m: m.status.get("stage") == "shadow")
    traffic = m.status["traffic"]
    assert [b["tier"] for b in traffic["targets"]] == ["fp8", "int4-awq"]
    assert traffic["mirrorPercent"] == 100
    assert "classes" not in traffic  # none yet: the router sends every live request to fp16
    assert "target" not in traffic
    # each tier is its own Deployment and Service
    for tier in ("fp16", *TIERS):
        assert ("Deployment", f"llama3-8b-{tier}") in m.kube.children
        assert ("Service", f"llama3-8b-{tier}") in m.kube.children
    m.until(lambda m: m.status.get("stage") == "ab")
    assert metrics.class_calls[0][:2] == (("fp8", "int4-awq"), "fp16")
    assert table(m) == {
        "chat-short": ("int4-awq", 10), "chat-long": ("int4-awq", 10), "structured": ("int4-awq", 10),
        "math": ("int4-awq", 10), "code": ("fp8", 10), "tools": ("fp8", 10),
    }  # fmt: skip
    assert routed(m) == table(m)
    assert m.status["policy"]["source"] == "learned"
    rows = {r["class"]: r for r in m.status["classes"]}
    assert rows["code"]["reason"].startswith("cheapest passing: fp8 agreement 0.970")
    assert "int4-awq agreement 0.850 < 0.950" in rows["code"]["reason"]
    assert rows["chat-short"]["fallbacks"] == ["fp8"]
    assert rows["chat-short"]["requestShare"] == 0.5
    assert "PolicyCompiled" in m.events.reasons()
    assert m.status["gpuSaving"]["relativeCost"] < 0.4


def test_a_breaching_class_moves_alone_to_the_next_higher_precision_and_full_puts_each_on_its_tier() -> (
    None
):
    m, metrics = mixed_model()
    m.until(lambda m: m.status.get("stage") == "ab")
    stats = shadow_stats()
    stats[("math", "int4-awq")] = ShadowStats(
        80, 0.9, "Fail", ("math refusal-rate-increase 0.08 > 0.02",)
    )
    metrics.observations = [observed(stats)]
    m.until(lambda m: table(m)["math"][0] == "fp8")
    assert m.status["phase"] == "Progressing"
    message = next(msg for _, r, msg in m.events.posted if r == "ClassRolledBack")
    assert message == (
        "class math breached on int4-awq: math refusal-rate-increase 0.08 > 0.02; now on fp8"
    )
    assert table(m)["chat-short"][0] == "int4-awq"  # the others did not move
    assert {r["class"]: r["verdict"] for r in m.status["classes"]}["math"] == "Fail"
    metrics.observations = [observed()]
    m.until(lambda m: m.status.get("phase") == "Succeeded", passes=80)
    assert set(table(m).values()) <= {("int4-awq", 100), ("fp8", 100)}
    assert table(m)["math"] == ("fp8", 100)
    assert all(w == 100 for _, w in routed(m).values())


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 22), st.booleans())
def test_a_restart_resumes_the_same_policy_step_and_weights(passes: int, down: bool) -> None:
    """An operator restarted after any pass (nothing remembered but the status) decides what the
    one that kept running decides, Prometheus up or down."""
    from quantrollout.pass_.observe import Memory

    kept, restarted = mixed_model()[0], mixed_model()[0]
    for _ in range(passes):
        kept.run()
        restarted.run()
    assert kept.status == restarted.status
    restarted.memory = Memory()
    for m in (kept, restarted):
        if down:
            m.metrics.observations = [ClassObservation(unavailable="Prometheus is down")]
        m.run()
    assert kept.status == restarted.status
    assert kept.status.get("classes") == restarted.status.get("classes")


def test_missing_class_metrics_never_leave_shadow() -> None:
    m, metrics = mixed_model()
    metrics.observations = [
        ClassObservation(unavailable="no series for quantrollout_router_requests_total")
    ]
    for _ in range(12):
        m.run()
    assert m.status["stage"] == "shadow"
    assert "per-class metrics unavailable" in str(m.status["lastAnalysis"])


def test_a_hand_policy_naming_an_unknown_tier_is_refused_with_its_field_and_holds_traffic() -> None:
    m, _metrics = mixed_model(policy={"classes": {"code": "fp8", "chat-short": "int4-awq"}})
    m.until(lambda m: m.status.get("stage") == "ab")
    assert m.status["policy"]["source"] == "hand"
    assert table(m)["code"] == ("fp8", 10)
    assert table(m)["math"] == ("fp16", 100)
    traffic = copy.deepcopy(m.status["traffic"])
    m.edit({"rollout": {"policy": {"classes": {"code": "int3"}}}})
    m.run()
    assert m.status["phase"] == "Paused"
    assert (
        "spec.rollout.policy.classes.code: tier 'int3' does not exist"
        in m.status["rollout"]["heldFor"]
    )
    assert m.status["traffic"] == traffic
    # an abort still rolls back while the edit is refused: every class to the baseline
    m.kube.annotate(ACTION_ANNOTATION, "abort")
    m.run()
    assert m.status["phase"] == "RolledBack"
    assert {c["weight"] for c in m.status["traffic"]["classes"]} == {0}
    assert {c["rest"] for c in m.status["traffic"]["classes"]} == {"fp16"}


def test_a_learned_policy_with_too_few_samples_keeps_a_class_on_the_baseline() -> None:
    m, metrics = mixed_model()
    stats = shadow_stats()
    stats[("tools", "fp8")] = ShadowStats(12, 1.0, "Pass")
    metrics.observations = [observed(stats)]
    m.until(lambda m: m.status.get("stage") == "ab")
    assert table(m)["tools"] == ("fp16", 100)
    reason = {r["class"]: r["reason"] for r in m.status["classes"]}["tools"]
    assert "fp8 has too few samples (12 < 100)" in reason


def test_model_wide_rules_failing_on_a_tier_roll_the_whole_model_back() -> None:
    m, metrics = mixed_model()
    m.until(lambda m: m.status.get("stage") == "ab")
    metrics.verdicts = ["Fail"]
    m.until(lambda m: m.status.get("phase") == "RolledBack")
    assert not any(w for t, w in routed(m).values() if t != "fp16")
    assert m.status["traffic"]["targetWeight"] == 0
    assert metrics.calls.count("ab") >= 2  # each tier's model-wide rules, in each round
    reasons = m.status["rollback"]["reasons"]
    assert reasons == [
        "fp8: error-rate 0.2 > 0.01 for 2 consecutive evaluations",
        "int4-awq: error-rate 0.2 > 0.01 for 2 consecutive evaluations",
    ]
    assert m.status["classes"]  # the table stays, to show what was rolled back


def test_a_tier_only_held_for_fallbacks_goes_to_zero_after_the_bake() -> None:
    m, metrics = mixed_model()
    stats = {(c, t): ShadowStats(500, 0.99, "Pass") for c in CLASSES for t in TIERS}
    metrics.observations = [observed(stats)]
    m.until(lambda m: m.status.get("phase") == "Succeeded", passes=80)
    assert {t for t, _ in table(m).values()} == {"int4-awq"}

    def fp8() -> dict[str, Any]:
        return next(t for t in m.status["tiers"] if t["name"] == "fp8")

    assert fp8()["wantedReplicas"] >= 1  # the fallback of every class, during the bake
    m.until(lambda m: fp8()["wantedReplicas"] == 0, passes=10)
    assert m.kube.children[("Deployment", "llama3-8b-fp8")]["spec"]["replicas"] == 0
    assert table(m)["chat-short"] == ("int4-awq", 100)


def test_the_plugin_shows_the_class_table_under_the_tiers() -> None:
    from quantrollout.cli.plugin_render import render_model

    m, _metrics = mixed_model()
    m.until(lambda m: m.status.get("stage") == "ab")
    m.kube.model["metadata"]["namespace"] = "llm"
    text = render_model(m.kube.model)
    lines = text.splitlines()
    assert "Targets:    fp8 (fp8 fp8, s3://models/llama3-8b-fp8); int4-awq (int4 awq, " in text
    start = lines.index("Classes:")
    assert lines.index("Tiers:") < start
    assert lines[start + 1].split() == ["CLASS", "TIER", "SHARE", "AGREEMENT", "VERDICT"]
    rows = {
        ln.split()[0]: ln.split()
        for ln in lines[start + 2 : start + 14]
        if ln.startswith("  ") and not ln.startswith("    ")
    }
    assert rows["chat-short"][1:4] == ["int4-awq", "10%", "0.980"]
    assert rows["code"][1:4] == ["fp8", "10%", "0.970"]
    # a class not on the cheapest tier says why, on the next line
    code = next(i for i, ln in enumerate(lines) if ln.startswith("  code "))
    assert lines[code + 1].strip().startswith("cheapest passing: fp8 agreement 0.970")
    chat = next(i for i, ln in enumerate(lines) if ln.startswith("  chat-short "))
    assert lines[chat + 1].startswith("  ")
    assert not lines[chat + 1].startswith("    ")


def test_switching_between_target_and_targets_is_a_new_rollout_that_clears_the_other_shape() -> (
    None
):
    from .test_pass import at_weight

    m = Model()
    m.until(at_weight(50))
    assert m.status["targetNames"] == "int4-awq"  # kubectl get's TARGET column
    m.edit({"target": None, **{k: v for k, v in mixed_spec().items() if k == "targets"}})
    m.metrics.observations = [observed()]
    m.until(lambda m: m.status.get("stage") == "shadow")
    assert m.status["targetNames"] == "fp8,int4-awq"
    traffic = m.status["traffic"]
    assert "target" not in traffic
    assert [b["tier"] for b in traffic["targets"]] == ["fp8", "int4-awq"]
    assert traffic["targetWeight"] == 0
    m.until(lambda m: m.status.get("stage") == "ab")
    assert m.status["classes"]

    m.edit({"targets": None, "target": SPEC["target"]})
    m.until(lambda m: m.status.get("stage") == "shadow")
    assert m.status["targetNames"] == "int4-awq"
    traffic = m.status["traffic"]
    assert traffic["target"]["tier"] == "int4-awq"
    assert "classes" not in traffic
    assert "targets" not in traffic
    assert "classes" not in m.status
    assert "policy" not in m.status


def test_a_promote_out_of_shadow_compiles_the_policy_from_a_fresh_observation() -> None:
    m, metrics = mixed_model()
    m.kube.model["spec"]["rollout"]["stages"][0]["duration"] = "1h"
    m.until(lambda m: m.status.get("stage") == "shadow")
    m.run(0.01)  # not an evaluation's time
    asked = len(metrics.class_calls)
    m.kube.annotate(ACTION_ANNOTATION, "promote")
    m.run(0.01)
    assert m.status["stage"] != "shadow"
    assert len(metrics.class_calls) == asked + 1
    assert table(m)["chat-short"] == ("int4-awq", 10)


def test_the_policy_is_compiled_from_the_whole_shadow_stage_not_its_last_rounds() -> None:
    """A 2m shadow with a 1s interval (a 20s analysis window): the observation that ends
    shadow spans the stage, so every shadow comparison counts towards a class's minSamples."""
    spec = mixed_spec()
    spec["rollout"]["stages"][0]["duration"] = "2m"
    m = Model(spec)
    metrics = m.metrics
    metrics.observations = [observed()]
    m.until(lambda m: m.status.get("stage") == "shadow")
    shadow_calls = len(metrics.class_calls)
    m.until(lambda m: m.status.get("stage") == "ab", passes=200, seconds=1.0)
    windows = [parse_duration(w) for _, _, w in metrics.class_calls[shadow_calls:]]
    assert max(windows) >= 120  # the observation that compiled the policy covered the stage
    assert windows == sorted(windows)  # growing with the stage
    # after shadow, the analysis window again
    asked = len(metrics.class_calls)
    m.until(lambda m: len(metrics.class_calls) > asked, passes=5)
    assert m.status["stage"] != "shadow"
    assert parse_duration(metrics.class_calls[-1][2]) == 20
