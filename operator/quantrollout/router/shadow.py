"""Shadow calls: a copy of a live request sent to the target in the background, its answer
compared with the baseline's and never returned; and calibration calls: a second copy of a
mirrored request sent to the baseline itself, whose answer is compared with the baseline's live
one in the same way. The second measures how far the baseline agrees with itself (sampling noise,
nondeterministic batching), the yardstick the `shadow-agreement` rule holds the target to
(agreement.py). A calibration answer is not counted in the baseline's quality signals or
latency: only its agreement and its outcome are.

The client is never delayed: the live request does not wait for its shadow, which runs as its
own task and reads the baseline's answer from a future the live path resolves when it is done.
At most `max_shadow_inflight` shadows run at once; past that a copy is dropped (and counted),
never queued, so a slow target cannot pile up work or memory in the router.
"""

from __future__ import annotations

import asyncio
import logging
import time

from .agreement import agreement
from .answers import Answer
from .call import Call, Tier
from .http1 import UpstreamError
from .inspect_answer import AnswerReader, record
from .pool import Upstreams
from .upstream import Failed, Opened

log = logging.getLogger(__name__)

BaselineAnswer = asyncio.Future[Answer | None]  # the live answer; None: nothing to compare


class Shadows:
    """The shadow calls in flight."""

    def __init__(self, upstreams: Upstreams, max_inflight: int, compare_timeout: float):
        self._upstreams = upstreams
        self._max = max_inflight
        self._compare_timeout = compare_timeout
        self._tasks: set[asyncio.Task[None]] = set()

    def mirror(
        self,
        tier: Tier,
        call: Call,
        max_bytes: int,
        baseline: BaselineAnswer | None = None,
        calibration: bool = False,
    ) -> BaselineAnswer | None:
        """Starts a shadow call to `tier` (a calibration call when `calibration`: `tier` is the
        baseline). Returns the future to resolve with the baseline's live answer (`baseline`
        when given: several copies may wait on one), or None when the copy was dropped."""
        if len(self._tasks) >= self._max:
            tier.metrics.shadow("dropped")
            return baseline
        if baseline is None:
            baseline = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(self._run(tier, call, baseline, max_bytes, calibration))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return baseline

    @property
    def inflight(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        """Cancels the shadows in flight (at shutdown: they have nothing a client waits for)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(
        self,
        target: Tier,
        call: Call,
        baseline: BaselineAnswer,
        max_bytes: int,
        calibration: bool,
    ) -> None:
        try:
            answer = await self._answer(target, call, max_bytes, calibration)
            if answer is None:
                return
            try:  # shielded: other copies of the request wait on the same future
                base = await asyncio.wait_for(asyncio.shield(baseline), self._compare_timeout)
            except TimeoutError:
                base = None
            if base is None:
                target.metrics.shadow("skipped")
                return
            score = agreement(base, answer, call.sampling == "greedy")
            scores = target.metrics.self_agreement if calibration else target.metrics.agreement
            scores[call.sampling].observe(score)
            target.metrics.shadow("compared")
        except Exception:  # a shadow must never take anything else down; say why it failed
            log.exception("shadow call to tier %s failed", target.name)
            target.metrics.shadow("error")

    async def _answer(
        self, target: Tier, call: Call, max_bytes: int, calibration: bool
    ) -> Answer | None:
        """The tier's answer, its signals recorded (not for a calibration copy); None (outcome
        counted) if there is none to compare."""
        opened = await self._upstreams.open(
            target.base_url, call.path, call.body, call.headers, call.streamed, call.method
        )
        if isinstance(opened, Failed):
            target.metrics.shadow("error")
            return None
        reader = AnswerReader(opened.headers.get("content-type", ""), max_bytes)
        if not await _read(opened, reader):
            target.metrics.shadow("error")
            return None
        done = time.perf_counter()
        if not calibration:
            target.metrics.latency.observe(done - opened.started)
            if call.streamed:
                target.metrics.ttft.observe(opened.first_byte - opened.started)
        answer = reader.answer() if opened.status == 200 else None
        if answer is not None and answer.error is not None:  # failed mid-answer: an error event
            target.metrics.shadow("error")
            return None
        if answer is None:
            target.metrics.shadow("skipped")
            return None
        if not calibration:
            record(target.metrics, answer)
        return answer


async def _read(opened: Opened, reader: AnswerReader) -> bool:
    """Reads the whole answer, feeding `reader` as the pieces arrive; False if the tier failed
    mid-answer."""
    reader.feed(opened.first)
    try:
        async for chunk in opened.rest():
            reader.feed(chunk)
    except UpstreamError:
        return False
    finally:
        await opened.close()
    return True
