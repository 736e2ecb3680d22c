"""Judging measured values: a pure function from rule queries and what each returned to a
verdict. No data, NaN, several series or an error is Inconclusive, never Pass; fewer requests
than minSamples makes the whole evaluation Inconclusive."""

from __future__ import annotations

import math
from dataclasses import dataclass

from quantrollout.api.status import RuleResult
from quantrollout.rollout.machine import Evaluation

from .rules import RuleQuery


@dataclass(frozen=True)
class Measurement:
    """What a query returned: one value, or the reason there is none."""

    value: float | None = None
    unavailable: str | None = None

    @classmethod
    def of(cls, values: list[float]) -> Measurement:
        if not values:
            return cls(unavailable="no series")
        if len(values) > 1:
            return cls(unavailable=f"{len(values)} series where one was expected")
        if math.isnan(values[0]):
            return cls(unavailable="no data (NaN)")
        return cls(value=values[0])


def judge(
    rules: list[RuleQuery], measured: list[Measurement], samples: Measurement, min_samples: int
) -> tuple[Evaluation, list[RuleResult]]:
    results: list[RuleResult] = []
    if samples.value is None or samples.value < min_samples:
        why = samples.unavailable or f"{samples.value:.0f} requests < minSamples {min_samples}"
        for rule in rules:
            results.append(
                RuleResult(
                    rule=rule.rule, threshold=rule.threshold, verdict="Inconclusive", reason=why
                )
            )
        return Evaluation("Inconclusive", (why,)), results

    breaches, missing = [], []
    for rule, m in zip(rules, measured, strict=True):
        if m.value is None:
            missing.append(f"{rule.rule}: {m.unavailable}")
            results.append(
                RuleResult(
                    rule=rule.rule,
                    threshold=rule.threshold,
                    verdict="Inconclusive",
                    reason=m.unavailable,
                )
            )
        elif rule.breached(m.value):
            breaches.append(rule.describe(m.value))
            results.append(
                RuleResult(rule=rule.rule, value=m.value, threshold=rule.threshold, verdict="Fail")
            )
        else:
            results.append(
                RuleResult(rule=rule.rule, value=m.value, threshold=rule.threshold, verdict="Pass")
            )
    if breaches:
        return Evaluation("Fail", tuple(breaches)), results
    if missing:
        return Evaluation("Inconclusive", tuple(missing)), results
    return Evaluation("Pass"), results
