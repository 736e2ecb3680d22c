"""Fakes for the pass's I/O seams (`quantrollout.io`): an in-memory API that keeps resourceVersions
the way the API server does (a status patch with a stale one is a 409) and records every write in
order, a metric source with scripted verdicts, an Event sink and a settable clock."""

from __future__ import annotations

import copy
import datetime
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from kubernetes.client.exceptions import ApiException

from quantrollout.analysis.class_stats import ClassObservation
from quantrollout.analysis.rules import Scope
from quantrollout.api.spec import QuantizedModelSpec
from quantrollout.rollout.machine import Evaluation, Verdict

T0 = datetime.datetime(2027, 1, 1, tzinfo=datetime.UTC)


def merge(into: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386), as the API server applies one."""
    out = copy.deepcopy(into)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _ready_status(obj: dict[str, Any]) -> dict[str, Any]:
    replicas = obj["spec"].get("replicas", 1)
    return {
        "observedGeneration": obj["metadata"]["generation"],
        "replicas": replicas, "readyReplicas": replicas, "updatedReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [{"type": "Available", "status": "True"},
                       {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}],
    }  # fmt: skip


PASSED_ARTIFACT: dict[str, Any] = {"check": "artifact", "verdict": "Pass", "reasons": [], "failures": [],
                                   "facts": {"weightsBytes": 100, "estimateBytes": 90}}  # fmt: skip
PASSED_GATE: dict[str, Any] = {
    "check": "gate", "verdict": "Pass", "reasons": [], "failures": [],
    "facts": {"verdicts": [{"rule": "throughput-ratio", "field": "t/b", "value": 1.4,
                            "threshold": 1.0, "bound": "min", "verdict": "Pass"}],
              "baseline": {"requests": 64, "errors": 0, "ttftP99": 0.2},
              "target": {"requests": 64, "errors": 0, "ttftP99": 0.1}},
}  # fmt: skip


@dataclass
class FakeKube:
    """One model and its children in memory. `log` holds every write, in order:
    ("apply", kind, name, replicas), ("delete", kind, name), ("route", weights),
    ("status", patch), ("unannotate", key); `reads` every read."""

    model: dict[str, Any]
    children: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    route: dict[str, Any] | None = None  # the HTTPRoute's spec; None: there is none (404)
    ready_on_apply: bool = True  # Deployments become Ready at once
    # What a preflight Job's checks answer once it is created (the container's termination
    # message, as `quantrollout preflight` writes it); None: the Job stays running.
    preflight_answers: dict[str, dict[str, Any]] | None = field(
        default_factory=lambda: {"artifact": PASSED_ARTIFACT, "benchmark": PASSED_GATE}
    )
    pods: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # Job -> its pods
    log: list[tuple[Any, ...]] = field(default_factory=list)
    reads: list[tuple[str, ...]] = field(default_factory=list)
    # Edits that race the next status patches: each runs just before one, after our read.
    before_status_patch: list[Callable[[], None]] = field(default_factory=list)
    _rv: int = 1

    def __post_init__(self) -> None:
        self.model = copy.deepcopy(self.model)
        self.model["metadata"].setdefault("namespace", "llm")
        self.model["metadata"].setdefault("uid", "u-1")
        self.model["metadata"]["generation"] = 1
        self.model["metadata"]["resourceVersion"] = "1"

    def _bump(self) -> str:
        self._rv += 1
        return str(self._rv)

    def edit_spec(self, spec_patch: dict[str, Any]) -> None:
        """A user's edit of the spec (a new generation, a new resourceVersion)."""
        self.model["spec"] = merge(self.model["spec"], spec_patch)
        self.model["metadata"]["generation"] += 1
        self.model["metadata"]["resourceVersion"] = self._bump()

    def annotate(self, key: str, value: str) -> None:
        self.model["metadata"].setdefault("annotations", {})[key] = value
        self.model["metadata"]["resourceVersion"] = self._bump()

    # KubeIO

    def get_quantizedmodel(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append(("QuantizedModel", name))
        return copy.deepcopy(self.model)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append((kind, name))
        return copy.deepcopy(self.children.get((kind, name)))

    def list_deployments(self, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        self.reads.append(
            ("Deployments", ",".join(f"{k}={v}" for k, v in sorted(selector.items())))
        )
        return [
            copy.deepcopy(d)
            for (kind, _), d in sorted(self.children.items())
            if kind == "Deployment"
            and selector.items() <= (d["metadata"].get("labels") or {}).items()
        ]

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        key = (obj["kind"], obj["metadata"]["name"])
        live = self.children.get(key)
        stored = merge(live or {}, obj)
        gen = (live or {}).get("metadata", {}).get("generation", 0)
        stored["metadata"]["generation"] = gen + 1
        if obj["kind"] == "Job":
            self.children[key] = stored
            self.log.append(("apply", "Job", key[1], None))
            if live is None and self.preflight_answers is not None:
                self.finish_job(key[1], self.preflight_answers)
            return copy.deepcopy(self.children[key])
        if obj["kind"] == "Deployment":
            if self.ready_on_apply:
                stored["status"] = _ready_status(stored)
            else:  # the pods that were Ready stay Ready (as many as are kept); new ones load
                before = (live or {}).get("status") or {}
                kept = min(before.get("readyReplicas", 0), stored["spec"].get("replicas", 1))
                stored["status"] = {**before, "readyReplicas": kept, "availableReplicas": kept}
        self.children[key] = stored
        self.log.append(("apply", obj["kind"], key[1], obj.get("spec", {}).get("replicas")))
        return copy.deepcopy(stored)

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        self.log.append(("delete", kind, name))
        return self.children.pop((kind, name), None) is not None

    def unschedulable_message(self, namespace: str, selector: dict[str, str]) -> str | None:
        return None

    def job_pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        self.reads.append(("Pods", job))
        return copy.deepcopy(self.pods.get(job, []))

    def finish_job(self, name: str, answers: dict[str, dict[str, Any]]) -> None:
        """The Job's pod ran its containers in order, each ending with its answer (exit 1 on
        anything but Pass, which stops the ones after it), as the kubelet reports them."""
        job = self.children.get(("Job", name)) or {"metadata": {"name": name}}
        spec = job.get("spec", {}).get("template", {}).get("spec", {})
        names = [c["name"] for c in (*spec.get("initContainers", []), *spec.get("containers", []))]
        statuses, failed = [], False
        for c in names or list(answers):
            if failed or c not in answers:
                break
            doc = answers[c]
            code = 0 if doc.get("verdict") == "Pass" else 1
            failed = code != 0
            statuses.append({"name": c, "state": {"terminated": {
                "exitCode": code, "message": json.dumps(doc), "reason": "Completed" if not code else "Error"}}})  # fmt: skip
        init = spec.get("initContainers", [])
        pod = {"metadata": {"name": f"{name}-x", "creationTimestamp": "2026-01-01T00:00:00Z"},
               "status": {"phase": "Failed" if failed else "Succeeded",
                          "initContainerStatuses": statuses[: len(init)],
                          "containerStatuses": statuses[len(init):]}}  # fmt: skip
        self.pods[name] = [pod]
        cond = {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"} if failed else {"type": "Complete", "status": "True"}  # fmt: skip
        job["status"] = {"conditions": [cond]}
        self.children[("Job", name)] = job

    def patch_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> None:
        if self.before_status_patch:
            self.before_status_patch.pop(0)()
        if (
            resource_version is not None
            and resource_version != self.model["metadata"]["resourceVersion"]
        ):
            raise ApiException(status=409, reason="Conflict")
        self.model["status"] = merge(self.model.get("status") or {}, status)
        self.model["metadata"]["resourceVersion"] = self._bump()
        self.log.append(("status", copy.deepcopy(status)))

    def remove_annotation(self, namespace: str, name: str, key: str) -> None:
        (self.model["metadata"].get("annotations") or {}).pop(key, None)
        self.model["metadata"]["resourceVersion"] = self._bump()
        self.log.append(("unannotate", key))

    def secret_value(self, namespace: str, name: str, key: str) -> str:
        raise KeyError(key)

    def write_http_route_rules(self, namespace: str, name: str, spec: dict[str, Any]) -> None:
        if self.route is None:
            raise ApiException(status=404, reason="Not Found")
        self.route = spec
        weights = [b["weight"] for b in spec["rules"][0]["backendRefs"]]
        self.log.append(("route", tuple(weights)))

    def make_ready(self, name: str) -> None:
        """The Deployment's pods all became Ready (a Deployment event follows)."""
        d = self.children[("Deployment", name)]
        d["status"] = _ready_status(d)

    # For assertions

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.model.get("status") or {})

    def writes(self) -> list[tuple[Any, ...]]:
        out = list(self.log)
        self.log.clear()
        return out


@dataclass
class FakeMetrics:
    """Answers every evaluation with the next scripted verdict (then repeats the last), and every
    class observation with the next scripted one (then repeats the last; none scripted: an
    observation with no data)."""

    verdicts: list[Verdict] = field(default_factory=lambda: ["Pass"])
    calls: list[str] = field(default_factory=list)  # the stage of each evaluation
    observations: list[ClassObservation] = field(default_factory=list)
    # (tiers, baseline, window) of each class observation asked for
    class_calls: list[tuple[tuple[str, ...], str, str]] = field(default_factory=list)

    def classes(
        self,
        kube: Any,
        spec: QuantizedModelSpec,
        namespace: str,
        name: str,
        tiers: Sequence[str],
        baseline: str,
        window: str,
    ) -> ClassObservation:
        self.class_calls.append((tuple(tiers), baseline, window))
        if not self.observations:
            return ClassObservation()
        if len(self.observations) > 1:
            return self.observations.pop(0)
        return self.observations[0]

    def evaluate(
        self, kube: Any, spec: QuantizedModelSpec, scope: Scope, stage: str, since: float
    ) -> tuple[Evaluation, list[dict[str, Any]]]:
        self.calls.append(stage)
        verdict = self.verdicts.pop(0) if len(self.verdicts) > 1 else self.verdicts[0]
        if verdict == "Fail":
            result = {"rule": "error-rate", "value": 0.2, "threshold": 0.01, "verdict": "Fail"}
            return Evaluation("Fail", ("error-rate 0.2 > 0.01",)), [result]
        return Evaluation(verdict), [
            {"rule": "error-rate", "value": 0.0, "threshold": 0.01, "verdict": verdict}
        ]


@dataclass
class FakeEvents:
    """Posted Events; each also goes into `log` (the FakeKube's), to check the order of writes."""

    log: list[tuple[Any, ...]] = field(default_factory=list)
    posted: list[tuple[str, str, str]] = field(default_factory=list)

    def __call__(
        self, model: dict[str, Any], type: Literal["Normal", "Warning"], reason: str, message: str
    ) -> None:
        self.posted.append((type, reason, message))
        self.log.append(("event", reason))

    def reasons(self) -> list[str]:
        return [r for _, r, _ in self.posted]


@dataclass
class Clock:
    now: datetime.datetime = T0

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += datetime.timedelta(seconds=seconds)
