"""vLLM's contract, read from its released wheel without installing or importing it.

`hack/vllm-contract.py` writes one JSON file per pinned release into hack/contracts/; `load()`
reads one back for the tests and the simulator."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

CONTRACTS = Path(__file__).resolve().parent.parent / "contracts"


@cache
def load(version: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CONTRACTS / f"vllm-{version}.json").read_text())
    return data
