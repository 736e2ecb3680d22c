"""Kopf handlers: thin glue between Kubernetes events and the pure decision code.

Every trigger (resume, create, spec update, a change to one of our Deployments, an unschedulable
pod) calls the same level-based `reconcile`, which re-reads the world, applies only what drifted
and writes status only when it changed: a steady model costs no API writes at all.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
from collections import defaultdict
from typing import Any, cast

import kopf
import urllib3
from kubernetes.client.exceptions import ApiException

from quantrollout import driver, health, metrics
from quantrollout.api.crd import GROUP, PLURAL, VERSION
from quantrollout.kube import API_CONCURRENCY, Kube, going_away, new_api_client, owner_reference
from quantrollout.manifests.drift import drifted
from quantrollout.manifests.plan import plan as make_plan
from quantrollout.manifests.vllm import MODEL_LABEL, resource_name, selector_labels

# One reconcile at a time per model: the model's own handler and its children's events race otherwise.
_locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
# Models with a reconcile queued that has not started yet (see `reconcile`).
_queued: set[tuple[str, str]] = set()
# Wakes a model's rollout daemon when its spec or tiers changed, instead of polling.
_wakeups: defaultdict[tuple[str, str], asyncio.Event] = defaultdict(asyncio.Event)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Kopf's own bookkeeping goes into `status`, never into annotations: the object in Git and
    # the object in the cluster then differ only in `status`, so Argo CD sees no drift.
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")
    settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage(field="status.kopf.diffbase")
    # Events are for on-call humans: our own transitions (posted explicitly), not Kopf's chatter.
    settings.posting.level = 40  # logging.ERROR
    # Every blocking Kubernetes and Prometheus call runs in the loop's default executor.
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(API_CONCURRENCY, thread_name_prefix="io")
    )
    memo.kube = Kube(new_api_client())
    memo.providers = driver.Providers()


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def reconcile(kube: Kube, qm: dict[str, Any], logger: kopf.Logger) -> None:
    meta = qm["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    key = (namespace, name)
    if key in _queued:
        # A reconcile of this model is already waiting and has not read anything yet: it will
        # see this change too. Without this, a burst of Deployment/Pod events (a thousand models
        # becoming ready) queues one full reconcile per event, each re-reading every child.
        return
    _queued.add(key)
    started = False
    try:
        async with _locks[key]:
            started = True
            _queued.discard(key)  # from here on, a new change needs a new reconcile
            # Re-read under the lock: the body that triggered us may be stale by now.
            current = await asyncio.to_thread(kube.get_quantizedmodel, namespace, name)
            if current is None or current["metadata"].get("deletionTimestamp"):
                return
            try:
                with metrics.RECONCILE.time():
                    await _reconcile_locked(kube, current, logger)
            except ApiException as err:
                if not going_away(err):
                    raise
                # Deleted (or its namespace) since it was read: nothing left to reconcile.
                logger.info(f"not reconciled: {name} or its namespace is being deleted")
                return
    finally:
        if not started:  # cancelled while waiting: nobody else is queued for this model
            _queued.discard(key)
    _wakeups[key].set()


async def _reconcile_locked(kube: Kube, qm: dict[str, Any], logger: kopf.Logger) -> None:
    meta = qm["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    plan = make_plan(name, namespace, qm.get("spec", {}))
    observed: dict[str, health.ObservedTier] = {}
    for tier_plan in plan.tiers:
        tier = tier_plan.tier
        rname = resource_name(name, tier)
        if not tier_plan.deployable:
            # A target that cannot run is removed; the baseline is never taken away by us.
            if tier.role == "target":
                for kind in ("Deployment", "Service"):
                    if await asyncio.to_thread(kube.delete, kind, namespace, rname):
                        logger.info(f"deleted {kind} {rname}: the tier cannot be deployed")
            continue
        deployment: dict[str, Any] | None = None
        for desired in tier_plan.objects:
            desired = {
                **desired,
                "metadata": {**desired["metadata"], "ownerReferences": [owner_reference(qm)]},
            }
            live = await asyncio.to_thread(kube.get, desired["kind"], namespace, rname)
            if live is None or drifted(desired, live):
                live = await asyncio.to_thread(kube.apply, desired)
                logger.info(f"applied {desired['kind']} {rname}")
            if desired["kind"] == "Deployment":
                deployment = live
        unschedulable = None
        if deployment is not None and not health.observe_deployment(deployment, None).ready:
            selector = selector_labels(name, tier)
            unschedulable = unschedulable_message(namespace, selector)
            if unschedulable is None and _reported_unschedulable(qm):
                # Said so before, and no pod event says so now: either it was placed, or this
                # operator just started and the pod events are still coming. Ask the API once.
                unschedulable = await asyncio.to_thread(
                    kube.unschedulable_message, namespace, selector
                )
        observed[tier.name] = health.observe_deployment(deployment, unschedulable)

    previous = qm.get("status") or {}
    status, transitions = health.compute(
        name=name,
        generation=int(meta.get("generation", 0)),
        plan=plan,
        observed=observed,
        previous=previous.get("conditions"),
        now=_now(),
        rollout=previous,
    )
    changed = {k: v for k, v in status.items() if previous.get(k) != v}
    if changed:
        await asyncio.to_thread(kube.patch_status, namespace, name, changed)
    for t in transitions:
        kopf.event(
            kopf.Body(cast(kopf.RawBody, qm)),
            type=t.event_type,
            reason=f"{t.type}{t.status}",
            message=f"{t.reason}: {t.message}",
        )
        logger.info(f"condition {t.type}={t.status} reason={t.reason}: {t.message}")


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def quantizedmodel_reconcile(
    body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    await reconcile(memo.kube, dict(body), logger)


async def _reconcile_owner(
    namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, logger: kopf.Logger
) -> None:
    owner = labels.get(MODEL_LABEL)
    if not namespace or not owner:
        return
    await reconcile(memo.kube, {"metadata": {"namespace": namespace, "name": owner}}, logger)


@kopf.on.event("apps", "v1", "deployments", labels={MODEL_LABEL: kopf.PRESENT})
async def deployment_event(
    namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    """Our Deployment changed (rolled out, became ready, was edited or deleted): re-reconcile its model."""
    await _reconcile_owner(namespace, labels, memo, logger)


# The scheduler's reason for each of our pods it cannot place, kept from the pod events Kopf
# already watches: (namespace, pod) -> (its labels, the message). The reconcile reads it here
# instead of listing a tier's pods each time it is not ready (at 1,000 models, that list on every
# Deployment event held the operator's I/O threads while tiers came up); it lists only to
# clear a reason it reported before.
_unplaced: dict[tuple[str, str], tuple[dict[str, str], str]] = {}


def _unschedulable(status: dict[str, Any]) -> str | None:
    for c in status.get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("reason") == "Unschedulable":
            return str(c.get("message") or "unschedulable")
    return None


def unschedulable_message(namespace: str, selector: dict[str, str]) -> str | None:
    """The scheduler's message for the first pod of `selector` it could not place, if any."""
    for (ns, _), (pod_labels, message) in sorted(_unplaced.items()):
        if ns == namespace and selector.items() <= pod_labels.items():
            return message
    return None


