"""The preflight step, pure and through one pass against fakes: no traffic (live or mirrored)
reaches the target before its preflight passed; a failure rolls back, says why and scales the
target to 0 with traffic unchanged; `retry` runs it again (a new Job); a restart mid-preflight
finds the same Job and creates no second one; a Job that cannot start says why when it ends."""

from __future__ import annotations

import copy
import datetime
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantrollout.pass_.observe import Memory
from quantrollout.pass_.plan import ACTION_ANNOTATION
from quantrollout.rollout import preflight_step
from quantrollout.rollout.preflight_step import ContainerEnd, JobSeen

from .fakes import PASSED_ARTIFACT, PASSED_GATE
from .test_pass import SPEC, Model

FAILED_ARTIFACT: dict[str, Any] = {
    "check": "artifact", "verdict": "Fail", "failures": [],
    "reasons": ["config.json: quantization_config.bits is 8, the spec says int4 (spec.target.precision)"],
}  # fmt: skip
FAILED_GATE: dict[str, Any] = {
    "check": "gate", "verdict": "Fail", "failures": [],
    "reasons": ["throughput-ratio 0.8 (target/baseline outputTokensPerSecond), must be >= 1: breached"],
    "facts": {"verdicts": [{"rule": "throughput-ratio", "field": "f", "value": 0.8,
                            "threshold": 1.0, "bound": "min", "verdict": "Fail"}]},
}  # fmt: skip
ANSWERS = {
    "pass": {"artifact": PASSED_ARTIFACT, "benchmark": PASSED_GATE},
    "artifact-fails": {"artifact": FAILED_ARTIFACT},
    "gate-fails": {"artifact": PASSED_ARTIFACT, "benchmark": FAILED_GATE},
    "no-message": {"artifact": PASSED_ARTIFACT, "benchmark": {}},
}
TARGET = "llama3-8b-int4-awq"


def _jobs(m: Model) -> list[str]:
    return sorted(name for kind, name in m.kube.children if kind == "Job")


def _replicas(m: Model, name: str = TARGET) -> int:
    return int(m.kube.children[("Deployment", name)]["spec"]["replicas"])


def _to_preflight(m: Model) -> str:
    """Passes until the preflight Job exists; its name."""
    m.until(lambda m: _jobs(m))
    (job,) = _jobs(m)
    return job


def test_a_passing_preflight_comes_before_shadow_with_its_figures_in_status() -> None:
    m = Model()
    job = _to_preflight(m)
    assert job == f"llama3-8b-preflight-{m.status['rollout']['id'][:8]}-0"
    assert m.live() == ("Pending", 0, 0)
    assert m.status["mirrorPercent"] == 0
    assert _replicas(m) == 2  # scaled up as for shadow, before any traffic
    conditions = {c["type"]: c for c in m.status["conditions"]}
    progressing = conditions["Progressing"]  # not "done" (kstatus Current) while it runs
    assert (progressing["status"], progressing["reason"]) == ("True", "PreflightRunning")
    assert progressing["message"] == f"preflight Job {job} running"
    assert conditions["Reconciling"]["reason"] == "PreflightRunning"
    m.run()
    assert (m.status["stage"], m.status["traffic"]["mirrorPercent"]) == ("shadow", 100)
    pre = m.status["preflight"]
    assert pre["phase"] == "Passed"
    assert pre["finishedAt"]
    assert [c["name"] for c in pre["checks"]] == ["artifact", "gate"]
    assert pre["checks"][1]["results"][0]["value"] == 1.4
    assert ("event", "PreflightPassed") in [w[:2] for w in m.kube.log]


