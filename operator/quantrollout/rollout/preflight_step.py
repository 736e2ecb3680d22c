"""The preflight step: whether a rollout may start (its first stage's traffic), and what its
preflight Job says. Pure: the Job and its pod come in as values (`JobSeen`, read by the
observer), the step's record goes out as the `status.preflight` block, for the executor to write.

One preflight runs per attempt of a rollout (`status.rollout.id`, `attempt`): a new target, or a
user's `retry` after a failure, runs it again; the Job's name is a function of the model, the
rollout and the attempt, so an operator restarted mid-preflight finds the same Job and never
creates a second one.

What the plan asks of it (`pass_.plan` keeps the hook small):

- `needed`: while a rollout is about to start (Pending, a new target, a retry), has this attempt's
  preflight passed? Until it has, the state machine is told the tiers are not ready: no step's
  weights, live or mirrored, reach the target. The capacity plan meanwhile scales the target up
  as for the first stage, so the benchmark loads the replicas shadow will use.
- `advance`: the record after this pass, the Job to create (once both tiers are Ready for the
  first stage), and, when the Job ended, the verdict. A Fail, an Error, an Inconclusive gate or
  a Job that ended without a readable result all fail preflight: the rollout is rolled back
  (0% live, 0% mirrored, as it already was), says why in `status.preflight.reasons`, the
  rollback reasons and a Warning Event, and the target is scaled to 0 at once
  (`scale_down_now`), not kept for `abortScaleDownDelay`: it never served anything.
- A Job that cannot start (an image that cannot be pulled, a pod no node can take) keeps being
  Running with `waiting` saying why (the scheduler's or the kubelet's words) until the Job's
  `activeDeadlineSeconds` (`spec.rollout.preflight.timeout`) ends it; the failure then carries the
  last such reason.
- `to_stop`: a Job no attempt waits for any more is deleted, with its pod (its benchmark stops
  loading the tiers at once, not at its deadline): one superseded by a new rollout or attempt
  while it ran, and one the operator gave up on (past its deadline, or its rollout rolled back
  while it ran). A Job that ended by itself stays, for `kubectl logs`, until its TTL.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any, Literal

from quantrollout import defaults
from quantrollout.analysis.rules import default_window
from quantrollout.api.durations import parse_duration
from quantrollout.api.preflight import Preflight
from quantrollout.api.spec import Analysis, QuantizedModelSpec

from .machine import Event

PreflightPhase = Literal["Running", "Passed", "Failed"]
# Rules whose series vLLM exports itself, counting every request a tier served (preflight's too).
VLLM_SERIES_RULES = frozenset({"ttft-p99", "custom"})
# A grace past the Job's own deadline before the operator gives up on a Job that the Job
# controller has not marked failed yet (a controller-manager down, say).
DEADLINE_GRACE_S = 60.0


@dataclass(frozen=True)
class PreflightSettings:
    """What runs: the artifact check, the benchmark (warm-up included), the quality probe."""

    artifact: bool
    benchmark: bool
    probe: bool
    timeout_s: float
    spec: Preflight


def settings_of(spec: QuantizedModelSpec) -> PreflightSettings | None:
    """The preflight in force, defaults applied; None when it is off (or has nothing to run)."""
    pre = (spec.rollout.preflight if spec.rollout else None) or Preflight()
    if not pre.enabled or spec.mixed:
        # Mixed precision (several targets): the Job checks one target against the baseline,
        # so preflight is not run for them yet (docs/preflight.md says so).
        return None
    artifact = pre.artifact is None or pre.artifact.enabled
    benchmark = pre.benchmark is None or pre.benchmark.enabled
    probe = pre.quality_probe is not None
    if not (artifact or benchmark or probe):
        return None
    timeout = parse_duration(pre.timeout or defaults.PREFLIGHT_TIMEOUT)
    return PreflightSettings(artifact, benchmark, probe, timeout, pre)


@dataclass(frozen=True)
class ContainerEnd:
    """A container of the Job's pod that terminated: its exit code and termination message."""

    name: str
    exit_code: int
    message: str = ""
    reason: str = ""


@dataclass(frozen=True)
class JobSeen:
    """The preflight Job as observed, with its (newest) pod."""

    name: str
    exists: bool = False
    complete: bool = False  # the Job's Complete condition
    failed: str | None = None  # the Job's Failed condition: "Reason: message"
    ends: tuple[ContainerEnd, ...] = ()  # init containers first, in order
    waiting: str | None = None  # why its pod is not running: unschedulable, image pull, ...


