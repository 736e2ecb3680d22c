"""The preflight gate: rules over what the benchmark and the quality probe measured, judged by a
pure function. A rule is a name and a bound (`min` or `max`); each verdict says the rule, the
field it read, the value and the threshold. No value (no successful request, nothing to divide
by) is Inconclusive, which never passes the gate.

Rules (target vs baseline, measured under the same load at the same time):
- throughput-ratio: target output tokens/s / baseline output tokens/s (e.g. min 1.2)
- ttft-p50-ratio, ttft-p99-ratio: target TTFT quantile / baseline's (e.g. max 1.1)
- itl-p50-ratio, itl-p99-ratio: target inter-token latency quantile / baseline's
- error-rate: the target's failed requests / its requests (e.g. max 0)
- quality-agreement: mean agreement of the target's greedy answers with the baseline's
- exact-match: share of probe prompts answered word for word as the baseline answers them
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from quantrollout.preflight.stats import Summary

Outcome = Literal["Pass", "Fail", "Inconclusive"]


@dataclass(frozen=True)
class GateRule:
    name: str
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class Measured:
    """Everything a gate rule can read."""

    baseline: Summary
    target: Summary
    agreement: float | None = None  # mean over probe prompts
    exact_match: float | None = None


@dataclass(frozen=True)
class GateVerdict:
    rule: str
    field: str  # what was read, e.g. target.outputTokensPerSecond / baseline.outputTokensPerSecond
    value: float | None
    threshold: float
    bound: Literal["min", "max"]
    outcome: Outcome

    def describe(self) -> str:
        if self.value is None:
            return f"{self.rule}: no value ({self.field}), inconclusive"
        sign = {"min": ">=", "max": "<="}[self.bound]
        word = "ok" if self.outcome == "Pass" else "breached"
        return f"{self.rule} {self.value:.3g} ({self.field}), must be {sign} {self.threshold:g}: {word}"


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


_FIELDS: dict[str, tuple[str, Callable[[Measured], float | None]]] = {
    "throughput-ratio": (
        "target.outputTokensPerSecond / baseline.outputTokensPerSecond",
        lambda m: _ratio(m.target.output_tokens_per_second, m.baseline.output_tokens_per_second),
    ),
    "ttft-p50-ratio": (
        "target.ttftP50 / baseline.ttftP50",
        lambda m: _ratio(m.target.ttft_p50, m.baseline.ttft_p50),
    ),
    "ttft-p99-ratio": (
        "target.ttftP99 / baseline.ttftP99",
        lambda m: _ratio(m.target.ttft_p99, m.baseline.ttft_p99),
    ),
    "itl-p50-ratio": (
        "target.itlP50 / baseline.itlP50",
        lambda m: _ratio(m.target.itl_p50, m.baseline.itl_p50),
    ),
    "itl-p99-ratio": (
        "target.itlP99 / baseline.itlP99",
        lambda m: _ratio(m.target.itl_p99, m.baseline.itl_p99),
    ),
    "error-rate": ("target.errors / target.requests", lambda m: m.target.error_rate),
    "quality-agreement": ("probe.agreement", lambda m: m.agreement),
    "exact-match": ("probe.exactMatch", lambda m: m.exact_match),
}
RULE_NAMES = tuple(_FIELDS)


def evaluate(rules: list[GateRule], measured: Measured) -> list[GateVerdict]:
    verdicts = []
    for rule in rules:
        if rule.name not in _FIELDS:
            raise ValueError(f"unknown gate rule {rule.name!r} (one of {', '.join(RULE_NAMES)})")
        if (rule.min is None) == (rule.max is None):
            raise ValueError(f"gate rule {rule.name}: give exactly one of min and max")
        field, read = _FIELDS[rule.name]
        value = read(measured)
        bound: Literal["min", "max"] = "min" if rule.min is not None else "max"
        threshold = rule.min if rule.min is not None else rule.max
        assert threshold is not None
        outcome: Outcome
        if value is None:
            outcome = "Inconclusive"
        elif bound == "min":
            outcome = "Pass" if value >= threshold else "Fail"
        else:
            outcome = "Pass" if value <= threshold else "Fail"
        verdicts.append(GateVerdict(rule.name, field, value, threshold, bound, outcome))
    return verdicts


def overall(verdicts: list[GateVerdict]) -> Outcome:
    """Fail if any rule failed, else Inconclusive if any had no value, else Pass. No rules at all
    is Pass: the gate was asked to judge nothing."""
    outcomes = {v.outcome for v in verdicts}
    if "Fail" in outcomes:
        return "Fail"
    return "Inconclusive" if "Inconclusive" in outcomes else "Pass"


def as_mapping(verdict: GateVerdict) -> Mapping[str, object]:
    return {
        "rule": verdict.rule,
        "field": verdict.field,
        "value": verdict.value,
        "threshold": verdict.threshold,
        "bound": verdict.bound,
        "verdict": verdict.outcome,
    }
