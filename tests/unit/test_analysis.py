"""Analysis: rules to PromQL, judging tables, and the Prometheus adapter against canned answers
from a real loopback HTTP server (empty, NaN, many series, an error, a hang, nobody listening)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from quantrollout.analysis.judge import Measurement, judge
from quantrollout.analysis.prometheus import PrometheusProvider
from quantrollout.analysis.rules import DEFAULT_RULES, RuleQuery, Scope, expression, queries
from quantrollout.api.spec import Analysis, Rule

SCOPE = Scope(namespace="llm", model="llama3-8b", baseline="fp16", target="int4-awq")
TARGET = 'namespace="llm",model="llama3-8b",tier="int4-awq"'
BASELINE = 'namespace="llm",model="llama3-8b",tier="fp16"'


def test_error_rate_is_scoped_to_the_target_tier() -> None:
    expr = expression(Rule(name="error-rate", max="1%"), SCOPE, "2m")
    live_errors = (
        f"(sum(increase(quantrollout_router_request_errors_total{{{TARGET}}}[2m])) or vector(0))"
    )
    shadow_errors = f'(sum(increase(quantrollout_router_shadow_requests_total{{{TARGET},outcome="error"}}[2m])) or vector(0))'
    live = f"(sum(increase(quantrollout_router_requests_total{{{TARGET}}}[2m])) or vector(0))"
    shadow = f'(sum(increase(quantrollout_router_shadow_requests_total{{{TARGET},outcome!="dropped"}}[2m])) or vector(0))'
    assert expr == f"({live_errors} + {shadow_errors}) / ({live} + {shadow})"


def test_comparative_rules_compare_target_with_baseline() -> None:
    for name in ("latency-p99-ratio", "refusal-rate-increase", "output-length-ratio"):
        expr = expression(Rule(name=name, max="1"), SCOPE, "1m")  # type: ignore[arg-type]
        assert TARGET in expr
        assert BASELINE in expr


def test_shadow_agreement_is_judged_against_the_baseline_s_own() -> None:
    expr = expression(Rule(name="shadow-agreement", min="80%"), SCOPE, "1m")
    shadow = "quantrollout_router_shadow_agreement_ratio"
    calibration = "quantrollout_router_shadow_self_agreement_ratio"
    target = (
        f"(sum(rate({shadow}_sum{{{TARGET}}}[1m]))) / (sum(rate({shadow}_count{{{TARGET}}}[1m])))"
    )
    baseline = f"(sum(rate({calibration}_sum{{{BASELINE}}}[1m]))) / (sum(rate({calibration}_count{{{BASELINE}}}[1m])))"
    # No calibration answer (or a baseline that never agrees with itself): no value, no pass.
    assert expr == f"({target}) / (({baseline}) > 0)"


def test_latency_p99_uses_the_histogram() -> None:
    expr = expression(Rule(name="latency-p99", max="250ms"), SCOPE, "1m")
    assert expr.startswith(
        "histogram_quantile(0.99, sum by (le) (rate(quantrollout_router_request_duration_seconds_bucket{"
    )


def test_ttft_uses_vllms_own_histogram_scoped_by_tier() -> None:
    expr = expression(Rule(name="ttft-p99", max="200ms"), SCOPE, "1m")
    assert (
        expr
        == f"histogram_quantile(0.99, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket{{{TARGET}}}[1m])))"
    )


def test_custom_rules_pass_their_query_through() -> None:
    assert expression(Rule(name="custom", query="sum(up)", max="1"), SCOPE, "1m") == "sum(up)"


def test_queries_apply_defaults_thresholds_and_stage() -> None:
    analysis = Analysis(interval="10s")
    at_shadow = queries(analysis, SCOPE, "shadow")
    at_ab = queries(analysis, SCOPE, "ab")
    assert [q.rule for q in at_shadow] == [r.name for r in DEFAULT_RULES]
    assert "shadow-agreement" not in [q.rule for q in at_ab]
    assert "[40s]" in at_ab[0].expr  # four intervals
    custom = Analysis(rules=[Rule(name="latency-p99", max="250ms", min="1ms", window="5m")])
    both = queries(custom, SCOPE, "ab")
    assert [(q.compare, q.threshold) for q in both] == [("max", 0.25), ("min", 0.001)]
    assert "[5m]" in both[0].expr


RULES = [
    RuleQuery("error-rate", "e", "max", 0.01),
    RuleQuery("output-length-ratio", "o", "min", 0.6),
]


@pytest.mark.parametrize(
    ("measured", "samples", "verdict", "reasons"),
    [
        ([Measurement(0.001), Measurement(0.9)], Measurement(100), "Pass", ()),
        (
            [Measurement(0.05), Measurement(0.9)],
            Measurement(100),
            "Fail",
            ("error-rate 0.05 > 0.01",),
        ),
        (
            [Measurement(0.05), Measurement(0.5)],
            Measurement(100),
            "Fail",
            ("error-rate 0.05 > 0.01", "output-length-ratio 0.5 < 0.6"),
        ),
        (
            [Measurement(0.001), Measurement(unavailable="no series")],
            Measurement(100),
            "Inconclusive",
            ("output-length-ratio: no series",),
        ),
        (
            [Measurement(0.05), Measurement(unavailable="no series")],
            Measurement(100),
            "Fail",
            ("error-rate 0.05 > 0.01",),
        ),
        (
            [Measurement(0.001), Measurement(0.9)],
            Measurement(12),
            "Inconclusive",
            ("12 requests < minSamples 50",),
        ),
        (
            [Measurement(0.5), Measurement(0.1)],
            Measurement(12),
            "Inconclusive",
            ("12 requests < minSamples 50",),
        ),
        (
            [Measurement(0.001), Measurement(0.9)],
            Measurement(unavailable="prometheus down"),
            "Inconclusive",
            ("prometheus down",),
        ),
    ],
)
def test_judge(
    measured: list[Measurement], samples: Measurement, verdict: str, reasons: tuple[str, ...]
) -> None:
    evaluation, results = judge(RULES, measured, samples, 50)
    assert evaluation.verdict == verdict
    assert evaluation.reasons == reasons
    assert len(results) == len(RULES)
    if verdict == "Inconclusive" and "minSamples" in "".join(reasons):
        assert all(r.verdict == "Inconclusive" for r in results)


def test_missing_data_is_never_a_pass() -> None:
    assert Measurement.of([]).value is None
    assert Measurement.of([float("nan")]).value is None
    assert Measurement.of([1.0, 2.0]).unavailable == "2 series where one was expected"
    assert Measurement.of([0.5]).value == 0.5


class Canned(BaseHTTPRequestHandler):
    answers: ClassVar[dict[str, Any]] = {}

    def do_GET(self) -> None:
        query = self.path.split("query=", 1)[-1].split("&", 1)[0]
        answer = self.answers.get(query, {"kind": "vector", "values": []})
        if answer["kind"] == "hang":
            time.sleep(3)
        if answer["kind"] == "error":
            self.send_response(400)
            body = json.dumps(
                {"status": "error", "errorType": "bad_data", "error": "parse error"}
            ).encode()
        else:
            series = [
                {"metric": {"i": str(i)}, "value": [0, v]} for i, v in enumerate(answer["values"])
            ]
            body = json.dumps(
                {"status": "success", "data": {"resultType": "vector", "result": series}}
            ).encode()
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def prometheus() -> Iterator[str]:
    Canned.answers = {
        "one": {"kind": "vector", "values": ["0.25"]},
        "nan": {"kind": "vector", "values": ["NaN"]},
        "many": {"kind": "vector", "values": ["1", "2"]},
        "bad": {"kind": "error"},
        "slow": {"kind": "hang", "values": []},
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), Canned)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_prometheus_adapter_against_canned_answers(prometheus: str) -> None:
    provider = PrometheusProvider(prometheus, timeout_s=1)
    assert provider.measure("one") == Measurement(0.25)
    assert provider.measure("nan").unavailable == "no data (NaN)"
    assert provider.measure("many").unavailable == "2 series where one was expected"
    assert provider.measure("empty").unavailable == "no series"
    assert provider.measure("bad").unavailable is not None
    started = time.monotonic()
    assert (
        provider.measure("slow").unavailable
        == f"prometheus at {prometheus}: no answer within the 1s timeout"
    )
    assert time.monotonic() - started < 2.5  # the timeout applies
    assert provider.queries == 6


def test_prometheus_adapter_when_nobody_listens() -> None:
    from localstack.procs import free_port

    provider = PrometheusProvider(f"http://127.0.0.1:{free_port()}", timeout_s=1)
    m = provider.measure("up")
    assert m.value is None
    assert m.unavailable is not None
    assert "ConnectionError" in m.unavailable
