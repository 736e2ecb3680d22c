"""Capacity follows traffic on the local control plane (the operator as a process, KWOK GPU
nodes, the real scheduler and Deployment controller): a tier is scaled up and Ready before
weight moves onto it; after full and the bake the baseline goes to its standby replicas; after a
rollback the target goes to 0 once its delay is over; a tier no longer in the spec is deleted
once no traffic reaches it; a scale-up the scheduler cannot place holds the step with its
reason. Steps move by the user's promote (the analysis is not what these tests are about)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kubernetes import client
from kubernetes.client import ApiClient

from quantrollout.api.crd import GROUP, PLURAL, VERSION
from quantrollout.pass_.plan import ACTION_ANNOTATION

from .support import Models, example, wait_for
from .test_reconcile import deployment

NAME = "llama3-8b"
BASELINE, TARGET = f"{NAME}-fp16", f"{NAME}-int4-awq"


def model(**rollout: Any) -> dict[str, Any]:
    obj = example()
    spec = obj["spec"]
    spec["serving"]["replicas"] = 2
    spec["rollout"]["stages"] = [
        {"name": "ab", "weight": 10, "duration": "1h", "stickyBy": "header:x-user-id"},
        {"name": "gradual", "weights": [75], "stepDuration": "1h"},
        {"name": "full"},
    ]
    spec["rollout"]["analysis"] = {"interval": "1s", "minSamples": 5, "failureLimit": 2,
                                   "rules": [{"name": "error-rate", "max": "5%"}]}  # fmt: skip
    spec["rollout"].update(rollout)
    return obj


def act(kube: ApiClient, namespace: str, action: str) -> None:
    client.CustomObjectsApi(kube).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, NAME,
        {"metadata": {"annotations": {ACTION_ANNOTATION: action}}},
    )  # fmt: skip


def status(models: Models) -> dict[str, Any]:
    return dict((models.get(NAME) or {}).get("status") or {})


def live(models: Models) -> int | None:
    return (status(models).get("traffic") or {}).get("targetWeight")


def replicas(kube: ApiClient, namespace: str, name: str) -> tuple[int, int] | None:
    """(spec.replicas, readyReplicas), or None when the Deployment does not exist."""
    d = deployment(kube, namespace, name)
    if d is None:
        return None
    return d.spec.replicas, (d.status.ready_replicas or 0) if d.status else 0


def tier(models: Models, name: str) -> dict[str, Any]:
    return next(t for t in status(models).get("tiers") or [] if t["name"] == name)


@contextmanager
def watching(check: Any) -> Iterator[list[str]]:
    """Calls `check()` every 50 ms in a thread; collects what it returns (a problem, in words)."""
    problems: list[str] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            problem = check()
            if problem:
                problems.append(problem)
            time.sleep(0.05)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield problems
    finally:
        stop.set()
        thread.join()


def test_replicas_follow_traffic_up_before_weight_and_down_after_the_bake(
    kube: ApiClient, namespace: str, operator: Any
) -> None:
    models = Models(kube, namespace)
    models.create(model(bakeDuration="3s"))

    def weight_on_ready_replicas() -> str | None:
        weight = live(models)  # read first: the replicas read after can only be more Ready
        seen = replicas(kube, namespace, TARGET)
        if weight == 75 and (seen is None or seen[1] < 2):
            return f"75% live on the target with {seen} (replicas, ready)"
        return None

    with watching(weight_on_ready_replicas) as problems:
        wait_for("ab", lambda: live(models) == 10, timeout=60)
        # 10% of 2 replicas with 20% headroom: 1 target replica; the baseline keeps all of its
        # 2 as the rollback reserve.
        wait_for("the target at 1", lambda: replicas(kube, namespace, TARGET) == (1, 1))
        assert replicas(kube, namespace, BASELINE) == (2, 2)
        assert tier(models, "int4-awq")["capacityReason"] == "FollowingTraffic"
        act(kube, namespace, "promote")
        # A step waits for its replicas: on the shared stack, GPUs freed by earlier tests'
        # namespaces may take a while to come back, so these waits are generous.
        wait_for("gradual at 75%", lambda: live(models) == 75, timeout=120)
        assert replicas(kube, namespace, TARGET) == (2, 2)
        act(kube, namespace, "promote")
        wait_for("full", lambda: status(models).get("phase") == "Succeeded", timeout=120)
    assert problems == []
    assert tier(models, "fp16")["capacityReason"] == "Baking"
    assert replicas(kube, namespace, BASELINE) == (2, 2)  # baking: an instant rollback
    wait_for("the baseline at standby", lambda: (replicas(kube, namespace, BASELINE) or (0,))[0] == 0)  # fmt: skip
    wait_for("Standby recorded", lambda: tier(models, "fp16").get("capacityReason") == "Standby")

    def gpus() -> tuple[int, int, int]:
        saving = status(models)["gpuSaving"]
        return saving["gpusInUse"], saving["baselineFleetGpus"], saving["gpusSaved"]

    # the target's 2 GPUs against the FP16 fleet's 2, once the baseline's pods are gone
    wait_for("the GPUs recorded", lambda: gpus() == (2, 2, 0))


def test_after_a_rollback_the_target_goes_to_zero_once_its_delay_is_over(
    kube: ApiClient, namespace: str, operator: Any
) -> None:
    models = Models(kube, namespace)
    models.create(model(abortScaleDownDelay="4s"))
    wait_for("ab", lambda: live(models) == 10, timeout=60)
    act(kube, namespace, "abort")
    rolled = wait_for(
        "RolledBack", lambda: (s := status(models)).get("phase") == "RolledBack" and s
    )
    assert rolled["traffic"]["targetWeight"] == 0
    time.sleep(1)
    assert replicas(kube, namespace, TARGET) == (1, 1)  # kept for a retry
    wait_for("KeptForRetry", lambda: tier(models, "int4-awq").get("capacityReason") == "KeptForRetry")  # fmt: skip
    wait_for("the target at 0", lambda: replicas(kube, namespace, TARGET) == (0, 0), timeout=20)
    wait_for(
        "recorded",
        lambda: tier(models, "int4-awq").get("capacityReason") == "ScaledDownAfterRollback",
    )
    assert replicas(kube, namespace, BASELINE) == (2, 2)


def test_a_tier_no_longer_in_the_spec_is_deleted_once_no_traffic_reaches_it(
    kube: ApiClient, namespace: str, operator: Any
) -> None:
    models = Models(kube, namespace)
    models.create(model())
    wait_for("ab", lambda: live(models) == 10, timeout=60)

    def no_traffic_to_a_deleted_tier() -> str | None:
        traffic = status(models).get("traffic") or {}
        on = (traffic.get("target") or {}).get("tier")
        if (
            on == "int4-awq"
            and traffic.get("targetWeight")
            and replicas(kube, namespace, TARGET) is None
        ):
            return f"{traffic['targetWeight']}% live on int4-awq, whose Deployment is gone"
        return None

    with watching(no_traffic_to_a_deleted_tier) as problems:
        models.patch_spec(NAME, {"target": {"name": "int4-awq-v2", "artifact": "s3://models/llama3-8b-awq-v2"}})  # fmt: skip
        wait_for("the old tier deleted", lambda: replicas(kube, namespace, TARGET) is None)
        # Its Service is deleted after its Deployment: a read between the two still sees it.
        wait_for("the old tier's Service deleted", lambda: client.CoreV1Api(kube).list_namespaced_service(namespace, field_selector=f"metadata.name={TARGET}").items == [])  # fmt: skip
        wait_for(
            "the new tier", lambda: replicas(kube, namespace, f"{NAME}-int4-awq-v2") is not None
        )
        wait_for("the new rollout at ab", lambda: live(models) == 10, timeout=60)
    assert problems == []
    assert status(models)["traffic"]["target"]["tier"] == "int4-awq-v2"


def test_a_scale_up_the_scheduler_cannot_place_holds_the_step_with_its_reason(
    kube: ApiClient, namespace: str, operator: Any
) -> None:
    """The target takes a whole 8-GPU node per replica and wants 4 at 75%: with the baseline on
    one GPU of one of the 4 nodes, the 4th cannot be placed."""
    core = client.CoreV1Api(kube)

    def gpus_held_elsewhere() -> int:
        return sum(
            int(((c.resources.limits if c.resources else None) or {}).get("nvidia.com/gpu", 0))
            for p in core.list_pod_for_all_namespaces().items
            if p.metadata.namespace != namespace
            for c in p.spec.containers
        )

    wait_for(
        "the GPUs of earlier tests given back", lambda: gpus_held_elsewhere() == 0, timeout=120
    )
    models = Models(kube, namespace)
    obj = model()
    obj["spec"]["baseline"]["serving"] = {"replicas": 1}
    obj["spec"]["target"]["serving"] = {"gpu": {"count": 8}, "tensorParallelSize": 8, "replicas": 4}
    models.create(obj)
    wait_for("ab", lambda: live(models) == 10, timeout=60)
    act(kube, namespace, "promote")
    degraded = models.wait_condition(NAME, "Degraded", "True", "Unschedulable", timeout=60)
    assert degraded["message"].startswith("tier int4-awq cannot be scheduled: 0/")
    assert "Insufficient nvidia.com/gpu" in degraded["message"]
    time.sleep(3)
    s = status(models)
    assert (s["phase"], s["stage"], s["traffic"]["targetWeight"]) == ("Progressing", "ab", 10)
    annotations = (models.get(NAME) or {})["metadata"].get("annotations") or {}
    assert annotations.get(ACTION_ANNOTATION) == "promote"  # waits for the replicas
    assert tier(models, "int4-awq")["wantedReplicas"] == 4
