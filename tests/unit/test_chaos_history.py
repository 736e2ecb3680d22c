"""The chaos test's history checks can fail: histories written by the real state machine (the way
the operator's tick writes them) pass, and each hand-made corruption of one is caught."""

from __future__ import annotations

import copy
import datetime
from typing import Any

import pytest

from localstack.history import (
    Breach,
    Expectation,
    Seen,
    breach_problems,
    check,
    finish_problems,
    illegal_states,
    illegal_transitions,
    seen_tiers,
    unearned_promotions,
)
from quantrollout.analysis.rules import RuleQuery
from quantrollout.api.spec import QuantizedModelSpec
from quantrollout.pass_.plan import (
    capacity_plan,
    capacity_tiers,
    current_state,
    decide_rollout,
    rollout_inputs,
    rollout_status,
)
from quantrollout.rollout.codec import rfc3339
from quantrollout.rollout.machine import Evaluation
from quantrollout.rollout.steps import steps_for

from .fakes import merge

T0 = 1_800_000_000.0
SPEC: dict[str, Any] = {
    "model": "meta-llama/Meta-Llama-3-8B-Instruct",
    "baseline": {"artifact": "s3://models/llama3-8b-fp16", "precision": "fp16"},
    "target": {"name": "int4-awq", "artifact": "s3://models/llama3-8b-awq", "precision": "int4",
               "format": "awq"},
    "serving": {"gpu": {"count": 1, "product": "NVIDIA-H100-80GB-HBM3", "memoryGiB": 80}},
    "rollout": {
        "stages": [
            {"name": "shadow", "mirrorPercent": 100, "duration": "4s"},
            {"name": "ab", "weight": 20, "duration": "4s", "stickyBy": "header:x-user-id"},
            {"name": "gradual", "weights": [40, 70], "stepDuration": "4s"},
            {"name": "full"},
        ],
        "analysis": {"interval": "1s", "failureLimit": 2, "minSamples": 5},
    },
}  # fmt: skip
LATENCY = {"rule": "latency-p99", "value": 0.95, "threshold": 0.4, "verdict": "Fail"}


class Run:
    """One model's versions, written by the operator's own decision functions (the pass's
    `rollout_inputs`, `decide` and `rollout_status`)."""

    def __init__(self, name: str = "m", spec: dict[str, Any] | None = None) -> None:
        self.name, self.raw = name, copy.deepcopy(spec or SPEC)
        self.spec = QuantizedModelSpec.model_validate(self.raw)
        self.steps = steps_for(self.spec)
        self.status: dict[str, Any] = {}
        self.versions: list[Seen] = []
        self.write({}, T0)

    def write(self, patch: dict[str, Any], at: float) -> None:
        self.status = merge(self.status, patch)
        rv = str(len(self.versions) + 1)
        self.versions.append(Seen(self.name, rv, at, self.raw, copy.deepcopy(self.status)))

    def tiers(self, at: float, ready: bool = True) -> Run:
        up = {"ready": ready, "replicas": 1, "readyReplicas": 1 if ready else 0}
        self.write({"tiers": [{"name": "fp16", **up}, {"name": "int4-awq", **up}]}, at)
        return self

    def tick(self, at: float, verdict: str | None = None, *results: dict[str, Any]) -> Run:
        now = datetime.datetime.fromtimestamp(at, datetime.UTC)
        evaluation = None
        if verdict is not None:
            reasons = tuple(
                RuleQuery(r["rule"], "", "max", r["threshold"]).describe(r["value"])
                for r in results
                if r["verdict"] == "Fail"
            )
            evaluation = Evaluation(verdict, reasons)  # type: ignore[arg-type]
        state = current_state(self.status, self.spec)
        seen = seen_tiers(self.status)
        gate = capacity_plan(
            self.spec, state, capacity_tiers(self.spec, seen), self.status.get("traffic"), now
        )
        inputs = rollout_inputs(
            self.spec, "", self.name, now, seen, evaluation=evaluation,
            ready_for_next=gate.ready_for_next,
        )  # fmt: skip
        new = decide_rollout(self.spec, state, inputs).state
        if new == state and evaluation is None:
            return self
        patch = rollout_status(self.spec, self.name, new, self.steps)
        if evaluation is not None:
            patch["lastAnalysis"] = {
                "at": rfc3339(now),
                "verdict": verdict,
                "results": list(results),
            }
        self.write(patch, at)
        return self

    def passes(self, start: float, seconds: int) -> Run:
        for i in range(seconds):
            self.tick(start + i + 0.25, "Pass")
        return self

    def replace(self, index: int, **status: Any) -> list[Seen]:
        """The history with version `index`'s status changed (None removes a field)."""
        changed = copy.deepcopy(self.versions)
        v = changed[index]
        changed[index] = Seen(v.name, v.resource_version, v.at, v.spec, merge(v.status, status))
        return changed