def test_the_job_runs_the_operator_image_with_the_target_tiers_credentials() -> None:
    spec = copy.deepcopy(SPEC)
    spec["target"]["serving"] = {
        "serviceAccountName": "model-reader",
        "env": [{"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "id"}}}],
        "envFrom": [{"secretRef": {"name": "s3-extra"}}],
    }  # fmt: skip
    spec["rollout"]["preflight"] = {"timeout": "5m", "benchmark": {"requests": 16}}
    m = Model(spec)
    job = m.kube.children[("Job", _to_preflight(m))]
    pod = job["spec"]["template"]["spec"]
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 300
    assert job["metadata"]["ownerReferences"][0]["kind"] == "QuantizedModel"
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "model-reader"
    (artifact,) = pod["initContainers"]
    (bench,) = pod["containers"]
    for c in (artifact, bench):
        assert c["image"].startswith("ghcr.io/quantrollout/quantrollout:")
        assert c["terminationMessagePath"] == "/dev/termination-log"
        assert c["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "s3"
        assert c["envFrom"] == [{"secretRef": {"name": "s3-extra"}}]
    assert artifact["args"][:3] == ["preflight", "artifact", "--target"]
    assert "--requests" in bench["args"]
    assert bench["args"][bench["args"].index("--requests") + 1] == "16"
    assert f"http://{TARGET}.llm.svc:8000" in bench["args"]


def test_a_failed_artifact_check_moves_no_traffic_says_why_and_scales_the_target_to_zero() -> None:
    m = Model()
    m.kube.preflight_answers = ANSWERS["artifact-fails"]
    _to_preflight(m)
    m.run()
    assert m.live() == ("RolledBack", 0, 0)
    assert m.status["mirrorPercent"] == 0
    assert _replicas(m) == 0  # at once: it never served anything
    pre = m.status["preflight"]
    assert pre["phase"] == "Failed"
    assert "quantization_config.bits is 8" in pre["reasons"][0]
    assert "spec.target.precision" in m.status["rollback"]["reasons"][0]
    (event,) = [e for e in m.events.posted if e[1] == "PreflightFailed"]
    assert event[0] == "Warning"
    assert "quantization_config.bits is 8" in event[2]
    baseline = m.kube.children[("Deployment", "llama3-8b-fp16")]["spec"]["replicas"]
    assert baseline == 2  # nothing already serving changes


def test_retry_runs_preflight_again_with_a_new_job() -> None:
    m = Model()
    m.kube.preflight_answers = ANSWERS["gate-fails"]
    first = _to_preflight(m)
    m.run()
    assert m.status["phase"] == "RolledBack"
    m.kube.preflight_answers = ANSWERS["pass"]
    m.kube.annotate(ACTION_ANNOTATION, "retry")
    m.until(lambda m: len(_jobs(m)) == 2)
    second = next(j for j in _jobs(m) if j != first)
    assert second.endswith("-1")
    assert m.status["rollout"]["attempt"] == 1
    assert m.live() == ("Pending", 0, 0)
    m.until(lambda m: m.status.get("stage") == "shadow")
    assert m.status["preflight"]["attempt"] == 1
    assert m.status["preflight"]["phase"] == "Passed"


def test_a_restart_mid_preflight_finds_the_same_job() -> None:
    m = Model()
    m.kube.preflight_answers = None  # the Job keeps running
    job = _to_preflight(m)
    applied = [w for w in m.kube.log if w[:2] == ("apply", "Job")]
    for _ in range(3):
        m.memory = Memory()  # a restarted operator remembers nothing
        m.run()
    assert [w for w in m.kube.log if w[:2] == ("apply", "Job")] == applied
    assert m.live() == ("Pending", 0, 0)
    m.kube.finish_job(job, ANSWERS["pass"])
    m.memory = Memory()
    m.run()
    assert m.status["stage"] == "shadow"


def test_a_result_that_cannot_be_read_fails_preflight() -> None:
    m = Model()
    m.kube.preflight_answers = ANSWERS["no-message"]
    _to_preflight(m)
    m.run()
    assert m.live() == ("RolledBack", 0, 0)
    assert "without a result" in m.status["preflight"]["reasons"][0]


def test_preflight_off_starts_shadow_without_a_job() -> None:
    spec = copy.deepcopy(SPEC)
    spec["rollout"]["preflight"] = {"enabled": False}
    m = Model(spec)
    m.until(lambda m: m.status.get("stage") == "shadow")
    assert _jobs(m) == []
    assert "preflight" not in m.status


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.sampled_from(["pass", "artifact-fails", "gate-fails", "no-message", "hold", "retry",
                         "abort", "promote", "restart"]),
        min_size=1, max_size=12,
    )
)  # fmt: skip
def test_no_traffic_reaches_the_target_before_its_preflight_passed(script: list[str]) -> None:
    m = Model()
    m.kube.preflight_answers = None
    for step in script:
        if step in ANSWERS:
            m.kube.preflight_answers = ANSWERS[step]
            for kind, name in list(m.kube.children):
                job = m.kube.children[(kind, name)]
                if kind == "Job" and not job.get("status"):
                    m.kube.finish_job(name, ANSWERS[step])
        elif step == "hold":
            m.kube.preflight_answers = None
        elif step == "restart":
            m.memory = Memory()
        else:
            m.kube.annotate(ACTION_ANNOTATION, step)
        m.run()
        s = m.status
        pre = s.get("preflight") or {}
        book = s.get("rollout") or {}
        passed = (
            pre.get("phase") == "Passed"
            and pre.get("rolloutId") == book.get("id")
            and pre.get("attempt") == book.get("attempt")
        )
        traffic = s.get("traffic") or {}
        if not passed:
            assert traffic.get("targetWeight", 0) == 0, s
            assert traffic.get("mirrorPercent", 0) == 0, s
        this_attempt = (pre.get("rolloutId"), pre.get("attempt")) == (
            book.get("id"),
            book.get("attempt"),
        )
        if this_attempt and pre.get("phase") == "Failed" and s.get("phase") == "RolledBack":
            assert _replicas(m) == 0  # at once: it never served anything
        names = [w[2] for w in m.kube.log if w[:2] == ("apply", "Job")]
        assert len(names) == len(set(names)), "a Job applied twice"


NOW = datetime.datetime(2027, 1, 1, tzinfo=datetime.UTC)
ON = preflight_step.PreflightSettings(
    True, True, False, 600.0, preflight_step.Preflight(timeout="10m")
)


def test_a_job_that_cannot_start_times_out_with_the_kubelets_reason() -> None:
    pods = [{"metadata": {"creationTimestamp": "x"}, "status": {"phase": "Pending",
             "initContainerStatuses": [{"name": "artifact", "state": {"waiting": {
                 "reason": "ImagePullBackOff", "message": "Back-off pulling image \"ghcr.io/x\""}}}]}}]  # fmt: skip
    seen = preflight_step.job_seen("j", {"status": {}}, pods)
    assert (
        seen.waiting == 'container artifact: ImagePullBackOff: Back-off pulling image "ghcr.io/x"'
    )
    record = {"rolloutId": "r", "attempt": 0, "job": "j", "phase": "Running",
              "startedAt": "2027-01-01T00:00:00Z"}  # fmt: skip
    kw: dict[str, Any] = {"model": "m", "rollout_id": "r", "attempt": 0, "tiers_ready": True}
    running = preflight_step.advance(ON, record, job=seen, now=NOW, **kw)
    assert running.record is not None
    assert running.record["waiting"] == seen.waiting
    assert not running.passed
    # The Job controller ends it at its deadline and deletes the pod: the last reason stays.
    ended = JobSeen("j", True, failed="DeadlineExceeded: Job was active longer than specified deadline")  # fmt: skip
    out = preflight_step.advance(ON, running.record, job=ended, now=NOW, **kw)
    assert out.failed
    assert "DeadlineExceeded" in out.failed[0]
    assert "ImagePullBackOff" in out.failed[0]


def test_an_unschedulable_pod_is_reported_in_the_schedulers_words() -> None:
    pods = [{"metadata": {}, "status": {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "message": "0/3 nodes are available: 3 Insufficient cpu."}]}}]  # fmt: skip
    seen = preflight_step.job_seen("j", {"status": {}}, pods)
    assert seen.waiting == "pod not scheduled: 0/3 nodes are available: 3 Insufficient cpu."