_KEYS = ("rolloutId", "attempt", "job", "phase", "startedAt", "finishedAt", "waiting", "reasons",
         "checks")  # fmt: skip


def as_patch(record: dict[str, Any]) -> dict[str, Any]:
    """The record as a merge patch: every key of the block, None for those it has not (a merge
    patch would keep an earlier attempt's keys otherwise)."""
    return {k: record.get(k) for k in _KEYS}


def _same(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    def strip(d: dict[str, Any] | None) -> dict[str, Any]:
        return {k: v for k, v in (d or {}).items() if v is not None}

    return a is not None and b is not None and strip(a) == strip(b)


@dataclass(frozen=True)
class Outcome:
    record: dict[str, Any] | None  # status.preflight after this pass (None: leave it as it is)
    passed: bool  # this attempt's preflight passed: the rollout may start
    create_job: bool = False
    failed: tuple[str, ...] = ()  # non-empty: preflight failed now, with these reasons
    events: tuple[Event, ...] = ()


def job_name(model: str, rollout_id: str, attempt: int) -> str:
    """Deterministic per rollout and attempt; at most 63 characters (the Job controller puts it
    in a label)."""
    suffix = f"-preflight-{rollout_id[:8]}-{attempt}"
    return model[: 63 - len(suffix)].rstrip("-.") + suffix


def record_of(status: dict[str, Any], rollout_id: str, attempt: int) -> dict[str, Any] | None:
    """The recorded preflight of this attempt of this rollout, if any."""
    rec = status.get("preflight")
    if not isinstance(rec, dict) or rec.get("rolloutId") != rollout_id:
        return None
    return rec if int(rec.get("attempt", 0)) == attempt else None


def _time(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


_FIGURES = ("requests", "errors", "ttftP50", "ttftP99", "itlP50", "itlP99",
            "outputTokensPerSecond", "seconds")  # fmt: skip


def check_of(container: str, doc: dict[str, Any]) -> dict[str, Any]:
    """A check's entry in `status.preflight.checks` from its termination message."""
    name = "artifact" if doc.get("check") == "artifact" or container == "artifact" else "gate"
    verdict = doc.get("verdict")
    if verdict not in ("Pass", "Fail", "Error", "Inconclusive"):
        verdict = "Error"
    out: dict[str, Any] = {"name": name, "verdict": verdict}
    reasons = [str(r) for r in doc.get("reasons") or []]
    if doc.get("omitted"):
        reasons.append(f"({doc['omitted']} more reasons left out of the 4096-byte message)")
    out["reasons"] = reasons
    facts = doc.get("facts") or {}
    if name == "gate":
        results = []
        for v in facts.get("verdicts") or []:
            results.append({k: v.get(k) for k in ("rule", "field", "value", "threshold", "bound")}
                           | {"verdict": v.get("verdict")})  # fmt: skip
        if results:
            out["results"] = results
        for side in ("baseline", "target"):
            figures = facts.get(side)
            if isinstance(figures, dict):
                out[side] = {k: figures.get(k) for k in _FIGURES if figures.get(k) is not None}
        probe = facts.get("probe") or {}
        if probe.get("agreement") is not None:
            out["agreement"] = probe["agreement"]
        if probe.get("exactMatch") is not None:
            out["exactMatch"] = probe["exactMatch"]
    else:
        for key in ("weightsBytes", "estimateBytes"):
            if isinstance(facts.get(key), int):
                out[key] = facts[key]
    return out


def read_result(job: JobSeen) -> tuple[list[dict[str, Any]], list[str]]:
    """Each ended check's entry, and why preflight fails (empty: every check passed)."""
    checks: list[dict[str, Any]] = []
    reasons: list[str] = []
    for end in job.ends:
        try:
            doc = json.loads(end.message) if end.message.strip() else None
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or "verdict" not in doc:
            reasons.append(
                f"container {end.name} of Job {job.name} exited with code {end.exit_code}"
                f"{f' ({end.reason})' if end.reason else ''} without a result in its "
                "termination message"
            )
            continue
        check = check_of(end.name, doc)
        checks.append(check)
        if check["verdict"] != "Pass":
            what = {"Fail": "failed", "Error": "could not be made",
                    "Inconclusive": "had nothing to judge"}[check["verdict"]]  # fmt: skip
            why = "; ".join(check["reasons"]) or "no reason given"
            reasons.append(f"the {check['name']} check {what}: {why}")
    return checks, reasons


def _summary(checks: list[dict[str, Any]]) -> str:
    """The figures of a passed gate, in a few words for the Event."""
    parts = []
    for check in checks:
        if check["name"] == "artifact":
            parts.append("artifact ok")
        for r in check.get("results") or []:
            if r.get("value") is not None:
                parts.append(f"{r['rule']} {r['value']:.3g}")
    return ", ".join(parts) or "all checks passed"


def advance(
    settings: PreflightSettings,
    record: dict[str, Any] | None,
    *,
    model: str,
    rollout_id: str,
    attempt: int,
    tiers_ready: bool,
    job: JobSeen | None,
    now: datetime.datetime,
) -> Outcome:
    """This attempt's preflight after this pass. `tiers_ready`: both tiers have Ready replicas
    for the first stage (the Job loads the replicas the stage will use); `job`: the Job as
    observed (None: not looked for)."""
    name = job_name(model, rollout_id, attempt)
    base = {"rolloutId": rollout_id, "attempt": attempt, "job": name}
    if record is not None and record.get("phase") in ("Passed", "Failed"):
        return Outcome(None, record["phase"] == "Passed")
    if job is None or not job.exists:
        if record is not None and record.get("startedAt"):
            # Created before and gone now (deleted by hand, or by its TTL before we read it):
            # its result is lost, so this attempt fails rather than running twice unasked.
            why = f"the preflight Job {name} disappeared before its result was read"
            return _fail(base, record, (why,), now)
        if not tiers_ready:
            waiting = {**base, "phase": "Running", "waiting": "waiting for both tiers to be Ready"}
            return Outcome(None if _same(record, waiting) else waiting, False)
        started = {**base, "phase": "Running", "startedAt": _rfc3339(now)}
        return Outcome(started, False, create_job=True, events=(
            Event("Normal", "PreflightStarted",
                  f"preflight Job {name} started: {_parts(settings)}; no traffic reaches the "
                  "target until it passes"),
        ))  # fmt: skip
    started_at = (record or {}).get("startedAt") or _rfc3339(now)
    running = {**base, "phase": "Running", "startedAt": started_at}
    checks, reasons = read_result(job)
    if job.complete and not reasons and checks:
        passed = {**running, "phase": "Passed", "finishedAt": _rfc3339(now), "checks": checks}
        return Outcome(passed, True, events=(
            Event("Normal", "PreflightPassed", f"preflight passed ({_summary(checks)})"),
        ))  # fmt: skip
    if job.failed is not None or (job.complete and (reasons or not checks)):
        if not reasons:
            last = job.waiting or (record or {}).get("waiting")
            reasons = [f"the preflight Job {name} failed ({job.failed or 'no result'})"
                       + (f"; its pod was waiting: {last}" if last else "")]  # fmt: skip
        return _fail(running, record, tuple(reasons), now, checks)
    deadline = _time(started_at)
    if deadline is not None:
        overdue = (now - deadline).total_seconds() - settings.timeout_s - DEADLINE_GRACE_S
        if overdue > 0:
            why = (f"the preflight Job {name} did not finish within {settings.spec.timeout}"
                   + (f": {job.waiting}" if job.waiting else ""))  # fmt: skip
            return _fail(running, record, (why,), now, checks)
    if job.waiting:
        running["waiting"] = job.waiting
    elif not job.ends and (record or {}).get("waiting"):
        # Nothing ran since: the last reason stands (the pod may be gone already, deleted by
        # the Job controller at its deadline, before the Job says it failed).
        running["waiting"] = (record or {})["waiting"]
    if checks:
        running["checks"] = checks
    return Outcome(None if _same(record, running) else running, False)


def closed(
    record: dict[str, Any], reasons: tuple[str, ...], now: datetime.datetime
) -> dict[str, Any]:
    """A Running record closed because its rollout rolled back while it ran (an abort, say)."""
    return {**record, "phase": "Failed", "finishedAt": _rfc3339(now), "reasons": list(reasons)}


def to_stop(
    recorded: dict[str, Any] | None,
    record: dict[str, Any] | None,
    job: JobSeen | None,
) -> tuple[str, Event] | None:
    """The preflight Job to delete this pass, if any, and the Event that says so. `recorded`:
    the preflight in status before this pass; `record`: the one this pass writes (None:
    unchanged, or no preflight in play); `job`: this pass's Job as observed."""
    if recorded is None or recorded.get("phase") != "Running" or record is None:
        return None
    old = recorded.get("job")
    if not isinstance(old, str) or not old:
        return None
    if record.get("job") != old:
        why = "superseded: a new rollout or attempt started while it ran"
    elif record.get("phase") != "Failed" or job is None or not job.exists:
        return None
    elif job.complete or job.failed is not None:
        return None  # it ended by itself: kept for `kubectl logs` until its TTL
    else:
        why = "the preflight it ran for has failed: " + "; ".join(record.get("reasons") or [])
    return old, Event(
        "Normal", "PreflightJobDeleted",
        f"preflight Job {old} deleted, with its pod ({why}); its benchmark stops loading the tiers",
    )  # fmt: skip


def _fail(
    base: dict[str, Any],
    record: dict[str, Any] | None,
    reasons: tuple[str, ...],
    now: datetime.datetime,
    checks: list[dict[str, Any]] | None = None,
) -> Outcome:
    failed = {
        **base,
        "phase": "Failed",
        "startedAt": base.get("startedAt") or (record or {}).get("startedAt"),
        "finishedAt": _rfc3339(now),
        "reasons": list(reasons),
        "checks": checks or (record or {}).get("checks") or [],
    }
    message = "preflight failed, no traffic moved to the target: " + "; ".join(reasons)
    return Outcome(failed, False, failed=reasons, events=(
        Event("Warning", "PreflightFailed", message),
    ))  # fmt: skip


def _parts(settings: PreflightSettings) -> str:
    parts = []
    if settings.artifact:
        parts.append("artifact check")
    if settings.benchmark:
        parts.append("warm-up and benchmark")
    if settings.probe:
        parts.append("quality probe")
    return ", ".join(parts)


def failed_here(status: dict[str, Any], rollout_id: str | None, attempt: int) -> bool:
    """This attempt of this rollout was rolled back by its preflight."""
    if rollout_id is None:
        return False
    rec = record_of(status, rollout_id, attempt)
    return rec is not None and rec.get("phase") == "Failed"


def finished_at(status: dict[str, Any]) -> datetime.datetime | None:
    """When the recorded preflight ended: analysis windows never reach back before it (the
    benchmark's requests are in vLLM's own series, unlabelled)."""
    rec = status.get("preflight")
    return _time(rec.get("finishedAt")) if isinstance(rec, dict) else None


def job_seen(name: str, job: dict[str, Any] | None, pods: list[dict[str, Any]]) -> JobSeen:
    """The Job and its pods as the API returns them, as a JobSeen: the newest pod's ended
    containers (init containers first) with their termination messages, and why it is not
    running when it is not (the scheduler's condition, a container's waiting reason)."""
    if job is None:
        return JobSeen(name)
    complete, failed = False, None
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("status") != "True":
            continue
        if c.get("type") == "Complete":
            complete = True
        elif c.get("type") == "Failed":
            failed = f"{c.get('reason') or 'Failed'}: {c.get('message') or ''}".rstrip(": ")
    ends: list[ContainerEnd] = []
    waiting = None
    if pods:
        pod = max(pods, key=lambda p: p.get("metadata", {}).get("creationTimestamp") or "")
        st = pod.get("status") or {}
        for cs in [*(st.get("initContainerStatuses") or []), *(st.get("containerStatuses") or [])]:
            state = cs.get("state") or {}
            term = state.get("terminated")
            if term is not None:
                ends.append(ContainerEnd(str(cs.get("name")), int(term.get("exitCode") or 0),
                                         str(term.get("message") or ""),
                                         str(term.get("reason") or "")))  # fmt: skip
            wait = state.get("waiting")
            if wait and wait.get("reason") not in (None, "PodInitializing", "ContainerCreating"):
                waiting = f"container {cs.get('name')}: {wait.get('reason')}" + (
                    f": {wait['message']}" if wait.get("message") else ""
                )
        for c in st.get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False":
                waiting = f"pod not scheduled: {c.get('message') or c.get('reason')}"
    return JobSeen(name, True, complete, failed, tuple(ends), waiting)


def analysis_clear_at(
    status: dict[str, Any], rollout_id: str | None, attempt: int, analysis: Analysis
) -> datetime.datetime | None:
    """The first moment no analysis window of a rule reading vLLM's own series reaches back
    into this rollout's preflight: its end plus the longest such window. Those series (the
    `ttft-p99` rule; a custom query may read them too) cannot tell a benchmark request from a
    user's, so no evaluation is made before then (a step needs a Pass to be promoted, so it
    waits too). The router's series never see preflight requests: with only their rules, None."""
    rec = record_of(status, rollout_id, attempt) if rollout_id else None
    if rec is None or rec.get("phase") != "Passed":
        return None
    end = _time(rec.get("finishedAt"))
    reading = [r for r in analysis.rules or [] if r.name in VLLM_SERIES_RULES]
    if end is None or not reading:
        return None
    windows = [parse_duration(r.window or default_window(analysis)) for r in reading]
    return end + datetime.timedelta(seconds=max(windows))
