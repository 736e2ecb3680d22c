"""Which tier answers a request of one class under a mixed-precision split. Pure.

The per-class form of `split.decide`: the operator gives each request class (`classify.CLASSES`)
a route, `weight`% of the class on its chosen `tier` and the rest on the tier the class was on
before (`rest`: the baseline at first, see `rollout.policy.class_shares`). The request's bucket
is the same sticky bucket `split` computes, so a user stays on one tier for the whole rollout,
and raising a class's weight only moves users from `rest` to `tier`, never back and forth.

No request is dropped for want of a tier: a class without a route, or a route naming a tier the
router does not know (not in the table yet, or removed), is answered by the baseline, and the
decision says why (`FALLBACKS`, a bounded label for `quantrollout_router_class_fallbacks_total`).

Not wired yet: docs/mixed-precision.md says where `RouterApp._route` will call it.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import Final, Literal

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
