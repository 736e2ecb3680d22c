"""Applies one pass's Plan in a fixed order: capacity up, the preflight Job, traffic, capacity
down, status once, Events. I/O only through the `io` Protocols.

Traffic first: with Gateway API the HTTPRoute is written before the status that records it, so
an operator dying in between leaves traffic already where the decision put it and the restart
finishes the record. With the built-in router the traffic *is* `status.traffic`: the status
write is the traffic step, so capacity goes down only after it.

The status write is conditional on the resourceVersion the pass read: if anything changed the
model in between (a user, another operator replica, a spec edit), the API answers 409, nothing
is recorded, no Event is posted, and the caller reads the model again and decides afresh
(`run`). What was applied before the 409 (children, the route) is what the fresh decision
applies again, so it is never applied twice in effect.

A route that cannot be written (no HTTPRoute, no Gateway API, no right to it) holds the rollout:
nothing of the rollout is recorded, the tiers and conditions are, one Warning Event says why
(not one per retry), and the pass is tried again after `Plan.traffic_retry_s`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from kubernetes.client.exceptions import ApiException

from quantrollout import metrics, notify
from quantrollout.io.kube import EventSink, KubeIO
from quantrollout.rollout.machine import Event

from .observe import Memory
from .plan import ACTION_ANNOTATION, ChildWrite, Plan

_notifications: set[asyncio.Task[int]] = set()  # keeps fire-and-forget webhook calls alive


@dataclass(frozen=True)
class Applied:
    wake_in_s: float | None


@dataclass(frozen=True)
class Conflict:
    """The status write lost a race (409): nothing was recorded."""

    lost: str  # the decision that was not recorded, for the log


async def _write(kube: KubeIO, namespace: str, write: ChildWrite, memory: Memory) -> None:
    if write.op == "apply" and write.body is not None:
        memory.children[(write.kind, write.name)] = await asyncio.to_thread(kube.apply, write.body)
    else:
        await asyncio.to_thread(kube.delete, write.kind, namespace, write.name)
        memory.children[(write.kind, write.name)] = None
        if write.kind == "Deployment":  # a tier that left the spec: gone now
            memory.retired = {
                t: d for t, d in memory.retired.items() if d["metadata"]["name"] != write.name
            }


async def _patch(kube: KubeIO, plan: Plan, patch: dict[str, object]) -> bool:
    """The status patch, if the model is still as read; False on a 409."""
    if not patch:
        return True
    try:
        await asyncio.to_thread(
            kube.patch_status, plan.namespace, plan.name, patch, plan.resource_version
        )
    except ApiException as err:
        if err.status != 409:
            raise
        return False
    return True


def _post(post: EventSink, plan: Plan, model: dict[str, object], events: tuple[Event, ...], log: Callable[[str], None]) -> None:  # fmt: skip
    for event in events:
        post(model, event.type, event.reason, event.message)
        log(f"{event.reason}: {event.message}")


async def execute(
    kube: KubeIO,
    post: EventSink,
    plan: Plan,
    model: dict[str, object],
    memory: Memory,
    log: Callable[[str], None] = lambda _: None,
) -> Applied | Conflict:
    ns = plan.namespace
    for write in plan.capacity_up:
        await _write(kube, ns, write, memory)
        log(f"{write.op} {write.kind} {write.name} (capacity up)")
    for write in plan.jobs:
        # After capacity up (the Job loads the replicas the first stage will use), before
        # anything is recorded: a restart finds the Job by its name and creates no second one.
        await asyncio.to_thread(kube.apply, write.body or {})
        log(f"{write.op} {write.kind} {write.name} (preflight)")

    if plan.route is not None:
        route = f"{plan.route.namespace}/{plan.route.name}"
        try:
            await asyncio.to_thread(
                kube.write_http_route_rules, plan.route.namespace, plan.route.name, plan.route.rules
            )
        except ApiException as err:
            if err.status not in (403, 404):
                raise
            why = (
                f"cannot write HTTPRoute {route}: HTTP {err.status} {err.reason}; "
                "the rollout holds until it can"
            )
            if memory.traffic_refused != why:
                memory.traffic_refused = why
                post(model, "Warning", "TrafficNotApplied", why)
                log(why)
            else:
                log(f"still {why}")
            health = {k: v for k, v in plan.status.items() if k in plan.health_keys}
            if not await _patch(kube, plan, health):
                return Conflict("the tiers' health (traffic not written)")
            _post(post, plan, model, plan.condition_events, log)
            return Applied(plan.traffic_retry_s)
        if memory.traffic_refused is not None:
            memory.traffic_refused = None
            message = f"HTTPRoute {route} written again"
            post(model, "Normal", "TrafficApplied", message)
            log(message)

    recorded = False
    if plan.traffic_in_status:
        if not await _patch(kube, plan, plan.status):
            return _lost(plan, memory)
        recorded = True
    for write in plan.capacity_down:
        await _write(kube, ns, write, memory)
        log(f"{write.op} {write.kind} {write.name} (capacity down)")
    if not recorded and not await _patch(kube, plan, plan.status):
        return _lost(plan, memory)
    memory.route_pending = False

    if plan.before is not None and plan.after is not None and plan.steps:
        metrics.observe(ns, plan.name, plan.before, plan.after, plan.steps)
    if plan.verdict is not None:
        metrics.evaluated(ns, plan.name, plan.verdict)
    _post(post, plan, model, (*plan.events, *plan.condition_events, *plan.action_events), log)
    if plan.events:
        # Not awaited: a slow webhook must not delay the next evaluation.
        task = asyncio.create_task(notify.send(ns, plan.name, plan.events))
        _notifications.add(task)
        task.add_done_callback(_notifications.discard)
    if plan.remove_action:
        await asyncio.to_thread(kube.remove_annotation, ns, plan.name, ACTION_ANNOTATION)
    return Applied(plan.wake_in_s)


def _lost(plan: Plan, memory: Memory) -> Conflict:
    if plan.route is not None:
        memory.route_pending = True  # the route is ahead of the record: write both again
    after = plan.after
    what = (
        f"{after.phase} at step {after.step} ({after.target_weight}% live)" if after else "status"
    )
    return Conflict(what)
