"""Has someone changed what we own? `drifted(desired, actual)` is true when any field we set has a
different value in the live object. Fields the API server or others added are not drift."""

from __future__ import annotations

from typing import Any


def drifted(desired: Any, actual: Any) -> bool:
    if isinstance(desired, dict):
        if not isinstance(actual, dict):
            return True
        return any(
            key not in actual or drifted(value, actual[key]) for key, value in desired.items()
        )
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(desired) != len(actual):
            return True
        return any(drifted(d, a) for d, a in zip(desired, actual, strict=True))
    return bool(desired != actual)
