"""QuantizedModel specs made by hypothesis near the valid/invalid boundary, created for real on the
API server with the real operator running: every refused one comes back with a message that names
a field; every admitted one is reconciled (it gets status conditions; Ready=False with a reason is
fine) and the operator logs no traceback and no failed handler for any of them.

A spec is the example with a few changes: values at and across the bounds of the schema and of its
CEL rules (numbers, lists, names, durations, thresholds, references to things that do not exist),
plus the hand-written invalid changes of test_admission.py. Derandomised, so CI sees the same
specs every run.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import example as always
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.rest import ApiException

from localstack.lab import OperatorProcess

from .support import Models, example, wait_for
from .test_admission import CASES, DELETE, setter

EXAMPLES = 40  # each is a real create; admitted ones become Deployments the operator reconciles
STAGES = "spec.rollout.stages"
RULES = "spec.rollout.analysis.rules"

Change = tuple[str, Callable[[dict[str, Any]], None]]  # (what, how), `what` for the report


def put(path: str, values: st.SearchStrategy[Any]) -> st.SearchStrategy[Change]:
    return values.map(lambda v: change(path, v))


def change(path: str, value: Any) -> Change:
    return (f"{path}={'<deleted>' if value is DELETE else repr(value)}", setter(path, value))


dns_chars = "abcdefghijklmnopqrstuvwxyz0123456789-"
near_names = st.text(alphabet=dns_chars + "_.A", min_size=0, max_size=64)
durations = st.sampled_from(
    ["0s", "1s", "30s", "5m", "1h30m", "250ms", "2d", "", "1", "5 m", "-1s"]
)
thresholds = st.sampled_from(["1%", "0%", "100%", "250ms", "1.5s", "'0.6'", "0.6", "3", "-1", "x"])
thresholds_any: st.SearchStrategy[Any] = thresholds | st.integers(-2, 200)
formats = st.sampled_from(["awq", "gptq", "fp8", "compressed-tensors", "bitsandbytes", "gguf"])
precisions = st.sampled_from(["fp16", "bf16", "fp8", "int8", "int4", "int2"])
rule_names = st.sampled_from(
    ["latency-p99", "ttft-p99", "error-rate", "repetition-rate", "refusal-rate-increase",
     "output-length-ratio", "shadow-agreement", "custom", "bleu"]
)  # fmt: skip
rules = st.fixed_dictionaries(
    {"name": rule_names},
    optional={"max": thresholds_any, "min": thresholds_any, "query": st.just("sum(up)")},
)

changes: st.SearchStrategy[Change] = st.one_of(
    # Each hand-written invalid change of the admission table.
    st.sampled_from(CASES).map(lambda case: (case[0], case[1])),
    # Values at and across the bounds.
    put("spec.target.format", formats),
    put("spec.target.precision", precisions),
    put("spec.baseline.precision", precisions),
    put("spec.target.name", near_names),
    put(
        "spec.target.artifact",
        st.sampled_from(
            [
                "s3://m/x",
                "gs://m/x",
                "hf://org/name",
                "pvc://claim/path",
                "pvc://claim",
                "hf://",
                "file:///x",
                "",
            ]
        ),
    ),
    put("spec.model", st.text(min_size=0, max_size=80)),
    put("spec.serving.replicas", st.integers(-1, 3)),
    put("spec.serving.maxModelLen", st.integers(-1, 10**7)),
    put("spec.serving.gpuMemoryUtilization", st.floats(-0.1, 1.1, allow_nan=False)),
    put("spec.serving.tensorParallelSize", st.integers(0, 9)),
    put("spec.serving.gpu.count", st.integers(0, 65)),
    put("spec.serving.gpu.memoryGiB", st.integers(-1, 200)),
    put("spec.serving.gpu.product", st.sampled_from(["NVIDIA-A10", "", "NVIDIA-H100-80GB-HBM3"])),
    put("spec.serving.readinessDeadline", durations),
    put(
        "spec.target.serving",
        st.fixed_dictionaries(
            {},
            optional={
                "replicas": st.integers(-1, 3),
                "tensorParallelSize": st.integers(0, 4),
                "gpu": st.fixed_dictionaries({"count": st.integers(0, 4)}),
            },
        ),
    ),
    put(
        "spec.serving.autoscaling",
        st.fixed_dictionaries(
            {"maxReplicas": st.integers(0, 3)}, optional={"minReplicas": st.integers(0, 3)}
        ),
    ),
    put(f"{STAGES}[0].mirrorPercent", st.integers(-1, 101)),
    put(f"{STAGES}[0].duration", durations),
    put(f"{STAGES}[1].weight", st.integers(-1, 101)),
    put(f"{STAGES}[1].stickyBy", st.sampled_from(["header:x-user-id", "header:", "cookie:x"])),
    put(f"{STAGES}[2].weights", st.lists(st.integers(-1, 101), max_size=5)),
    put(f"{STAGES}[2].stepDuration", durations),
    put(
        STAGES,
        st.lists(
            st.sampled_from(["shadow", "ab", "gradual", "full"]).map(lambda n: {"name": n}),
            max_size=5,
        ),
    ),
    put("spec.rollout.analysis.interval", durations),
    put("spec.rollout.analysis.failureLimit", st.integers(-1, 11)),
    put("spec.rollout.analysis.minSamples", st.integers(-1, 10**6)),
    put("spec.rollout.analysis.onMetricsUnavailable", st.sampled_from(["pause", "rollback", ""])),
    put(RULES, st.lists(rules, max_size=3)),
    put(
        "spec.traffic",
        st.sampled_from(
            [
                {"router": "builtin"},
                {"router": "gateway-api", "httpRoute": {"name": "missing"}},
                {"router": "istio"},
                {"router": "gateway-api"},
            ]
        ),
    ),
    # References to things that do not exist: admitted, and must be reported, not crash.
    put(
        "spec.prometheus",
        st.sampled_from(
            [
                {"url": "http://127.0.0.1:9"},
                {"url": "https://prometheus.invalid:9090"},
                {
                    "url": "http://127.0.0.1:9",
                    "tokenSecretRef": {"name": "missing", "key": "token"},
                },
                {"url": "localhost"},
            ]
        ),
    ),
    put("spec.rollout.analysis", st.just(DELETE)),
    put("spec.serving", st.just(DELETE)),
)


@dataclass
class Outcome:
    admitted: dict[str, list[str]] = field(default_factory=dict)  # name -> changes
    refused: list[tuple[list[str], str]] = field(default_factory=list)  # (changes, message)
    count: int = 0


FIELD = re.compile(r"\b(spec|metadata)(\.[A-Za-z]+(\[\d+\])?)*")


@pytest.fixture(scope="module")
def outcome() -> Outcome:
    return Outcome()


@pytest.fixture(scope="module")
def log_start(operator: OperatorProcess) -> int:
    """Where the session operator's log stood before this module's models were created."""
    return operator.log.stat().st_size if operator.log.exists() else 0


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Always tried: admitted specs that name things that do not exist, where a crash is likeliest.
@always(
    picked=[
        change(
            "spec.prometheus",
            {"url": "http://127.0.0.1:9", "tokenSecretRef": {"name": "missing", "key": "t"}},
        ),
        change("spec.rollout.analysis.interval", "1s"),  # evaluated (and the Secret read) soon
    ]
)
@always(picked=[change("spec.traffic", {"router": "gateway-api", "httpRoute": {"name": "gone"}})])
# At most one change per path (hypothesis likes to repeat a list's element, which says nothing new).
@given(picked=st.lists(changes, max_size=3, unique_by=lambda c: c[0].split("=")[0]))
def test_fuzzed_specs_are_admitted_or_refused_with_a_field(
    kube: ApiClient,
    crd: str,
    module_namespace: str,
    log_start: int,
    outcome: Outcome,
    picked: list[Change],
) -> None:
    obj = example()
    for _, change in picked:
        # A path that is gone (an earlier change removed its parent) is skipped.
        with contextlib.suppress(KeyError, IndexError, TypeError):
            change(obj)
    outcome.count += 1
    if obj["metadata"]["name"] == example()["metadata"]["name"]:
        obj["metadata"]["name"] = f"fz-{outcome.count}"  # unique, and a valid name
    what = [w for w, _ in picked]
    try:
        Models(kube, module_namespace).create(copy.deepcopy(obj))
    except ApiException as err:
        refused = err
    else:
        outcome.admitted[obj["metadata"]["name"]] = what
        return
    assert refused.status in (400, 422), (what, refused.status, refused.body)
    message = json.loads(refused.body)["message"]
    assert FIELD.search(message) or "unknown field" in message, (what, message)
    outcome.refused.append((what, message))


def test_every_admitted_spec_is_reconciled_without_a_crash(
    kube: ApiClient,
    module_namespace: str,
    operator: OperatorProcess,
    log_start: int,
    outcome: Outcome,
) -> None:
    if not outcome.count:
        pytest.skip("run with the fuzz test (same module): it creates the models")
    print(
        f"\n{outcome.count} specs: {len(outcome.admitted)} admitted, {len(outcome.refused)} refused"
    )
    for what in outcome.admitted.values():  # shown with pytest -s
        print("  admitted:", ", ".join(what) or "(the example)")
    # Both halves of the boundary were exercised.
    assert len(outcome.admitted) >= 5, outcome.refused
    assert len(outcome.refused) >= 5, outcome.admitted
    models = Models(kube, module_namespace)

    def unreconciled() -> list[str]:
        return [
            name
            for name in outcome.admitted
            if not any(
                c["type"] == "Ready"
                for c in ((models.get(name) or {}).get("status") or {}).get("conditions") or []
            )
        ]

    wait_for("every admitted model to get conditions", lambda: not unreconciled(), timeout=120)
    for name in outcome.admitted:
        ready = models.condition(name, "Ready")
        assert ready is not None
        assert ready["reason"], (name, ready)
        if ready["status"] == "False":
            assert ready["message"], (name, ready)
    log = _log_since(operator.log, log_start)
    # The model whose token Secret does not exist is evaluated all the same: metrics unavailable,
    # with the reason, and never a rollout loop that died on the exception.
    (no_secret,) = [n for n, what in outcome.admitted.items() if "tokenSecretRef" in " ".join(what)]

    def analysed() -> dict[str, Any] | None:
        status = (models.get(no_secret) or {}).get("status") or {}
        return status.get("lastAnalysis")

    last = wait_for(f"{no_secret} to be analysed", analysed, timeout=60)
    assert last["verdict"] == "Inconclusive", last
    assert f"Secret {module_namespace}/missing" in json.dumps(last), last

    # The model whose HTTPRoute does not exist holds, and says why (an Event), rather than
    # crashing its rollout loop on the 404.
    def route_refused() -> bool:
        events = client.CoreV1Api(kube).list_namespaced_event(module_namespace).items
        return any(
            e.reason == "TrafficNotApplied" and f"HTTPRoute {module_namespace}/gone" in e.message
            for e in events
        )

    wait_for("the TrafficNotApplied event of the missing HTTPRoute", route_refused, timeout=60)
    # Every line since this module started is about its models (the log names no object).
    bad = [
        line
        for line in log.splitlines()
        if "Traceback" in line
        or re.search(r"Handler .* failed", line)
        or "Unhandled" in line
        or "Task exception" in line
    ]
    assert bad == [], "\n".join(bad[:20]) + "\n" + log[-4000:]


def _log_since(path: Path, offset: int) -> str:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


@pytest.fixture(scope="module")
def module_namespace(kube: ApiClient) -> Any:
    """One namespace for all the fuzzed models (the fuzz test is one test of many examples)."""
    import uuid

    core = client.CoreV1Api(kube)
    name = f"t-fuzz-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        core.delete_namespace(name)
        # Its dozens of tiers hold most of the fake nodes' GPUs: the next tests need them back.
        wait_for(
            f"the pods of {name} to be deleted",
            lambda: not core.list_namespaced_pod(name).items,
            timeout=120,
        )
