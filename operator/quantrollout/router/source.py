"""Where the router's route table comes from: a small seam with two implementations.

`KubeConfigSource` (in `kube_source`) watches QuantizedModels on the API server;
`StaticConfigSource` here holds models set by hand, for tests and local experiments. Both
publish immutable `RouteTable` snapshots: the router reads the current one once per request,
so a change applies to the next request and never to one already in flight.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Protocol

from .routes import EMPTY, Conflict, ModelTraffic, RouteTable, build_table

log = logging.getLogger(__name__)

Listener = Callable[[RouteTable, RouteTable], None]  # (old, new)


class ConfigSource(Protocol):
    """Keeps a route table current and tells listeners when it changes."""

    def table(self) -> RouteTable:
        """The current table (an immutable snapshot)."""
        ...

    @property
    def synced(self) -> bool:
        """True once the table reflects the source at least once (readiness)."""
        ...

    def subscribe(self, listener: Listener) -> None:
        """Calls `listener(old, new)` on the event loop after every change of the table."""
        ...

    async def run(self) -> None:
        """Keeps the table current until cancelled."""
        ...


class TablePublisher:
    """The part both sources share: holding the snapshot, reporting conflicts once, notifying."""

    def __init__(self) -> None:
        self._table: RouteTable = EMPTY
        self._listeners: list[Listener] = []
        self._reported: set[tuple[str, tuple[tuple[str, str], ...]]] = set()

    def table(self) -> RouteTable:
        return self._table

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def publish(self, models: Iterable[ModelTraffic]) -> None:
        table, conflicts = build_table(models)
        self._report(conflicts)
        if table == self._table:
            return
        old, self._table = self._table, table
        for listener in self._listeners:
            listener(old, table)

    def _report(self, conflicts: list[Conflict]) -> None:
        # Logged once per distinct conflict, not on every watch event that rebuilds the table.
        current = {_conflict_key(c): c for c in conflicts}
        for key, conflict in current.items():
            if key not in self._reported:
                log.warning(conflict.message())
        self._reported = set(current)


def _conflict_key(conflict: Conflict) -> tuple[str, tuple[tuple[str, str], ...]]:
    claimants = (conflict.winner, *conflict.losers)
    return conflict.served_model, tuple((m.namespace, m.name) for m in claimants)


class StaticConfigSource(TablePublisher):
    """A route table set by hand (`set`), for tests and local runs without a cluster."""

    def __init__(self, models: Iterable[ModelTraffic] = ()) -> None:
        super().__init__()
        self.publish(models)

    @property
    def synced(self) -> bool:
        return True

    def set(self, models: Iterable[ModelTraffic]) -> None:
        self.publish(models)

    async def run(self) -> None:
        return None
