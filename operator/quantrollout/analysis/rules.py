"""Built-in rules and their PromQL, scoped to one model's tiers by the `namespace`, `model` and
`tier` labels (see quantrollout.signals). Pure: spec in, queries out.

Each rule is one PromQL expression returning one value. Comparative rules (`*-ratio`,
`*-increase`) compare the target tier against the baseline tier over the same window. The
quality rules read the router's series (only the router sees answers); `ttft-p99` reads vLLM's
`vllm:time_to_first_token_seconds`, which covers every request the tier served.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from quantrollout import defaults
from quantrollout import signals as s
from quantrollout.api.durations import format_duration, parse_duration
from quantrollout.api.spec import Analysis, Rule
from quantrollout.api.thresholds import parse_threshold

Compare = Literal["max", "min"]

# What runs when spec.rollout.analysis.rules is not given (quantrollout.defaults.RULES).
DEFAULT_RULES = tuple(
    Rule.model_validate({"name": name, compare: threshold})
    for name, compare, threshold in defaults.RULES
)
SHADOW_ONLY = frozenset({"shadow-agreement"})


@dataclass(frozen=True)
class Scope:
    namespace: str
    model: str
    baseline: str
    target: str

    def sel(self, tier: str, extra: str = "") -> str:
        labels = f'{s.NAMESPACE}="{self.namespace}",{s.MODEL}="{self.model}",{s.TIER}="{tier}"'
        return "{" + labels + (f",{extra}" if extra else "") + "}"


@dataclass(frozen=True)
class RuleQuery:
    rule: str
    expr: str
    compare: Compare
    threshold: float
    source: Rule | None = None  # the rule it came from (its window and how it can be batched)

    def breached(self, value: float) -> bool:
        return value > self.threshold if self.compare == "max" else value < self.threshold

    def describe(self, value: float) -> str:
        op = ">" if self.compare == "max" else "<"
        return f"{self.rule} {value:.4g} {op} {self.threshold:.4g}"


def default_window(analysis: Analysis) -> str:
    """A few analysis intervals, and at least a few scrapes (quantrollout.defaults)."""
    seconds = defaults.WINDOW_INTERVALS * parse_duration(analysis.interval)
    return format_duration(max(seconds, defaults.WINDOW_MIN_S))


def window_for(rule: Rule, analysis: Analysis) -> str:
    return rule.window or default_window(analysis)


def _ratio(numerator: str, denominator: str) -> str:
    return f"({numerator}) / ({denominator})"


def _quantile(q: float, histogram: str, sel: str, w: str) -> str:
    return f"histogram_quantile({q}, sum by (le) (rate({histogram}_bucket{sel}[{w}])))"


def _mean(histogram: str, sel: str, w: str) -> str:
    """A histogram's mean observation over the window."""
    return _ratio(
        f"sum(rate({histogram}_sum{sel}[{w}]))", f"sum(rate({histogram}_count{sel}[{w}]))"
    )


def _total(counter: str, sel: str, w: str) -> str:
    """A counter's increase over the window, 0 (not an empty result) when it has no series yet."""
    return f"(sum(increase({counter}{sel}[{w}])) or vector(0))"


def _attempts(scope: Scope, tier: str, w: str) -> str:
    """Requests a tier was asked to answer: live ones, plus mirrored ones (in shadow, the only ones)."""
    shadow = scope.sel(tier, 'outcome!="dropped"')
    return f"{_total(s.ROUTER_REQUESTS, scope.sel(tier), w)} + {_total(s.ROUTER_SHADOW_REQUESTS, shadow, w)}"


def _failures(scope: Scope, tier: str, w: str) -> str:
    shadow = scope.sel(tier, 'outcome="error"')
    return f"{_total(s.ROUTER_ERRORS, scope.sel(tier), w)} + {_total(s.ROUTER_SHADOW_REQUESTS, shadow, w)}"


def _share(counter: str, scope: Scope, tier: str, w: str) -> str:
    return _ratio(
        f"sum(increase({counter}{scope.sel(tier)}[{w}]))",
        f"sum(increase({s.ROUTER_RESPONSES}{scope.sel(tier)}[{w}]))",
    )


def expression(rule: Rule, scope: Scope, w: str) -> str:
    t, b = scope.target, scope.baseline
    match rule.name:
        case "latency-p99":
            return _quantile(0.99, s.ROUTER_LATENCY, scope.sel(t), w)
        case "latency-p95":
            return _quantile(0.95, s.ROUTER_LATENCY, scope.sel(t), w)
        case "ttft-p99":
            # vLLM's own histogram: it covers every request (the router's sees streams only). Its
            # tier label comes from the scrape configuration (see quantrollout.signals).
            return _quantile(0.99, s.VLLM_TTFT, scope.sel(t), w)
        case "latency-p99-ratio":
            return _ratio(
                _quantile(0.99, s.ROUTER_LATENCY, scope.sel(t), w),
                _quantile(0.99, s.ROUTER_LATENCY, scope.sel(b), w),
            )
        case "error-rate":
            return _ratio(_failures(scope, t, w), _attempts(scope, t, w))
        case "repetition-rate":
            return _share(s.ROUTER_REPETITIONS, scope, t, w)
        case "refusal-rate-increase":
            return f"{_share(s.ROUTER_REFUSALS, scope, t, w)} - {_share(s.ROUTER_REFUSALS, scope, b, w)}"
        case "output-length-ratio":
            per_answer = [_share(s.ROUTER_OUTPUT_TOKENS, scope, tier, w) for tier in (t, b)]
            return _ratio(*per_answer)
        case "shadow-agreement":
            # The target's agreement with the baseline, relative to the baseline's own agreement
            # with itself on the same requests (router/agreement.py): sampling noise shows in
            # both and cancels out. No calibration answer (or a mean of 0) yet: no series.
            return _ratio(
                _mean(s.ROUTER_SHADOW_AGREEMENT, scope.sel(t), w),
                f"({_mean(s.ROUTER_SHADOW_SELF_AGREEMENT, scope.sel(b), w)}) > 0",
            )
        case "custom":
            return rule.query or ""
    raise ValueError(f"unknown rule {rule.name}")


def samples_expression(scope: Scope, w: str) -> str:
    """Requests the target was asked to answer (live or mirrored, failed ones too) in the window:
    below minSamples, nothing is judged."""
    return _attempts(scope, scope.target, w)


def queries(analysis: Analysis, scope: Scope, stage: str) -> list[RuleQuery]:
    """The rules that apply at `stage`, as queries. A rule with both min and max gives two."""
    found = []
    for rule in analysis.rules or DEFAULT_RULES:
        if rule.name in SHADOW_ONLY and stage != "shadow":
            continue
        expr = expression(rule, scope, window_for(rule, analysis))
        for compare in ("max", "min"):
            bound = getattr(rule, compare)
            if bound is not None:
                found.append(RuleQuery(rule.name, expr, compare, parse_threshold(bound), rule))
    return found
