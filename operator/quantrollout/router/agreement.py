"""How far two answers to the same request agree. Pure.

The score is in [0, 1]. It is what `quantrollout_router_shadow_agreement_ratio` observes for the
target's shadowed answer against the baseline's live one, and what
`quantrollout_router_shadow_self_agreement_ratio` observes for a second answer of the baseline
against its first (the calibration: how far the baseline agrees with itself on the same
requests, so that sampling noise is not read as quantization damage).

**What is compared**: the whole answer of the first choice (`index` 0), in three parts:

- the content (the text the user reads);
- the reasoning (`reasoning`/`reasoning_content` of a reasoning model);
- the tool calls, each as its function name and its arguments in canonical JSON (keys sorted,
  no spaces), so that `{"a": 1, "b": 2}` and `{"b":2,"a":1}` are the same call.

**How** depends on how the request samples (`sampling`):

- **greedy** (`temperature: 0`, or `top_k: 1`): decoding is deterministic, so the faithful
  comparison is **exact match** of all three parts: 1.0 if they are identical, else 0.0.
- **seeded** (a `seed`, not greedy) and **sampled** (neither: vLLM samples with the request's
  parameters, or the model's generation config when the request gives none): two samples of even
  the same model may differ, so each part present in either answer gets a score and the answer's
  score is their mean. Content and reasoning: the **F1 over word multisets** (words are runs of
  letters/digits, case-folded; `F1 = 2 * overlap / (len(a) + len(b))`). Tool calls: the F1 over
  the multisets of calls, a call matching only an identical call (a call with other arguments
  is another action, however many words they share). Both answers empty: 1.0.

A seeded request is comparable across tiers (the same seed draws the same random numbers, so
the tiers differ only where their probabilities do); a sampled one is not by itself, which is
why the router measures the baseline's agreement with itself on a share of the same requests
(see shadow.py) and the `shadow-agreement` rule judges the target relative to it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Hashable, Iterable
from typing import Any, Literal

from .answers import Answer

Sampling = Literal["greedy", "seeded", "sampled"]
SAMPLINGS: tuple[Sampling, ...] = ("greedy", "seeded", "sampled")
_WORD = re.compile(r"\w+")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def sampling(request: dict[str, Any]) -> Sampling:
    """How the request samples: greedy, seeded or sampled (see the module doc)."""
    temperature, top_k, seed = request.get("temperature"), request.get("top_k"), request.get("seed")
    if (_number(temperature) and temperature == 0) or (_number(top_k) and top_k == 1):
        return "greedy"
    if isinstance(seed, int) and not isinstance(seed, bool):
        return "seeded"
    return "sampled"


def _f1(a: Counter[Hashable], b: Counter[Hashable]) -> float:
    total = sum(a.values()) + sum(b.values())
    if total == 0:
        return 1.0
    return 2 * sum((a & b).values()) / total


def _words(text: str) -> Counter[Hashable]:
    return Counter(_WORD.findall(text.casefold()))


def word_f1(a: str, b: str) -> float:
    """F1 over the multisets of case-folded words of `a` and `b`."""
    return _f1(_words(a), _words(b))


def _calls(answer: Answer) -> Iterable[Hashable]:
    return ((call.name, call.arguments) for call in answer.tool_calls)


def agreement(baseline: Answer, other: Answer, greedy: bool) -> float:
    """The agreement score of `other` with `baseline` (see the module doc)."""
    same = (
        baseline.text == other.text
        and baseline.reasoning == other.reasoning
        and baseline.tool_calls == other.tool_calls
    )
    if same:
        return 1.0
    if greedy:
        return 0.0
    scores = [
        _f1(_words(a), _words(b))
        for a, b in ((baseline.text, other.text), (baseline.reasoning, other.reasoning))
        if a or b
    ]
    if baseline.tool_calls or other.tool_calls:
        scores.append(_f1(Counter(_calls(baseline)), Counter(_calls(other))))
    return sum(scores) / len(scores) if scores else 1.0
