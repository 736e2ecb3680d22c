"""The benchmark's figures, the gate's verdicts and the quality probe's prompts: pure."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantrollout.cli.main import main
from quantrollout.preflight.gate import GateRule, Measured, evaluate, overall
from quantrollout.preflight.probe import ProbeError, ProbePrompt, compare, parse_prompts, score
from quantrollout.preflight.result import EXIT_CODES, gate_result, termination_message
from quantrollout.preflight.stats import Sample, Summary, percentile, summarize


def summary(tps: float | None = 100.0, ttft: float | None = 0.1, errors: int = 0) -> Summary:
    """A summary whose output tokens per second is `tps` (None: no token came out)."""
    return Summary(
        requests=10, errors=errors, ttft_p50=ttft, ttft_p99=ttft, itl_p50=0.01, itl_p99=0.02,
        output_tokens=1000 if tps else 0, seconds=1000 / tps if tps else 10.0,
    )  # fmt: skip


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=50), st.floats(0, 1))
def test_percentile_is_numpys_linear_quantile(values: list[float], q: float) -> None:
    assert percentile(values, q) == pytest.approx(float(np.quantile(values, q)), rel=1e-9, abs=1e-9)


def test_summary_pools_gaps_and_counts_only_successes() -> None:
    samples = [
        Sample(True, 0.0, 1.0, ttft=0.1, gaps=(0.01, 0.02), output_tokens=3),
        Sample(True, 0.5, 2.0, ttft=0.3, gaps=(0.03,), output_tokens=2),
        Sample(False, 1.0, 1.5, error="HTTP 500: boom"),
    ]
    s = summarize(samples)
    assert (s.requests, s.errors, s.output_tokens, s.seconds) == (3, 1, 5, 2.0)
    assert s.ttft_p50 == pytest.approx(0.2)
    assert s.itl_p50 == pytest.approx(0.02)
    assert s.output_tokens_per_second == pytest.approx(2.5)
    assert s.first_error == "HTTP 500: boom"
    assert summarize([]).output_tokens_per_second is None


def test_gate_verdicts_name_field_value_and_threshold() -> None:
    measured = Measured(
        baseline=summary(100, 0.2), target=summary(150, 0.1), agreement=0.8, exact_match=0.5
    )
    rules = [
        GateRule("throughput-ratio", min=1.2),
        GateRule("ttft-p99-ratio", max=1.1),
        GateRule("quality-agreement", min=0.9),
        GateRule("error-rate", max=0),
    ]
    verdicts = evaluate(rules, measured)
    assert [(v.rule, v.value, v.outcome) for v in verdicts] == [
        ("throughput-ratio", 1.5, "Pass"),
        ("ttft-p99-ratio", 0.5, "Pass"),
        ("quality-agreement", 0.8, "Fail"),
        ("error-rate", 0.0, "Pass"),
    ]
    assert verdicts[0].field == "target.outputTokensPerSecond / baseline.outputTokensPerSecond"
    assert (
        verdicts[2].describe()
        == "quality-agreement 0.8 (probe.agreement), must be >= 0.9: breached"
    )
    assert overall(verdicts) == "Fail"


def test_no_value_is_inconclusive_never_a_pass() -> None:
    measured = Measured(baseline=summary(tps=None), target=summary(100))
    verdicts = evaluate(
        [GateRule("throughput-ratio", min=1.0), GateRule("quality-agreement", min=0.5)], measured
    )
    assert [v.outcome for v in verdicts] == ["Inconclusive", "Inconclusive"]
    assert overall(verdicts) == "Inconclusive"
    assert verdicts[0].describe().endswith("inconclusive")


@given(
    st.one_of(st.none(), st.floats(0.001, 1e4)),
    st.one_of(st.none(), st.floats(0.001, 1e4)),
    st.floats(0.01, 10),
)
def test_a_ratio_rule_passes_only_with_a_value_within_its_bound(
    a: float | None, b: float | None, bound: float
) -> None:
    measured = Measured(baseline=summary(tps=b), target=summary(tps=a))
    [low] = evaluate([GateRule("throughput-ratio", min=bound)], measured)
    [high] = evaluate([GateRule("throughput-ratio", max=bound)], measured)
    if a is None or b is None:
        assert low.outcome == high.outcome == "Inconclusive"
    else:
        assert low.value is not None
        assert (low.outcome == "Pass") == (low.value >= bound)
        assert (high.outcome == "Pass") == (high.value is not None and high.value <= bound)


def test_bad_rules_are_refused() -> None:
    m = Measured(baseline=summary(), target=summary())
    with pytest.raises(ValueError, match="unknown gate rule 'speed'"):
        evaluate([GateRule("speed", min=1)], m)
    with pytest.raises(ValueError, match="exactly one of min and max"):
        evaluate([GateRule("throughput-ratio", min=1, max=2)], m)


# --- the quality probe ----------------------------------------------------------------------


def test_prompts_from_configmap_data() -> None:
    data = {
        "b.jsonl": json.dumps({"prompt": "Second?"}) + "\n\n",
        "a.jsonl": "\n".join(
            [
                json.dumps({"prompt": "What is 2+2?", "id": "math", "maxTokens": 8}),
                json.dumps({"prompt": "Hi"}),
            ]
        ),
        "README": "ignored: not .jsonl",
    }
    assert parse_prompts(data) == [
        ProbePrompt("math", "What is 2+2?", 8),
        ProbePrompt("a.jsonl:2", "Hi", None),
        ProbePrompt("b.jsonl:1", "Second?", None),
    ]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"x.txt": "hi"}, "no data key ending in .jsonl"),
        ({"p.jsonl": "{nope"}, "p.jsonl line 1: not JSON"),
        ({"p.jsonl": '{"prompt": ""}'}, 'p.jsonl line 1: needs "prompt", a non-empty string'),
        (
            {"p.jsonl": '{"prompt": "a", "temperature": 1}'},
            "p.jsonl line 1: unknown field 'temperature'",
        ),
        (
            {"p.jsonl": '{"prompt": "a"}\n{"prompt": "b", "maxTokens": 0}'},
            "p.jsonl line 2: maxTokens must be",
        ),
        (
            {"p.jsonl": '{"prompt": "a", "id": "x"}\n{"prompt": "b", "id": "x"}'},
            "id 'x' is used twice",
        ),
        ({"p.jsonl": "\n\n"}, "p.jsonl: no prompts"),
    ],
)
def test_bad_prompts_name_the_key_and_line(data: dict[str, str], reason: str) -> None:
    with pytest.raises(ProbeError, match=reason):
        parse_prompts(data)


def test_compare_and_score() -> None:
    p = ProbePrompt("x", "q")
    same, drift, lost, unjudged = (
        compare(p, "the answer is four", "the answer is four"),
        compare(p, "the answer is four", "the answer is five"),
        compare(p, "the answer is four", None),
        compare(p, None, "anything"),
    )
    assert (same.agreement, same.exact) == (1.0, True)
    assert (drift.agreement, drift.exact) == (0.75, False)
    assert (lost.agreement, lost.exact) == (0.0, False)
    assert unjudged.agreement is None
    assert score([same, drift, lost, unjudged]) == (pytest.approx(1.75 / 3), pytest.approx(1 / 3))
    assert score([unjudged]) == (None, None)


def test_gate_result_lists_what_did_not_pass() -> None:
    measured = Measured(baseline=summary(100), target=summary(50), agreement=None)
    verdicts = evaluate(
        [GateRule("throughput-ratio", min=1.2), GateRule("quality-agreement", min=0.9)], measured
    )
    doc = gate_result(verdicts, measured, [])
    assert doc["verdict"] == "Fail"
    assert doc["reasons"] == [
        "throughput-ratio 0.5 (target.outputTokensPerSecond / baseline.outputTokensPerSecond), must be >= 1.2: breached",
        "quality-agreement: no value (probe.agreement), inconclusive",
    ]
    assert doc["failures"][0] == {
        "rule": "throughput-ratio",
        "field": "target.outputTokensPerSecond / baseline.outputTokensPerSecond",
        "value": 0.5,
        "threshold": 1.2,
        "bound": "min",
        "verdict": "Fail",
    }
    assert json.loads(termination_message(doc)) == {**doc, "omitted": 0}
    assert EXIT_CODES[doc["verdict"]] == 1


@pytest.mark.parametrize(
    "text", ["speed:min=1", "throughput-ratio:above=1", "throughput-ratio:min=x"]
)
def test_the_command_refuses_bad_rules(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "preflight",
                "benchmark",
                "--baseline-url",
                "u",
                "--target-url",
                "v",
                "--model",
                "m",
                "--rule",
                text,
            ]
        )
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --rule: '{text}': " in err
