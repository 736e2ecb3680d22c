"""The paths the router forwards to a model's tiers, against the routes of vLLM's own server as
the contract extracted from the pinned vLLM release lists them (hack/contracts/). Pure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from quantrollout.router.endpoints import FORWARDED, find

CONTRACTS = Path(__file__).resolve().parents[2] / "hack" / "contracts"

# vLLM routes a client does not send to a model through the router, and why.
ANSWERED_BY_THE_ROUTER = {
    "/v1/models",  # the router lists the models it serves (each QuantizedModel's served name)
    "/health",  # the router's own readiness; each tier's is its pod's readiness probe
    "/metrics",  # the router's own series; each tier's are scraped from its pod
}
NOT_FOR_CLIENTS = {
    # Probes, introspection and API docs of one server: per pod, not per model.
    "/ping", "/load", "/server_info", "/docs", "/tokenizer_info", "/get_world_size", "/weight_info",
    "/kv_event_sources", "/v1/fault_tolerance/status", "/is_paused", "/is_sleeping",
    "/checkpoint/status",
    # Administration of one server: must reach every replica of one tier, never a split of two.
    "/sleep", "/wake_up", "/pause", "/resume", "/reset_prefix_cache", "/reset_mm_cache",
    "/reset_encoder_cache", "/release_kv_cache_memory", "/start_profile", "/stop_profile",
    "/collective_rpc", "/update_weights", "/start_weight_update", "/finish_weight_update",
    "/start_draft_weight_update", "/init_weight_transfer_engine",
    "/shutdown_weight_transfer_engine", "/update_weight_version", "/weight_checker",
    "/v1/load_lora_adapter", "/v1/unload_lora_adapter", "/scale_elastic_ep",
    "/is_scaling_elastic_ep", "/v1/fault_tolerance/apply", "/checkpoint/prepare",
    "/checkpoint/restore", "/abort_requests", "/inference/v1/abort_requests",
    # SageMaker's container contract (the platform calls it, in a SageMaker endpoint).
    "/invocations",
}  # fmt: skip


def _contracts() -> list[Path]:
    return sorted(CONTRACTS.glob("vllm-*.json"))


def _routes(contract: Path) -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = json.loads(contract.read_text())["routes"]
    return routes


@pytest.mark.parametrize("contract", _contracts(), ids=lambda p: p.stem)
def test_every_client_route_of_vllm_is_forwarded(contract: Path) -> None:
    """Every route of vLLM's server is either forwarded to the model's tiers with the method vLLM
    serves it with, or answered by the router, or named above with the reason it is not a
    client's. A new route in a new vLLM release fails here until someone decides."""
    undecided, wrong_method = [], []
    for route in _routes(contract):
        path, methods = route["path"], set(route["methods"]) - {"HEAD", "OPTIONS"}
        if path in ANSWERED_BY_THE_ROUTER or path in NOT_FOR_CLIENTS or not methods:
            continue
        endpoint = FORWARDED.get(path)
        if endpoint is None:
            undecided.append(path)
        elif endpoint.method not in methods:
            wrong_method.append(f"{path}: vLLM {sorted(methods)}, router {endpoint.method}")
    assert not undecided, (
        f"{contract.name}: vLLM routes neither forwarded nor excluded: {undecided}"
    )
    assert not wrong_method, wrong_method


def test_there_are_contracts() -> None:
    assert _contracts(), f"no vLLM contract in {CONTRACTS} (hack/vllm-contract.py writes them)"


def test_every_path_named_here_is_one_vllm_serves() -> None:
    """The router forwards, and this file excludes, only paths some pinned vLLM release serves."""
    served = {route["path"] for contract in _contracts() for route in _routes(contract)}
    for named in (FORWARDED, ANSWERED_BY_THE_ROUTER, NOT_FOR_CLIENTS):
        assert set(named) <= served, sorted(set(named) - served)


def test_the_issue_s_paths_are_forwarded() -> None:
    for path in (
        "/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/embeddings",
        "/tokenize", "/detokenize", "/v1/score", "/v1/rerank", "/v1/audio/transcriptions",
        "/v1/audio/translations", "/version",
    ):  # fmt: skip
        assert find(path) is not None, path


def test_find() -> None:
    assert find("/v1/chat/completions") == (
        "/v1/chat/completions",
        FORWARDED["/v1/chat/completions"],
    )
    assert find("/v1/responses/resp_123") == (
        "/v1/responses/{response_id}",
        FORWARDED["/v1/responses/{response_id}"],
    )
    assert find("/v1/responses/resp_123/cancel") == (
        "/v1/responses/{response_id}/cancel",
        FORWARDED["/v1/responses/{response_id}/cancel"],
    )
    assert find("/v1/responses/render") == (
        "/v1/responses/render",
        FORWARDED["/v1/responses/render"],
    )
    for path in ("/v1/responses/", "/v1/responses/a/b", "/v1/responses/a/cancel/x", "/nope", "/"):
        assert find(path) is None, path
    assert find("/v1/models") is None  # answered by the router itself
    assert all(
        e.generates == (p in {"/v1/chat/completions", "/v1/completions", "/v1/responses"})
        for p, e in FORWARDED.items()
    )
