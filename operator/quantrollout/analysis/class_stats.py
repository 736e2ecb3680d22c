"""Mixed precision: what the operator reads of the router's series per (request class, tier).
Pure: values in, PromQL out; series in, a `ClassObservation` out.

The router labels every per-tier series of a mixed-precision model with the request's `class`
(router/metrics.py). Per (class, quantized tier), the operator needs what `rollout.policy`
decides on (`policy.ShadowStats`):

- `samples`: the shadow comparisons of that class on that tier in the window (the count of
  `quantrollout_router_shadow_agreement_ratio`);
- `agreement`: their mean agreement with the baseline's answer, **calibrated per class** as the
  `shadow-agreement` rule does for the whole model (analysis/rules.py): divided by the mean
  agreement of the baseline with itself on the calibration copies of the same class
  (`..._shadow_self_agreement_ratio{tier=<baseline>, class=<class>}`). No calibration copy of
  that class in the window (or a mean of 0): `None`, which never passes;
- `rules`: the class's quality rules on that tier, the built-in rules `CLASS_RULES` with the
  thresholds of `spec.rollout.analysis.rules` (or the default rules), each scoped by class and
  tier, comparative ones against the baseline's answers of the same class. Fewer than
  `minSamples` requests of the class on the tier, a rule without data or a NaN: `Inconclusive`
  with the reason (missing data never promotes); any breach: `Fail` with the breaches in words.

and the class mix: each class's share of the live requests (`requests_total` by `class`) over
the window, which capacity follows (`policy.tier_shares`).

The queries are one per signal, each aggregated `by (class, tier)` over the model's series
(`class_queries`), not one per (class, tier): eleven queries per model and round whatever the
number of classes and tiers. `parse` turns their answers into the observation. The same function
serves shadow (the operator compiles the policy from it) and A/B and gradual (each round's
per-(class, tier) verdicts go to `policy.apply_verdicts`); only the window differs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from quantrollout import signals as s
from quantrollout.api.spec import Analysis
from quantrollout.api.thresholds import parse_threshold
from quantrollout.rollout.policy import ShadowStats, Verdict

from .batch import Series
from .rules import DEFAULT_RULES, RuleQuery

# The built-in rules judged per (class, tier). Latency rules are left out: they are per tier
# (a tier's latency does not depend on which class a request is, but on its load).
CLASS_RULES: Final = (
    "error-rate",
    "repetition-rate",
    "refusal-rate-increase",
    "output-length-ratio",
)

# One query per signal; the names are the keys of `class_queries` and of `parse`'s answers.
AGREEMENT_SUM, AGREEMENT_COUNT = "agreement_sum", "agreement_count"
SELF_SUM, SELF_COUNT = "self_agreement_sum", "self_agreement_count"
RESPONSES, REPETITIONS, REFUSALS, TOKENS = "responses", "repetitions", "refusals", "tokens"
REQUESTS, ERRORS, SHADOW = "requests", "errors", "shadow_requests"
_BY = f"{s.CLASS}, {s.TIER}"


@dataclass(frozen=True)
class ClassObservation:
    """What Prometheus says of a mixed model's classes over a window."""

    # (class, quantized tier) -> samples, calibrated agreement, the class's rules on that tier
    stats: Mapping[tuple[str, str], ShadowStats] = field(default_factory=dict)
    # class -> share of the live requests over the window (sums to 1; empty: no requests)
    mix: Mapping[str, float] = field(default_factory=dict)
    unavailable: str | None = None  # why Prometheus could not answer (never promotes)

    def verdicts(self) -> dict[tuple[str, str], Verdict]:
        """Each (class, tier)'s rules verdict, as `policy.apply_verdicts` takes them."""
        return {key: one.rules for key, one in self.stats.items()}

    def reasons(self) -> dict[tuple[str, str], tuple[str, ...]]:
        return {key: one.reasons for key, one in self.stats.items() if one.reasons}


def class_queries(namespace: str, model: str, window: str) -> dict[str, str]:
    """The model's per-(class, tier) signals over `window`, one PromQL query each."""
    labels = f'{s.NAMESPACE}="{namespace}",{s.MODEL}="{model}",{s.CLASS}!=""'

    def inc(metric: str, extra: str = "", by: str = _BY) -> str:
        sel = "{" + labels + (f",{extra}" if extra else "") + "}"
        return f"sum by ({by}) (increase({metric}{sel}[{window}]))"

    return {
        AGREEMENT_SUM: inc(f"{s.ROUTER_SHADOW_AGREEMENT}_sum"),
        AGREEMENT_COUNT: inc(f"{s.ROUTER_SHADOW_AGREEMENT}_count"),
        SELF_SUM: inc(f"{s.ROUTER_SHADOW_SELF_AGREEMENT}_sum"),
        SELF_COUNT: inc(f"{s.ROUTER_SHADOW_SELF_AGREEMENT}_count"),
        RESPONSES: inc(s.ROUTER_RESPONSES),
        REPETITIONS: inc(s.ROUTER_REPETITIONS),
        REFUSALS: inc(s.ROUTER_REFUSALS),
        TOKENS: inc(s.ROUTER_OUTPUT_TOKENS),
        REQUESTS: inc(s.ROUTER_REQUESTS),
        ERRORS: inc(s.ROUTER_ERRORS),
        SHADOW: inc(s.ROUTER_SHADOW_REQUESTS, by=f"{_BY}, outcome"),
    }


def class_rules(analysis: Analysis) -> list[RuleQuery]:
    """The `CLASS_RULES` among the model's rules (or the default rules), with their thresholds
    (a rule with both `min` and `max` gives two). Their `expr` is empty: `parse` computes them
    from the batched answers."""
    found = []
    for rule in analysis.rules or DEFAULT_RULES:
        if rule.name not in CLASS_RULES:
            continue
        for compare in ("max", "min"):
            bound = getattr(rule, compare)
            if bound is not None:
                found.append(RuleQuery(rule.name, "", compare, parse_threshold(bound), rule))
    return found