def test_the_termination_messages_become_status_checks() -> None:
    seen = JobSeen("j", True, complete=True, ends=(
        ContainerEnd("artifact", 0, json.dumps(PASSED_ARTIFACT)),
        ContainerEnd("benchmark", 0, json.dumps(PASSED_GATE)),
    ))  # fmt: skip
    checks, reasons = preflight_step.read_result(seen)
    assert reasons == []
    assert checks[0] == {"name": "artifact", "verdict": "Pass", "reasons": [], "weightsBytes": 100,
                         "estimateBytes": 90}  # fmt: skip
    assert checks[1]["target"] == {"requests": 64, "errors": 0, "ttftP99": 0.1}


def test_no_evaluation_reads_vllms_series_back_into_preflight() -> None:
    """ttft-p99 reads vLLM's own histogram, which counts the benchmark's requests too: the first
    evaluation waits until its window no longer reaches back before preflight ended."""
    spec = copy.deepcopy(SPEC)
    spec["rollout"]["analysis"]["rules"] = [{"name": "ttft-p99", "max": "1s", "window": "6s"}]
    m = Model(spec)
    m.until(lambda m: m.status.get("stage") == "shadow")
    ended = datetime.datetime.fromisoformat(
        m.status["preflight"]["finishedAt"].replace("Z", "+00:00")
    )
    while m.clock() < ended + datetime.timedelta(seconds=6):
        assert m.metrics.calls == [], m.clock()
        m.run(1.0)
    m.until(lambda m: m.metrics.calls, passes=3)


