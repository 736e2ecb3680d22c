"""Which tier answers a request of one class under a mixed-precision split. Pure.

The per-class form of `split.decide`: the operator gives each request class (`classify.CLASSES`)
a route, `weight`% of the class on its chosen `tier` and the rest on the tier the class was on
before (`rest`: the baseline at first, see `rollout.policy.class_shares`). The request's bucket
is the same sticky bucket `split` computes, so a user stays on one tier for the whole rollout,
and raising a class's weight only moves users from `rest` to `tier`, never back and forth.

No request is dropped for want of a tier: a class without a route, or a route naming a tier the
router does not know (not in the table yet, or removed), is answered by the baseline, and the
decision says why (`FALLBACKS`, a bounded label for `quantrollout_router_class_fallbacks_total`).

`class_table` reads the routes out of the operator's `status.traffic` (`targets`, `classes`) once
per route-table change; `RouterApp` calls `decide_class` per request of a mixed model.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from quantrollout.api.status import TrafficBackend, TrafficStatus

from .split import goes_to_target

Fallback = Literal["no-route", "tier-missing"]
FALLBACKS: Final[tuple[Fallback, ...]] = ("no-route", "tier-missing")


@dataclass(frozen=True, slots=True)
class ClassRoute:
    """One class's split: `weight`% (0..100) of its requests on `tier`, the rest on `rest`."""

    tier: str
    weight: int
    rest: str

    def __post_init__(self) -> None:
        if not 0 <= self.weight <= 100:
            raise ValueError(f"weight must be within 0..100, got {self.weight}")


@dataclass(frozen=True, slots=True)
class ClassDecision:
    """The tier of one request, and why it fell back to the baseline (None: it did not)."""

    tier: str
    fallback: Fallback | None = None


def decide_class(
    routes: Mapping[str, ClassRoute],
    cls: str,
    bucket: int,
    known: Container[str],
    baseline: str,
) -> ClassDecision:
    """The tier answering a request of class `cls` in `bucket` (`split.choose_bucket`).

    `known` are the tiers the router has an upstream for; the baseline always has one.
    """
    route = routes.get(cls)
    if route is None:
        return ClassDecision(baseline, "no-route")
    tier = route.tier if goes_to_target(bucket, route.weight) else route.rest
    if tier != baseline and tier not in known:
        return ClassDecision(baseline, "tier-missing")
    return ClassDecision(tier)


@dataclass(frozen=True, slots=True)
class ClassTable:
    """A mixed model's split, as the router applies it per request.

    `routes` is None while the operator has written no `classes` (shadow: every quantized tier
    gets the mirrored copies, every live request the baseline, and no fallback is counted, as
    none was asked for); set, a class without an entry falls back to the baseline, counted.
    """

    targets: Mapping[str, TrafficBackend]  # tier name -> where it is
    routes: Mapping[str, ClassRoute] | None
    mirrored: tuple[TrafficBackend, ...] = field(default=())  # every target, in status order


def is_mixed(traffic: TrafficStatus) -> bool:
    """True iff the model is served mixed precision: its requests are classified."""
    return bool(traffic.targets) or traffic.classes is not None


def class_table(traffic: TrafficStatus) -> ClassTable:
    """The split of a mixed model's `traffic` (`is_mixed`). A tier named twice in `targets`
    keeps its first entry; a class named twice in `classes`, its first route."""
    targets: dict[str, TrafficBackend] = {}
    for backend in traffic.targets or ():
        targets.setdefault(backend.tier, backend)
    routes: dict[str, ClassRoute] | None = None
    if traffic.classes is not None:
        routes = {}
        for entry in traffic.classes:
            routes.setdefault(entry.class_, ClassRoute(entry.tier, entry.weight, entry.rest))
    return ClassTable(targets, routes, tuple(targets.values()))


def decide_mixed(table: ClassTable, cls: str, bucket: int, baseline: str) -> ClassDecision:
    """`decide_class` under `table`; every request on the baseline while it has no routes."""
    if table.routes is None:
        return ClassDecision(baseline)
    return decide_class(table.routes, cls, bucket, table.targets, baseline)


def describe(traffic: TrafficStatus) -> str:
    """The split in words, for the log line of a reload."""
    if not is_mixed(traffic):
        target = traffic.target.tier if traffic.target else "-"
        return f"target {target} at {traffic.target_weight}%, mirror {traffic.mirror_percent}%"
    targets = ", ".join(t.tier for t in traffic.targets or ()) or "-"
    if traffic.classes is None:
        routes = "none yet (all live on the baseline)"
    else:
        routes = (
            ", ".join(f"{c.class_} {c.weight}% {c.tier} (rest {c.rest})" for c in traffic.classes)
            or "none (every class falls back to the baseline)"
        )
    return f"targets {targets}; classes: {routes}; mirror {traffic.mirror_percent}%"