Table = Mapping[tuple[str, str], float]  # (class, tier) -> value


def _table(series: Sequence[Series], outcome: str | None = None) -> dict[tuple[str, str], float]:
    """(class, tier) -> value; with `outcome`, the shadow outcomes `outcome` selects are summed
    (`"!dropped"`: every outcome but dropped)."""
    found: dict[tuple[str, str], float] = {}
    for one in series:
        got = one.labels.get
        if outcome is not None:
            kind = got("outcome", "")
            wanted = kind != "dropped" if outcome == "!dropped" else kind == outcome
            if not wanted:
                continue
        key = (got(s.CLASS, ""), got(s.TIER, ""))
        if key[0]:
            found[key] = found.get(key, 0.0) + one.value
    return found


def _div(a: float | None, b: float | None) -> float | None:
    """a / b; None when either is missing or b is 0 (no answers: no value, not 0 or Inf)."""
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return None
    return a / b


@dataclass(frozen=True)
class _Tables:
    t: Mapping[str, Table]

    def get(self, name: str, cls: str, tier: str) -> float | None:
        return self.t[name].get((cls, tier))

    def total(self, name: str, cls: str, tier: str) -> float:
        """A counter's increase; 0 when it has no series (as `or vector(0)` in rules.py)."""
        return self.t[name].get((cls, tier), 0.0)

    def share(self, name: str, cls: str, tier: str) -> float | None:
        return _div(self.get(name, cls, tier), self.get(RESPONSES, cls, tier))


def _rule_value(name: str, x: _Tables, cls: str, tier: str, baseline: str) -> float | None:
    match name:
        case "error-rate":
            failures = x.total(ERRORS, cls, tier) + x.total("shadow_error", cls, tier)
            return _div(failures, _attempts(x, cls, tier))
        case "repetition-rate":
            return x.share(REPETITIONS, cls, tier)
        case "refusal-rate-increase":
            target, base = x.share(REFUSALS, cls, tier), x.share(REFUSALS, cls, baseline)
            return None if target is None or base is None else target - base
        case "output-length-ratio":
            return _div(x.share(TOKENS, cls, tier), x.share(TOKENS, cls, baseline))
    raise ValueError(f"not a per-class rule: {name}")  # pragma: no cover


def _attempts(x: _Tables, cls: str, tier: str) -> float:
    """Requests of the class the tier was asked to answer: live, plus mirrored (not dropped)."""
    return x.total(REQUESTS, cls, tier) + x.total("shadow_attempted", cls, tier)


def _judge(
    rules: Sequence[RuleQuery], x: _Tables, cls: str, tier: str, baseline: str, min_samples: int
) -> tuple[Verdict, tuple[str, ...]]:
    attempts = _attempts(x, cls, tier)
    if attempts < min_samples:
        return "Inconclusive", (f"too few requests ({attempts:.0f} < {min_samples})",)
    breaches, missing = [], []
    for rule in rules:
        value = _rule_value(rule.rule, x, cls, tier, baseline)
        if value is None or math.isnan(value):
            missing.append(f"{rule.rule}: no data")
        elif rule.breached(value):
            breaches.append(rule.describe(value))
    if breaches:
        return "Fail", tuple(breaches)
    if missing:
        return "Inconclusive", tuple(missing)
    return "Pass", ()


def parse(
    answers: Mapping[str, Sequence[Series]],
    tiers: Sequence[str],
    baseline: str,
    rules: Sequence[RuleQuery],
    min_samples: int,
    classes: Sequence[str],
) -> ClassObservation:
    """The observation from the answers to `class_queries` (a missing key counts as an empty
    answer). Every (class, quantized tier) of `classes` x `tiers` gets stats, with no samples
    when nothing was measured, so the policy sees "too few samples" rather than nothing."""
    tables: dict[str, Table] = {name: _table(answers.get(name, ())) for name in _PLAIN}
    shadow = answers.get(SHADOW, ())
    tables["shadow_attempted"] = _table(shadow, "!dropped")
    tables["shadow_error"] = _table(shadow, "error")
    x = _Tables(tables)
    stats: dict[tuple[str, str], ShadowStats] = {}
    for cls in classes:
        calibration = _div(x.get(SELF_SUM, cls, baseline), x.get(SELF_COUNT, cls, baseline))
        for tier in tiers:
            count = x.get(AGREEMENT_COUNT, cls, tier) or 0.0
            mean = _div(x.get(AGREEMENT_SUM, cls, tier), count)
            agreement = _div(mean, calibration) if calibration and calibration > 0 else None
            verdict, reasons = _judge(rules, x, cls, tier, baseline, min_samples)
            stats[(cls, tier)] = ShadowStats(round(count), agreement, verdict, reasons)
    return ClassObservation(stats, mix(answers.get(REQUESTS, ())))


_PLAIN = (
    AGREEMENT_SUM, AGREEMENT_COUNT, SELF_SUM, SELF_COUNT, RESPONSES, REPETITIONS, REFUSALS,
    TOKENS, REQUESTS, ERRORS,
)  # fmt: skip


def mix(requests: Sequence[Series]) -> dict[str, float]:
    """Each class's share of the live requests (over every tier); empty when there are none."""
    by_class: dict[str, float] = {}
    for (cls, _tier), value in _table(requests).items():
        if value > 0 and not math.isnan(value):
            by_class[cls] = by_class.get(cls, 0.0) + value
    total = sum(by_class.values())
    if total <= 0:
        return {}
    return {cls: value / total for cls, value in sorted(by_class.items())}
