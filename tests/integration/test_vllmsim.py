"""The vLLM simulator over real HTTP on loopback: OpenAI shapes (plain and streamed), answers that
depend on the prompt alone, every fault knob and its observed rate, vLLM's metric names with the
right counts, run-time reconfiguration, and `python -m vllmsim` as a process."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from quantrollout import signals
from quantrollout.api.resolve import tiers
from quantrollout.api.spec import QuantizedModelSpec
from quantrollout.defaults import VLLM_NEWEST
from quantrollout.manifests.vllm import vllm_args
from vllmcontract import load
from vllmcontract.argparser import ContractError
from vllmcontract.extract import expand_buckets
from vllmsim import REFUSAL, TIER_HEADER, SimConfig, Simulator
from vllmsim.metrics import exported_series

MODEL = "meta-llama/Meta-Llama-3-8B-Instruct"
HACK = Path(__file__).resolve().parents[2] / "hack"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(model=MODEL, port=0, tier="int4-awq") as s:
        yield s


@pytest.fixture
def client(sim: Simulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, timeout=10) as c:
        yield c


def chat_body(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": prompt}], **extra}


def chat(client: httpx.Client, prompt: str, **extra: Any) -> httpx.Response:
    return client.post("/v1/chat/completions", json=chat_body(prompt, **extra))


def answer(client: httpx.Client, prompt: str, **extra: Any) -> str:
    response = chat(client, prompt, **extra)
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


def sse_events(body: str) -> list[str]:
    """The payloads of a Server-Sent Events body, checking its framing on the way."""
    assert body.endswith("\n\n")
    events = body.split("\n\n")[:-1]
    assert all(e.startswith("data: ") for e in events), events
    return [e.removeprefix("data: ") for e in events]


def metric_samples(client: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def sample(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples[(name, frozenset({"model_name": MODEL, "engine": "0", **labels}.items()))]


def has_loop(text: str, gram: int = 4, times: int = 10) -> bool:
    words = text.split()
    grams = Counter(tuple(words[i : i + gram]) for i in range(len(words) - gram + 1))
    return bool(grams) and max(grams.values()) >= times


# --- shapes ------------------------------------------------------------------------------------


def test_health_models_and_tier_header(client: httpx.Client) -> None:
    health = client.get("/health")
    models = client.get("/v1/models").json()

    assert health.status_code == 200
    assert health.headers[TIER_HEADER] == "int4-awq"
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == [MODEL]
    assert models["data"][0]["object"] == "model"


def test_chat_completion_has_the_openai_shape(client: httpx.Client) -> None:
    body = chat(client, "What limits decode throughput?").json()

    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == MODEL
    assert isinstance(body["created"], int)
    [choice] = body["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] == "stop"
    words = choice["message"]["content"].split()
    assert 24 <= len(words) <= 40
    usage = body["usage"]
    assert usage["completion_tokens"] == len(words)
    assert usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_completion_has_the_openai_shape(client: httpx.Client) -> None:
    response = client.post("/v1/completions", json={"model": MODEL, "prompt": "Once upon a time"})

    body = response.json()
    assert response.status_code == 200
    assert body["object"] == "text_completion"
    assert body["id"].startswith("cmpl-")
    [choice] = body["choices"]
    assert choice["finish_reason"] == "stop"
    assert body["usage"]["prompt_tokens"] == 4
    assert body["usage"]["completion_tokens"] == len(choice["text"].split())


def test_chat_stream_sends_one_chunk_per_token_then_done(client: httpx.Client) -> None:
    whole = answer(client, "stream me")

    response = chat(client, "stream me", stream=True, stream_options={"include_usage": True})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    *content, usage = chunks
    assert content[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    pieces = [c["choices"][0]["delta"]["content"] for c in content[1:]]
    assert len(pieces) == len(whole.split())
    assert "".join(pieces) == whole
    assert [c["choices"][0]["finish_reason"] for c in content[1:]][-2:] == [None, "stop"]
    assert usage["choices"] == []
    assert usage["usage"]["completion_tokens"] == len(pieces)


def test_completion_stream_respects_max_tokens(client: httpx.Client) -> None:
    response = client.post(
        "/v1/completions", json={"model": MODEL, "prompt": "count", "stream": True, "max_tokens": 5}
    )

    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len(chunks) == 5
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    text = "".join(c["choices"][0]["text"] for c in chunks)
    plain = client.post("/v1/completions", json={"model": MODEL, "prompt": "count"}).json()
    assert plain["choices"][0]["text"].startswith(text)


def test_unknown_model_is_404_and_bad_json_is_400(client: httpx.Client) -> None:
    unknown = client.post("/v1/chat/completions", json={**chat_body("hi"), "model": "gpt-4"})
    malformed = client.post(
        "/v1/chat/completions", content=b'{"model": ', headers={"content-type": "application/json"}
    )
    no_messages = client.post("/v1/chat/completions", json={"model": MODEL})
    bad_max = client.post("/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 0})

    assert unknown.status_code == 404
    assert unknown.json()["error"]["type"] == "NotFoundError"
    assert "gpt-4" in unknown.json()["error"]["message"]
    assert malformed.status_code == 400
    assert malformed.json()["error"]["code"] == 400
    assert no_messages.status_code == 400
    assert bad_max.status_code == 400


# --- determinism -------------------------------------------------------------------------------


def test_answers_depend_on_the_prompt_alone() -> None:
    prompts = [f"question number {i}" for i in range(10)]
    with (
        Simulator(model=MODEL) as a,
        Simulator(model=MODEL, tier="other") as b,
        httpx.Client(base_url=a.url) as ca,
        httpx.Client(base_url=b.url) as cb,
    ):
        from_a = [answer(ca, p) for p in prompts]
        from_b = [answer(cb, p) for p in reversed(prompts)][::-1]
        again = [answer(ca, p, temperature=0) for p in prompts]
        capped = answer(cb, prompts[0], max_tokens=3)
        seeded = [answer(c, "x", temperature=0.8, seed=7) for c in (ca, cb)]

    assert from_a == from_b == again
    assert len(set(from_a)) == len(prompts)
    assert capped.split() == from_a[0].split()[:3]
    assert seeded[0] == seeded[1]


# --- faults ------------------------------------------------------------------------------------


def test_latency_comes_before_the_first_token(sim: Simulator, client: httpx.Client) -> None:
    sim.configure(latency_ms=150, token_delay_ms=10)

    start = time.monotonic()
    with client.stream(
        "POST", "/v1/completions", json={"prompt": "slow", "max_tokens": 11, "stream": True}
    ) as r:
        lines = r.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        first_at = time.monotonic()
        rest = [line for line in lines if line.startswith("data: ")]
        last_at = time.monotonic()

    assert json.loads(first.removeprefix("data: "))["choices"][0]["text"]
    assert len(rest) == 11  # 10 more tokens and [DONE]
    assert first_at - start >= 0.15
    assert last_at - first_at >= 0.09  # 10 gaps of 10 ms
    samples = metric_samples(client)
    assert sample(samples, signals.VLLM_TTFT + "_sum") >= 0.15
    assert sample(samples, signals.VLLM_E2E_LATENCY + "_sum") >= 0.25


def test_error_rate_is_observed_over_many_requests(sim: Simulator, client: httpx.Client) -> None:
    sim.configure(error_rate=0.2)

    codes = Counter(chat(client, f"prompt {i}").status_code for i in range(200))
    samples = metric_samples(client)
    sim.configure(error_rate=1.0)
    failed = chat(client, "x")

    assert set(codes) == {200, 500}
    assert abs(codes[500] - 40) <= 3
    assert sample(samples, signals.VLLM_REQUEST_SUCCESS, finished_reason="stop") == codes[200]
    assert sample(samples, signals.VLLM_E2E_LATENCY + "_count") == codes[200]
    assert failed.status_code == 500
    assert failed.json()["error"]["type"] == "InternalServerError"


def test_refusal_and_repetition_answers(sim: Simulator, client: httpx.Client) -> None:
    normal = answer(client, "tell me")

    sim.configure(refusal_rate=1.0)
    refusal = answer(client, "tell me")
    sim.configure(refusal_rate=0.0, repetition_rate=1.0)
    loop = chat(client, "tell me").json()
    capped_loop = answer(client, "tell me", max_tokens=100)

    assert not has_loop(normal)
    assert refusal == REFUSAL
    assert has_loop(loop["choices"][0]["message"]["content"])
    assert loop["choices"][0]["finish_reason"] == "length"
    assert len(capped_loop.split()) == 100
    assert has_loop(capped_loop, times=25)


def test_fault_rates_are_observed_and_independent(sim: Simulator, client: httpx.Client) -> None:
    sim.configure(error_rate=0.1, refusal_rate=0.2, repetition_rate=0.15)

    outcomes: Counter[str] = Counter()
    for i in range(200):
        response = chat(client, f"rate test {i}")
        if response.status_code == 500:
            outcomes["error"] += 1
            continue
        text = response.json()["choices"][0]["message"]["content"]
        outcomes["refusal" if text == REFUSAL else "loop" if has_loop(text) else "normal"] += 1

    answered = 200 - outcomes["error"]
    assert abs(outcomes["error"] - 20) <= 3
    assert abs(outcomes["refusal"] / answered - 0.2) <= 0.02
    assert abs(outcomes["loop"] / answered - 0.15) <= 0.02


def test_divergent_answers_share_no_word_with_the_baseline(sim: Simulator) -> None:
    prompts = [f"shadow {i}" for i in range(100)]
    sim.configure(divergence_rate=0.3)
    with (
        Simulator(model=MODEL, tier="fp16") as baseline,
        httpx.Client(base_url=baseline.url) as cb,
        httpx.Client(base_url=sim.url) as ct,
    ):
        pairs = [(answer(cb, p), answer(ct, p)) for p in prompts]

    differing = [(b, t) for b, t in pairs if b != t]
    assert abs(len(differing) - 30) <= 2
    assert all(not set(b.split()) & set(t.split()) for b, t in differing)
    assert all(len(b.split()) == len(t.split()) for b, t in differing)


def test_output_scale_and_health(sim: Simulator, client: httpx.Client) -> None:
    prompts = [f"length {i}" for i in range(20)]
    full = sum(len(answer(client, p).split()) for p in prompts)

    sim.configure(output_scale=0.5, healthy=False)
    half = sum(len(answer(client, p).split()) for p in prompts)

    assert abs(half / full - 0.5) <= 0.05
    assert client.get("/health").status_code == 503
    sim.configure(healthy=True)
    assert client.get("/health").status_code == 200


# --- metrics -----------------------------------------------------------------------------------


def test_metrics_use_vllm_names_and_count_requests(client: httpx.Client) -> None:
    usages = [chat(client, f"metrics {i}").json()["usage"] for i in range(7)]
    usages += [chat(client, f"capped {i}", max_tokens=4).json()["usage"] for i in range(3)]
    streamed = chat(client, "streamed", stream=True, stream_options={"include_usage": True})
    usages.append(json.loads(sse_events(streamed.text)[-2])["usage"])

    samples = metric_samples(client)

    names = {name for name, _ in samples}
    for name in (
        signals.VLLM_REQUEST_SUCCESS,
        signals.VLLM_GENERATION_TOKENS,
        signals.VLLM_PROMPT_TOKENS,
        signals.VLLM_RUNNING,
        signals.VLLM_WAITING,
    ):
        assert name in names
    for histogram in (signals.VLLM_E2E_LATENCY, signals.VLLM_TTFT):
        assert sample(samples, histogram + "_count") == 11
        assert sample(samples, histogram + "_bucket", le="+Inf") == 11
    assert sample(samples, signals.VLLM_REQUEST_SUCCESS, finished_reason="stop") == 8
    assert sample(samples, signals.VLLM_REQUEST_SUCCESS, finished_reason="length") == 3
    generated = sum(u["completion_tokens"] for u in usages)
    assert sample(samples, signals.VLLM_GENERATION_TOKENS) == generated
    assert sample(samples, signals.VLLM_PROMPT_TOKENS) == sum(u["prompt_tokens"] for u in usages)
    assert sample(samples, signals.VLLM_RUNNING) == 0
    assert sample(samples, signals.VLLM_WAITING) == 0


def test_metrics_are_exactly_the_contracts(client: httpx.Client) -> None:
    """Scraped: the series of the pinned release's stat logger, no more and no fewer, with its
    types, label names and buckets (request-token buckets built up to maxModelLen 4096)."""
    chat(client, "one request, so every child has samples")
    families = {
        f.name: f
        for f in text_string_to_metric_families(client.get("/metrics").text)
        if not f.name.endswith("_created")  # prometheus_client's creation times, as in vLLM's
    }
    expected = {
        m["name"].removesuffix("_total") if m["type"] == "counter" else m["name"]: m
        for m in exported_series(load(VLLM_NEWEST))
    }
    assert set(families) == set(expected)
    for name, family in families.items():
        m = expected[name]
        assert family.type == m["type"], name
        label_sets = {
            frozenset(s.labels) - {"le"} for s in family.samples if not s.name.endswith("_created")
        }
        if label_sets:
            assert label_sets == {frozenset(m["labels"])}, name
        else:  # labels whose values only a real engine has (a rejection reason, a source)
            assert set(m["labels"]) - {"model_name", "engine"}, name
        if m["type"] == "histogram":
            bounds = sorted(
                float(s.labels["le"]) for s in family.samples
                if s.name.endswith("_bucket") and s.labels["le"] != "+Inf"
                and s.labels["model_name"] == MODEL
            )  # fmt: skip
            assert bounds == expand_buckets(m["buckets"], 4096), name
    reasons = {
        s.labels["finished_reason"] for s in families["vllm:request_success"].samples
        if s.name.endswith("_total")
    }  # fmt: skip
    assert reasons == set(load(VLLM_NEWEST)["finish_reasons"])


def test_rules_and_alerts_read_series_the_contracts_have() -> None:
    """Every vLLM series the analysis rules and the chart's alerts select exists, with the
    labels they use, in every supported release."""
    used = {signals.VLLM_E2E_LATENCY, signals.VLLM_TTFT, signals.VLLM_REQUEST_SUCCESS,
            signals.VLLM_GENERATION_TOKENS, signals.VLLM_PROMPT_TOKENS, signals.VLLM_RUNNING,
            signals.VLLM_WAITING}  # fmt: skip
    alerts = (HACK.parent / "charts" / "quantrollout" / "alerts" / "rules.yaml").read_text()
    used |= set(re.findall(r"vllm:[a-z_:]+", alerts))
    for version in ("0.11.0", VLLM_NEWEST):
        names = {m["name"] for m in load(version)["metrics"]}
        for series in used:
            base = re.sub(r"_(total|bucket|sum|count)$", "", series)
            assert series in names or base in names, (version, series)


@pytest.mark.parametrize("fmt", ["awq", "gptq", "fp8", "compressed-tensors"])
def test_starts_from_the_arguments_the_operator_renders(fmt: str) -> None:
    raw = {
        "model": MODEL,
        "baseline": {"artifact": "s3://m/base", "precision": "bf16"},
        "target": {
            "name": "t", "artifact": "gs://m/t", "format": fmt,
            "precision": {"awq": "int4", "gptq": "int8", "fp8": "fp8"}.get(fmt, "int8"),
        },
        "serving": {"maxModelLen": 2048},
    }  # fmt: skip
    spec = QuantizedModelSpec.model_validate(raw)
    for tier in tiers(spec):
        argv = vllm_args(spec.model, tier, spec.baseline.precision)
        with Simulator.from_vllm_args(argv, tier=tier.name, port=0) as s:
            assert s.model == MODEL  # --served-model-name
            with httpx.Client(base_url=s.url) as c:
                assert answer(c, "hi")
                text = c.get("/metrics").text
            assert 'le="2000.0"' in text  # request-token buckets up to maxModelLen 2048
            assert 'le="5000.0"' not in text


@pytest.mark.parametrize(
    "argv",
    [
        ["m", "--no-such-flag"],
        ["m", "--dtype", "float8"],
        ["m", "--quantization"],
        ["m", "--tensor-parallel-size", "two"],
    ],
)
def test_refuses_what_vllm_refuses(argv: list[str]) -> None:
    with pytest.raises(ContractError):
        Simulator.from_vllm_args(argv)


def test_gauges_follow_requests_in_flight(sim: Simulator, client: httpx.Client) -> None:
    sim.configure(latency_ms=400)
    slow = threading.Thread(target=chat, args=(client, "slow"))
    slow.start()
    time.sleep(0.15)
    during = metric_samples(client)
    slow.join()
    sim.configure(latency_ms=0, token_delay_ms=30)
    with client.stream(
        "POST", "/v1/completions", json={"prompt": "abandoned", "stream": True}
    ) as r:
        next(r.iter_lines())  # one chunk, then hang up mid-stream
    deadline = time.monotonic() + 3
    while sample(metric_samples(client), signals.VLLM_RUNNING) and time.monotonic() < deadline:
        time.sleep(0.02)
    after = metric_samples(client)

    assert sample(during, signals.VLLM_WAITING) == 1
    assert sample(during, signals.VLLM_RUNNING) == 0
    assert sample(after, signals.VLLM_RUNNING) == 0
    assert sample(after, signals.VLLM_WAITING) == 0
    assert sample(after, signals.VLLM_REQUEST_SUCCESS, finished_reason="stop") == 1


# --- run-time control --------------------------------------------------------------------------


def test_control_endpoint_changes_faults_at_run_time(sim: Simulator, client: httpx.Client) -> None:
    initial = client.get("/control").json()

    changed = client.post("/control", json={"refusal_rate": 1, "latency_ms": 5})
    refused = answer(client, "anything")
    unknown = client.post("/control", json={"refusal_rate": 0, "no_such_knob": 1})
    out_of_range = client.post("/control", json={"error_rate": 1.5})
    not_json = client.post("/control", content=b"rate=1")
    too_much = client.post("/control", json={"repetition_rate": 0.5})

    assert initial == SimConfig().model_dump()
    assert changed.status_code == 200
    assert changed.json() == {**initial, "refusal_rate": 1.0, "latency_ms": 5.0}
    assert refused == REFUSAL
    assert unknown.status_code == 400
    assert "no_such_knob" in unknown.json()["error"]["message"]
    assert out_of_range.status_code == 400
    assert not_json.status_code == 400
    assert too_much.status_code == 400  # refusal 1.0 + repetition 0.5 > 1
    assert client.get("/control").json() == changed.json()  # refused changes changed nothing
    assert sim.config.refusal_rate == 1.0


def test_configure_changes_faults_at_run_time(sim: Simulator, client: httpx.Client) -> None:
    sim.configure(error_rate=1.0)
    failing = chat(client, "x").status_code
    returned = sim.configure(error_rate=0.0, divergence_rate=0.5)
    working = chat(client, "x").status_code

    assert (failing, working) == (500, 200)
    assert returned == sim.config
    assert client.get("/control").json()["divergence_rate"] == 0.5
    with pytest.raises(ValueError, match="bogus"):
        sim.configure(bogus=1)


# --- the process -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_module_runs_as_a_process_and_stops_on_sigterm() -> None:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HACK), os.environ.get("PYTHONPATH", "")]),
    }
    argv = [
        sys.executable,
        "-m",
        "vllmsim",
        "--port",
        str(port),
        "--model",
        MODEL,
        "--tier",
        "fp16",
        "--refusal-rate",
        "1",
    ]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                health = httpx.get(f"{url}/health")
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()[0].decode()
                assert time.monotonic() < deadline, "vllmsim never answered /health"
                time.sleep(0.05)
        with httpx.Client(base_url=url) as c:
            refusal = answer(c, "hello")

        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert health.status_code == 200
    assert health.headers[TIER_HEADER] == "fp16"
    assert refusal == REFUSAL
    assert code == 0, proc.communicate()[0].decode()


def test_serve_mode_runs_as_a_process_and_refuses_unknown_flags() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HACK), os.environ.get("PYTHONPATH", "")]),
        "VLLMSIM_TIER": "fp16",
    }
    refused = subprocess.run(
        [sys.executable, "-m", "vllmsim", "serve", MODEL, "--bogus-flag", "1"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "would refuse these arguments: unrecognized arguments: --bogus-flag" in refused.stderr
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "vllmsim",
        "serve",
        MODEL,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health")
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()[0].decode()
                assert time.monotonic() < deadline, "vllmsim serve never answered /health"
                time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert health.headers[TIER_HEADER] == "fp16"
    assert code == 0
