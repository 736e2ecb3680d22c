"""One pass for one model: observe, plan, execute; a status write that lost a race (409) is
redone from a fresh read, keeping an evaluation the fresh status has not recorded yet (so a
decision is never made on stale state, nor a breach measured twice)."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass

from quantrollout.io.kube import EventSink, KubeIO
from quantrollout.io.prometheus import Metrics

from .execute import Conflict, execute
from .observe import Memory, PodReasons, observe
from .plan import Measured, plan

CONFLICT_RETRIES = 5
Clock = Callable[[], datetime.datetime]


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class PassResult:
    wake_in_s: float | None  # None: nothing scheduled until something changes
    gone: bool = False  # the model no longer exists


async def run_pass(
    kube: KubeIO,
    metrics: Metrics,
    post: EventSink,
    memory: Memory,
    namespace: str,
    name: str,
    pod_reasons: PodReasons,
    clock: Clock = utc_now,
    log: Callable[[str], None] = lambda _: None,
) -> PassResult:
    measured: Measured | None = None
    for _ in range(CONFLICT_RETRIES):
        now = clock()
        observed = await observe(
            kube, metrics, memory, namespace, name, now, pod_reasons, measured, log
        )
        if observed is None:
            return PassResult(None, gone=True)
        measured = observed.measured
        result = await execute(kube, post, plan(observed, now), observed.model, memory, log)
        if not isinstance(result, Conflict):
            return PassResult(result.wake_in_s)
        log(
            f"{namespace}/{name} changed between our read and our write (409 Conflict): "
            f"not applied: {result.lost}; re-reading it"
        )
    return PassResult(0.2)
