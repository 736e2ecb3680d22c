"""The committed vLLM contracts match the pins in defaults.py (re-extraction from the wheels is
`hack/vllm-contract.py --check`, run by `make lint`), and hold what the rest of the tests rely on."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from quantrollout.defaults import FLOAT16_REFUSED_MODELS, VLLM_NEWEST, VLLM_OLDEST, VLLM_WHEELS
from quantrollout.manifests.plan import plan
from vllmcontract import CONTRACTS, load
from vllmcontract.argparser import ContractError, parse

REPO = Path(__file__).resolve().parents[2]


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


# --- every Deployment the operator can render, against each release's contract -------------------

TARGETS = [
    ("awq", "int4"),
    ("gptq", "int4"),
    ("gptq", "int8"),
    ("fp8", "fp8"),
    ("compressed-tensors", "fp8"),
    ("compressed-tensors", "int8"),
    ("compressed-tensors", "int4"),
]
ARTIFACTS = ["s3://models/m", "gs://models/m", "hf://org/m", "pvc://weights/m"]
MODELS = {"fp16": "meta-llama/Meta-Llama-3-8B-Instruct", "bf16": "google/gemma-2-9b-it"}


def variants() -> Iterator[dict[str, Any]]:
    """Specs covering every format and precision, artifact scheme, baseline dtype and tensor
    parallelism, plus the examples."""
    for example in sorted((REPO / "examples").glob("*.yaml")):
        yield yaml.safe_load(example.read_text())["spec"]
    for (fmt, precision), artifact, baseline, tp in itertools.product(
        TARGETS, ARTIFACTS, ("fp16", "bf16"), (1, 2, 8)
    ):
        yield {
            "model": MODELS[baseline],
            "baseline": {"artifact": artifact.replace("/m", "/base"), "precision": baseline},
            "target": {"name": "t", "artifact": artifact, "precision": precision, "format": fmt},
            "serving": {
                "gpu": {"count": tp, "memoryGiB": 80},
                "tensorParallelSize": tp,
                "maxModelLen": 8192,
                "gpuMemoryUtilization": 0.92,
                "extraArgs": ["--max-num-seqs", "128"],
            },
        }


def rendered() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    out = []
    for i, spec in enumerate(variants()):
        p = plan(f"v{i}", "ns", spec)
        assert p.invalid is None, (spec, p.invalid)
        for tier_plan in p.tiers:
            for obj in tier_plan.objects:
                if obj["kind"] == "Deployment":
                    out.append((f"v{i}-{tier_plan.tier.name}", tier_plan.tier.format, obj))
    return out


RENDERED = rendered()


def test_the_variants_cover_every_format_scheme_and_parallelism() -> None:
    containers = [d["spec"]["template"]["spec"]["containers"][0] for _, _, d in RENDERED]
    assert len(RENDERED) >= 200  # reported in docs/vllm.md
    assert {fmt for _, fmt, _ in RENDERED} == {None, *(f for f, _ in TARGETS)}
    models = {c["args"][0] for c in containers}
    assert any(m.startswith("s3://") for m in models)
    assert any(m.startswith("gs://") for m in models)
    assert any(m.startswith("/models/") for m in models)
    assert {c["args"][c["args"].index("--tensor-parallel-size") + 1] for c in containers} == {
        "1",
        "2",
        "8",
    }


@pytest.mark.parametrize("version", sorted(VLLM_WHEELS))
def test_every_rendered_deployment_is_valid_for_the_release(version: str) -> None:
    contract = load(version)
    quant = contract["quantization"]
    for name, fmt, deployment in RENDERED:
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == ["vllm", "serve"], name
        try:
            args = parse(contract, container["args"])
        except ContractError as exc:
            pytest.fail(f"{name}: vLLM {version} would refuse {container['args']}: {exc}")
        assert args.model_tag == container["args"][0], name
        if args.quantization is not None:
            assert args.quantization in quant["methods"], name
        if fmt in quant["marlin_overrides"]:
            # vLLM switches this checkpoint to its Marlin kernels only for these --quantization
            # values (None: not given); anything else runs the slow kernels.
            assert args.quantization in quant["marlin_override_user_quant"][fmt], (name, version)
        if args.load_format is not None:
            assert args.load_format in contract["load_formats"], name
        if args.load_format == "runai_streamer":
            scheme = args.model_tag.split("://")[0]
            assert scheme in contract["runai_streamer_schemes"], (name, version)
        vllm_env = {e["name"] for e in container["env"] if e["name"].startswith("VLLM_")}
        assert vllm_env <= set(contract["env"]), (name, vllm_env - set(contract["env"]))


def test_float16_refusals_cover_the_contracts() -> None:
    """Every model type a supported release refuses float16 for is caught by a name match."""
    for version in VLLM_WHEELS:
        for model_type in load(version)["float16_refused_model_types"]:
            key = model_type.replace("_", "")
            assert any(m in key for m in FLOAT16_REFUSED_MODELS), (version, model_type)


def test_the_parser_refuses_what_vllm_refuses() -> None:
    contract = load(VLLM_NEWEST)
    for bad in (["m", "--no-such-flag"], ["m", "--dtype", "fp4"], ["m", "--port", "x"]):
        with pytest.raises(ContractError):
            parse(contract, bad)
