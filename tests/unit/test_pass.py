"""One pass per model against fakes of its I/O seams and a settable clock: the executor's order
(capacity up, traffic, capacity down, status once, Events), a lost race (409) applying nothing
twice and deciding again on fresh state, a steady model costing one read, and an edit the
operator refuses holding traffic where it is until it is fixed."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantrollout.pass_.execute import execute
from quantrollout.pass_.observe import Memory
from quantrollout.pass_.plan import ACTION_ANNOTATION, ChildWrite, Plan, RouteWrite
from quantrollout.pass_.run import PassResult, run_pass
from quantrollout.rollout.machine import Event

from .fakes import Clock, FakeEvents, FakeKube, FakeMetrics

NAME = "llama3-8b"
SPEC: dict[str, Any] = {
    "model": "meta-llama/Meta-Llama-3-8B-Instruct",
    "baseline": {"artifact": "s3://models/llama3-8b-fp16", "precision": "fp16"},
    "target": {"name": "int4-awq", "artifact": "s3://models/llama3-8b-awq", "precision": "int4",
               "format": "awq"},
    "serving": {"gpu": {"count": 1, "product": "NVIDIA-H100-80GB-HBM3", "memoryGiB": 80},
                "replicas": 2},
    "rollout": {
        "stages": [
            {"name": "shadow", "mirrorPercent": 100, "duration": "2s"},
            {"name": "ab", "weight": 10, "duration": "2s", "stickyBy": "header:x-user-id"},
            {"name": "gradual", "weights": [25, 50, 75], "stepDuration": "2s"},
            {"name": "full"},
        ],
        "analysis": {"interval": "1s", "failureLimit": 2, "minSamples": 5},
        "bakeDuration": "3s",
        "abortScaleDownDelay": "4s",
    },
}  # fmt: skip
REFUSED = "spec.target.serving: gpu.count 1 (after merging spec.serving) is less than tensorParallelSize 2"


class Model:
    """One model, its fakes and its runner's memory; `run` is one pass `seconds` later."""

    def __init__(self, spec: dict[str, Any] | None = None, route: bool = False) -> None:
        qm = {"apiVersion": "quantrollout.io/v1alpha1", "kind": "QuantizedModel",
              "metadata": {"name": NAME}, "spec": copy.deepcopy(spec or SPEC)}  # fmt: skip
        self.kube = FakeKube(qm, route={"rules": []} if route else None)
        self.metrics = FakeMetrics()
        self.events = FakeEvents(self.kube.log)
        self.memory = Memory()
        self.clock = Clock()
        self.unplaced: dict[str, str] = {}  # tier -> the scheduler's message for its pod

    def reason(self, namespace: str, selector: dict[str, str]) -> str | None:
        return self.unplaced.get(selector.get("quantrollout.io/tier", ""))

    def run(self, seconds: float = 1.0) -> PassResult:
        self.clock.advance(seconds)
        return asyncio.run(
            run_pass(
                self.kube, self.metrics, self.events, self.memory, "llm", NAME,
                self.reason, self.clock,
            )
        )  # fmt: skip

    def edit(self, spec_patch: dict[str, Any]) -> None:
        self.kube.edit_spec(spec_patch)
        self.memory.stale = True  # as the update handler marks it

    @property
    def status(self) -> dict[str, Any]:
        return self.kube.status

    def live(self) -> tuple[str | None, int, int]:
        s = self.status
        return (
            s.get("phase"),
            s.get("targetWeight", 0),
            (s.get("traffic") or {}).get("targetWeight", 0),
        )

    def until(self, check: Any, passes: int = 40, seconds: float = 1.0) -> None:
        for _ in range(passes):
            if check(self):
                return
            self.run(seconds)
        raise AssertionError(f"not reached in {passes} passes: {self.status}")


def at_weight(weight: int) -> Any:
    return lambda m: (
        m.status.get("targetWeight") == weight and m.status.get("phase") == "Progressing"
    )


