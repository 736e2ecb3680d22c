"""Built-in rules as one PromQL query for every model at once, and the pure split of its answer
back into one value per model. Pure: spec in, queries out; series in, Measurements out.

Per model, a built-in rule is a small formula over a few *leaves* (a counter's increase, a
histogram's quantile, a rate), each scoped to one tier of one model (see `rules.expression`).
Batched, each leaf is aggregated `by (namespace, model, tier)` over every model instead, tagged
with a `qr_leaf` label, and the leaves of a rule are joined with `or`: one query per rule, whose
text depends only on the rule and its window, so every model using the same rule and window shares
it. The formula is then evaluated per model here, with PromQL's own float arithmetic, so the value
is the one the per-model query would have returned:

- a leaf written `(sum(...) or vector(0))` per model (`Total`) counts as 0 when the model has no
  series for it; any other leaf missing makes the model's value missing ("no series"), exactly
  as the per-model query then returns an empty vector;
- division follows IEEE 754 as PromQL does (x/0 is +-Inf, 0/0 is NaN), and NaN stays NaN.

Custom rules are arbitrary PromQL that cannot be regrouped in general: they stay per model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from quantrollout import signals as s
from quantrollout.api.spec import Rule

from .judge import Measurement

GROUP = (s.NAMESPACE, s.MODEL, s.TIER)
LEAF_LABEL = "qr_leaf"
Role = Literal["target", "baseline"]


@dataclass(frozen=True)
class Series:
    """One series of an instant-query answer."""

    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Leaf:
    """One aggregation over every model, grouped by (namespace, model, tier)."""

    kind: Literal["total", "sum", "rate", "quantile"]
    metric: str
    extra: str = ""  # more label matchers, e.g. 'outcome!="dropped"'
    q: float = 0.0  # for quantiles

    def promql(self, w: str) -> str:
        by = ", ".join(GROUP)
        sel = "{" + self.extra + "}" if self.extra else ""
        match self.kind:
            case "total" | "sum":
                return f"sum by ({by}) (increase({self.metric}{sel}[{w}]))"
            case "rate":
                return f"sum by ({by}) (rate({self.metric}{sel}[{w}]))"
            case "quantile":
                return f"histogram_quantile({self.q}, sum by ({by}, le) (rate({self.metric}_bucket{sel}[{w}])))"
        raise ValueError(self.kind)  # pragma: no cover


@dataclass(frozen=True)
class Ref:
    """A leaf read for one tier of the model being judged."""

    leaf: Leaf
    role: Role


@dataclass(frozen=True)
class Op:
    op: Literal[
        "+", "-", "/", "/>0"
    ]  # "/>0": by a positive denominator only (PromQL `a / (b > 0)`)
    left: Formula
    right: Formula


Formula = Ref | Op


def _total(counter: str, role: Role, extra: str = "") -> Ref:
    return Ref(Leaf("total", counter, extra), role)


def _attempts(role: Role) -> Formula:
    return Op(
        "+",
        _total(s.ROUTER_REQUESTS, role),
        _total(s.ROUTER_SHADOW_REQUESTS, role, 'outcome!="dropped"'),
    )


def _failures(role: Role) -> Formula:
    return Op(
        "+",
        _total(s.ROUTER_ERRORS, role),
        _total(s.ROUTER_SHADOW_REQUESTS, role, 'outcome="error"'),
    )


def _share(counter: str, role: Role) -> Formula:
    return Op("/", Ref(Leaf("sum", counter), role), Ref(Leaf("sum", s.ROUTER_RESPONSES), role))


def _quantile(q: float, histogram: str, role: Role) -> Ref:
    return Ref(Leaf("quantile", histogram, q=q), role)


def _mean(histogram: str, role: Role) -> Formula:
    return Op(
        "/",
        Ref(Leaf("rate", f"{histogram}_sum"), role),
        Ref(Leaf("rate", f"{histogram}_count"), role),
    )


SAMPLES: Formula = _attempts("target")


def formula(rule: Rule) -> Formula | None:
    """The rule as a formula over batched leaves; None for a rule that cannot be batched (custom)."""
    match rule.name:
        case "latency-p99":
            return _quantile(0.99, s.ROUTER_LATENCY, "target")
        case "latency-p95":
            return _quantile(0.95, s.ROUTER_LATENCY, "target")
        case "ttft-p99":
            return _quantile(0.99, s.VLLM_TTFT, "target")
        case "latency-p99-ratio":
            return Op(
                "/",
                _quantile(0.99, s.ROUTER_LATENCY, "target"),
                _quantile(0.99, s.ROUTER_LATENCY, "baseline"),
            )
        case "error-rate":
            return Op("/", _failures("target"), _attempts("target"))
        case "repetition-rate":
            return _share(s.ROUTER_REPETITIONS, "target")
        case "refusal-rate-increase":
            return Op(
                "-", _share(s.ROUTER_REFUSALS, "target"), _share(s.ROUTER_REFUSALS, "baseline")
            )
        case "output-length-ratio":
            return Op(
                "/",
                _share(s.ROUTER_OUTPUT_TOKENS, "target"),
                _share(s.ROUTER_OUTPUT_TOKENS, "baseline"),
            )
        case "shadow-agreement":
            return Op(
                "/>0",
                _mean(s.ROUTER_SHADOW_AGREEMENT, "target"),
                _mean(s.ROUTER_SHADOW_SELF_AGREEMENT, "baseline"),
            )
    return None


def leaves(f: Formula) -> list[Leaf]:
    """The formula's distinct leaves, in first-use order (their index is their `qr_leaf` label)."""
    if isinstance(f, Ref):
        return [f.leaf]
    found = leaves(f.left)
    return found + [leaf for leaf in leaves(f.right) if leaf not in found]


