"""The committed vLLM contracts match the pins in defaults.py (re-extraction from the wheels is
`hack/vllm-contract.py --check`, run by `make lint`), and hold what the rest of the tests rely on."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantrollout.defaults import VLLM_NEWEST, VLLM_OLDEST, VLLM_WHEELS
from vllmcontract import CONTRACTS, load


def test_one_contract_per_pinned_release() -> None:
    files = {p.name for p in Path(CONTRACTS).glob("vllm-*.json")}
    assert files == {f"vllm-{v}.json" for v in VLLM_WHEELS}
    assert {VLLM_OLDEST, VLLM_NEWEST} <= set(VLLM_WHEELS)


@pytest.mark.parametrize("version", sorted(VLLM_WHEELS))
def test_contract_names_its_pinned_wheel(version: str) -> None:
    contract = load(version)
    filename, digest = VLLM_WHEELS[version]
    assert contract["vllm_version"] == version
    assert contract["wheel"] == {"file": filename, "sha256": digest}


@pytest.mark.parametrize("version", sorted(VLLM_WHEELS))
def test_contract_has_what_vllm_serve_is_known_to_have(version: str) -> None:
    """Spot checks against vLLM's documentation, so a broken extractor cannot write an empty file."""
    contract = load(version)
    flags = contract["cli"]["flags"]
    assert contract["cli"]["positional"][0]["name"] == "model_tag"
    assert flags["--tensor-parallel-size"]["type"] == "int"
    assert "-tp" in flags["--tensor-parallel-size"]["aliases"]
    assert flags["--enforce-eager"]["type"] == "bool"
    assert {"auto", "float16", "bfloat16"} <= set(flags["--dtype"]["choices"])
    assert {"awq", "gptq", "fp8", "compressed-tensors"} <= set(contract["quantization"]["methods"])
    paths = {r["path"] for r in contract["routes"]}
    assert {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics"} <= paths
    names = {m["name"] for m in contract["metrics"]}
    assert {"vllm:e2e_request_latency_seconds", "vllm:time_to_first_token_seconds"} <= names