def healthy() -> Run:
    """Tiers ready at 1s, started at 2s, a Pass every second: one promotion every 4s."""
    return Run().tiers(T0 + 1).tick(T0 + 2).passes(T0 + 3, 20)


def phases(run: Run) -> list[tuple[str | None, int | None]]:
    return [(v.status.get("phase"), v.status.get("targetWeight")) for v in run.versions]


def index_of(run: Run, stage: str) -> int:
    """The version that promoted into `stage` (its first)."""
    return next(i for i, v in enumerate(run.versions) if v.status.get("stage") == stage)


def test_a_healthy_rollout_written_by_the_machine_passes_every_check() -> None:
    run = healthy()
    assert ("Succeeded", 100) in phases(run)
    assert [w for _, w in phases(run) if w is not None][-1] == 100
    assert check(run.versions, {"m": Expectation(T0)}, bound_s=60) == []


def test_a_breach_rolled_back_by_the_machine_passes_every_check() -> None:
    run = Run().tiers(T0 + 1).tick(T0 + 2).passes(T0 + 3, 5)
    assert run.status["stage"] == "ab"
    run.tick(T0 + 9, "Fail", LATENCY).tick(T0 + 10, "Fail", LATENCY)
    assert run.status["phase"] == "RolledBack"
    breach = Breach("ab", "latency-p99 ", injected_at=T0 + 8)
    assert check(run.versions, {"m": Expectation(T0, breach)}, bound_s=60) == []


def test_a_promotion_on_an_inconclusive_analysis_is_caught() -> None:
    run = healthy()
    i = index_of(run, "ab")
    history = run.replace(i, lastAnalysis={"verdict": "Inconclusive"})
    assert any("promoted on a Inconclusive" in p for p in unearned_promotions(history))
    assert any("not a transition" in p for p in illegal_transitions(history))


def test_a_promotion_reusing_an_earlier_analysis_is_caught() -> None:
    run = healthy()
    first, second = index_of(run, "ab"), index_of(run, "gradual")
    reused = run.versions[first].status["lastAnalysis"]
    history = run.replace(second, lastAnalysis=reused)
    assert any("promoted again on the analysis" in p for p in unearned_promotions(history))


def test_a_promotion_before_the_step_was_held_is_caught() -> None:
    run = Run().tiers(T0 + 1).tick(T0 + 2).passes(T0 + 3, 1)  # one Pass, 1.25s into shadow
    early = run.versions[-1].status
    history = run.replace(
        len(run.versions) - 1,
        step=1, stage="ab", targetWeight=20, mirrorPercent=0, stageStartedAt=early["lastAnalysis"]["at"],
        traffic={"targetWeight": 20, "mirrorPercent": 0},
    )  # fmt: skip
    assert illegal_states(history) == []  # a well-formed state, reached too early
    assert any("into a 4s step" in p for p in unearned_promotions(history))
    assert any("not a transition" in p for p in illegal_transitions(history))