def batched_query(f: Formula, w: str) -> str:
    """One query returning every leaf of `f` for every model and tier, each tagged by its index."""
    return " or ".join(
        f'label_replace({leaf.promql(w)}, "{LEAF_LABEL}", "{i}", "", "")'
        for i, leaf in enumerate(leaves(f))
    )


@dataclass(frozen=True)
class Who:
    """The model being judged, and its tiers."""

    namespace: str
    model: str
    baseline: str
    target: str


Index = Mapping[tuple[str, str, str, str], list[float]]


def index(series: Sequence[Series]) -> Index:
    """Answer series by (leaf, namespace, model, tier). Built once per answer, shared by models."""
    found: dict[tuple[str, str, str, str], list[float]] = {}
    for one in series:
        get = one.labels.get
        key = (get(LEAF_LABEL, ""), get(s.NAMESPACE, ""), get(s.MODEL, ""), get(s.TIER, ""))
        found.setdefault(key, []).append(one.value)
    return found


class _MissingError(Exception):
    def __init__(self, why: str) -> None:
        self.why = why


def _div(a: float, b: float) -> float:
    """PromQL's (Go's) float division: x/0 is +-Inf, 0/0 and NaN/0 are NaN."""
    if b == 0:
        if a == 0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def _value(f: Formula, leaf_ids: Mapping[Leaf, int], answer: Index, who: Who) -> float:
    if isinstance(f, Op):
        a = _value(f.left, leaf_ids, answer, who)
        b = _value(f.right, leaf_ids, answer, who)
        if f.op == "/>0" and not b > 0:  # `b > 0` filters the series out: nothing is left
            raise _MissingError("no series")
        return a + b if f.op == "+" else a - b if f.op == "-" else _div(a, b)
    tier = who.target if f.role == "target" else who.baseline
    values = answer.get((str(leaf_ids[f.leaf]), who.namespace, who.model, tier), [])
    if not values:
        if f.leaf.kind == "total":
            return 0.0  # per model: `(sum(increase(...)) or vector(0))`
        raise _MissingError("no series")
    if len(values) > 1:  # cannot happen for a grouped aggregation; never guess which one
        raise _MissingError(f"{len(values)} series where one was expected")
    return values[0]


def split(f: Formula, answer: Index, who: Who) -> Measurement:
    """The value of `f` for one model, from the batched answer: what its own query would return."""
    leaf_ids = {leaf: i for i, leaf in enumerate(leaves(f))}
    try:
        return Measurement.of([_value(f, leaf_ids, answer, who)])
    except _MissingError as missing:
        return Measurement(unavailable=missing.why)