def test_capacity_comes_up_before_the_first_status_and_the_events_after_it() -> None:
    m = Model()
    m.run()
    writes = m.kube.writes()
    kinds = [w[0] for w in writes]
    assert writes[:4] == [
        ("apply", "Deployment", "llama3-8b-fp16", 2), ("apply", "Service", "llama3-8b-fp16", None),
        ("apply", "Deployment", "llama3-8b-int4-awq", 2), ("apply", "Service", "llama3-8b-int4-awq", None),
    ]  # fmt: skip
    assert kinds[4] == "status"
    assert kinds.count("status") == 1
    assert set(kinds[5:]) == {"event"}
    assert m.status["phase"] == "Pending"
    m.run()  # the tiers are Ready: preflight's Job, then its record, and no traffic yet
    writes = m.kube.writes()
    assert writes[0] == (
        "apply",
        "Job",
        "llama3-8b-preflight-" + m.status["rollout"]["id"][:8] + "-0",
        None,
    )
    assert [w[0] for w in writes].count("status") == 1
    assert ("event", "PreflightStarted") in writes
    assert m.status["phase"] == "Pending"
    assert m.status["preflight"]["phase"] == "Running"
    assert m.status["traffic"]["mirrorPercent"] == 0
    m.run()  # the Job passed: the rollout starts, in one status write
    writes = m.kube.writes()
    assert next(w[0] for w in writes) == "status"
    assert [w[0] for w in writes].count("status") == 1
    assert ("event", "RolloutStarted") in writes
    assert m.status["stage"] == "shadow"
    assert m.status["traffic"]["mirrorPercent"] == 100


def test_a_steady_model_costs_one_read_and_no_write_between_its_evaluations() -> None:
    m = Model()
    m.until(lambda m: m.status.get("phase") == "Succeeded")
    for _ in range(5):  # the bake, then the baseline at its standby replicas
        m.run()
    m.run(300)  # the first evaluation after the bake (afterBakeInterval 5m)
    m.kube.writes()
    m.kube.reads.clear()
    wakes = [m.run().wake_in_s for _ in range(3)]
    # asleep until the next evaluation's slot on the shared 5-minute clock, a second less each pass
    assert wakes[0] is not None
    assert wakes == pytest.approx([wakes[0], wakes[0] - 1, wakes[0] - 2])
    assert m.kube.writes() == []
    assert m.kube.reads == [("QuantizedModel", NAME)] * 3  # the children are not read again


def test_the_executor_applies_a_plan_in_its_fixed_order() -> None:
    up = ChildWrite("apply", "Deployment", "m-int4", {"kind": "Deployment", "metadata": {"name": "m-int4"}, "spec": {"replicas": 2}})  # fmt: skip
    down = ChildWrite("delete", "Deployment", "m-old")
    event = Event("Normal", "Promoted", "now at gradual (50% live)")
    for in_status, order in (
        (False, ["apply", "route", "delete", "status", "event", "unannotate"]),  # Gateway API
        (True, ["apply", "status", "delete", "event", "unannotate"]),  # the built-in router
    ):
        kube = FakeKube({"metadata": {"name": "m"}, "spec": {}}, route={"rules": []})
        plan = Plan(
            namespace="llm", name="m", resource_version="1", capacity_up=(up,),
            route=None if in_status else RouteWrite("llm", "llm", {"rules": [{"backendRefs": [{"weight": 50}, {"weight": 50}]}]}),
            capacity_down=(down,), status={"targetWeight": 50}, traffic_in_status=in_status,
            events=(event,), remove_action=True,
        )  # fmt: skip
        result = asyncio.run(execute(kube, FakeEvents(kube.log), plan, kube.model, Memory()))
        assert [w[0] for w in kube.log] == order
        assert result.wake_in_s is None  # type: ignore[union-attr]


