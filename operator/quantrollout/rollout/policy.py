"""Mixed-precision policies: which tier answers each request class, and how that moves. Pure.

With several quantized tiers beside the baseline, what is rolled out is a **policy**: for each
request class (`quantrollout.router.classify.CLASSES`) the tier that answers it. This module
holds the decisions on policies, values in and values out:

- `compile_policy`: from what shadow measured per (class, tier), for each class the **cheapest
  tier that passed**, else the baseline, with the reason in words. A tier passes for a class
  when it is Ready, has at least `min_samples` shadow comparisons for that class, its agreement
  with the baseline (calibrated against the baseline's own self-agreement, as the router
  reports it) is at least `min_agreement`, and the class's quality rules on that tier passed
  (`Inconclusive` does not pass: no data never promotes). Cost is GPUs per replica over
  throughput per replica relative to the baseline's, so "cheapest" is GPU-seconds per request.
  Ties go to the higher precision.
- `check_policy`: a hand-written policy (class -> tier, e.g. the thresholds of a complexity
  score turned into classes) validated: an unknown class or tier refuses the whole policy with
  the field named (the executor then holds traffic where it is); a tier that is not Ready holds
  that class on the baseline, with the reason, until it is.
- `breach`: a partial rollback. A class whose tier breached moves to the next higher precision
  tier that passed for that class in shadow, else to the baseline; never to a cheaper tier (for
  a compiled policy; a hand-written one may name a tier dearer than the baseline, and the
  baseline is always the last resort), and the other classes stay where they are.
- `class_shares`: during A/B and gradual steps, each class sends the step's weight to its tier
  and the rest to the tier it was on before (the baseline at first); each class's shares sum
  to 100.
- `tier_shares` and `relative_cost`: over a class mix, each tier's share of all traffic (what
  capacity follows) and the GPU cost relative to the baseline alone (what status reports).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from quantrollout import defaults

Verdict = Literal["Pass", "Fail", "Inconclusive"]
Precision = Literal["fp16", "bf16", "fp8", "int8", "int4"]
BITS: Mapping[str, int] = {"fp16": 16, "bf16": 16, "fp8": 8, "int8": 8, "int4": 4}


@dataclass(frozen=True, slots=True)
class Tier:
    """One tier of the model as the policy sees it."""

    name: str
    precision: Precision
    gpus_per_replica: int
    relative_throughput: float = 1.0  # requests a replica serves, relative to a baseline replica
    ready: bool = True

    @property
    def bits(self) -> int:
        return BITS[self.precision]

    @property
    def cost(self) -> float:
        """GPU-seconds per request, in units of a baseline GPU-second per baseline request."""
        return self.gpus_per_replica / self.relative_throughput


@dataclass(frozen=True, slots=True)
class ShadowStats:
    """What shadow measured for one (class, tier)."""

    samples: int  # shadow comparisons of this class on this tier
    agreement: float | None  # mean agreement with the baseline, calibrated; None: none yet
    rules: Verdict = "Inconclusive"  # the class's quality rules on this tier
    reasons: tuple[str, ...] = ()  # why the rules did not pass, in words


@dataclass(frozen=True, slots=True)
class Thresholds:
    min_samples: int = defaults.MIXED_MIN_SAMPLES
    min_agreement: float = defaults.MIXED_MIN_AGREEMENT


@dataclass(frozen=True, slots=True)
class Choice:
    """Where one class goes, why, and where a breach would send it next."""

    tier: str
    reason: str
    fallbacks: tuple[str, ...] = ()  # higher precision tiers that passed, next one first
    agreement: float | None = None  # shadow's agreement of `tier` on this class (None: baseline)
    samples: int = 0


Policy = Mapping[str, Choice]  # class -> its choice


@dataclass(frozen=True, slots=True)
class Assessment:
    passed: bool
    reason: str  # why not, or the figures it passed with


@dataclass(frozen=True, slots=True)
class PolicyCheck:
    """A hand-written policy checked: `policy` is None when `refused` says why it is not taken."""

    policy: dict[str, Choice] | None
    refused: tuple[str, ...] = ()
    held: tuple[str, ...] = ()


def assess(tier: Tier, stats: ShadowStats | None, thresholds: Thresholds) -> Assessment:
    """Whether `tier` passed shadow for one class, and why (not)."""
    if not tier.ready:
        return Assessment(False, f"{tier.name} is not Ready")
    samples = stats.samples if stats else 0
    if stats is None or samples < thresholds.min_samples:
        return Assessment(
            False, f"{tier.name} has too few samples ({samples} < {thresholds.min_samples})"
        )
    if stats.agreement is None:
        return Assessment(False, f"{tier.name} has no agreement measured")
    if stats.agreement < thresholds.min_agreement:
        return Assessment(
            False,
            f"{tier.name} agreement {stats.agreement:.3f} < {thresholds.min_agreement:.3f}",
        )
    if stats.rules != "Pass":
        why = "; ".join(stats.reasons) or "no verdict"
        state = "failed" if stats.rules == "Fail" else "inconclusive"
        return Assessment(False, f"{tier.name} rules {state}: {why}")
    return Assessment(True, f"{tier.name} agreement {stats.agreement:.3f} over {samples} samples")


def _order(tiers: Iterable[Tier]) -> list[Tier]:
    """Cheapest first; at equal cost the higher precision, then by name (deterministic)."""
    return sorted(tiers, key=lambda t: (t.cost, -t.bits, t.name))


def _fallbacks(chosen: Tier, passed: Sequence[Tier], baseline: Tier) -> tuple[str, ...]:
    """Where a breach of `chosen` goes next, in order: at each precision above `chosen`'s, the
    cheapest passed tier that is not cheaper than the one before it nor dearer than the baseline
    (a tier dearer than the baseline is never worth it: the baseline is better and cheaper). So
    each step of a partial rollback raises the precision and never lowers the cost, and the last
    step, to the baseline, does not either."""
    chain: list[str] = []
    floor = chosen
    for bits in sorted({t.bits for t in passed if t.bits > chosen.bits}):
        level = [
            t
            for t in passed
            if t.bits == bits and floor.cost <= t.cost <= baseline.cost and t.bits < baseline.bits
        ]
        if level:
            floor = min(level, key=lambda t: (t.cost, t.name))
            chain.append(floor.name)
    return tuple(chain)


def compile_policy(
    classes: Sequence[str],
    baseline: Tier,
    tiers: Sequence[Tier],
    stats: Mapping[tuple[str, str], ShadowStats],
    thresholds: Thresholds | None = None,
) -> dict[str, Choice]:
    """For each class, the cheapest tier that passed shadow for it, else the baseline.

    `tiers` are the quantized tiers (the baseline is not judged against itself); `stats` is keyed
    by (class, tier name).
    """
    limits = thresholds or Thresholds()
    policy: dict[str, Choice] = {}
    for cls in classes:
        verdicts = {t.name: assess(t, stats.get((cls, t.name)), limits) for t in tiers}
        passed = [t for t in tiers if verdicts[t.name].passed]
        cheaper = [t for t in _order(passed) if t.cost < baseline.cost]
        if not cheaper:
            why = "; ".join(verdicts[t.name].reason for t in _order(tiers)) or "no quantized tier"
            if passed:
                why = f"no passing tier is cheaper than the baseline ({why})"
            policy[cls] = Choice(baseline.name, f"baseline: {why}")
            continue
        best = cheaper[0]
        others = [verdicts[t.name].reason for t in _order(tiers) if t is not best]
        reason = f"cheapest passing: {verdicts[best.name].reason}"
        if others:
            reason += f" (also: {'; '.join(others)})"
        measured = stats[(cls, best.name)]
        policy[cls] = Choice(
            best.name,
            reason,
            _fallbacks(best, passed, baseline),
            measured.agreement,
            measured.samples,
        )
    return policy


def check_policy(
    wanted: Mapping[str, str],
    classes: Sequence[str],
    baseline: Tier,
    tiers: Sequence[Tier],
    field_path: str = "spec.policy",
    stats: Mapping[tuple[str, str], ShadowStats] | None = None,
    thresholds: Thresholds | None = None,
) -> PolicyCheck:
    """A hand-written policy (class -> tier name) validated against the model's tiers.

    Refused (policy None), with the field named, when it names a class or tier that does not
    exist. A tier that exists but is not Ready holds its class on the baseline, reason given.
    A class the policy leaves out goes to the baseline. With shadow `stats`, a breach may fall
    back to a higher precision tier that passed for the class; without, straight to the baseline.
    """
    by_name = {t.name: t for t in tiers}
    names = ", ".join([baseline.name, *by_name])
    refused = [
        f"{field_path}.{cls}: unknown request class (classes: {', '.join(classes)})"
        for cls in wanted
        if cls not in classes
    ]
    refused += [
        f"{field_path}.{cls}: tier {tier!r} does not exist (tiers: {names})"
        for cls, tier in wanted.items()
        if cls in classes and tier != baseline.name and tier not in by_name
    ]
    if refused:
        return PolicyCheck(None, tuple(refused))
    limits = thresholds or Thresholds()
    policy: dict[str, Choice] = {}
    held: list[str] = []
    for cls in classes:
        name = wanted.get(cls, baseline.name)
        if name == baseline.name:
            why = "by the policy" if cls in wanted else "not in the policy"
            policy[cls] = Choice(baseline.name, f"baseline: {why}")
            continue
        tier = by_name[name]
        if not tier.ready:
            message = f"{field_path}.{cls}: held on {baseline.name}: tier {name} is not Ready"
            held.append(message)
            policy[cls] = Choice(baseline.name, f"baseline: held, tier {name} is not Ready")
            continue
        passed = (
            [t for t in tiers if assess(t, stats.get((cls, t.name)), limits).passed]
            if stats is not None
            else []
        )
        measured = stats.get((cls, name)) if stats is not None else None
        policy[cls] = Choice(
            name,
            f"{name}: by the policy",
            _fallbacks(tier, passed, baseline),
            measured.agreement if measured else None,
            measured.samples if measured else 0,
        )
    return PolicyCheck(policy, (), tuple(held))


def breach(
    policy: Policy, cls: str, tier: str, baseline: str, reasons: Sequence[str] = ()
) -> dict[str, Choice]:
    """The policy after `cls` breached on `tier`: that class alone moves to its next fallback
    (higher precision, passed in shadow), else to the baseline. A breach reported for a tier the
    class is no longer on (a late verdict), or on the baseline, changes nothing."""
    updated = dict(policy)
    current = policy.get(cls)
    if current is None or current.tier != tier or tier == baseline:
        return updated
    why = f"{tier} breached" + (f": {'; '.join(reasons)}" if reasons else "")
    if current.fallbacks:
        after, rest = current.fallbacks[0], current.fallbacks[1:]
        updated[cls] = replace(
            current,
            tier=after,
            fallbacks=rest,
            reason=f"{after}: next higher precision that passed shadow ({why})",
            agreement=None,
            samples=0,
        )
    else:
        updated[cls] = Choice(baseline, f"baseline: {why}; no higher precision tier passed")
    return updated


def apply_verdicts(
    policy: Policy,
    verdicts: Mapping[tuple[str, str], Verdict],
    baseline: str,
    reasons: Mapping[tuple[str, str], Sequence[str]] | None = None,
) -> dict[str, Choice]:
    """Every class whose current tier's verdict is Fail breaches; Pass and Inconclusive hold."""
    updated = dict(policy)
    for (cls, tier), verdict in sorted(verdicts.items()):
        if verdict == "Fail":
            updated = breach(updated, cls, tier, baseline, (reasons or {}).get((cls, tier), ()))
    return updated


