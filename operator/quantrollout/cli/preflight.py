"""`quantrollout preflight artifact|benchmark`: the checks run before a target tier serves.

Run by the preflight Job (and by hand). Each prints one JSON result on stdout, writes it to
`--termination-log` (the Job passes /dev/termination-log, which the operator reads back from the
Pod's status; at most 4096 bytes) and exits 0 (Pass), 1 (Fail: the reasons say what to fix) or
3 (Error, or Inconclusive: nothing could be judged).

- `artifact` reads the target's (and the baseline's) checkpoint where the spec says it is and
  checks it against the declared format and precision (`quantrollout.preflight.artifact`);
- `benchmark` warms both tiers up, loads them alike, optionally asks both the probe prompts, and
  judges the gate rules (`quantrollout.preflight.gate`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from quantrollout import defaults

if TYPE_CHECKING:
    from quantrollout.preflight.load import LoadSettings
    from quantrollout.preflight.probe import ProbePrompt


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

    _add_benchmark(checks)


def _add_benchmark(checks: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = checks.add_parser(
        "benchmark",
        help="load both tiers alike, probe their answers, and judge the gate rules",
        description="Warm up, then the same streamed load at both tiers side by side; with "
        "--prompts-dir, both answer the probe prompts greedily. Requests go straight to the "
        "tiers (their Services), never through the router.",
    )
    bench.add_argument("--baseline-url", required=True, metavar="URL")
    bench.add_argument("--target-url", required=True, metavar="URL")
    bench.add_argument("--model", required=True, help="the served model name (spec.model)")
    knobs = (
        ("--concurrency", defaults.PREFLIGHT_CONCURRENCY, "requests in flight per tier"),
        ("--requests", defaults.PREFLIGHT_REQUESTS, "measured requests per tier"),
        ("--warmup-requests", defaults.PREFLIGHT_WARMUP_REQUESTS, "discarded requests first"),
        ("--prompt-tokens", defaults.PREFLIGHT_PROMPT_TOKENS, "prompt length in words"),
        ("--max-tokens", defaults.PREFLIGHT_MAX_TOKENS, "answer length in tokens"),
        ("--probe-max-tokens", defaults.PREFLIGHT_PROBE_MAX_TOKENS, "probe answer length"),
    )
    for flag, default, what in knobs:
        bench.add_argument(flag, type=int, default=default, help=f"{what} (default {default})")
    bench.add_argument("--no-load", action="store_true", help="skip the benchmark (probe only)")
    bench.add_argument(
        "--prompts-dir", type=Path, default=None, metavar="DIR",
        help="the probe's prompts: the mounted ConfigMap (every *.jsonl file)",
    )  # fmt: skip
    bench.add_argument(
        "--rule", action="append", default=[], type=_rule, metavar="NAME:min=X|NAME:max=X",
        help="a gate rule (repeatable; default "
        + ", ".join(f"{n}:{b}={v:g}" for n, b, v in defaults.PREFLIGHT_GATE_RULES) + ")",
    )  # fmt: skip
    bench.add_argument("--termination-log", type=Path, default=None, metavar="PATH")
    bench.add_argument(
        "--timeout", type=float, default=defaults.PREFLIGHT_REQUEST_TIMEOUT_SECONDS,
        help="seconds one request may take",
    )  # fmt: skip


def _rule(text: str) -> tuple[str, str, float]:
    from quantrollout.preflight.gate import RULE_NAMES

    name, _, bound = text.partition(":")
    kind, _, value = bound.partition("=")
    if name not in RULE_NAMES or kind not in ("min", "max"):
        raise argparse.ArgumentTypeError(
            f"{text!r}: NAME:min=X or NAME:max=X, NAME one of {', '.join(RULE_NAMES)}"
        )
    try:
        return name, kind, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: {value!r} is not a number") from None


def run(args: argparse.Namespace) -> int:
    if args.check == "artifact":
        return _artifact(args)
    if args.check == "benchmark":
        return _benchmark(args)
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
    return _report(doc, args.termination_log)


def _report(doc: dict[str, object], termination_log: Path | None) -> int:
    from quantrollout.preflight import result

    message = result.termination_message(doc)
    print(message)
    if termination_log is not None:
        try:
            termination_log.write_text(message)
        except OSError as err:
            print(f"quantrollout: cannot write {termination_log}: {err}", file=sys.stderr)
    return result.EXIT_CODES[str(doc["verdict"])]


def _benchmark(args: argparse.Namespace) -> int:
    import asyncio

    from quantrollout.preflight import probe
    from quantrollout.preflight.load import LoadSettings

    prompts = None
    if args.prompts_dir is not None:
        try:
            data = {
                p.name: p.read_text() for p in sorted(args.prompts_dir.iterdir()) if p.is_file()
            }
            prompts = probe.parse_prompts(data)
        except (OSError, UnicodeDecodeError, probe.ProbeError) as err:
            print(f"quantrollout: --prompts-dir {args.prompts_dir}: {err}", file=sys.stderr)
            return 2
    settings = LoadSettings(
        model=args.model, concurrency=args.concurrency, requests=args.requests,
        warmup_requests=args.warmup_requests, prompt_tokens=args.prompt_tokens,
        max_tokens=args.max_tokens, timeout=args.timeout,
    )  # fmt: skip
    rules = args.rule or list(defaults.PREFLIGHT_GATE_RULES)
    doc = asyncio.run(_measure(args, settings, prompts, rules))
    return _report(doc, args.termination_log)


async def _measure(
    args: argparse.Namespace,
    settings: LoadSettings,
    prompts: list[ProbePrompt] | None,
    rules: list[tuple[str, str, float]],
) -> dict[str, object]:
    import httpx

    from quantrollout.preflight import gate, load, probe, result
    from quantrollout.preflight.stats import Summary

    empty = Summary(0, 0, None, None, None, None, 0, 0.0)
    base, target, results = empty, empty, []
    async with httpx.AsyncClient() as client:
        if not args.no_load:
            base, target = await load.benchmark(
                args.baseline_url, args.target_url, settings, client
            )
        if prompts is not None:
            results = await load.probe(
                args.baseline_url, args.target_url, args.model, prompts, client,
                max_tokens=args.probe_max_tokens, request_timeout=args.timeout,
            )  # fmt: skip
    agreement, exact = probe.score(results)
    measured = gate.Measured(base, target, agreement, exact)
    gate_rules = [gate.GateRule(n, **{b: v}) for n, b, v in rules]
    return result.gate_result(gate.evaluate(gate_rules, measured), measured, results)
