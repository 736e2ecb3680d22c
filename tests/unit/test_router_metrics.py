"""The router exports exactly the series named in `quantrollout.signals`, labelled per tier."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from quantrollout import signals
from quantrollout.router.answers import Answer
from quantrollout.router.inspect_answer import record
from quantrollout.router.metrics import RouterMetrics

ROUTER_NAMES = {
    v for k, v in vars(signals).items() if k.startswith("ROUTER_") and isinstance(v, str)
}


def samples(metrics: RouterMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def test_every_signal_is_exported_under_its_exact_name() -> None:
    m = RouterMetrics()
    t = m.tier("llm", "llama3-8b", "int4-awq")
    t.request(200)
    t.request(503)
    for child in (t.output_tokens, t.responses, t.repetitions, t.refusals, t.fallbacks, t.reloads):
        child.inc()
    for hist in (t.latency, t.ttft, t.agreement["greedy"], t.self_agreement["sampled"]):
        hist.observe(0.5)
    t.shadow("compared")
    m.shed.labels("inflight").inc()
    m.class_fallback("llm", "llama3-8b", "code", "no-route")
    names = {name for name, _ in samples(m)}
    for name in ROUTER_NAMES:
        exported = {name, f"{name}_bucket", f"{name}_count", f"{name}_sum"}
        assert names & exported, f"{name} is not exported"
    assert "quantrollout_router_requests_total" in names  # counters keep exactly one _total


def test_labels() -> None:
    m = RouterMetrics()
    t = m.tier("llm", "llama3-8b", "fp16")
    t.request(200)
    t.request(200)
    t.request(502)
    got = samples(m)
    tier = {("namespace", "llm"), ("model", "llama3-8b"), ("tier", "fp16"), ("class", "")}
    assert got[(signals.ROUTER_REQUESTS, frozenset({*tier, ("code", "200")}))] == 2
    assert got[(signals.ROUTER_REQUESTS, frozenset({*tier, ("code", "502")}))] == 1
    assert got[(signals.ROUTER_ERRORS, frozenset(tier))] == 1  # 5xx counts as an error


def test_class_label_and_class_fallbacks() -> None:
    """Per-(class, tier) series are apart; a class fallback is counted per class and reason,
    without a tier."""
    m = RouterMetrics()
    m.tier("llm", "m", "int4-awq", "chat-short").request(200)
    m.tier("llm", "m", "int4-awq", "code").request(200)
    m.tier("llm", "m", "int4-awq", "code").request(200)
    m.class_fallback("llm", "m", "tools", "tier-missing")
    m.class_fallback("llm", "m", "tools", "tier-missing")
    got = samples(m)
    tier = {("namespace", "llm"), ("model", "m"), ("tier", "int4-awq"), ("code", "200")}
    assert got[(signals.ROUTER_REQUESTS, frozenset({*tier, ("class", "chat-short")}))] == 1
    assert got[(signals.ROUTER_REQUESTS, frozenset({*tier, ("class", "code")}))] == 2
    fell = {("namespace", "llm"), ("model", "m"), ("class", "tools"), ("reason", "tier-missing")}
    assert got[(signals.ROUTER_CLASS_FALLBACKS, frozenset(fell))] == 2
    assert m.tier("llm", "m", "int4-awq", "code") is m.tier("llm", "m", "int4-awq", "code")


def test_a_registry_per_router() -> None:
    a, b = RouterMetrics(), RouterMetrics()
    a.tier("n", "m", "t").request(200)
    assert (
        signals.ROUTER_REQUESTS,
        frozenset(
            {("namespace", "n"), ("model", "m"), ("tier", "t"), ("class", ""), ("code", "200")}
        ),
    ) not in samples(b)


def test_recording_an_answer() -> None:
    m = RouterMetrics()
    t = m.tier("llm", "m", "int4-awq")
    record(t, Answer("I'm sorry, but I can't help with that.", 9))
    record(t, Answer("loop loop loop loop " * 6, 24))
    record(t, Answer("fine", 1))
    tier = frozenset({("namespace", "llm"), ("model", "m"), ("tier", "int4-awq"), ("class", "")})
    got = samples(m)
    assert got[(signals.ROUTER_RESPONSES, tier)] == 3
    assert got[(signals.ROUTER_OUTPUT_TOKENS, tier)] == 34
    assert got[(signals.ROUTER_REFUSALS, tier)] == 1
    assert got[(signals.ROUTER_REPETITIONS, tier)] == 1
