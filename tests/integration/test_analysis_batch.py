"""The batched queries on a real Prometheus: for every built-in rule, the batched answer split per
model equals each model's own per-model query, evaluated at the same instant, including models
with missing series (which stay missing, never a value)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import httpx
import pytest

from localstack.routerseries import RouterSeries, RouterSeriesServer, TierRates
from localstack.stack import Stack
from quantrollout import signals as s
from quantrollout.analysis.batch import Series, Who, batched_query, formula, index, split
from quantrollout.analysis.judge import Measurement
from quantrollout.analysis.rules import Scope, expression
from quantrollout.api.spec import Rule

from .support import wait_for

RULES = [
    "latency-p99", "latency-p95", "latency-p99-ratio", "error-rate", "repetition-rate",
    "refusal-rate-increase", "output-length-ratio", "shadow-agreement",
]  # fmt: skip
WHO = [
    Who("batch-a", "m0", "fp16", "int4-awq"),
    Who("batch-a", "m1", "fp16", "int4-awq"),  # no live error counter: counts as 0
    Who("batch-b", "m0", "bf16", "fp8"),  # same model name, another namespace
    Who("batch-b", "m2", "bf16", "fp8"),  # baseline has no responses: comparative rules missing
    Who("batch-b", "m3", "fp16", "int8"),  # target has no latency histogram
]


@pytest.fixture
def series(stack: Stack) -> Iterator[RouterSeries]:
    data = RouterSeries()
    for i, who in enumerate(WHO):
        data.tiers[(who.namespace, who.model, who.baseline)] = TierRates(requests=5 + i)
        data.tiers[(who.namespace, who.model, who.target)] = TierRates(
            requests=3 + i, errors=0.01 * i, refusals=0.02 * i, repetitions=0.03,
            tokens=80 + i, agreement=0.9 - 0.01 * i,
            latency_shares=(0.1, 0.3 + 0.1 * i, 0.9, 0.95, 1.0),
        )  # fmt: skip
    data.omit |= {("batch-a", "m1", "int4-awq", s.ROUTER_ERRORS),
                  ("batch-b", "m2", "bf16", s.ROUTER_RESPONSES),
                  ("batch-b", "m3", "int8", s.ROUTER_LATENCY)}  # fmt: skip
    server = RouterSeriesServer(data)
    stack.prometheus.add_targets("batch-series", [server.address], {"job": "batch-series"})
    try:
        yield data
    finally:
        stack.prometheus.remove_targets("batch-series")
        server.stop()


def query(prom: str, expr: str, at: float) -> list[Series]:
    body = httpx.get(f"{prom}/api/v1/query", params={"query": expr, "time": at}, timeout=10).json()
    assert body["status"] == "success", body
    return [Series(one["metric"], float(one["value"][1])) for one in body["data"]["result"]]


def test_batched_split_equals_each_models_own_query(stack: Stack, series: RouterSeries) -> None:
    prom = stack.prometheus.url
    probe = f'{s.ROUTER_REQUESTS}{{namespace="batch-b",model="m3"}}'
    enough = f"count_over_time({probe}[1m]) > 4"
    wait_for("a few scrapes of the series", lambda: query(prom, enough, time.time()), timeout=60)
    at = time.time()
    w = "1m"
    compared = 0
    for name in RULES:
        rule = Rule(name=name, max="1")  # type: ignore[arg-type]
        f = formula(rule)
        assert f is not None
        answer = index(query(prom, batched_query(f, w), at))
        for who in WHO:
            own = query(
                prom,
                expression(rule, Scope(who.namespace, who.model, who.baseline, who.target), w),
                at,
            )
            expected = Measurement.of([one.value for one in own])
            got = split(f, answer, who)
            if expected.value is None:
                assert got.unavailable == expected.unavailable, (name, who, got, expected)
            else:
                assert got.value is not None, (name, who, got)
                assert not math.isnan(got.value), (name, who, got)
                assert got.value == pytest.approx(expected.value, rel=1e-9), (name, who)
            compared += 1
    assert compared == len(RULES) * len(WHO)
    # the cases meant to be missing are missing, and the others are values
    latency = Rule(name="latency-p99", max="1")
    f = formula(latency)
    assert f is not None
    answer = index(query(prom, batched_query(f, w), at))
    assert split(f, answer, WHO[4]).unavailable == "no series"
    assert split(f, answer, WHO[0]).value is not None
    ratio = formula(Rule(name="output-length-ratio", min="0.5"))
    assert ratio is not None
    ratio_answer = index(query(prom, batched_query(ratio, w), at))
    assert split(ratio, ratio_answer, WHO[3]).unavailable == "no series"
    errors = formula(Rule(name="error-rate", max="1%"))
    assert errors is not None
    # no live error counter for m1: its live errors count as 0, its shadow errors still count
    m1 = split(errors, index(query(prom, batched_query(errors, w), at)), WHO[1])
    assert m1.value is not None
    assert m1.value > 0
