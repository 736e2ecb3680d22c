"""The route table: which QuantizedModel serves each model name clients ask for, and where its
tiers are. Pure.

The operator writes each model's traffic into `status.traffic`; a config source collects those
into `ModelTraffic` values and `build_table` turns them into a table keyed by `servedModel`.
Two models claiming the same served name: the oldest (by creation time, then namespace/name)
keeps it, so creating a second one by mistake cannot take live traffic away from the first; the
losers are reported so the source can log them.

A tier's upstream is `http://{service}.{namespace}.svc:{port}` unless an override
(`--upstream NAMESPACE/SERVICE=URL`) names another URL, as tests and the local demo do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from quantrollout.api.status import TrafficBackend, TrafficStatus


@dataclass(frozen=True, slots=True)
class ModelTraffic:
    """One QuantizedModel's traffic, as the router needs it."""

    namespace: str
    name: str
    created: str  # metadata.creationTimestamp (RFC 3339, UTC: orders as a string)
    traffic: TrafficStatus


RouteTable = Mapping[str, ModelTraffic]  # served model name -> its model; never mutated


@dataclass(frozen=True, slots=True)
class Conflict:
    """`losers` claim `served_model` too, but `winner` is older and keeps it."""

    served_model: str
    winner: ModelTraffic
    losers: tuple[ModelTraffic, ...]

    def message(self) -> str:
        names = ", ".join(f"{m.namespace}/{m.name}" for m in self.losers)
        return (
            f"served model {self.served_model!r} is claimed by several QuantizedModels; "
            f"the oldest, {self.winner.namespace}/{self.winner.name}, keeps it; ignored: {names}"
        )


EMPTY: RouteTable = MappingProxyType({})


def build_table(models: Iterable[ModelTraffic]) -> tuple[RouteTable, list[Conflict]]:
    """The route table of `models`, and the served names more than one model claimed."""
    claims: dict[str, list[ModelTraffic]] = {}
    for model in models:
        claims.setdefault(model.traffic.served_model, []).append(model)
    table: dict[str, ModelTraffic] = {}
    conflicts: list[Conflict] = []
    for served, claimants in sorted(claims.items()):
        ordered = sorted(claimants, key=lambda m: (m.created, m.namespace, m.name))
        table[served] = ordered[0]
        if len(ordered) > 1:
            conflicts.append(Conflict(served, ordered[0], tuple(ordered[1:])))
    return MappingProxyType(table), conflicts


def changed(old: RouteTable, new: RouteTable) -> list[ModelTraffic]:
    """The models whose traffic is new or different in `new` (what a reload applied)."""
    return [m for served, m in sorted(new.items()) if old.get(served) != m]


Overrides = Mapping[tuple[str, str], str]  # (namespace, service) -> base URL


def parse_override(text: str) -> tuple[tuple[str, str], str]:
    """`NAMESPACE/SERVICE=URL` -> ((namespace, service), url); ValueError when malformed."""
    name, sep, url = text.partition("=")
    namespace, slash, service = name.partition("/")
    if not (sep and slash and namespace and service and url):
        raise ValueError(f"expected NAMESPACE/SERVICE=URL, got {text!r}")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"the URL of {name} must start with http:// or https://, got {url!r}")
    return (namespace, service), url.rstrip("/")


def upstream_url(namespace: str, backend: TrafficBackend, overrides: Overrides) -> str:
    """The base URL (no trailing slash) of a tier's Service."""
    override = overrides.get((namespace, backend.service))
    if override is not None:
        return override
    return f"http://{backend.service}.{namespace}.svc:{backend.port}"
