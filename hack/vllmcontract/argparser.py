"""An argparse parser for `vllm serve`, built from a release's contract: it accepts exactly the
flags that release accepts, converts values the way its types do and refuses values outside its
choices. The contract tests parse every Deployment the operator renders with it, and the
simulator (`python -m vllmsim serve ...`) starts through it.

What it does not model: `--config FILE` contents, and vLLM's dotted JSON keys
(`--compilation-config.level 3`); both are refused here, so a rendering that relies on them fails
the tests rather than passing unchecked.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Sequence
from typing import Any

_HUMAN = re.compile(r"^(\d+(\.\d+)?)([kKmMgGtT])?$")
_SCALE = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


class ContractError(ValueError):
    """An argument vLLM would refuse: unknown flag, bad value, value outside the choices."""


def human_int(value: str) -> int:
    """vLLM's human_readable_int: 1k = 1000, 1K = 1024, 2M, 1.5G, or a plain integer."""
    m = _HUMAN.match(value)
    if not m:
        raise argparse.ArgumentTypeError(f"not a (human-readable) integer: {value!r}")
    number, _, suffix = m.groups()
    if suffix is None:
        return int(number)
    base = 1024 if suffix.isupper() else 1000
    power = "kmgt".index(suffix.lower()) + 1
    return int(float(number) * base**power)


def _human_int_or_auto(value: str) -> int:
    return -1 if value in ("auto", "-1") else human_int(value)


def _json(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {value!r}") from exc


def _json_or_str(value: str) -> Any:
    return _json(value) if value.strip().startswith("{") else value


_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "int": int,
    "float": float,
    "str": str,
    "json": _json,
    "json_or_str": _json_or_str,
    "human_int": human_int,
    "human_int_or_auto": _human_int_or_auto,
}


def _converter(entry: dict[str, Any]) -> Callable[[str], Any]:
    base = _CONVERTERS.get(entry["type"], str)  # a named parser vLLM has (e.g. reasoning): str
    normalise = "lower()" in entry.get("converter", "")

    def convert(value: str) -> Any:
        if entry.get("nullable") and value in ("", "None"):
            return None
        if normalise:
            value = value.lower().replace("-", "_")
        return base(value)

    return convert


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise ContractError(message)


def build_parser(contract: dict[str, Any]) -> argparse.ArgumentParser:
    parser = _Parser(prog="vllm serve", add_help=False, allow_abbrev=False, exit_on_error=False)
    for pos in contract["cli"]["positional"]:
        parser.add_argument(pos["name"], nargs=pos.get("nargs"), default=pos.get("default"))
    for name, entry in contract["cli"]["flags"].items():
        names = [name, *entry.get("aliases", [])]
        dest = name.lstrip("-").replace("-", "_")
        kind = entry["type"]
        if kind == "flag":
            parser.add_argument(*names, dest=dest, action="store_true")
            continue
        if kind == "bool":
            parser.add_argument(*names, dest=dest, action=argparse.BooleanOptionalAction)
            continue
        kwargs: dict[str, Any] = {"dest": dest, "type": _converter(entry)}
        if entry.get("choices") is not None:
            kwargs["choices"] = [c for c in entry["choices"]]
        if "nargs" in entry:
            kwargs["nargs"] = entry["nargs"]
        if entry.get("action") == "append":
            kwargs["action"] = "append"
        parser.add_argument(*names, **kwargs)
    return parser


_PARSERS: dict[tuple[str, str], argparse.ArgumentParser] = {}


def _normalise(argv: Sequence[str]) -> list[str]:
    """vLLM's FlexibleArgumentParser takes --max_model_len as --max-model-len."""
    out = []
    for arg in argv:
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            arg = name.replace("_", "-") + eq + value
        out.append(arg)
    return out


def parse(contract: dict[str, Any], argv: Sequence[str]) -> argparse.Namespace:
    """`vllm serve ARGV` as this release would parse it; raises ContractError where it would
    exit with a usage error."""
    key = (contract["vllm_version"], contract["wheel"]["sha256"])
    parser = _PARSERS.get(key)
    if parser is None:
        parser = _PARSERS[key] = build_parser(contract)
    try:
        args, extra = parser.parse_known_args(_normalise(argv))
    except argparse.ArgumentError as exc:
        raise ContractError(str(exc)) from exc
    if extra:
        raise ContractError(f"unrecognized arguments: {' '.join(extra)}")
    return args
