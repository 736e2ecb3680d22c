"""The preflight benchmark and quality probe against two vLLM simulators over real HTTP: the same
load at a baseline and a target with different configured latencies. A target slower than the
gate allows fails it, a faster one passes; warm-up requests are served but not measured; a target
whose greedy answers drift fails the quality rule."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from quantrollout.preflight import gate
from quantrollout.preflight.gate import GateRule, Measured
from quantrollout.preflight.load import LoadSettings, benchmark, probe
from quantrollout.preflight.probe import parse_prompts, score
from quantrollout.preflight.stats import Summary
from vllmsim import Simulator

MODEL = "meta-llama/Meta-Llama-3-8B-Instruct"
SETTINGS = LoadSettings(
    model=MODEL, concurrency=4, requests=12, warmup_requests=4, prompt_tokens=32, max_tokens=12
)
RULES = [GateRule("throughput-ratio", min=1.2), GateRule("ttft-p99-ratio", max=1.1)]


@pytest.fixture
def baseline() -> Iterator[Simulator]:
    with Simulator(MODEL, 0, tier="fp16") as sim:
        sim.configure(latency_ms=40, token_delay_ms=10)
        yield sim


def served(sim: Simulator) -> int:
    """Chat completions the simulator answered, from its vLLM-named counter."""
    text = httpx.get(f"{sim.url}/metrics").text
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("vllm:request_success_total{")
        )
    )


@pytest.mark.parametrize(
    ("latency_ms", "token_delay_ms", "expected"),
    [(15, 4, "Pass"), (120, 25, "Fail")],
    ids=["faster-target-passes", "slower-target-fails"],
)
async def test_the_gate_follows_the_target_s_speed(
    baseline: Simulator, latency_ms: float, token_delay_ms: float, expected: str
) -> None:
    with Simulator(MODEL, 0, tier="int4-awq") as target:
        target.configure(latency_ms=latency_ms, token_delay_ms=token_delay_ms)
        async with httpx.AsyncClient() as client:
            base, tgt = await benchmark(baseline.url, target.url, SETTINGS, client)
        # warm-up requests were answered, and left out of the figures
        assert served(target) == SETTINGS.warmup_requests + SETTINGS.requests
    assert (base.requests, tgt.requests, base.errors, tgt.errors) == (12, 12, 0, 0)
    assert tgt.output_tokens == base.output_tokens == 12 * SETTINGS.max_tokens
    assert base.ttft_p50 is not None
    assert base.ttft_p50 >= 0.040
    assert base.itl_p50 is not None
    assert base.itl_p50 >= 0.010
    verdicts = gate.evaluate(RULES, Measured(baseline=base, target=tgt))
    assert gate.overall(verdicts) == expected, [v.describe() for v in verdicts]
    assert {v.outcome for v in verdicts} == {expected}


async def test_errors_are_counted_and_gated(baseline: Simulator) -> None:
    with Simulator(MODEL, 0, tier="int4-awq") as target:
        target.configure(error_rate=1.0)
        async with httpx.AsyncClient() as client:
            base, tgt = await benchmark(baseline.url, target.url, SETTINGS, client)
    assert (tgt.requests, tgt.errors) == (12, 12)
    assert tgt.first_error is not None
    assert tgt.first_error.startswith("HTTP 500")
    verdicts = gate.evaluate(
        [GateRule("error-rate", max=0.0), GateRule("throughput-ratio", min=1.0)],
        Measured(baseline=base, target=tgt),
    )
    assert [v.outcome for v in verdicts] == ["Fail", "Inconclusive"]
    assert gate.overall(verdicts) == "Fail"


PROMPTS = {
    "prompts.jsonl": "\n".join(
        f'{{"id": "p{i}", "prompt": "Question {i}: what limits decode throughput?"}}'
        for i in range(10)
    )
}


@pytest.mark.parametrize(
    ("divergence_rate", "expected"), [(0.0, "Pass"), (1.0, "Fail")], ids=["faithful", "drifting"]
)
async def test_the_quality_probe(
    baseline: Simulator, divergence_rate: float, expected: str
) -> None:
    prompts = parse_prompts(PROMPTS)
    with Simulator(MODEL, 0, tier="int4-awq") as target:
        target.configure(divergence_rate=divergence_rate)
        async with httpx.AsyncClient() as client:
            results = await probe(baseline.url, target.url, MODEL, prompts, client, max_tokens=16)
    agreement, exact = score(results)
    assert [r.id for r in results] == [f"p{i}" for i in range(10)]
    assert agreement is not None
    assert exact is not None
    if divergence_rate == 0:
        assert (agreement, exact) == (1.0, 1.0)  # greedy: the same words, word for word
    else:
        assert exact == 0.0
        assert agreement < 0.2
    verdicts = gate.evaluate(
        [GateRule("quality-agreement", min=0.9), GateRule("exact-match", min=0.8)],
        Measured(baseline=_empty(), target=_empty(), agreement=agreement, exact_match=exact),
    )
    assert gate.overall(verdicts) == expected


def _empty() -> Summary:
    return Summary(0, 0, None, None, None, None, 0, 0.0)


def run_cli(*args: str) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "quantrollout.cli.main", "preflight", "benchmark", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_the_benchmark_command(baseline: Simulator, tmp_path: Path) -> None:
    """What the Job will run: load, probe and gate in one command, the verdict in the
    termination log."""
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "prompts.jsonl").write_text(PROMPTS["prompts.jsonl"])
    load = ["--concurrency", "4", "--requests", "8", "--warmup-requests", "2", "--max-tokens", "8"]
    with Simulator(MODEL, 0, tier="int4-awq") as target:
        target.configure(latency_ms=120, token_delay_ms=25, divergence_rate=1.0)
        code, doc = run_cli(
            "--baseline-url", baseline.url, "--target-url", target.url, "--model", MODEL, *load,
            "--prompts-dir", str(tmp_path / "prompts"),
            "--rule", "throughput-ratio:min=1.2", "--rule", "quality-agreement:min=0.9",
            "--termination-log", str(tmp_path / "log"),
        )  # fmt: skip
    assert code == 1
    assert doc["check"] == "gate"
    assert doc["verdict"] == "Fail"
    assert [f["rule"] for f in doc["failures"]] == ["throughput-ratio", "quality-agreement"]
    assert doc["reasons"][0].startswith("throughput-ratio 0.")
    assert doc["reasons"][0].endswith(
        "(target.outputTokensPerSecond / baseline.outputTokensPerSecond), must be >= 1.2: breached"
    )
    assert doc["facts"]["probe"]["exactMatch"] == 0.0
    assert doc["facts"]["target"]["requests"] == 8
    assert json.loads((tmp_path / "log").read_text()) == doc
    with Simulator(MODEL, 0, tier="int4-awq") as target:
        target.configure(latency_ms=10, token_delay_ms=4)
        code, doc = run_cli(
            "--baseline-url", baseline.url, "--target-url", target.url, "--model", MODEL, *load,
        )  # fmt: skip
    assert (code, doc["verdict"], doc["reasons"]) == (0, "Pass", [])  # the default rules
    assert [v["rule"] for v in doc["facts"]["verdicts"]] == [
        "throughput-ratio", "ttft-p99-ratio", "error-rate"
    ]  # fmt: skip