def test_a_lost_race_measures_once_and_decides_again_on_the_fresh_model() -> None:
    m = Model()
    m.until(lambda m: m.status.get("stage") == "shadow")
    m.kube.writes()
    calls = len(m.metrics.calls)
    # A user asks for a promotion between our read and our write: the write is refused (409).
    m.kube.before_status_patch.append(lambda: m.kube.annotate(ACTION_ANNOTATION, "promote"))
    m.run()
    writes = m.kube.writes()
    assert len(m.metrics.calls) == calls + 1, "the evaluation was made once"
    statuses = [w[1] for w in writes if w[0] == "status"]
    assert len(statuses) == 1, "one status write, from the fresh read"
    assert (statuses[0]["stage"], statuses[0]["targetWeight"]) == ("ab", 10)  # the action seen
    assert statuses[0]["lastAnalysis"]["verdict"] == "Pass"  # the measurement kept
    assert m.events.reasons().count("Promoted") == 1
    assert [w for w in writes if w[0] == "unannotate"] == [("unannotate", ACTION_ANNOTATION)]


def test_a_spec_edit_that_wins_the_race_is_decided_on() -> None:
    m = Model()
    m.until(lambda m: m.status.get("stage") == "shadow")
    m.kube.writes()
    m.kube.before_status_patch.append(lambda: m.edit({"rollout": {"paused": True}}))
    m.run()
    statuses = [w[1] for w in m.kube.writes() if w[0] == "status"]
    assert len(statuses) == 1
    assert statuses[0]["phase"] == "Paused"
    assert m.events.reasons().count("Paused") == 1


def test_an_abort_that_loses_a_race_rolls_back_once() -> None:
    m = Model()
    m.until(at_weight(10))
    m.kube.writes()
    m.kube.annotate(ACTION_ANNOTATION, "abort")
    m.kube.before_status_patch.append(
        lambda: m.edit({"rollout": {"analysis": {"failureLimit": 3}}})
    )
    m.run()
    writes = m.kube.writes()
    assert [w[0] for w in writes].count("status") == 1
    assert [w for w in writes if w[0] == "unannotate"] == [("unannotate", ACTION_ANNOTATION)]
    assert m.events.reasons().count("RolledBack") == 1
    assert m.live() == ("RolledBack", 0, 0)


def test_a_refused_edit_mid_gradual_holds_traffic_and_its_fix_resumes_the_same_step() -> None:
    m = Model()
    m.until(at_weight(50))
    step, started = m.status["step"], m.status["stageStartedAt"]
    m.kube.writes()
    m.edit({"target": {"serving": {"tensorParallelSize": 2}}})
    m.run()
    writes = m.kube.writes()
    assert not [w for w in writes if w[0] in ("apply", "delete", "route")], "no child is touched"
    assert m.live() == ("Paused", 50, 50)
    assert m.status["rollout"]["heldFor"] == REFUSED
    assert m.status["step"] == step
    (refused,) = [e for e in m.events.posted if e[1] == "EditRefused"]
    assert refused == ("Warning", "EditRefused", f"{REFUSED}; traffic held at 50% live, 0% mirrored until the edit is fixed")  # fmt: skip
    degraded = next(c for c in m.status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"], degraded["message"]) == (
        "True",
        "InvalidSpec",
        REFUSED,
    )
    for _ in range(5):  # passing verdicts, well past the step's duration: nothing moves
        m.run()
        assert m.live() == ("Paused", 50, 50)
    assert m.events.reasons().count("EditRefused") == 1

    m.metrics.verdicts = ["Inconclusive"]  # so that the fix alone is seen, no promotion with it
    m.edit({"target": {"serving": {"tensorParallelSize": 1}}})
    m.run()
    assert m.events.reasons().count("EditAccepted") == 1
    assert "RolloutStarted" not in m.events.reasons()[-5:]
    assert (m.live(), m.status["step"], m.status["stageStartedAt"]) == (("Progressing", 50, 50), step, started)  # fmt: skip
    assert "heldFor" not in m.status["rollout"]
    m.metrics.verdicts = ["Pass"]
    m.until(lambda m: m.status.get("phase") == "Succeeded")
    assert "NewRollout" not in m.events.reasons()


