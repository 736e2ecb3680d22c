"""The per-model runner in handlers: a burst of triggers while a pass runs costs one more pass,
a trigger is never lost, and a runner sleeps until its next scheduled pass (a fake pass, the real
asyncio loop)."""

from __future__ import annotations

import asyncio
import logging
import types
from typing import Any

import pytest

from quantrollout import handlers
from quantrollout.pass_.run import PassResult


@pytest.fixture
def passes(monkeypatch: pytest.MonkeyPatch) -> tuple[list[bool], asyncio.Event]:
    """Records each pass (and whether its children were stale); each waits for `gate`."""
    seen: list[bool] = []
    gate = asyncio.Event()

    async def fake_pass(
        kube: Any, metrics: Any, post: Any, memory: Any, *_: Any, **__: Any
    ) -> PassResult:
        seen.append(memory.stale)
        memory.stale = False
        await gate.wait()
        return PassResult(None)

    monkeypatch.setattr(handlers, "run_pass", fake_pass)
    return seen, gate


def test_a_burst_while_a_pass_runs_costs_one_more_pass(
    passes: tuple[list[bool], asyncio.Event],
) -> None:
    runs, gate = passes
    memo = types.SimpleNamespace(kube=None, providers=None)
    logger = logging.getLogger("test")

    async def scenario() -> None:
        handlers.wake(memo, "llm", "m", logger, stale=True)  # type: ignore[arg-type]
        await asyncio.sleep(0.05)  # the first pass is running
        assert runs == [True]
        for i in range(10):
            handlers.wake(memo, "llm", "m", logger, stale=i == 3)  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.sleep(0.05)
        # exactly one more pass for the ten triggers, and it reads the children again
        assert runs == [True, True]
        await asyncio.sleep(0.1)
        assert len(runs) == 2  # nothing scheduled: it sleeps
        handlers.wake(memo, "llm", "m", logger, stale=False)  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        assert runs == [True, True, False]  # a later trigger runs again: nothing is stuck
        # the model's own status writes come back as events that do not wake it
        handlers.wake(memo, "llm", "m", logger, stale=False, now=False)  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        assert len(runs) == 3
        await handlers.stop_runners()

    asyncio.run(scenario())
