"""The per-model reconcile queue in handlers: a burst of triggers while one reconcile waits adds
nothing, and a trigger that arrives while a reconcile runs is never lost (a fake Kube, the real
asyncio loop)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from quantrollout import handlers

QM = {"metadata": {"namespace": "llm", "name": "m"}}


class FakeKube:
    def __init__(self) -> None:
        self.reads = 0

    def get_quantizedmodel(self, namespace: str, name: str) -> dict[str, Any]:
        self.reads += 1
        return QM


@pytest.fixture
def runs_and_gate(monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], asyncio.Event]:
    """Counts reconciles that get past the queue; each holds the model's lock until `gate`."""
    seen: list[int] = []
    gate = asyncio.Event()

    async def fake_locked(kube: FakeKube, qm: dict[str, Any], logger: Any) -> None:
        seen.append(kube.reads)
        await gate.wait()

    monkeypatch.setattr(handlers, "_reconcile_locked", fake_locked)
    return seen, gate


def test_a_burst_while_one_waits_costs_one_reconcile(
    runs_and_gate: tuple[list[int], asyncio.Event],
) -> None:
    runs, gate = runs_and_gate

    async def scenario() -> None:
        kube = FakeKube()
        logger = logging.getLogger("test")
        first = asyncio.create_task(handlers.reconcile(kube, QM, logger))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)  # running, holding the model's lock
        burst = [
            asyncio.create_task(handlers.reconcile(kube, QM, logger))  # type: ignore[arg-type]
            for _ in range(10)
        ]
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(first, *burst)
        # the first, then exactly one more for the ten triggers that came while it ran
        assert len(runs) == 2
        assert kube.reads == 2
        await handlers.reconcile(kube, QM, logger)  # type: ignore[arg-type]
        assert len(runs) == 3  # a later trigger reconciles again: nothing is stuck as queued

    asyncio.run(scenario())
