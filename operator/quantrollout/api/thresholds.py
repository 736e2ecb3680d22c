"""Rule thresholds as users write them: `250ms`, `1.5s`, `1%`, `0.6`, or a bare number.

Latencies become seconds, percentages become ratios; a bare number is taken as it is. The same
grammar is enforced at admission by a CEL rule (THRESHOLD_PATTERN)."""

from __future__ import annotations

import re

THRESHOLD_PATTERN = r"^[0-9]+([.][0-9]+)?(ms|s|%)?$"


def parse_threshold(value: float | int | str) -> float:
    if isinstance(value, bool):
        raise ValueError("a threshold is a number, a percentage (1%) or a latency (250ms)")
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    match = re.fullmatch(THRESHOLD_PATTERN, text)
    if not match:
        raise ValueError(f"{value!r} is not a threshold like 0.6, 1%, 250ms or 1.5s")
    unit = match.group(2)
    number = float(text[: len(text) - len(unit)] if unit else text)
    return {None: number, "s": number, "ms": number / 1000, "%": number / 100}[unit]