def test_changing_what_is_rolled_out_starts_a_new_rollout_and_says_so() -> None:
    m = Model()
    m.until(at_weight(50))
    m.edit({"target": {"serving": {"replicas": 3}}})  # not what is rolled out: same rollout
    m.run()
    assert m.status["targetWeight"] >= 50
    assert "NewRollout" not in m.events.reasons()
    m.edit({"target": {"artifact": "s3://models/llama3-8b-awq-v2"}})
    m.run()
    (new,) = [e for e in m.events.posted if e[1] == "NewRollout"]
    assert (
        new[2].startswith(
            "what is rolled out changed (the target's artifact, format or precision): a new rollout "
            "from the first stage; the old target had 50% live, 0% mirrored"
        )
        or "the old target had 75% live" in new[2]
    )
    # The new target's pods are not there yet: the rollout waits for them, all traffic on the
    # baseline, then starts at the first stage.
    assert m.live() == ("Pending", 0, 0)
    m.run()  # the new target's preflight runs: still nothing on it
    assert m.live() == ("Pending", 0, 0)
    assert m.status["preflight"]["rolloutId"] == m.status["rollout"]["id"]
    m.run()
    assert (m.status["stage"], m.status["traffic"]["mirrorPercent"]) == ("shadow", 100)


def test_a_breach_while_held_still_rolls_back() -> None:
    m = Model()
    m.until(at_weight(25))
    m.edit({"target": {"serving": {"tensorParallelSize": 2}}})
    m.run()
    assert m.live() == ("Paused", 25, 25)
    m.metrics.verdicts = ["Fail"]
    for _ in range(4):  # two evaluations (the model's slot may skip a pass)
        m.run()
        if m.live()[0] == "RolledBack":
            break
        assert m.live() == ("Paused", 25, 25)
    assert m.live() == ("RolledBack", 0, 0)
    assert m.status["rollback"]["reasons"] == [
        "error-rate 0.2 > 0.01 for 2 consecutive evaluations"
    ]


def test_a_missing_route_holds_the_rollout_and_says_so_once() -> None:
    spec = copy.deepcopy(SPEC)
    spec["traffic"] = {"router": "gateway-api", "httpRoute": {"name": "llm"}}
    m = Model(spec)
    for _ in range(4):
        result = m.run()
        assert result.wake_in_s == 1.0  # tried again after an interval
    assert m.events.reasons().count("TrafficNotApplied") == 1
    assert "traffic" not in m.status
    assert m.status.get("phase") is None
    assert m.status["tiers"]  # the tiers are reported
    m.kube.route = {"rules": []}
    m.run()
    assert m.events.reasons().count("TrafficApplied") == 1
    assert [w for w in m.kube.log if w[0] == "route"][-1] == ("route", (100, 0))
    assert m.status["phase"] in ("Pending", "Progressing")


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.sampled_from(["refuse", "fix", "pass", "inconclusive"]), min_size=1, max_size=12)
)
def test_while_an_edit_is_refused_the_live_weight_never_moves(script: list[str]) -> None:
    """Any interleaving of refused edits, fixes and verdicts: a held rollout keeps its weights,
    and a fix never starts a new rollout."""
    m = Model()
    m.until(at_weight(25))
    for move in script:
        before = m.live()
        if move == "refuse":
            m.edit({"target": {"serving": {"tensorParallelSize": 2}}})
        elif move == "fix":
            m.edit({"target": {"serving": {"tensorParallelSize": 1}}})
        else:
            m.metrics.verdicts = ["Pass" if move == "pass" else "Inconclusive"]
        held = m.status.get("rollout", {}).get("heldFor") is not None
        m.run()
        now_held = m.status["rollout"].get("heldFor") is not None
        if held and now_held:
            assert m.live()[1:] == before[1:]
        assert m.live()[1] >= 25
        assert "NewRollout" not in m.events.reasons()