def _reported_unschedulable(qm: dict[str, Any]) -> bool:
    conditions = (qm.get("status") or {}).get("conditions") or []
    return any(c.get("reason") == "Unschedulable" for c in conditions)


@kopf.on.event("", "v1", "pods", labels={MODEL_LABEL: kopf.PRESENT})
async def pod_event(
    type: str | None,
    name: str | None,
    namespace: str | None,
    labels: kopf.Labels,
    status: kopf.Status,
    memo: kopf.Memo,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """A tier's pod that the scheduler cannot place (or no longer cannot): say so in the model's status."""
    if not name or not namespace:
        return
    key = (namespace, name)
    message = None if type == "DELETED" else _unschedulable(dict(status))
    before = _unplaced.get(key)
    if message is None:
        _unplaced.pop(key, None)
    else:
        _unplaced[key] = (dict(labels), message)
    if (before[1] if before else None) != message:
        await _reconcile_owner(namespace, labels, memo, logger)


# One rollout loop per model. Not a Kopf daemon: those put a finalizer on the model, and a
# model (pruned by Argo CD, say) could then not be deleted while the operator is down.
_rollouts: dict[tuple[str, str], asyncio.Task[None]] = {}
TICK_RETRY_S = 2.0  # after a failed tick (API unreachable, say)


async def _rollout_loop(
    kube: Kube, providers: driver.Providers, namespace: str, name: str, logger: kopf.Logger
) -> None:
    """Walks the model's rollout: one tick per analysis interval while it is active, and otherwise
    only when its spec or tiers change (the reconcile wakes it): a finished rollout costs nothing."""
    key = (namespace, name)
    wakeup = _wakeups[key]
    while True:
        wakeup.clear()
        async with _locks[key]:
            try:
                result = await driver.tick(kube, providers, namespace, name, logger)
                if result.gone:
                    return
                if result.state_changed:
                    current = await asyncio.to_thread(kube.get_quantizedmodel, namespace, name)
                    if current is not None:  # conditions follow the phase
                        await _reconcile_locked(kube, current, logger)
            except (ApiException, OSError, urllib3.exceptions.HTTPError) as err:
                # The API down or restarting: the next tick reads afresh.
                retry = f"retrying in {TICK_RETRY_S:.0f}s"
                logger.warning(f"{namespace}/{name}: rollout tick failed, {retry}: {err!r:.300}")
                result = driver.TickResult(TICK_RETRY_S)
            except Exception:
                # A bug: said loudly, with its traceback. Without this the loop's task died unseen
                # (nobody awaits it) and the rollout stopped until the next watch event.
                logger.exception(
                    f"{namespace}/{name}: rollout tick failed, retrying in {TICK_RETRY_S:.0f}s"
                )
                result = driver.TickResult(TICK_RETRY_S)
        timeout = result.wake_in_s if result.wake_in_s is not None else 3600.0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wakeup.wait(), timeout=timeout)