def test_router_rules_alone_are_evaluated_at_once() -> None:
    m = Model()  # the default rules read the router's series only
    m.until(lambda m: m.status.get("stage") == "shadow")
    m.until(lambda m: m.metrics.calls, passes=3)


def test_a_job_superseded_by_a_new_target_is_deleted_with_an_event() -> None:
    m = Model()
    m.kube.preflight_answers = None  # the Job keeps running (benchmarking the tiers)
    first = _to_preflight(m)
    m.edit({"target": {"artifact": "s3://models/llama3-8b-awq-v2"}})
    m.run()
    assert ("delete", "Job", first) in m.kube.log
    assert first not in _jobs(m)
    assert m.status["preflight"]["job"] != first
    (message,) = [msg for _, r, msg in m.events.posted if r == "PreflightJobDeleted"]
    assert message.startswith(f"preflight Job {first} deleted, with its pod (superseded")
    m.run()  # the new rollout's Job runs; the old one is not deleted twice
    assert [w for w in m.kube.log if w[:2] == ("delete", "Job")] == [("delete", "Job", first)]


def test_a_job_still_running_when_its_rollout_is_aborted_is_deleted() -> None:
    m = Model()
    m.kube.preflight_answers = None
    job = _to_preflight(m)
    m.kube.annotate(ACTION_ANNOTATION, "abort")
    m.until(lambda m: m.status.get("phase") == "RolledBack")
    assert m.status["preflight"]["phase"] == "Failed"
    assert ("delete", "Job", job) in m.kube.log
    assert "PreflightJobDeleted" in m.events.reasons()


def test_a_job_that_failed_by_itself_is_kept_for_its_logs() -> None:
    m = Model()
    m.kube.preflight_answers = ANSWERS["gate-fails"]
    job = _to_preflight(m)
    m.run()
    assert m.status["preflight"]["phase"] == "Failed"
    assert job in _jobs(m)
    assert not [w for w in m.kube.log if w[:2] == ("delete", "Job")]


RUNNING = {"rolloutId": "r", "attempt": 0, "job": "j", "phase": "Running",
           "startedAt": "2027-01-01T00:00:00Z"}  # fmt: skip


@pytest.mark.parametrize(
    ("record", "job", "stopped"),
    [
        (None, JobSeen("j", True), False),  # unchanged this pass
        ({**RUNNING, "job": "k"}, None, True),  # a new attempt's record: superseded
        ({**RUNNING, "phase": "Passed"}, JobSeen("j", True, complete=True), False),
        ({**RUNNING, "phase": "Failed"}, JobSeen("j", True), True),  # given up: overdue, aborted
        ({**RUNNING, "phase": "Failed"}, JobSeen("j", True, failed="DeadlineExceeded: x"), False),
        ({**RUNNING, "phase": "Failed"}, JobSeen("j", True, complete=True), False),
        ({**RUNNING, "phase": "Failed"}, JobSeen("j", False), False),  # gone already
        ({**RUNNING, "phase": "Failed"}, None, False),  # not looked at
    ],
)
def test_which_job_is_stopped(
    record: dict[str, Any] | None, job: JobSeen | None, stopped: bool
) -> None:
    out = preflight_step.to_stop(RUNNING, record, job)
    assert (out is not None) == stopped
    if out is not None:
        assert out[0] == "j"
        assert out[1].reason == "PreflightJobDeleted"


def test_nothing_is_stopped_unless_the_recorded_preflight_was_running() -> None:
    for phase in ("Passed", "Failed"):
        assert (
            preflight_step.to_stop({**RUNNING, "phase": phase}, {**RUNNING, "job": "k"}, None)
            is None
        )
    assert preflight_step.to_stop(None, RUNNING, None) is None
