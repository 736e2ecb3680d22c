"""Fixtures the router's test modules share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .test_router_proxy import BASE, TARGET, Sim


@pytest.fixture(scope="module")
def sims() -> Iterator[tuple[Sim, Sim]]:
    """A vLLM simulator process for the baseline tier and one for the target, per module."""
    base, target = Sim(BASE), Sim(TARGET)
    try:
        yield base, target
    finally:
        base.stop()
        target.stop()
