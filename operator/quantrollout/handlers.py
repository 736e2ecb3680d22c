"""Kopf handlers: thin glue between Kubernetes events and one pass per model (`pass_`).

Each model has one runner task, the only writer of its status. Every trigger (resume, create, a
spec edit, a change to one of its Deployments, a pod the scheduler cannot place, a user's action)
only wakes that runner; triggers that arrive while a pass runs wake it once more, so a burst of
events costs one pass, and none is lost. Between triggers the runner sleeps until its next
evaluation is due (never, for a finished rollout): a steady model costs no API calls at all.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import kopf
import urllib3
from kubernetes.client.exceptions import ApiException

from quantrollout import metrics
from quantrollout.api.crd import GROUP, PLURAL, VERSION
from quantrollout.io.prometheus import Providers
from quantrollout.kube import API_CONCURRENCY, Kube, going_away, new_api_client
from quantrollout.manifests.preflight_job import COMPONENT_LABEL
from quantrollout.manifests.vllm import MODEL_LABEL
from quantrollout.pass_.observe import Memory
from quantrollout.pass_.plan import ACTION_ANNOTATION
from quantrollout.pass_.run import PassResult, run_pass

RETRY_S = 2.0  # after a failed pass (API unreachable, say)
IDLE_S = 3600.0  # a model with nothing scheduled is looked at again after this long anyway


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
    memo.providers = Providers()


def post_event(
    model: dict[str, Any], type: Literal["Normal", "Warning"], reason: str, message: str
) -> None:
    kopf.event(kopf.Body(cast(kopf.RawBody, model)), type=type, reason=reason, message=message)


@dataclass
class Runner:
    """One model's runner: its task, what wakes it, and what it keeps between passes."""

    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    memory: Memory = field(default_factory=Memory)
    task: asyncio.Task[None] | None = None


_runners: dict[tuple[str, str], Runner] = {}


async def _run(memo: kopf.Memo, namespace: str, name: str, runner: Runner, logger: Any) -> None:
    """Passes over the model until it is gone: one per trigger, or when an evaluation is due."""
    while True:
        runner.wakeup.clear()
        try:
            with metrics.RECONCILE.time():
                result = await run_pass(
                    memo.kube, memo.providers, post_event, runner.memory, namespace, name,
                    unschedulable_message, log=logger.info,
                )  # fmt: skip
            if result.gone:
                return
        except (ApiException, OSError, urllib3.exceptions.HTTPError) as err:
            # The API down or restarting, or the model going away: the next pass reads afresh.
            if isinstance(err, ApiException) and going_away(err):
                logger.info(f"{namespace}/{name} or its namespace is being deleted")
            else:
                logger.warning(
                    f"{namespace}/{name}: pass failed, retrying in {RETRY_S:.0f}s: {err!r:.300}"
                )
            runner.memory.stale = True
            result = PassResult(RETRY_S)
        except Exception:
            # A bug: said loudly, with its traceback. Without this the task died unseen (nobody
            # awaits it) and the model was not looked at until the next watch event.
            logger.exception(f"{namespace}/{name}: pass failed, retrying in {RETRY_S:.0f}s")
            runner.memory.stale = True
            result = PassResult(RETRY_S)
        timeout = result.wake_in_s if result.wake_in_s is not None else IDLE_S
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(runner.wakeup.wait(), timeout=timeout)


def wake(
    memo: kopf.Memo, namespace: str, name: str, logger: Any, *, stale: bool, now: bool = True
) -> None:
    """Makes sure the model has a runner; `stale`: its children changed (read them again);
    `now`: run a pass now rather than at its next scheduled time."""
    key = (namespace, name)
    runner = _runners.get(key)
    if runner is None or runner.task is None or runner.task.done():
        runner = _runners[key] = Runner()
        runner.task = asyncio.create_task(
            _run(memo, namespace, name, runner, logger), name=f"model {namespace}/{name}"
        )
        return
    if stale:
        runner.memory.stale = True
    if now:
        runner.wakeup.set()


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def quantizedmodel_reconcile(
    name: str | None, namespace: str | None, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    if name and namespace:
        wake(memo, namespace, name, logger, stale=True)


def _wake_owner(
    namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, logger: Any, *, stale: bool
) -> None:
    owner = labels.get(MODEL_LABEL)
    if namespace and owner:
        wake(memo, namespace, owner, logger, stale=stale)


@kopf.on.event("apps", "v1", "deployments", labels={MODEL_LABEL: kopf.PRESENT})
async def deployment_event(
    namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    """Our Deployment changed (rolled out, became ready, was edited or deleted): a pass."""
    _wake_owner(namespace, labels, memo, logger, stale=True)


@kopf.on.event("batch", "v1", "jobs", labels={MODEL_LABEL: kopf.PRESENT})
async def job_event(
    namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    """A preflight Job changed (started, ended): a pass reads its result."""
    _wake_owner(namespace, labels, memo, logger, stale=False)


# The scheduler's reason for each of our pods it cannot place, kept from the pod events Kopf
# already watches: (namespace, pod) -> (its labels, the message). A pass reads it here instead of
# listing a tier's pods each time it is not ready (at 1,000 models, that list on every
# Deployment event held the operator's I/O threads while tiers came up); it lists only to clear
# a reason it reported before.
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
    """A tier's pod that the scheduler cannot place (or no longer cannot): a pass says so."""
    if not name or not namespace:
        return
    if labels.get(COMPONENT_LABEL) == "preflight":
        # A preflight pod: its waiting reason (image pull, scheduling) goes into status.preflight.
        _wake_owner(namespace, labels, memo, logger, stale=False)
        return
    key = (namespace, name)
    message = None if type == "DELETED" else _unschedulable(dict(status))
    before = _unplaced.get(key)
    if message is None:
        _unplaced.pop(key, None)
    else:
        _unplaced[key] = (dict(labels), message)
    if (before[1] if before else None) != message:
        _wake_owner(namespace, labels, memo, logger, stale=False)


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
    """Keeps one runner per existing model; a user's action annotation wakes it at once.

    Any other change does not wake it: its own status writes come back here as events (waking it
    would cost one more read per evaluation per model), and spec edits wake it through the
    update handler."""
    if not name or not namespace:
        return
    key = (namespace, name)
    if type == "DELETED":
        runner = _runners.pop(key, None)
        if runner and runner.task:
            runner.task.cancel()
        metrics.forget(namespace, name)
        return
    annotations = body.get("metadata", {}).get("annotations") or {}
    wake(memo, namespace, name, logger, stale=False, now=ACTION_ANNOTATION in annotations)


@kopf.on.cleanup()
async def stop_runners(**_: Any) -> None:
    tasks = [r.task for r in _runners.values() if r.task]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