def test_a_skipped_step_is_caught() -> None:
    run = healthy()
    i = index_of(run, "ab")
    history = run.replace(i, step=2, stage="gradual", targetWeight=40, traffic={"targetWeight": 40})
    assert any("exactly one step" in p for p in unearned_promotions(history))


def test_weights_that_do_not_match_the_step_are_caught() -> None:
    run = healthy()
    i = index_of(run, "ab")
    assert any("20% live" in p for p in illegal_states(run.replace(i, targetWeight=30)))
    live = illegal_states(run.replace(i, traffic={"targetWeight": 50}))
    assert any("status.traffic" in p for p in live)
    assert any(
        "status.traffic" in p for p in illegal_states(run.replace(i, traffic={"rolloutId": "x-0"}))
    )
    assert any("without status.traffic" in p for p in illegal_states(run.replace(i, traffic=None)))


def test_a_lost_rollback_is_caught() -> None:
    run = Run().tiers(T0 + 1).tick(T0 + 2).passes(T0 + 3, 5)
    run.tick(T0 + 9, "Fail", LATENCY).tick(T0 + 10, "Fail", LATENCY)
    rolled = run.versions[-1].status
    # A later write puts the A/B weight back: the rollback was lost.
    run.write({"phase": "Progressing", "targetWeight": 20, "rollback": None,
               "traffic": {"targetWeight": 20}}, T0 + 12)  # fmt: skip
    assert rolled["phase"] == "RolledBack"
    breach = Breach("ab", "latency-p99 ", injected_at=T0 + 8)
    assert any(
        "left RolledBack" in p for p in finish_problems(run.versions, Expectation(T0, breach), 60)
    )
    assert any("not a transition" in p for p in illegal_transitions(run.versions))
    assert any("promoted after the breach" in p for p in breach_problems(run.versions, breach))
    assert any("did not end RolledBack" in p for p in breach_problems(run.versions, breach))


def test_a_breach_that_still_promotes_is_caught() -> None:
    # A Fail is judged, then a Pass breaks the streak and the model is promoted: legal for the
    # machine, but the breach (still there) must never promote.
    run = Run().tiers(T0 + 1).tick(T0 + 2).passes(T0 + 3, 5)
    run.tick(T0 + 9, "Fail", LATENCY).passes(T0 + 10, 10)
    assert illegal_transitions(run.versions) == []
    breach = Breach("ab", "latency-p99 ", injected_at=T0 + 8)
    problems = breach_problems(run.versions, breach)
    assert any("promoted after the breach was judged" in p for p in problems)
    assert any("did not end RolledBack" in p for p in problems)


def test_a_rollback_at_another_stage_or_for_another_reason_is_caught() -> None:
    run = Run().tiers(T0 + 1).tick(T0 + 2).passes(T0 + 3, 9)
    assert run.status["stage"] == "gradual"
    run.tick(T0 + 13, "Fail", LATENCY).tick(T0 + 14, "Fail", LATENCY)
    problems = breach_problems(run.versions, Breach("ab", "repetition-rate ", T0 + 5))
    assert any("not at ab" in p for p in problems)
    assert any("repetition-rate" in p for p in problems)


@pytest.mark.parametrize("bound", [5.0, 60.0])
def test_a_model_that_never_finishes_or_finishes_late_is_caught(bound: float) -> None:
    unfinished = Run().tiers(T0 + 1).tick(T0 + 2).passes(T0 + 3, 6)
    assert any(
        "never finished" in p for p in finish_problems(unfinished.versions, Expectation(T0), bound)
    )
    late = finish_problems(healthy().versions, Expectation(T0), bound)
    assert (late != []) == (bound == 5.0)


def test_an_unexpected_model_is_caught() -> None:
    assert any("not expected" in p for p in check(healthy().versions, {}, bound_s=60))
