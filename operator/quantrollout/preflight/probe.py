"""The quality probe's pure part: the prompts (from a ConfigMap's data) and the comparison of the
two tiers' greedy answers.

Prompt format: every ConfigMap data key ending in `.jsonl` holds one JSON object per line,
`{"prompt": "...", "id": "optional name", "maxTokens": optional 1..4096}`; blank lines are
skipped, keys are read in sorted order. Both tiers answer each prompt greedily (temperature 0),
so a faithful quantization answers word for word: `exact` is whether the texts are identical,
`agreement` the router's word-multiset F1 (`quantrollout.router.agreement.word_f1`), which says
how far a differing answer drifted. A prompt the baseline could not answer is not judged; one the
target could not answer scores 0.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from quantrollout.router.agreement import word_f1

MAX_PROMPTS = 1000
MAX_TOKENS_LIMIT = 4096


class ProbeError(ValueError):
    """The prompts cannot be read; the message names the data key and line."""


@dataclass(frozen=True)
class ProbePrompt:
    id: str
    prompt: str
    max_tokens: int | None = None


@dataclass(frozen=True)
class ProbeResult:
    id: str
    agreement: float | None  # None: not judged (the baseline gave no answer)
    exact: bool | None
    note: str | None = None


def parse_prompts(data: Mapping[str, str]) -> list[ProbePrompt]:
    prompts: list[ProbePrompt] = []
    keys = sorted(k for k in data if k.endswith(".jsonl"))
    if not keys:
        raise ProbeError("no data key ending in .jsonl (one JSON object per line)")
    for key in keys:
        for number, line in enumerate(data[key].splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{key} line {number}"
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as err:
                raise ProbeError(f"{where}: not JSON ({err.msg})") from None
            if (
                not isinstance(doc, dict)
                or not isinstance(doc.get("prompt"), str)
                or not doc["prompt"]
            ):
                raise ProbeError(f'{where}: needs "prompt", a non-empty string')
            unknown = set(doc) - {"prompt", "id", "maxTokens"}
            if unknown:
                raise ProbeError(
                    f"{where}: unknown field {sorted(unknown)[0]!r} (prompt, id, maxTokens)"
                )
            limit = doc.get("maxTokens")
            if limit is not None and (
                not isinstance(limit, int)
                or isinstance(limit, bool)
                or not 1 <= limit <= MAX_TOKENS_LIMIT
            ):
                raise ProbeError(
                    f"{where}: maxTokens must be an integer from 1 to {MAX_TOKENS_LIMIT}"
                )
            ident = doc.get("id", f"{key}:{number}")
            if not isinstance(ident, str):
                raise ProbeError(f"{where}: id must be a string")
            prompts.append(ProbePrompt(ident, doc["prompt"], limit))
    if not prompts:
        raise ProbeError(f"{', '.join(keys)}: no prompts")
    if len(prompts) > MAX_PROMPTS:
        raise ProbeError(f"{len(prompts)} prompts, at most {MAX_PROMPTS}")
    ids = [p.id for p in prompts]
    duplicate = next((i for i in ids if ids.count(i) > 1), None)
    if duplicate is not None:
        raise ProbeError(f"id {duplicate!r} is used twice")
    return prompts


def compare(prompt: ProbePrompt, baseline: str | None, target: str | None) -> ProbeResult:
    """None for an answer that did not come (an error, a timeout)."""
    if baseline is None:
        return ProbeResult(prompt.id, None, None, "the baseline gave no answer: not judged")
    if target is None:
        return ProbeResult(prompt.id, 0.0, False, "the target gave no answer")
    return ProbeResult(prompt.id, word_f1(baseline, target), baseline == target)


def score(results: Sequence[ProbeResult]) -> tuple[float | None, float | None]:
    """Mean agreement and share of exact matches over the judged prompts (None if none was)."""
    judged = [r for r in results if r.agreement is not None]
    if not judged:
        return None, None
    agreement = sum(r.agreement for r in judged if r.agreement is not None) / len(judged)
    return agreement, sum(1 for r in judged if r.exact) / len(judged)
