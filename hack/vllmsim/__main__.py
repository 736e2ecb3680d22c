"""One vLLM simulator in the foreground until SIGTERM or SIGINT, which stop it gracefully (exit
status 0). Two ways to start it:

    python -m vllmsim --port PORT --model NAME [--host H] [--tier T] [--latency-ms ...]
    python -m vllmsim serve MODEL [vllm serve options]       # exactly what a vLLM pod is given

The second parses its arguments with the pinned vLLM release's contract and refuses (exit status
2) any flag or value that release would refuse; its faults come from VLLMSIM_FAULTS (a JSON
object of SimConfig fields), its tier from VLLMSIM_TIER, the release from VLLMSIM_VLLM_VERSION.
Every SimConfig field can be set at start (`--error-rate 0.1`) and changed later via /control."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from pydantic import ValidationError

from quantrollout.defaults import VLLM_NEWEST
from vllmcontract.argparser import ContractError
from vllmsim.config import SimConfig, describe
from vllmsim.server import Simulator


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vllmsim", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--model", required=True, help="the served model name clients ask for")
    parser.add_argument("--tier", default=None, help="tier name, sent as x-vllmsim-tier")
    for name, field in SimConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            parser.add_argument(flag, type=float, default=None, help=field.description)
    return parser


def _exit(signum: int, frame: FrameType | None) -> None:
    """Outside uvicorn's own handling: before it serves, and when it re-raises the stop signal
    after its graceful shutdown. Either way there is nothing left to do but exit cleanly."""
    raise SystemExit(0)


def _serve(argv: Sequence[str]) -> Simulator | int:
    version = os.environ.get("VLLMSIM_VLLM_VERSION", VLLM_NEWEST)
    try:
        config = SimConfig.model_validate(json.loads(os.environ.get("VLLMSIM_FAULTS", "{}")))
        return Simulator.from_vllm_args(
            argv,
            tier=os.environ.get("VLLMSIM_TIER"),
            config=config,
            vllm_version=version,
            log_level="info",
        )
    except ContractError as exc:
        print(f"vllmsim: vLLM {version} would refuse these arguments: {exc}", file=sys.stderr)
    except ValidationError as exc:
        print(f"vllmsim: VLLMSIM_FAULTS: {describe(exc)}", file=sys.stderr)
    except ValueError as exc:
        print(f"vllmsim: VLLMSIM_FAULTS is not JSON: {exc}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        built = _serve(argv[1:])
        if isinstance(built, int):
            return built
        return _run(built)
    args = _parser().parse_args(argv)
    faults = {
        name: getattr(args, name)
        for name in SimConfig.model_fields
        if getattr(args, name) is not None
    }
    try:
        config = SimConfig.model_validate(faults)
    except ValidationError as exc:
        print(f"vllmsim: {describe(exc)}", file=sys.stderr)
        return 2
    sim = Simulator(
        args.model, args.port, args.host, tier=args.tier, config=config, log_level="info"
    )
    return _run(sim)


def _run(sim: Simulator) -> int:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit)
    try:
        sim.serve_forever()
    except OSError as exc:
        print(f"vllmsim: cannot serve on {sim.host}:{sim.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
