#!/usr/bin/env python3
"""Extract the contract of each pinned vLLM release into hack/contracts/vllm-<version>.json.

    hack/vllm-contract.py            # (re)write the contract of every pinned release
    hack/vllm-contract.py --check    # fail if a committed contract differs from its wheel's source,
                                     # or the files do not match the pins (make lint runs this)

The pins are `VLLM_WHEELS` in operator/quantrollout/defaults.py. Each wheel is fetched from PyPI
with `pip download --no-deps` into ~/.cache/quantrollout/vllm-wheels and checked against its
pinned sha256; it is never installed and never imported: its .py files are parsed with `ast`
(hack/vllmcontract/). A contract holds:

- "cli": every flag of `vllm serve` ({type, choices, default, nargs?, aliases?, ...}) and its
  positional model argument; "bool" flags are argparse's BooleanOptionalAction (--x / --no-x),
  "flag" ones store_true; a value that is computed at run time is {"expr": "<source>"};
- "quantization": the --quantization methods, which checkpoint formats vLLM switches to its Marlin
  kernels ("marlin_overrides") and for which explicit --quantization values it still does
  ("marlin_override_user_quant"; null = flag absent), and the online-quantization methods;
- "float16_refused_model_types": model types vLLM will not run with --dtype float16;
- "env": the VLLM_* environment variables vllm/envs.py reads;
- "load_formats" and "runai_streamer_schemes": --load-format values and the object-store URI
  schemes the Run:ai streamer takes;
- "routes": the paths of the OpenAI-compatible server with their methods;
- "metrics": the Prometheus series (counters by declared name; exported with `_total`), their
  label names and histogram buckets ({"mantissas", "max_value"} for buckets built from
  max_model_len), and the values of vllm:request_success's finished_reason label.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))
sys.path.insert(0, str(ROOT / "hack"))

from quantrollout.defaults import VLLM_WHEELS  # noqa: E402
from vllmcontract import extract  # noqa: E402
from vllmcontract.cli import serve_cli  # noqa: E402
from vllmcontract.source import Wheel  # noqa: E402

CONTRACTS = ROOT / "hack" / "contracts"
CACHE = Path.home() / ".cache" / "quantrollout" / "vllm-wheels"
# Platform tags the pinned wheels carry (x86_64 Linux; older releases use manylinux1), so the
# download does not depend on the machine it runs on.
PLATFORMS = (
    "manylinux_2_31_x86_64",
    "manylinux_2_28_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(version: str, filename: str, digest: str) -> Path:
    path = CACHE / filename
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        platform_args = [arg for p in PLATFORMS for arg in ("--platform", p)]
        subprocess.run(
            [
                sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                "--only-binary=:all:", *platform_args, "--python-version", "3.12",
                "--implementation", "cp", f"vllm=={version}", "-d", str(CACHE),
            ],
            check=True,
        )  # fmt: skip
    if not path.exists():
        raise SystemExit(f"pip did not download {filename} (another build of vllm=={version}?)")
    got = sha256(path)
    if got != digest:
        raise SystemExit(f"{path}: sha256 {got}, pinned {digest}; refusing to read it")
    return path


def contract(version: str, filename: str, digest: str) -> dict[str, Any]:
    wheel = Wheel(fetch(version, filename, digest))
    return {
        "vllm_version": version,
        "wheel": {"file": filename, "sha256": digest},
        "cli": serve_cli(wheel),
        "quantization": extract.quantization(wheel),
        "float16_refused_model_types": extract.float16_refused(wheel),
        "load_formats": extract.load_formats(wheel),
        "runai_streamer_schemes": extract.runai_schemes(wheel),
        "routes": extract.routes(wheel),
        "metrics": extract.metrics(wheel),
        "finish_reasons": extract.finish_reasons(wheel),
        "env": extract.env_vars(wheel),
    }


def render(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=1, sort_keys=False, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    expected = {f"vllm-{v}.json" for v in VLLM_WHEELS}
    present = {p.name for p in CONTRACTS.glob("vllm-*.json")}
    problems = [
        f"{name}: no pinned release (remove it, or pin it in defaults.py)"
        for name in sorted(present - expected)
    ]
    for version, (filename, digest) in VLLM_WHEELS.items():
        target = CONTRACTS / f"vllm-{version}.json"
        text = render(contract(version, filename, digest))
        if args.check:
            if not target.exists():
                problems.append(f"{target.relative_to(ROOT)} is missing: run hack/vllm-contract.py")
            elif target.read_text() != text:
                problems.append(
                    f"{target.relative_to(ROOT)} differs from vLLM {version}'s source: run hack/vllm-contract.py"
                )
        else:
            CONTRACTS.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            print(f"wrote {target.relative_to(ROOT)}")
    for p in problems:
        print(f"vllm-contract: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