def class_shares(
    policy: Policy, weight: int, baseline: str, previous: Mapping[str, str] | None = None
) -> dict[str, dict[str, int]]:
    """Each class's % of live requests per tier at a step of `weight`% (0..100): `weight` on the
    class's tier, the rest on the tier it was on before (`previous`, else the baseline)."""
    if not 0 <= weight <= 100:
        raise ValueError(f"weight must be within 0..100, got {weight}")
    shares: dict[str, dict[str, int]] = {}
    for cls, choice in policy.items():
        before = (previous or {}).get(cls, baseline)
        if choice.tier == before or weight == 100:
            shares[cls] = {choice.tier: 100}
        elif weight == 0:
            shares[cls] = {before: 100}
        else:
            shares[cls] = {choice.tier: weight, before: 100 - weight}
    return shares


def tier_shares(
    shares: Mapping[str, Mapping[str, int]], mix: Mapping[str, float]
) -> dict[str, float]:
    """Each tier's fraction of all live requests, for a class `mix` (fractions summing to 1)."""
    total: dict[str, float] = {}
    for cls, fraction in mix.items():
        for tier, percent in shares.get(cls, {}).items():
            total[tier] = total.get(tier, 0.0) + fraction * percent / 100
    return total


def relative_cost(by_tier: Mapping[str, float], tiers: Sequence[Tier], baseline: Tier) -> float:
    """GPU-seconds of a traffic split over the tiers, relative to the baseline serving it all."""
    cost = {t.name: t.cost for t in (baseline, *tiers)}
    return sum(share * cost[name] for name, share in by_tier.items()) / baseline.cost
