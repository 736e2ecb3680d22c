"""`quantrollout preflight artifact`: check a target checkpoint against the spec and the baseline.

Run by the preflight Job (and by hand): reads both artifacts where they are, prints one JSON
result (`quantrollout.preflight.result`) on stdout, writes it to `--termination-log` (the Job
passes /dev/termination-log, which the operator reads back from the Pod's status), and exits 0
(Pass), 1 (Fail: the reasons say what to fix) or 3 (Error: the artifacts could not be read).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from quantrollout import defaults


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    preflight = sub.add_parser(
        "preflight", help="checks run before a target tier gets its first request"
    )
    checks = preflight.add_subparsers(dest="check", required=True, metavar="CHECK")
    artifact = checks.add_parser(
        "artifact",
        help="check a quantized checkpoint against its declared format and its baseline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    artifact.add_argument("--target", required=True, metavar="URL", help="spec.target.artifact")
    artifact.add_argument(
        "--format", required=True, help="spec.target.format",
        choices=["awq", "gptq", "fp8", "compressed-tensors", "bitsandbytes"],
    )  # fmt: skip
    artifact.add_argument(
        "--precision", required=True, choices=["fp8", "int8", "int4"], help="spec.target.precision"
    )
    artifact.add_argument("--baseline", metavar="URL", help="spec.baseline.artifact")
    artifact.add_argument("--group-size", type=int, default=None, help="expected group size")
    size = artifact.add_mutually_exclusive_group()
    size.add_argument(
        "--parameters-b", type=float, default=None, metavar="B",
        help="parameters in billions (spec.modelShape.parametersB), for the size check",
    )  # fmt: skip
    size.add_argument(
        "--model", default=None, metavar="NAME",
        help="served model name (spec.model): its preset gives the parameters, if it has one",
    )  # fmt: skip
    artifact.add_argument(
        "--tolerance", type=float, default=defaults.PREFLIGHT_SIZE_TOLERANCE,
        help="the weights may be 1/(1+T) to (1+T) times the estimate "
        f"(default {defaults.PREFLIGHT_SIZE_TOLERANCE})",
    )  # fmt: skip
    artifact.add_argument(
        "--digest", default=None, metavar="sha256:HEX",
        help="expected manifest digest (reads every file once to hash it)",
    )  # fmt: skip
    artifact.add_argument(
        "--pvc-root", type=Path, default=Path(defaults.PREFLIGHT_PVC_ROOT), metavar="DIR",
        help=f"where pvc://CLAIM is mounted, as DIR/CLAIM (default {defaults.PREFLIGHT_PVC_ROOT})",
    )  # fmt: skip
    artifact.add_argument(
        "--termination-log", type=Path, default=None, metavar="PATH",
        help="also write the result here, at most 4096 bytes (the Job: /dev/termination-log)",
    )  # fmt: skip
    artifact.add_argument(
        "--timeout", type=float, default=defaults.PREFLIGHT_READ_TIMEOUT_SECONDS,
        help="seconds any one read may take",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    if args.check == "artifact":
        return _artifact(args)
    return 2


def _parameters(args: argparse.Namespace) -> float | None:
    if args.parameters_b is not None:
        return float(args.parameters_b) * 1e9
    if args.model:
        from quantrollout.manifests.gpu_memory import preset_for

        preset = preset_for(args.model)
        return preset.parameters_b * 1e9 if preset else None
    return None


def _artifact(args: argparse.Namespace) -> int:
    import httpx

    from quantrollout.preflight import artifact, gather, locations, result
    from quantrollout.preflight.readers import ReadError, open_reader

    if args.digest is not None and not args.digest.startswith("sha256:"):
        print("quantrollout: --digest must be sha256:<hex>", file=sys.stderr)
        return 2
    expected = artifact.Expectation(
        format=args.format,
        precision=args.precision,
        group_size=args.group_size,
        parameters=_parameters(args),
        tolerance=args.tolerance,
        digest=args.digest,
    )
    try:
        target_loc = locations.parse(args.target)
        base_loc = locations.parse(args.baseline) if args.baseline else None
    except ValueError as err:
        print(f"quantrollout: {err}", file=sys.stderr)
        return 2
    try:
        with httpx.Client(timeout=args.timeout, follow_redirects=True) as client:
            target_reader = open_reader(target_loc, os.environ, client, args.pvc_root)
            target = gather.read_snapshot(
                target_reader, weights=True, hashes=expected.digest is not None
            )
            baseline = None
            if base_loc is not None:
                base_reader = open_reader(base_loc, os.environ, client, args.pvc_root)
                baseline = gather.read_snapshot(base_reader, weights=False)
        doc = result.artifact_result(
            args.target, args.baseline, artifact.check(target, baseline, expected)
        )
    except ReadError as err:
        doc = result.artifact_result(args.target, args.baseline, None, str(err))
    message = result.termination_message(doc)
    print(message)
    if args.termination_log is not None:
        try:
            args.termination_log.write_text(message)
        except OSError as err:
            print(f"quantrollout: cannot write {args.termination_log}: {err}", file=sys.stderr)
    return result.EXIT_CODES[doc["verdict"]]