def ensure_rollout_loop(
    memo: kopf.Memo, namespace: str, name: str, logger: kopf.Logger, *, wake: bool = True
) -> None:
    key = (namespace, name)
    task = _rollouts.get(key)
    if task is None or task.done():
        _rollouts[key] = asyncio.create_task(
            _rollout_loop(memo.kube, memo.providers, namespace, name, logger),
            name=f"rollout {namespace}/{name}",
        )
    elif wake:
        _wakeups[key].set()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def quantizedmodel_event(
    type: str | None,
    name: str | None,
    namespace: str | None,
    body: kopf.Body,
    memo: kopf.Memo,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """Keeps one rollout loop per existing model; a user's action annotation wakes it at once.

    Any other change does not wake it: the loop's own status writes come back here as events
    (waking it would cost one more read per evaluation per model), and spec and tier changes
    wake it through the reconcile."""
    if not name or not namespace:
        return
    key = (namespace, name)
    if type == "DELETED":
        task = _rollouts.pop(key, None)
        if task:
            task.cancel()
        _wakeups.pop(key, None)
        _locks.pop(key, None)
        metrics.forget(namespace, name)
        driver.forget(namespace, name)
        return
    annotations = body.get("metadata", {}).get("annotations") or {}
    ensure_rollout_loop(memo, namespace, name, logger, wake=driver.ACTION_ANNOTATION in annotations)


@kopf.on.cleanup()
async def stop_rollout_loops(**_: Any) -> None:
    for task in _rollouts.values():
        task.cancel()
    await asyncio.gather(*_rollouts.values(), return_exceptions=True)
